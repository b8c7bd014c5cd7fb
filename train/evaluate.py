"""Cross-fitted evaluation of the selector against every fixed strategy and the oracle.

Every problem's prediction comes from a model that never saw its question: the table is cut
into folds by question key, and per fold the feature pipeline (the PCA included) and the
Optuna tuning run on the training folds only. On the held-out predictions, for each pair and
budget N (strategies with n <= N; CoT at every N):

- ``router``: the strategy with the highest predicted accuracy (ties to the cheaper);
- ``best_fixed``: the strategy with the best mean label on the training folds (the baseline a
  router must beat), and ``best_fixed_test``, chosen on the test problems (optimistic);
- ``per_bin``: the best strategy per difficulty bin learned on the training folds, applied by
  each test problem's bin: oracle bins (the sweep's Pass@1, Snell et al.'s upper bound);
- ``paper_rule``: search for small policies (beam search at N), Best-of-N for large ones;
- ``random``: a uniformly random strategy within the budget (its expected accuracy);
- ``oracle``: each problem's best label within the budget.

Accuracy-against-compute: the router traced over a penalty λ on expected tokens (argmax of
predicted accuracy − λ·tokens), every fixed strategy as a point, and the per-level rule of
MEASUREMENTS.md (per level, the strategy maximising accuracy − λ·tokens on the training folds;
the level is an oracle label, so this rule is a bound the router should reach from the text).
Areas under the non-decreasing hull (AIQ) and the compute multiplier at the best fixed
strategy's accuracy are reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ttsopt.search.pairs import Pair
from ttsopt.selector.decide import penalized
from ttsopt.selector.pipeline import ORACLE_COLUMNS

from .metrics import brier, calibration_table, compute_multiplier, gap_recovered, hull_area, paired_bootstrap
from .table import fold_lists
from .tuning import TrainSettings, predict, tune_and_fit

BUDGETS = (1, 2, 4, 8, 16)
LAMBDAS = (0.0, 1e-5, 3e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


def cross_fit(table: pd.DataFrame, settings: TrainSettings,
              progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Held-out predictions for every row, and each row's fold (tuning inside each fold)."""
    pred = np.full(len(table), np.nan)
    fold_of = np.full(len(table), -1)
    fits = []
    folds = fold_lists(table, settings.folds, seed=settings.seed)
    for f, (train, test) in enumerate(folds):
        fit = tune_and_fit(table.iloc[train].reset_index(drop=True), settings)
        pred[test] = predict(fit, table.iloc[test])
        fold_of[test] = f
        fits.append({"fold": f, "params": fit.params, "rounds": fit.rounds, "cv_loss": fit.cv_loss,
                     "seconds": fit.seconds})
        if progress is not None:
            progress(f + 1, len(folds))
    return pred, fold_of, fits


@dataclass
class _Pair:
    """One pair's problems × strategies: labels, predictions, tokens, FLOPs, and who is in which fold."""

    name: str
    strategies: list[str]
    n: np.ndarray  # budget per strategy
    label: np.ndarray  # (problems, strategies)
    pred: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    fold: np.ndarray  # (problems,)
    bins: np.ndarray  # (problems,) difficulty (oracle)
    levels: np.ndarray  # (problems,) level (oracle)
    policy_params: float
    extra: dict[str, Any] = field(default_factory=dict)


def _pairs(table: pd.DataFrame) -> list[_Pair]:
    out = []
    for (policy, prm), g in table.groupby(["policy", "prm"], sort=False):
        counts = g.groupby("problem_id")["strategy"].nunique()
        g = g[g["problem_id"].isin(counts[counts == counts.max()].index)]  # complete problems only
        piv = lambda col: g.pivot(index="problem_id", columns="strategy", values=col)  # noqa: E731
        label = piv("label")
        strategies = list(label.columns)
        first = g.drop_duplicates("problem_id").set_index("problem_id").loc[label.index]
        n = g.drop_duplicates("strategy").set_index("strategy").loc[strategies, "n"].to_numpy()
        out.append(_Pair(Pair(policy, prm).name, strategies, n, label.to_numpy(), piv("pred").to_numpy(),
                         piv("tokens").to_numpy(), piv("flops").to_numpy(), first["fold"].to_numpy(),
                         first["difficulty"].astype(str).to_numpy(), first["level"].astype(str).to_numpy(),
                         float(10 ** first["policy_log10_params"].iloc[0])))
    return out


