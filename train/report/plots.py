"""The report's figures: one function per figure, each returning a matplotlib Figure (Agg backend).

Inputs are plain data: the training table (``train/fit/table.py``), the evaluation dict
(``eval.json``, ``train/evaluation/evaluate.py``), the router's decisions and the importance summary
(``train/report/explain.py``). Every figure names its axes with units, the pair in each panel's title
and the number of problems behind it; methods keep one colour everywhere (:data:`METHOD_COLORS`).
Panels whose data is missing (an as-is evaluation has no compute curve) are left out rather
than drawn empty.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from ..evaluation.cascade import default_variant  # noqa: E402

METHODS = ("cot", "majority", "best_of_n", "beam", "dvts")
METHOD_LABELS = {"cot": "CoT", "majority": "majority vote", "best_of_n": "Best-of-N", "beam": "beam search",
                 "dvts": "DVTS"}
METHOD_SHORT = {"cot": "CoT", "majority": "Maj", "best_of_n": "BoN", "beam": "Beam", "dvts": "DVTS"}
METHOD_COLORS = {"cot": "#7f7f7f", "majority": "#1f77b4", "best_of_n": "#ff7f0e", "beam": "#2ca02c",
                 "dvts": "#9467bd"}
ROLE_COLORS = {"router": "#d62728", "best_fixed": "#1f77b4", "oracle": "#000000", "per_level_rule": "#8c564b",
               "random": "#bcbd22", "paper_rule": "#17becf", "hull": "#555555", "cascade": "#e377c2"}
FACTOR_COLORS = {"policy": "#1f77b4", "PRM": "#ff7f0e", "difficulty": "#2ca02c", "budget": "#d62728",
                 "strategy": "#9467bd", "other": "#7f7f7f"}
BINS = ("easy", "medium", "hard")
BIN_RANGES = {"easy": "Pass@1 ≥ 50%", "medium": "10–50%", "hard": "< 10%"}

plt.rcParams.update({"font.size": 10, "axes.titlesize": 10.5, "axes.labelsize": 10, "legend.fontsize": 9,
                     "figure.dpi": 100, "axes.grid": True, "grid.alpha": 0.3})


def method_of(strategy: str) -> str:
    return strategy.split(":", 1)[0]


def _suptitle(fig: Figure, text: str) -> float:
    """A figure title wrapped to the figure's width (a one-panel figure is narrow); returns its height in inches."""
    import textwrap

    lines = textwrap.wrap(text, max(40, int(fig.get_figwidth() * 11)))
    fig.suptitle("\n".join(lines), y=0.995)
    return 0.17 * len(lines) + 0.05


def _finish(fig: Figure, bottom_in: float, top_in: float) -> None:
    """Grow the figure by the legend's (bottom) and the title's (top) inches, then lay the panels out between."""
    height = fig.get_figheight() + bottom_in + top_in
    fig.set_figheight(height)
    fig.tight_layout(rect=(0, bottom_in / height, 1, 1 - top_in / height))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _grid(n: int, *, cols: int = 2, w: float = 5.2, h: float = 3.8) -> tuple[Figure, list[Any]]:
    cols = min(cols, max(n, 1))
    rows = math.ceil(max(n, 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _budget_axis(ax, budgets: Sequence[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(budgets))
    ax.set_xticklabels([str(b) for b in budgets])
    ax.minorticks_off()


def _legend(fig: Figure, handles: Sequence[Any], ncol: int | None = None) -> float:
    """A legend under the panels, in as many columns as the figure's width holds; returns its height in inches."""
    longest = max((len(h.get_label()) for h in handles), default=10)
    fits = max(1, int(fig.get_figwidth() / max(2.1, 0.7 + 0.068 * longest)))  # a column holds its longest label
    ncol = min(len(handles), ncol or 6, fits) or 1
    fig.legend(handles=list(handles), loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))
    return 0.12 + 0.24 * math.ceil(len(handles) / ncol)


def _method_legend(fig: Figure, methods: Sequence[str], extra: Sequence[Any] = (), ncol: int | None = None,
                   *, points: bool = False) -> float:
    """Methods as lines (CoT dashed: it has one budget), or as the points of a scatter."""
    if points:
        handles = [plt.Line2D([], [], color=METHOD_COLORS.get(m, "k"), marker="D" if m == "cot" else "o", ls="",
                              label=METHOD_LABELS.get(m, m)) for m in methods]
    else:
        handles = [plt.Line2D([], [], color=METHOD_COLORS.get(m, "k"), marker="" if m == "cot" else "o",
                              ls="--" if m == "cot" else "-", lw=2, label=METHOD_LABELS.get(m, m)) for m in methods]
    return _legend(fig, [*handles, *extra], ncol)


def _pair_names(table: pd.DataFrame) -> pd.Series:
    from ttsopt.search.pairs import Pair

    names = {(a, b): Pair(a, b).name for a, b in table[["policy", "prm"]].drop_duplicates().itertuples(index=False)}
    return pd.Series([names[(a, b)] for a, b in zip(table["policy"], table["prm"])], index=table.index)


# --------------------------------------------------------------------------- Figs 4-5 of the paper


def best_variants(table: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Per (pair, method), the variant (aggregation, vote, beam width) with the best mean accuracy over all
    its budgets: one line per method, as the paper draws them."""
    t = table.assign(pair=_pair_names(table), method_=table["strategy"].map(method_of),
                     variant=table["strategy"].map(_variant))
    means = t.groupby(["pair", "method_", "variant"])["label"].mean().reset_index()
    best = means.sort_values(["label", "variant"], ascending=[False, True]).drop_duplicates(["pair", "method_"])
    return {(r.pair, r.method_): r.variant for r in best.itertuples(index=False)}


def _variant(strategy: str) -> str:
    """A strategy key without its budget knobs (n, the beam width m that grows with it, depth):
    ``best_of_n:agg=min,vote=prm_vote``; strategies of one variant at one n are averaged."""
    method, _, rest = strategy.partition(":")
    knobs = [kv for kv in rest.split(",") if kv and not kv.startswith(("n=", "m=", "depth="))]
    return method + (":" + ",".join(knobs) if knobs else "")


def accuracy_by_budget(table: pd.DataFrame) -> Figure:
    """Accuracy against budget N per method, one panel per pair (rows) and difficulty bin (columns).

    The bins are the oracle's (Pass@1 of the sweep's own samples), as in the paper's Figures 4-5: a
    description of the data, not something a router sees.
    """
    t = table.assign(pair=_pair_names(table), method_=table["strategy"].map(method_of),
                     variant=table["strategy"].map(_variant))
    pairs = list(dict.fromkeys(t["pair"]))
    bins = [b for b in BINS if b in set(t["difficulty"].astype(str))] or sorted(t["difficulty"].astype(str).unique())
    budgets = sorted(int(n) for n in t["n"].unique())
    chosen = best_variants(table)
    fig, axes = plt.subplots(len(pairs), len(bins), figsize=(4.4 * len(bins), 3.3 * len(pairs)),
                             squeeze=False, sharex=True, sharey=True)
    methods_seen: list[str] = []
    for i, pair in enumerate(pairs):
        for j, b in enumerate(bins):
            ax = axes[i, j]
            g = t[(t["pair"] == pair) & (t["difficulty"].astype(str) == b)]
            problems = g["problem_id"].nunique()
            for m in METHODS:
                variant = chosen.get((pair, m))
                if variant is None:
                    continue
                s = g[g["variant"] == variant].groupby("n")["label"].mean()
                if s.empty:
                    continue
                if m not in methods_seen:
                    methods_seen.append(m)
                if m == "cot":
                    ax.axhline(float(s.iloc[0]), color=METHOD_COLORS[m], ls="--", lw=1.5)
                else:
                    ax.plot(s.index, s.values, marker="o", ms=4, lw=2, color=METHOD_COLORS[m])
            ax.set_title(f"{pair}\n{b} ({BIN_RANGES.get(b, '')}) · {problems} problems")
            _budget_axis(ax, budgets)
            ax.set_ylim(-0.03, 1.03)
            if j == 0:
                ax.set_ylabel("accuracy (mean label)")
            if i == len(pairs) - 1:
                ax.set_xlabel("budget N (samples / beams)")
    bottom = _method_legend(fig, methods_seen)
    top = _suptitle(fig, "Accuracy against budget per difficulty bin (bins: the sweep's own Pass@1; "
                 "each method's best variant; CoT dashed)")
    _finish(fig, bottom, top)
    return fig


# --------------------------------------------------------------------------- accuracy against compute


def accuracy_vs_flops(evaluation: dict[str, Any], *, problems: dict[str, int] | None = None) -> Figure:
    """Per pair: every fixed strategy as a point, the router's and the per-level rule's curves over the
    compute penalty λ, the oracle's, and the non-decreasing hull of the fixed strategies (log FLOPs)."""
    from ..evaluation.metrics import nondecreasing_hull

    pairs = [(name, p["curve"]) for name, p in evaluation.get("pairs", {}).items() if p.get("curve")]
    fig, axes = _grid(len(pairs))
    problems = _problems(evaluation, problems)
    for ax, (name, curve) in zip(axes, pairs):
        fixed = curve.get("fixed", [])
        for m in METHODS:
            pts = [q for q in fixed if method_of(q["strategy"]) == m]
            if pts:
                ax.scatter([q["flops"] for q in pts], [q["accuracy"] for q in pts], s=40 if m == "cot" else 22,
                           alpha=0.8, color=METHOD_COLORS[m], zorder=5 if m == "cot" else 3, edgecolor="white",
                           linewidth=0.5, marker="D" if m == "cot" else "o")
        if fixed:
            hx, hy = nondecreasing_hull([q["flops"] for q in fixed], [q["accuracy"] for q in fixed])
            ax.plot(hx, hy, color=ROLE_COLORS["hull"], lw=1.2, ls=":", zorder=2)
        cascade = (default_variant(evaluation["pairs"][name].get("cascade")) or {}).get("curve", {})
        for role, style in (("router", "-"), ("per_level_rule", "--"), ("oracle", "-."), ("cascade", "-")):
            pts = sorted(cascade.get("points", []) if role == "cascade" else curve.get(role, []),
                         key=lambda q: q["flops"])
            if pts:
                ax.plot([q["flops"] for q in pts], [q["accuracy"] for q in pts], ls=style, marker=".", lw=1.8,
                        color=ROLE_COLORS[role], zorder=4)
        ax.set_xscale("log")
        ax.set_xlabel("compute per problem (FLOPs, mean; log scale)")
        ax.set_ylabel("accuracy")
        aiq = curve.get("aiq", {})
        extra = f" · AIQ router {aiq['router']:.3f} vs fixed {aiq['fixed']:.3f}" if "router" in aiq else ""
        if "aiq" in cascade:
            extra += f", cascade {cascade['aiq']:.3f}"
        ax.set_title(f"{name} · {problems.get(name, '?')} problems\n{extra.lstrip(' ·')}")
    extra = [plt.Line2D([], [], color=ROLE_COLORS["router"], lw=2, label="router (λ sweep)"),
             plt.Line2D([], [], color=ROLE_COLORS["per_level_rule"], lw=2, ls="--",
                        label="per-level rule (oracle level)"),
             plt.Line2D([], [], color=ROLE_COLORS["oracle"], lw=2, ls="-.", label="oracle"),
             plt.Line2D([], [], color=ROLE_COLORS["hull"], lw=1.2, ls=":", label="hull of fixed strategies")]
    if any(p.get("cascade") for p in evaluation.get("pairs", {}).values()):
        extra.append(plt.Line2D([], [], color=ROLE_COLORS["cascade"], lw=2,
                                label="verify-first cascade (solve --cascade true, λ sweep)"))
    bottom = _method_legend(fig, [m for m in METHODS if any(method_of(q["strategy"]) == m for _, c in pairs
                                                       for q in c.get("fixed", []))], extra, ncol=5, points=True)
    top = _suptitle(fig, "Accuracy against compute: fixed strategies (points), router and rules (curves)")
    _finish(fig, bottom, top)
    return fig


def _problems(evaluation: dict[str, Any], given: dict[str, int] | None) -> dict[str, int]:
    """Problems per pair: as given (the report counts them in the table), else where the evaluation says."""
    out = {name: int(p["problems"]) for name, p in evaluation.get("pairs", {}).items() if "problems" in p}
    return {**out, **(given or {})}


# --------------------------------------------------------------------------- the decision map


def decision_map(decisions: pd.DataFrame, *, row: str = "difficulty", row_label: str | None = None) -> Figure:
    """Per pair: rows ``row`` (difficulty bin, or probe agreement), columns budget N; each cell is coloured by
    the method the router picks most often there, with that share and the runner-up method written in it.

    ``decisions``: one row per (pair, problem, budget) with columns pair, budget, method and ``row``.
    """
    pairs = list(dict.fromkeys(decisions["pair"]))
    budgets = sorted(decisions["budget"].unique())
    order = [b for b in BINS if b in set(decisions[row].astype(str))]
    rows_ = order or sorted(decisions[row].astype(str).unique())
    fig, axes = _grid(len(pairs), w=5.6, h=0.9 * len(rows_) + 1.6)
    for ax, pair in zip(axes, pairs):
        g = decisions[decisions["pair"] == pair]
        ax.grid(False)
        for i, r in enumerate(rows_):
            for j, b in enumerate(budgets):
                cell = g[(g[row].astype(str) == r) & (g["budget"] == b)]
                if cell.empty:
                    continue
                share = cell["method"].value_counts(normalize=True)
                top = share.index[0]
                ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, color=METHOD_COLORS.get(top, "k"),
                                           alpha=0.25 + 0.6 * float(share.iloc[0])))
                text = f"{METHOD_SHORT.get(top, top)} {share.iloc[0]:.0%}"
                if len(share) > 1:
                    text += f"\n{METHOD_SHORT.get(share.index[1], share.index[1])} {share.iloc[1]:.0%}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8.5)
        counts = g.drop_duplicates(["problem_id", row])[row].astype(str).value_counts()
        ax.set_xlim(-0.5, len(budgets) - 0.5)
        ax.set_ylim(len(rows_) - 0.5, -0.5)
        ax.set_xticks(range(len(budgets)))
        ax.set_xticklabels([str(b) for b in budgets])
        ax.set_yticks(range(len(rows_)))
        ax.set_yticklabels([f"{r}\n({_plural(int(counts.get(r, 0)), 'problem')})" for r in rows_])
        ax.set_xlabel("budget N (largest n allowed)")
        ax.set_ylabel(row_label or row)
        ax.set_title(f"{pair} · {g['problem_id'].nunique()} problems")
    used = [m for m in METHODS if m in set(decisions["method"])]
    labels = {m: METHOD_LABELS[m] if METHOD_SHORT[m] == METHOD_LABELS[m] else f"{METHOD_SHORT[m]} = {METHOD_LABELS[m]}"
              for m in used}
    bottom = _legend(fig, [Patch(color=METHOD_COLORS[m], alpha=0.7, label=labels[m]) for m in used])
    top = _suptitle(fig, "Decision map: the router's most chosen method per cell, and the runner-up "
                 "(share of the cell's problems; darker = more unanimous)")
    _finish(fig, bottom, top)
    return fig