def _argmax_cheapest(score: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per row, the best score; ties (1e-12) to the lower cost."""
    best = score.max(axis=1, keepdims=True)
    tied = score >= best - 1e-12
    return np.where(tied, cost, np.inf).argmin(axis=1)


def _fixed_choice(label: np.ndarray, tokens: np.ndarray, rows: np.ndarray, allowed: np.ndarray) -> int:
    means = np.where(allowed, label[rows].mean(axis=0), -np.inf)
    cost = tokens[rows].mean(axis=0)
    return int(_argmax_cheapest(means[None, :], cost[None, :])[0])


def evaluate_pair(p: _Pair, *, seed: int = 0) -> dict[str, Any]:
    folds = np.unique(p.fold)
    idx = np.arange(len(p.fold))
    budgets: dict[str, Any] = {}
    for budget in BUDGETS:
        allowed = p.n <= budget
        if not allowed.any():
            continue
        mask_cost = np.where(allowed, p.tokens.mean(axis=0), np.inf)
        router_pick = _argmax_cheapest(np.where(allowed, p.pred, -np.inf), np.broadcast_to(mask_cost, p.pred.shape))
        router = p.label[idx, router_pick]
        fixed, per_bin = np.zeros(len(idx)), np.zeros(len(idx))
        fixed_flops = np.zeros(len(idx))
        fixed_names = []
        for f in folds:
            train, test = idx[p.fold != f], idx[p.fold == f]
            s = _fixed_choice(p.label, p.tokens, train, allowed)
            fixed_names.append(p.strategies[s])
            fixed[test], fixed_flops[test] = p.label[test, s], p.flops[test, s]
            for b in np.unique(p.bins[test]):
                tr_b, te_b = train[p.bins[train] == b], test[p.bins[test] == b]
                sb = _fixed_choice(p.label, p.tokens, tr_b if len(tr_b) else train, allowed)
                per_bin[te_b] = p.label[te_b, sb]
        test_best = _fixed_choice(p.label, p.tokens, idx, allowed)
        oracle = np.where(allowed, p.label, -np.inf).max(axis=1)
        rule_key = _paper_rule(p, budget)
        ci = paired_bootstrap(router, fixed, seed=seed)
        budgets[str(budget)] = {
            "router": {"accuracy": float(router.mean()), "flops": float(p.flops[idx, router_pick].mean()),
                       "tokens": float(p.tokens[idx, router_pick].mean()),
                       "ci95": [ci["lo"], ci["hi"]], "diff_vs_best_fixed": ci["mean"]},
            "best_fixed": {"accuracy": float(fixed.mean()), "flops": float(fixed_flops.mean()),
                           "strategies": sorted(set(fixed_names))},
            "best_fixed_test": {"accuracy": float(p.label[:, test_best].mean()), "strategy": p.strategies[test_best]},
            "per_bin_oracle_bins": {"accuracy": float(per_bin.mean())},
            "paper_rule": {"accuracy": float(p.label[:, p.strategies.index(rule_key)].mean()) if rule_key else None,
                           "strategy": rule_key},
            "random": {"accuracy": float(np.where(allowed, p.label, np.nan)[:, allowed].mean())},
            "oracle": {"accuracy": float(oracle.mean())},
            "gap_recovered": gap_recovered(float(router.mean()), float(fixed.mean()), float(oracle.mean())),
            "shares": _shares(p, router_pick),
        }
    return {"budgets": budgets, "curve": _curves(p), "brier": brier(p.pred.ravel(), p.label.ravel())}


def _paper_rule(p: _Pair, budget: int) -> str | None:
    """The paper's finding as a rule: search (beam) for policies below 7B parameters, Best-of-N above."""
    wanted = ("beam:" if p.policy_params < 7e9 else "best_of_n:") + f"n={budget},"
    return next((s for s in p.strategies if s.startswith(wanted)), None)


def _shares(p: _Pair, pick: np.ndarray) -> dict[str, float]:
    methods = [s.split(":")[0] for s in p.strategies]
    out: dict[str, float] = {}
    for i in pick:
        out[methods[i]] = out.get(methods[i], 0.0) + 1 / len(pick)
    return dict(sorted(out.items()))


def _curves(p: _Pair) -> dict[str, Any]:
    idx = np.arange(len(p.fold))
    folds = np.unique(p.fold)
    router_pts, level_pts = [], []
    for lam in LAMBDAS:
        cost = np.empty_like(p.tokens)
        for f in folds:  # expected tokens per strategy from the training folds: known before routing
            cost[p.fold == f] = p.tokens[p.fold != f].mean(axis=0)
        pick = penalized(p.pred, cost, lam)
        router_pts.append({"lambda": lam, "accuracy": float(p.label[idx, pick].mean()),
                           "flops": float(p.flops[idx, pick].mean())})
        chosen = np.zeros(len(idx), dtype=int)
        for f in folds:
            train, test = idx[p.fold != f], idx[p.fold == f]
            for lv in np.unique(p.levels[test]):
                tr = train[p.levels[train] == lv]
                tr = tr if len(tr) else train
                score = p.label[tr].mean(axis=0) - lam * p.tokens[tr].mean(axis=0)
                chosen[test[p.levels[test] == lv]] = int(np.argmax(score))
        level_pts.append({"lambda": lam, "accuracy": float(p.label[idx, chosen].mean()),
                          "flops": float(p.flops[idx, chosen].mean())})
    fixed_pts = [{"strategy": s, "accuracy": float(p.label[:, i].mean()), "flops": float(p.flops[:, i].mean())}
                 for i, s in enumerate(p.strategies)]
    oracle_pts = []
    for lam in LAMBDAS:
        pick = _argmax_cheapest(p.label - lam * p.tokens, p.tokens)
        oracle_pts.append({"lambda": lam, "accuracy": float(p.label[idx, pick].mean()),
                           "flops": float(p.flops[idx, pick].mean())})
    all_flops = [pt["flops"] for pts in (router_pts, level_pts, fixed_pts) for pt in pts]
    lo, hi = min(all_flops), max(all_flops)

    def area(pts):
        return hull_area([q["flops"] for q in pts], [q["accuracy"] for q in pts], lo=lo, hi=hi)

    best_fixed = max(fixed_pts, key=lambda q: (q["accuracy"], -q["flops"]))
    reach = [q for q in router_pts if q["accuracy"] >= best_fixed["accuracy"] - 1e-12]
    multiplier = (best_fixed["flops"] / min(q["flops"] for q in reach)) if reach else None
    at_router_best = max(router_pts, key=lambda q: (q["accuracy"], -q["flops"]))
    return {
        "router": router_pts, "per_level_rule": level_pts, "fixed": fixed_pts, "oracle": oracle_pts,
        "aiq": {"router": area(router_pts), "per_level_rule": area(level_pts), "fixed": area(fixed_pts),
                "oracle": area(oracle_pts)},
        "compute_multiplier_at_best_fixed_accuracy": multiplier,
        "compute_multiplier": compute_multiplier(at_router_best["accuracy"], at_router_best["flops"],
                                                 [q["flops"] for q in fixed_pts], [q["accuracy"] for q in fixed_pts]),
        "best_fixed": best_fixed,
    }


def evaluate(table: pd.DataFrame, settings: TrainSettings, *, progress=None) -> dict[str, Any]:
    """The whole cross-fitted evaluation as one JSON-able dict (``eval.json``)."""
    start = time.perf_counter()
    leaks = [c for c in ORACLE_COLUMNS if c in settings.to_dict()]
    assert not leaks
    pred, fold, fits = cross_fit(table, settings, progress=progress)
    t = table.assign(pred=pred, fold=fold)
    pairs = {p.name: evaluate_pair(p, seed=settings.seed) for p in _pairs(t)}
    gaps = [b["gap_recovered"] for p in pairs.values() for b in p["budgets"].values()
            if b["gap_recovered"] == b["gap_recovered"]]
    mults = [p["curve"]["compute_multiplier"] for p in pairs.values()
             if p["curve"]["compute_multiplier"] not in (None, float("inf"))]
    calib = calibration_table(t["pred"].to_numpy(), t["label"].to_numpy(), bins=10)
    return {
        "mode": "cross-fitted", "folds": settings.folds, "settings": settings.to_dict(), "fits": fits,
        "gap_recovered": float(np.mean(gaps)) if gaps else None,
        "compute_multiplier": float(np.median(mults)) if mults else None,
        "brier": brier(t["pred"].to_numpy(), t["label"].to_numpy()),
        "calibration": calib.to_dict("records"), "pairs": pairs, "rows": len(t),
        "seconds": time.perf_counter() - start,
    }


def evaluate_as_is(artifact, table: pd.DataFrame, *, seed: int = 0) -> dict[str, Any]:
    """The saved router on data it never saw (another snapshot, a new pair), as it is.

    The best fixed strategy is the one with the best accuracy on the router's training data
    (its catalogue); nothing is refitted.
    """
    pred = artifact.booster.predict(artifact.pipeline.transform(table))
    t = table.assign(pred=pred, fold=0)
    pairs = {}
    for p in _pairs(t):
        known = artifact.catalogue.get(p.name)
        if known is None:
            raise ValueError(f"the router was trained for pairs {', '.join(artifact.catalogue)}; not {p.name} "
                             "(train one that includes it, or evaluate by cross-fitting)")
        train_acc = {s["key"]: s["train_accuracy"] for s in known["strategies"]}
        budgets = {}
        idx = np.arange(len(p.fold))
        for budget in BUDGETS:
            allowed = p.n <= budget
            if not allowed.any():
                continue
            cost = np.broadcast_to(np.where(allowed, p.tokens.mean(axis=0), np.inf), p.pred.shape)
            pick = _argmax_cheapest(np.where(allowed, p.pred, -np.inf), cost)
            router = p.label[idx, pick]
            fixed_key = max((k for k, a in zip(p.strategies, allowed) if a and k in train_acc),
                            key=lambda k: train_acc[k])
            fixed = p.label[:, p.strategies.index(fixed_key)]
            oracle = np.where(allowed, p.label, -np.inf).max(axis=1)
            ci = paired_bootstrap(router, fixed, seed=seed)
            budgets[str(budget)] = {
                "router": {"accuracy": float(router.mean()), "flops": float(p.flops[idx, pick].mean()),
                           "ci95": [ci["lo"], ci["hi"]], "diff_vs_best_fixed": ci["mean"]},
                "best_fixed": {"accuracy": float(fixed.mean()), "strategies": [fixed_key]},
                "oracle": {"accuracy": float(oracle.mean())},
                "random": {"accuracy": float(np.where(allowed, p.label, np.nan)[:, allowed].mean())},
                "gap_recovered": gap_recovered(float(router.mean()), float(fixed.mean()), float(oracle.mean())),
                "shares": _shares(p, pick),
            }
        pairs[p.name] = {"budgets": budgets, "brier": brier(p.pred.ravel(), p.label.ravel())}
    gaps = [b["gap_recovered"] for q in pairs.values() for b in q["budgets"].values()
            if b["gap_recovered"] == b["gap_recovered"]]
    return {"mode": "as-is (data the router never saw)", "folds": 0, "rows": len(t),
            "gap_recovered": float(np.mean(gaps)) if gaps else None, "compute_multiplier": None,
            "brier": brier(t["pred"].to_numpy(), t["label"].to_numpy()), "pairs": pairs}


def markdown(report: dict[str, Any]) -> str:
    """The evaluation as markdown tables: one row per pair × budget, then the compute curves' summary."""
    lines = [f"Evaluation ({report['mode']}, {report['folds']} folds by question key, {report['rows']} rows): "
             f"gap recovered {report['gap_recovered']:.3f} (mean over pairs and budgets), Brier {report['brier']:.4f}",
             "", "| pair | N | router [95% CI of diff] | best fixed (train) | best fixed (test) | per-bin (oracle bins) "
             "| paper rule | random | oracle | gap recovered |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, pair in report["pairs"].items():
        for n, b in pair["budgets"].items():
            r = b["router"]
            rule = b.get("paper_rule", {}).get("accuracy")
            test_best = b.get("best_fixed_test", {}).get("accuracy", float("nan"))
            per_bin = b.get("per_bin_oracle_bins", {}).get("accuracy", float("nan"))
            lines.append(f"| {name} | {n} | {r['accuracy']:.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}] | "
                         f"{b['best_fixed']['accuracy']:.3f} | {test_best:.3f} | "
                         f"{per_bin:.3f} | {'' if rule is None else f'{rule:.3f}'} | "
                         f"{b['random']['accuracy']:.3f} | {b['oracle']['accuracy']:.3f} | {b['gap_recovered']:.2f} |")
    lines += ["", "| pair | AIQ router | AIQ per-level rule | AIQ fixed | AIQ oracle | compute × at best-fixed accuracy |",
              "|---|---|---|---|---|---|"]
    for name, pair in report["pairs"].items():
        if "curve" not in pair:
            continue
        c = pair["curve"]
        m = c["compute_multiplier_at_best_fixed_accuracy"]
        lines.append(f"| {name} | {c['aiq']['router']:.3f} | {c['aiq']['per_level_rule']:.3f} | {c['aiq']['fixed']:.3f} | "
                     f"{c['aiq']['oracle']:.3f} | {'not reached' if m is None else f'{m:.2f}'} |")
    return "\n".join(lines) + "\n"


__all__ = ["BUDGETS", "LAMBDAS", "cross_fit", "evaluate", "evaluate_as_is", "evaluate_pair", "markdown"]