# --------------------------------------------------------------------------- router vs baselines


def router_vs_baselines(evaluation: dict[str, Any], *, problems: dict[str, int] | None = None) -> Figure:
    """Per pair: router, best fixed (chosen on the training folds), oracle and random against budget N.

    The band is the 95% paired-bootstrap interval of router − best fixed, drawn around the best
    fixed line: where it stays above that line the router's gain is not noise.
    """
    pairs = list(evaluation.get("pairs", {}).items())
    fig, axes = _grid(len(pairs))
    problems = _problems(evaluation, problems)
    for ax, (name, p) in zip(axes, pairs):
        rows = sorted(((int(n), b) for n, b in p.get("budgets", {}).items()), key=lambda t: t[0])
        ns = [n for n, _ in rows]
        get = lambda key: [b.get(key, {}).get("accuracy") for _, b in rows]  # noqa: E731
        fixed = np.array(get("best_fixed"), dtype=float)
        router = np.array(get("router"), dtype=float)
        ci = np.array([b["router"].get("ci95", [np.nan, np.nan]) for _, b in rows], dtype=float)
        ax.fill_between(ns, fixed + ci[:, 0], fixed + ci[:, 1], color=ROLE_COLORS["router"], alpha=0.15, lw=0)
        ax.plot(ns, router, marker="o", lw=2, color=ROLE_COLORS["router"], zorder=5)
        ax.plot(ns, fixed, marker="s", lw=2, color=ROLE_COLORS["best_fixed"])
        ax.plot(ns, get("oracle"), marker="^", lw=1.5, ls="-.", color=ROLE_COLORS["oracle"])
        ax.plot(ns, get("random"), marker=".", lw=1.2, ls=":", color=ROLE_COLORS["random"])
        cascade = (default_variant(p.get("cascade")) or {}).get("budgets", {})
        if cascade:
            ax.plot(ns, [cascade.get(str(n), {}).get("accuracy", np.nan) for n in ns], marker="D", lw=1.8,
                    color=ROLE_COLORS["cascade"], zorder=4)
        rule = get("paper_rule")
        if any(v is not None for v in rule):
            ax.plot(ns, [np.nan if v is None else v for v in rule], marker="x", lw=1.2, ls="--",
                    color=ROLE_COLORS["paper_rule"])
        if ns:
            _budget_axis(ax, ns)
        ax.set_xlabel("budget N (largest n allowed)")
        ax.set_ylabel("accuracy on held-out problems")
        ax.set_title(f"{name} · {problems.get(name, '?')} problems")
    handles = [plt.Line2D([], [], color=ROLE_COLORS["router"], marker="o", lw=2, label="router"),
               Patch(color=ROLE_COLORS["router"], alpha=0.15, label="router 95% CI (paired with best fixed)"),
               plt.Line2D([], [], color=ROLE_COLORS["best_fixed"], marker="s", lw=2, label="best fixed (train folds)"),
               plt.Line2D([], [], color=ROLE_COLORS["oracle"], marker="^", ls="-.", label="oracle"),
               plt.Line2D([], [], color=ROLE_COLORS["random"], marker=".", ls=":", label="random strategy"),
               plt.Line2D([], [], color=ROLE_COLORS["paper_rule"], marker="x", ls="--", label="paper's rule")]
    if any(p.get("cascade") for _, p in pairs):
        handles.append(plt.Line2D([], [], color=ROLE_COLORS["cascade"], marker="D", lw=1.8,
                                  label="verify-first cascade"))
    bottom = _legend(fig, handles)
    top = _suptitle(fig, f"Router against the baselines ({evaluation.get('mode', 'evaluation')})")
    _finish(fig, bottom, top)
    return fig


# --------------------------------------------------------------------------- calibration


def calibration(evaluation: dict[str, Any]) -> Figure:
    """Predicted against observed accuracy in bins of the prediction, with the rows per bin below."""
    table = pd.DataFrame(evaluation.get("calibration", []))
    fig, (ax, axc) = plt.subplots(2, 1, figsize=(6.2, 6.4), sharex=True, gridspec_kw={"height_ratios": [3, 1.2]})
    if not table.empty:
        t = table[table["count"] > 0]
        mid = (t["bin_lo"] + t["bin_hi"]) / 2
        ax.plot([0, 1], [0, 1], color="#999999", ls="--", lw=1)
        ax.plot(t["mean_pred"], t["mean_label"], marker="o", color=ROLE_COLORS["router"], lw=2)
        for x, y, c in zip(t["mean_pred"], t["mean_label"], t["count"]):
            ax.annotate(f"{int(c)}", (x, y), textcoords="offset points", xytext=(5, -11), fontsize=8)
        axc.bar(mid, t["count"], width=0.09, color=ROLE_COLORS["router"], alpha=0.6)
        axc.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed accuracy (mean label)")
    brier = evaluation.get("brier")
    ax.set_title("Calibration of the predicted accuracy (held-out rows, all pairs)"
                 + (f" · Brier {brier:.4f}" if isinstance(brier, (int, float)) else ""))
    axc.set_xlabel("predicted accuracy (bin mean)")
    axc.set_ylabel("rows (log)")
    fig.tight_layout()
    return fig


def learning_curve(curve: dict[str, Any]) -> Figure:
    """The deployed default against the sweep problems it was trained on (train/evaluation/learning.py):
    per pair, its gain over the best fixed strategy (mean over N; one dot per draw, the line their mean),
    and its held-out accuracy on a second axis."""
    pairs = curve.get("pairs", {})
    fig, axes = _grid(len(pairs), cols=2, w=5.2, h=3.6)
    for ax, (name, c) in zip(axes, pairs.items()):
        pts = c["points"]
        k = curve.get("folds", 5)
        # the pair's own training problems per fold (a pair with fewer questions than a draw gets fewer)
        x = [round(p.get("pair_train_problems", p["train_problems"])) for p in pts]
        ax.axhline(0, color="#999999", lw=1, ls="--")
        for r in c["runs"]:
            ax.plot(r["problems"] * (k - 1) / k, r["diff_vs_best_fixed"], "o", color=ROLE_COLORS["router"], alpha=0.35, ms=4)
        ax.plot(x, [p["diff_vs_best_fixed"] for p in pts], "-o", color=ROLE_COLORS["router"], lw=2,
                label="deployed − best fixed")
        ax2 = ax.twinx()
        ax2.plot(x, [p["accuracy"] for p in pts], "-s", color=ROLE_COLORS["best_fixed"], lw=1.2, alpha=0.8,
                 label="deployed accuracy")
        ax2.set_ylabel("held-out accuracy (mean over N)", color=ROLE_COLORS["best_fixed"])
        ax.set_xscale("log")
        ax.set_xticks(x)
        ax.set_xticklabels([str(v) for v in x])
        ax.minorticks_off()
        ax.set_xlabel("training problems per outer fold")
        ax.set_ylabel("accuracy gain over best fixed")
        ax.set_title(name)
    handles = [plt.Line2D([], [], color=ROLE_COLORS["router"], marker="o", lw=2, label="deployed − best fixed (mean of draws)"),
               plt.Line2D([], [], color=ROLE_COLORS["router"], marker="o", ls="", alpha=0.35, label="one draw"),
               plt.Line2D([], [], color=ROLE_COLORS["best_fixed"], marker="s", lw=1.2, label="deployed accuracy")]
    bottom = _legend(fig, handles)
    top = _suptitle(fig, "How many sweep problems a pair needs: the deployed default against its training problems "
                         f"({curve.get('repeats', '?')} draws per size, held-out folds)")
    _finish(fig, bottom, top)
    return fig


# --------------------------------------------------------------------------- shares


def strategy_shares(evaluation: dict[str, Any], *, problems: dict[str, int] | None = None) -> Figure:
    """Per pair: the share of problems the router sends to each method at each budget N (stacked)."""
    pairs = list(evaluation.get("pairs", {}).items())
    fig, axes = _grid(len(pairs), h=3.4)
    problems = _problems(evaluation, problems)
    used: list[str] = []
    for ax, (name, p) in zip(axes, pairs):
        rows = sorted(((int(n), b.get("shares", {})) for n, b in p.get("budgets", {}).items()), key=lambda t: t[0])
        labels = [str(n) for n, _ in rows]
        bottom = np.zeros(len(rows))
        for m in [*METHODS, *sorted({k for _, s in rows for k in s} - set(METHODS))]:
            vals = np.array([s.get(m, 0.0) for _, s in rows])
            if not vals.any():
                continue
            if m not in used:
                used.append(m)
            ax.bar(labels, vals, bottom=bottom, color=METHOD_COLORS.get(m, "#333333"), width=0.7)
            for x, v, b0 in zip(labels, vals, bottom):
                if v >= 0.08:
                    ax.text(x, b0 + v / 2, f"{v:.0%}", ha="center", va="center", fontsize=8, color="white")
            bottom += vals
        ax.set_ylim(0, 1.0)
        ax.set_xlabel("budget N (largest n allowed)")
        ax.set_ylabel("share of problems")
        ax.set_title(f"{name} · {problems.get(name, '?')} problems")
        ax.grid(axis="x", visible=False)
    bottom = _legend(fig, [Patch(color=METHOD_COLORS.get(m, "#333333"), label=METHOD_LABELS.get(m, m)) for m in used])
    top = _suptitle(fig, "Which method the router picks, per budget (held-out problems)")
    _finish(fig, bottom, top)
    return fig


# --------------------------------------------------------------------------- importance


def importance_by_factor(importance: dict[str, Any], *, top: int = 12) -> Figure:
    """Left: each factor's share of gain, of prediction SHAP and of choice SHAP. Right: the features that
    most separate strategies on one problem (mean |centred SHAP|), coloured by factor."""
    factors = [f for f in importance["gain"]["share"] if f in FACTOR_COLORS]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12.5, 4.6), gridspec_kw={"width_ratios": [1.1, 1]})
    kinds = [("gain", "split gain"), ("shap_prediction", "SHAP: what moves a prediction"),
             ("shap_choice", "SHAP: what separates strategies (choice)")]
    y = np.arange(len(factors))
    h = 0.26
    for k, (key, label) in enumerate(kinds):
        vals = [importance[key]["share"].get(f, 0.0) for f in factors]
        bars = ax.barh(y + (k - 1) * h, vals, height=h, label=label, color=["#9ecae1", "#4292c6", "#08306b"][k])
        for b, v in zip(bars, vals):
            ax.text(b.get_width() + 0.005, b.get_y() + h / 2, f"{v:.0%}", va="center", fontsize=7.5)
    ax.set_yticks(y)
    ax.set_yticklabels(factors)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("share of the total (all factors = 100%)")
    ax.set_title(f"Importance by factor ({importance.get('rows', '?')} rows, "
                 f"{importance.get('problems', '?')} pair × problem groups)")
    ax.legend(loc="lower right", frameon=False)
    feats = importance["features"][:top]
    ax2.barh(range(len(feats)), [f["shap_choice"] for f in feats],
             color=[FACTOR_COLORS.get(f["factor"], "k") for f in feats])
    ax2.set_yticks(range(len(feats)))
    ax2.set_yticklabels([f["feature"] for f in feats], fontsize=8.5)
    ax2.invert_yaxis()
    ax2.set_xlabel("mean |SHAP centred per problem| (log-odds)")
    ax2.set_title(f"Top {len(feats)} features that drive the choice")
    present = list(dict.fromkeys(f["factor"] for f in feats))
    ax2.legend(handles=[Patch(color=FACTOR_COLORS.get(f, "k"), label=f) for f in present], loc="lower right",
               frameon=False)
    fig.tight_layout()
    return fig


def to_png(fig: Figure, *, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; the figure is closed (matplotlib keeps open figures alive)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # every figure is laid out with tight_layout already
    plt.close(fig)
    return buf.getvalue()


__all__ = ["BINS", "FACTOR_COLORS", "METHOD_COLORS", "METHODS", "accuracy_by_budget", "accuracy_vs_flops", "learning_curve",
           "best_variants", "calibration", "decision_map", "importance_by_factor", "method_of",
           "router_vs_baselines", "strategy_shares", "to_png"]
