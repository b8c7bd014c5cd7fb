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
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ttsopt.search.pairs import Pair
from ttsopt.selector.decide import allocate, for_target, penalized
from ttsopt.selector.pipeline import ORACLE_COLUMNS, PROBE_FEATURES

from .metrics import brier, calibration_table, compute_multiplier, gap_recovered, hull_area, paired_bootstrap
from .table import fold_lists
from .tuning import TrainSettings, predict, tune_and_fit

BUDGETS = (1, 2, 4, 8, 16)
LAMBDAS = (0.0, 1e-5, 3e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


@dataclass
class CrossFit:
    """Held-out predictions for every row, plus what the decision rules on top are tuned on.

    ``inner_pred[f]`` holds, for the training rows of outer fold ``f``, the out-of-fold
    predictions of the inner CV inside that fold (NaN on fold ``f``'s own test rows), and
    ``inner_fold[f]`` which inner fold each came from (-1 on test rows): rules such as shrinkage
    or a margin pick their knob on these, so the outer test rows never shape them.
    """

    pred: np.ndarray
    fold: np.ndarray
    fits: list[dict]
    inner_pred: np.ndarray  # (n_folds, rows)
    inner_fold: np.ndarray  # (n_folds, rows)
    pipelines: list[Any]  # the feature pipeline of each fold (PCA fitted on its training rows)


def cross_fit_nested(table: pd.DataFrame, settings: TrainSettings,
                     progress: Callable[[int, int], None] | None = None, *,
                     folds: list[tuple[np.ndarray, np.ndarray]] | None = None) -> CrossFit:
    """:func:`cross_fit` with the inner out-of-fold predictions of every fold (see :class:`CrossFit`)."""
    pred = np.full(len(table), np.nan)
    fold_of = np.full(len(table), -1)
    folds = folds if folds is not None else fold_lists(table, settings.folds, seed=settings.seed)
    inner_pred = np.full((len(folds), len(table)), np.nan)
    inner_fold = np.full((len(folds), len(table)), -1)
    fits, pipelines = [], []
    for f, (train, test) in enumerate(folds):
        fit = tune_and_fit(table.iloc[train].reset_index(drop=True), settings, oof=True)
        pred[test] = predict(fit, table.iloc[test])
        fold_of[test] = f
        inner_pred[f, train], inner_fold[f, train] = fit.oof, fit.oof_fold
        pipelines.append(fit.pipeline)
        fits.append({"fold": f, "params": fit.params, "rounds": fit.rounds, "cv_loss": fit.cv_loss,
                     "seconds": fit.seconds})
        if progress is not None:
            progress(f + 1, len(folds))
    return CrossFit(pred, fold_of, fits, inner_pred, inner_fold, pipelines)


def cross_fit(table: pd.DataFrame, settings: TrainSettings,
              progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Held-out predictions for every row, and each row's fold (tuning inside each fold)."""
    c = cross_fit_nested(table, settings, progress)
    return c.pred, c.fold, c.fits


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


#: Per-row columns pivoted into a (problems, strategies) matrix in ``_Pair.extra`` when present.
_MATRIX_PREFIXES = ("inner_pred_", "pred_probe")
#: Per-problem columns (the same on every strategy's row) kept as vectors in ``_Pair.extra``.
_PROBLEM_PREFIXES = ("inner_fold_", "probe_cost_k")


def _pairs(table: pd.DataFrame, min_problems: int = 0) -> list[_Pair]:
    out = []
    for (policy, prm), g in table.groupby(["policy", "prm"], sort=False):
        counts = g.groupby("problem_id")["strategy"].nunique()
        g = g[g["problem_id"].isin(counts[counts == counts.max()].index)]  # complete problems only
        if g["problem_id"].nunique() < min_problems:
            continue
        piv = lambda col: g.pivot(index="problem_id", columns="strategy", values=col)  # noqa: E731
        label = piv("label")
        strategies = list(label.columns)
        first = g.drop_duplicates("problem_id").set_index("problem_id").loc[label.index]
        n = g.drop_duplicates("strategy").set_index("strategy").loc[strategies, "n"].to_numpy()
        extra: dict[str, Any] = {"problem_ids": list(label.index)}
        for c in g.columns:
            if c.startswith(_MATRIX_PREFIXES):
                extra[c] = piv(c).loc[label.index, strategies].to_numpy(dtype=float)
            elif c.startswith(_PROBLEM_PREFIXES):
                extra[c] = first[c].to_numpy()
        out.append(_Pair(Pair(policy, prm).name, strategies, n, label.to_numpy(), piv("pred").to_numpy(),
                         piv("tokens").to_numpy(), piv("flops").to_numpy(), first["fold"].to_numpy(),
                         first["difficulty"].astype(str).to_numpy(), first["level"].astype(str).to_numpy(),
                         float(10 ** first["policy_log10_params"].iloc[0]), extra))
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
    report = {"budgets": budgets, "curve": _curves(p), "brier": brier(p.pred.ravel(), p.label.ravel())}
    report.update(_extended(p, report, seed))
    return report


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


# --------------------------------------------------------------------------- rules beyond argmax
#
# Every rule below turns what is known before routing (the training folds' labels and tokens,
# the model's held-out predictions, bins predicted from online features) into a score per
# (problem, strategy); a budget N keeps the strategies with n + k <= N (k = the probe's samples,
# 0 without a probe), a compute price λ subtracts λ·(expected tokens + probe tokens). A knob a
# rule has (shrinkage α, margin δ) is chosen per outer fold on the inner out-of-fold predictions
# of that fold's training problems (mean accuracy over the budgets), never on its test problems.

#: Shrinkage / blend weight on the model (0: the training mean, the best fixed strategy; 1: the model).
ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
#: How many of the best strategies on the training folds (within the budget) the model may choose among.
TOPKS = (1, 2, 3, 5, 1000)
#: Margin by which another strategy's prediction must beat the best fixed one (1.01: never).
MARGINS = (1.01, 0.2, 0.1, 0.05, 0.02, 0.0)
TARGETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Per-problem token budgets of the batch-allocation evaluation (geometric, cheapest to dearest strategy).
ALLOCATION_POINTS = 7
MIN_PROBLEMS = 30
LOPO_CALIBRATION = 20


@dataclass
class _Rule:
    """A decision rule: ``kind`` says how scores are formed (see :func:`_rule_scores`)."""

    name: str
    kind: str  # "pred" | "shrink" | "margin" | "topk" | "bin" | "blend"
    pred: np.ndarray | None = None  # (problems, strategies) held-out predictions
    inner: tuple[np.ndarray, np.ndarray] | None = None  # inner preds (folds, problems, S), inner folds (folds, problems)
    bins_pred: np.ndarray | None = None  # (problems,) bins used for test problems (predicted online)
    bins_true: np.ndarray | None = None  # (problems,) bins of training problems (known in training)
    probe_k: int = 0
    probe_tokens: np.ndarray | None = None  # (problems,)
    probe_flops: np.ndarray | None = None
    fallback: "_Rule | None" = None  # used at a budget where no strategy fits n + k <= N
    grid: tuple[float, ...] = (0.0,)


def _train_means(p: _Pair, tr: np.ndarray) -> np.ndarray:
    return p.label[tr].mean(axis=0)


def _bin_means(p: _Pair, tr: np.ndarray, bins_tr: np.ndarray, bins_rows: np.ndarray,
               values: np.ndarray | None = None) -> np.ndarray:
    """Per row, the training problems' mean label (or ``values``: tokens) per strategy in the row's bin
    (over all training problems if the bin is empty)."""
    values = p.label if values is None else values
    overall = values[tr].mean(axis=0)
    out = np.empty((len(bins_rows), values.shape[1]))
    for b in np.unique(bins_rows):
        sel = tr[bins_tr == b]
        out[bins_rows == b] = values[sel].mean(axis=0) if len(sel) else overall
    return out


def _s_star(p: _Pair, tr: np.ndarray, allowed: np.ndarray | None, lam: float | None) -> int:
    """The best fixed strategy on ``tr``: within the budget, or under the price λ."""
    if allowed is not None:
        return _fixed_choice(p.label, p.tokens, tr, allowed)
    score = _train_means(p, tr) - lam * p.tokens[tr].mean(axis=0)
    return int(_argmax_cheapest(score[None, :], p.tokens[tr].mean(axis=0)[None, :])[0])


def _rule_scores(rule: _Rule, p: _Pair, preds: np.ndarray | None, tr: np.ndarray, rows: np.ndarray,
                 bins_rows: np.ndarray | None, param: float, allowed: np.ndarray | None,
                 lam: float | None) -> np.ndarray:
    """Scores of ``rows`` from what ``tr`` (the training problems) and ``preds`` (the rows' predictions) give.

    - ``pred``: the model's predictions as they are (argmax: the plain router);
    - ``shrink``: ``(1 − α)·training mean + α·prediction``, against the winner's curse of an
      argmax over noisy per-strategy predictions (α = 0 is the best fixed strategy);
    - ``margin``: the best fixed strategy unless the model predicts another better by more than δ;
    - ``topk``: the model chooses only among the K best strategies on the training folds;
    - ``bin``: per bin (level, difficulty), the training problems' mean label per strategy (the
      per-bin rule; the row's bin is an oracle or predicted from online features);
    - ``blend``: ``(1 − α)·bin mean + α·prediction``.
    """
    if rule.kind == "pred":
        return preds
    if rule.kind == "shrink":
        return (1 - param) * _train_means(p, tr)[None, :] + param * preds
    if rule.kind == "topk":
        rank = _train_means(p, tr)
        if allowed is not None:
            rank = np.where(allowed, rank, -np.inf)
        else:
            rank = rank - lam * p.tokens[tr].mean(axis=0)
        keep = np.zeros(p.label.shape[1], dtype=bool)
        keep[np.argsort(-rank, kind="stable")[:int(param)]] = True
        return np.where(keep[None, :], preds, -np.inf)
    if rule.kind == "margin":
        bonus = np.zeros(p.label.shape[1])
        bonus[_s_star(p, tr, allowed, lam)] = param
        return preds + bonus[None, :]
    means = _bin_means(p, tr, rule.bins_true[tr], bins_rows)
    if rule.kind == "bin":
        return means
    if rule.kind == "blend":
        return (1 - param) * means + param * preds
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def _pick(score: np.ndarray, cost: np.ndarray, allowed: np.ndarray | None, lam: float | None) -> np.ndarray:
    """Argmax within the budget (``allowed``), or of score − λ·cost; ties to the cheaper."""
    if allowed is not None:
        return _argmax_cheapest(np.where(allowed, score, -np.inf), np.where(allowed, cost, np.inf))
    return _argmax_cheapest(score - lam * cost, cost)


def _allowed(p: _Pair, budget: int, k: int) -> np.ndarray:
    return p.n + k <= budget


def _choose_param(rule: _Rule, p: _Pair, f: int, tr: np.ndarray) -> float:
    """The rule's knob for outer fold ``f``: best mean accuracy over the budgets on the inner folds."""
    if len(rule.grid) == 1 or rule.inner is None:
        return rule.grid[0]
    inner_pred, inner_fold = rule.inner[0][f], rule.inner[1][f]
    groups = inner_fold[tr]
    best, best_val = rule.grid[0], -np.inf
    budgets = [b for b in BUDGETS if _allowed(p, b, rule.probe_k).any()]
    for param in rule.grid:
        total = 0.0
        for g in np.unique(groups[groups >= 0]):
            itr, iva = tr[groups != g], tr[groups == g]
            cost = p.tokens[itr].mean(axis=0)[None, :].repeat(len(iva), axis=0)
            for budget in budgets:
                allowed = _allowed(p, budget, rule.probe_k)
                score = _rule_scores(rule, p, inner_pred[iva], itr, iva,
                                     None if rule.bins_true is None else rule.bins_true[iva], param, allowed, None)
                total += p.label[iva, _pick(score, cost, allowed, None)].sum()
        if total > best_val + 1e-9:
            best, best_val = param, total
    return float(best)


def _apply_rule(rule: _Rule, p: _Pair, params: dict[int, float], *, budget: int | None = None,
                lam: float | None = None) -> np.ndarray | None:
    """Held-out picks of ``rule`` at a budget N or a price λ (None when nothing fits and there is no fallback)."""
    allowed = None if budget is None else _allowed(p, budget, rule.probe_k)
    if allowed is not None and not allowed.any():
        return None if rule.fallback is None else _apply_rule(rule.fallback, p, _fallback_params(p, rule.fallback),
                                                              budget=budget)
    idx = np.arange(len(p.fold))
    picks = np.zeros(len(idx), dtype=int)
    for f in np.unique(p.fold):
        tr, te = idx[p.fold != f], idx[p.fold == f]
        if rule.kind in ("bin", "blend"):  # a bin's own expected tokens (word problems are longer)
            cost = _bin_means(p, tr, rule.bins_true[tr], rule.bins_pred[te], p.tokens)
        else:
            cost = p.tokens[tr].mean(axis=0)[None, :]
        cost = cost + (0.0 if rule.probe_tokens is None else rule.probe_tokens[te, None])
        score = _rule_scores(rule, p, None if rule.pred is None else rule.pred[te], tr, te,
                             None if rule.bins_pred is None else rule.bins_pred[te], params[int(f)], allowed, lam)
        picks[te] = _pick(score, np.broadcast_to(cost, score.shape), allowed, lam)
    return picks


def _fallback_params(p: _Pair, rule: _Rule) -> dict[int, float]:
    """The rule's knob per outer fold (chosen on inner folds; cached on the pair)."""
    cache = p.extra.setdefault("_params", {})
    if rule.name not in cache:
        idx = np.arange(len(p.fold))
        cache[rule.name] = {int(f): _choose_param(rule, p, int(f), idx[p.fold != f]) for f in np.unique(p.fold)}
    return cache[rule.name]


def _probe_charge(rule: _Rule, p: _Pair, picks_from_probe: bool) -> tuple[np.ndarray, np.ndarray]:
    if not picks_from_probe or rule.probe_tokens is None:
        z = np.zeros(len(p.fold))
        return z, z
    return rule.probe_tokens, rule.probe_flops


def _rule_record(rule: _Rule, p: _Pair, picks: np.ndarray, fixed: np.ndarray, oracle: float, probed: bool,
                 seed: int) -> dict[str, Any]:
    idx = np.arange(len(p.fold))
    acc = p.label[idx, picks]
    extra_t, extra_f = _probe_charge(rule, p, probed)
    ci = paired_bootstrap(acc, fixed, seed=seed)
    return {"accuracy": float(acc.mean()), "flops": float((p.flops[idx, picks] + extra_f).mean()),
            "tokens": float((p.tokens[idx, picks] + extra_t).mean()), "ci95": [ci["lo"], ci["hi"]],
            "diff_vs_best_fixed": ci["mean"], "gap_recovered": gap_recovered(float(acc.mean()), float(fixed.mean()),
                                                                             oracle),
            "probed": bool(probed and rule.probe_k > 0)}


def _best_fixed_vector(p: _Pair, allowed: np.ndarray) -> np.ndarray:
    idx = np.arange(len(p.fold))
    fixed = np.zeros(len(idx))
    for f in np.unique(p.fold):
        tr, te = idx[p.fold != f], idx[p.fold == f]
        fixed[te] = p.label[te, _fixed_choice(p.label, p.tokens, tr, allowed)]
    return fixed


def _predict_bins(p: _Pair, features: list[np.ndarray], target: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Bins of held-out problems predicted from online features by a classifier fitted on the training folds.

    A random forest (small data, mixed scales, no tuning needed); ``features[f]`` are the
    per-problem inputs computed with fold ``f``'s pipeline. Returns the predictions and their
    cross-fitted accuracy against ``target``.
    """
    from sklearn.ensemble import RandomForestClassifier

    idx = np.arange(len(p.fold))
    out = np.empty(len(idx), dtype=object)
    for f in np.unique(p.fold):
        tr, te = idx[p.fold != f], idx[p.fold == f]
        x = np.nan_to_num(np.asarray(features[int(f)], dtype=float))
        if len(np.unique(target[tr])) == 1:
            out[te] = target[tr][0]
            continue
        clf = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=1).fit(x[tr], target[tr])
        out[te] = clf.predict(x[te])
    out = out.astype(str)
    return out, float((out == target).mean())


def _rules(p: _Pair, seed: int) -> tuple[list[_Rule], dict[str, Any]]:
    """The rules this pair's data supports (probes, features and inner predictions where present)."""
    ex = p.extra
    n_folds = len(np.unique(p.fold))
    rules: list[_Rule] = []
    info: dict[str, Any] = {}
    inner = None
    if all(f"inner_pred_{f}" in ex for f in range(n_folds)):
        inner = (np.stack([ex[f"inner_pred_{f}"] for f in range(n_folds)]),
                 np.stack([ex[f"inner_fold_{f}"] for f in range(n_folds)]))
    base = _Rule("router", "pred", pred=p.pred)
    if inner is not None:
        rules.append(_Rule("router_shrunk", "shrink", pred=p.pred, inner=inner, grid=ALPHAS))
        rules.append(_Rule("router_margin", "margin", pred=p.pred, inner=inner, grid=MARGINS))
        rules.append(_Rule("router_topk", "topk", pred=p.pred, inner=inner, grid=TOPKS))
    rules.append(_Rule("level_rule_oracle", "bin", bins_pred=p.levels, bins_true=p.levels))
    feats = ex.get("features")
    text_bins = None
    if feats is not None:
        level_pred, level_acc = _predict_bins(p, feats, p.levels, seed)
        diff_pred, diff_acc = _predict_bins(p, feats, p.bins, seed)
        info["level_from_text_accuracy"] = level_acc
        info["difficulty_from_text_accuracy"] = diff_acc
        rules.append(_Rule("level_rule_predicted", "bin", bins_pred=level_pred, bins_true=p.levels))
        if inner is not None:
            rules.append(_Rule("level_blend", "blend", pred=p.pred, inner=inner, bins_pred=level_pred,
                               bins_true=p.levels, grid=ALPHAS))
        text_bins = _Rule("per_bin_predicted_text", "bin", bins_pred=diff_pred, bins_true=p.bins)
        rules.append(text_bins)
    for k in sorted(int(c[len("pred_probe"):]) for c in ex if c.startswith("pred_probe")):
        pk = ex[f"pred_probe{k}"]
        tokens, flops = ex[f"probe_cost_k{k}_tokens"].astype(float), ex[f"probe_cost_k{k}_flops"].astype(float)
        missing = np.isnan(pk).any(axis=1) | np.isnan(tokens)
        pk = np.where(missing[:, None], p.pred, pk)
        tokens, flops = np.where(missing, 0.0, tokens), np.where(missing, 0.0, flops)
        info[f"probe{k}_missing_problems"] = int(missing.sum())
        rules.append(_Rule(f"router_probe{k}", "pred", pred=pk, probe_k=k, probe_tokens=tokens, probe_flops=flops,
                           fallback=base))
        if feats is not None and f"probe_features_k{k}" in ex:
            pf = ex[f"probe_features_k{k}"]
            both = [np.hstack([np.asarray(x, dtype=float), pf]) for x in feats]
            bins_k, acc_k = _predict_bins(p, both, p.bins, seed)
            info[f"difficulty_from_probe{k}_accuracy"] = acc_k
            rules.append(_Rule(f"per_bin_predicted_probe{k}", "bin", bins_pred=bins_k, bins_true=p.bins, probe_k=k,
                               probe_tokens=tokens, probe_flops=flops, fallback=text_bins))
    return rules, info


def _hull_range(curve: dict[str, Any]) -> tuple[float, float]:
    flops = [q["flops"] for key in ("router", "per_level_rule", "fixed") for q in curve[key]]
    return min(flops), max(flops)


def _curve_summary(points: list[dict], fixed_pts: list[dict], lo: float, hi: float) -> dict[str, Any]:
    best_fixed = max(fixed_pts, key=lambda q: (q["accuracy"], -q["flops"]))
    reach = [q for q in points if q["accuracy"] >= best_fixed["accuracy"] - 1e-12]
    best = max(points, key=lambda q: (q["accuracy"], -q["flops"]))
    return {"points": points,
            "aiq": hull_area([q["flops"] for q in points], [q["accuracy"] for q in points], lo=lo, hi=hi),
            "compute_multiplier_at_best_fixed_accuracy": (best_fixed["flops"] / min(q["flops"] for q in reach))
            if reach else None,
            "compute_multiplier": compute_multiplier(best["accuracy"], best["flops"], [q["flops"] for q in fixed_pts],
                                                     [q["accuracy"] for q in fixed_pts])}


def _allocation(p: _Pair, name: str, score_of_fold: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
                seed: int, per_problem_budgets: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """One token budget per held-out fold (B tokens per problem × its problems), split by
    :func:`allocate` (greedy) on the predicted accuracies, against the same total spent uniformly
    (the best fixed strategy on the training folds whose expected tokens fit B)."""
    idx = np.arange(len(p.fold))
    folds = np.unique(p.fold)
    train_cost = {int(f): p.tokens[p.fold != f].mean(axis=0) for f in folds}
    lo = max(c.min() for c in train_cost.values())
    hi = max(c.max() for c in train_cost.values())
    out = []
    grid = np.geomspace(lo, hi, ALLOCATION_POINTS) if per_problem_budgets is None else per_problem_budgets
    for per_problem in grid:
        alloc, uni = np.zeros(len(idx), dtype=int), np.zeros(len(idx), dtype=int)
        expected_alloc = np.zeros(len(idx))
        for f in folds:
            tr, te = idx[p.fold != f], idx[p.fold == f]
            cost = train_cost[int(f)]
            scores = score_of_fold(int(f), tr, te)
            alloc[te] = allocate(scores, cost, per_problem * len(te) * (1 + 1e-12))
            expected_alloc[te] = cost[alloc[te]]
            uni[te] = _fixed_choice(p.label, p.tokens, tr, cost <= per_problem * (1 + 1e-12))
        a, u = p.label[idx, alloc], p.label[idx, uni]
        ci = paired_bootstrap(a, u, seed=seed)
        out.append({"tokens_per_problem": float(per_problem),
                    "allocated": {"accuracy": float(a.mean()), "tokens_expected": float(expected_alloc.mean()),
                                  "tokens": float(p.tokens[idx, alloc].mean()),
                                  "flops": float(p.flops[idx, alloc].mean())},
                    "uniform": {"accuracy": float(u.mean()), "tokens": float(p.tokens[idx, uni].mean()),
                                "flops": float(p.flops[idx, uni].mean()),
                                "strategies": sorted({p.strategies[i] for i in uni})},
                    "diff": ci["mean"], "ci95": [ci["lo"], ci["hi"]], "scores": name})
    return out


def _target_mode(p: _Pair, name: str, score_of_fold: Callable[[int, np.ndarray, np.ndarray], np.ndarray]
                 ) -> list[dict[str, Any]]:
    """:func:`for_target` per held-out problem: achieved accuracy and compute against each target."""
    idx = np.arange(len(p.fold))
    out = []
    for target in TARGETS:
        pick = np.zeros(len(idx), dtype=int)
        reached = np.zeros(len(idx), dtype=bool)
        predicted = np.zeros(len(idx))
        for f in np.unique(p.fold):
            tr, te = idx[p.fold != f], idx[p.fold == f]
            scores = score_of_fold(int(f), tr, te)
            pick[te], reached[te] = for_target(scores, p.tokens[tr].mean(axis=0), target)
            predicted[te] = scores[np.arange(len(te)), pick[te]]
        acc = p.label[idx, pick]
        out.append({"target": target, "scores": name, "accuracy": float(acc.mean()),
                    "accuracy_where_reachable": float(acc[reached].mean()) if reached.any() else None,
                    "predicted_where_reachable": float(predicted[reached].mean()) if reached.any() else None,
                    "unreachable": float(1 - reached.mean()), "tokens": float(p.tokens[idx, pick].mean()),
                    "flops": float(p.flops[idx, pick].mean())})
    return out


def _extended(p: _Pair, base: dict[str, Any], seed: int) -> dict[str, Any]:
    """The rules beyond plain argmax, batch allocation and target mode (added to a pair's report)."""
    rules, info = _rules(p, seed)
    params = {r.name: _fallback_params(p, r) for r in rules}
    summary: dict[str, Any] = {}
    for r in [None, *rules]:
        name = "router" if r is None else r.name
        gaps, worst_hi = [], np.inf
        for budget in BUDGETS:
            b = base["budgets"].get(str(budget))
            if b is None:
                continue
            if r is not None:
                allowed = _allowed(p, budget, 0)
                fixed = _best_fixed_vector(p, allowed)
                picks = _apply_rule(r, p, params[r.name], budget=budget)
                if picks is None:
                    continue
                rec = _rule_record(r, p, picks, fixed, b["oracle"]["accuracy"], bool(_allowed(p, budget, r.probe_k).any()),
                                   seed)
                rec["params"] = [params[r.name][int(f)] for f in sorted(params[r.name])]
                b[name] = rec
            rec = b[name]
            gap = b["gap_recovered"] if r is None else rec["gap_recovered"]
            if gap == gap:
                gaps.append(gap)
            worst_hi = min(worst_hi, rec["ci95"][1])
        mean_gap = float(np.mean(gaps)) if gaps else None
        summary[name] = {"gap_recovered_mean": mean_gap, "never_significantly_below_best_fixed": bool(worst_hi >= 0),
                         "meets_issue_target": bool(mean_gap is not None and mean_gap >= 0.3 and worst_hi >= 0)}
    curve = base["curve"]
    lo, hi = _hull_range(curve)
    curve_rules = {}
    for r in rules:
        pts = []
        for lam in LAMBDAS:
            picks = _apply_rule(r, p, params[r.name], lam=lam)
            idx = np.arange(len(p.fold))
            extra_t, extra_f = _probe_charge(r, p, True)
            pts.append({"lambda": lam, "accuracy": float(p.label[idx, picks].mean()),
                        "flops": float((p.flops[idx, picks] + extra_f).mean()),
                        "tokens": float((p.tokens[idx, picks] + extra_t).mean())})
        curve_rules[r.name] = _curve_summary(pts, curve["fixed"], lo, hi)
    curve["rules"] = curve_rules
    by_name = {r.name: r for r in rules}

    def scores_for(rule: _Rule | None) -> Callable[[int, np.ndarray, np.ndarray], np.ndarray]:
        def fn(f: int, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            if rule is None:
                return p.pred[te]
            return _rule_scores(rule, p, None if rule.pred is None else rule.pred[te], tr, te,
                                None if rule.bins_pred is None else rule.bins_pred[te], params[rule.name][f], None, 0.0)
        return fn

    choices = [("router", None)]
    for name in ("router_shrunk", "level_rule_predicted", "level_blend"):
        if name in by_name:
            choices.append((name, by_name[name]))
    allocation = {name: _allocation(p, name, scores_for(r), seed) for name, r in choices}
    allocation["oracle_labels"] = _allocation(p, "oracle_labels", lambda f, tr, te: p.label[te], seed)
    target = {name: _target_mode(p, name, scores_for(r)) for name, r in choices}
    return {"summary": summary, "classifiers": info, "allocation": allocation, "target_mode": target}


def _with_probe_columns(t: pd.DataFrame, probe: pd.DataFrame, cf: CrossFit, k: int) -> pd.DataFrame:
    """``t`` plus the probe router's held-out predictions and the probe's cost (NaN where a problem has no probe)."""
    keys = ["policy", "prm", "problem_id", "strategy"]
    rows = probe[keys].assign(**{f"pred_probe{k}": cf.pred})
    cost = probe.drop_duplicates(["policy", "prm", "problem_id"])[
        ["policy", "prm", "problem_id", "probe_cost_tokens", "probe_cost_flops"]].rename(
        columns={"probe_cost_tokens": f"probe_cost_k{k}_tokens", "probe_cost_flops": f"probe_cost_k{k}_flops"})
    return t.merge(rows, on=keys, how="left").merge(cost, on=["policy", "prm", "problem_id"], how="left")


def _problem_features(p: _Pair, t: pd.DataFrame, cf: CrossFit) -> list[np.ndarray]:
    """Per fold, the pair's per-problem online inputs (text statistics, that fold's PCA of the embedding)."""
    from ttsopt.selector.features import TEXT_COLUMNS

    policy, prm = _pair_keys(t, p.name)
    rows = t[(t["policy"] == policy) & (t["prm"] == prm)].drop_duplicates("problem_id").set_index("problem_id")
    rows = rows.loc[p.extra["problem_ids"]]
    out = []
    for pipe in cf.pipelines:
        x = pipe.transform(rows.reset_index())
        cols = [c for c in x.columns if c in TEXT_COLUMNS or c.startswith("emb_")]
        out.append(x[cols].to_numpy(dtype=float))
    return out


def _pair_keys(t: pd.DataFrame, name: str) -> tuple[str, str]:
    for (policy, prm), _ in t.groupby(["policy", "prm"], sort=False):
        if Pair(policy, prm).name == name:
            return policy, prm
    raise KeyError(name)


def _folds_like(table: pd.DataFrame, fold_of_key: dict[str, int], n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fold lists of ``table`` that put every question in the fold it has in the main table."""
    fold = table["question_key"].map(fold_of_key)
    if fold.isna().any():
        raise ValueError("the probe table has questions the main table does not")
    fold = fold.to_numpy(dtype=int)
    return [(np.flatnonzero(fold != f), np.flatnonzero(fold == f)) for f in range(n_folds)]


def load_probe_tables(folders, ks=(1, 2, 4)) -> tuple[dict[int, pd.DataFrame], dict[int, str]]:
    """The training table with probe features per k, for the snapshots that have them; why not, per k, otherwise."""
    from .table import load_training_table

    tables, missing = {}, {}
    for k in ks:
        try:
            tables[int(k)] = load_training_table(folders, probe_k=int(k))
        except (ValueError, FileNotFoundError) as e:
            missing[int(k)] = str(e)
    return tables, missing


def evaluate(table: pd.DataFrame, settings: TrainSettings, *, progress=None,
             probe_tables: Mapping[int, pd.DataFrame] | None = None, min_problems: int = MIN_PROBLEMS,
             lopo: bool = True, lopo_calibration: int = LOPO_CALIBRATION) -> dict[str, Any]:
    """The whole cross-fitted evaluation as one JSON-able dict (``eval.json``).

    ``probe_tables`` (probe k -> the training table loaded with ``probe_k=k``) adds a router
    with probe features per k, cross-fitted on the same question folds, its probe charged to
    every budget (see :func:`_rules`). Pairs with fewer than ``min_problems`` complete problems
    train the models but are not evaluated (listed under ``skipped_pairs``). ``lopo`` adds
    the leave-one-pair-out evaluation (:func:`leave_one_pair_out`).
    """
    start = time.perf_counter()
    leaks = [c for c in ORACLE_COLUMNS if c in settings.to_dict()]
    assert not leaks
    probe_tables = dict(probe_tables or {})
    folds = fold_lists(table, settings.folds, seed=settings.seed)
    fold_of_key = {}
    for f, (_, test) in enumerate(folds):
        fold_of_key.update({k: f for k in table["question_key"].iloc[test].unique()})
    lopo_pairs = lopo_candidates(table, min_problems) if lopo else []
    total = settings.folds * (1 + len(probe_tables)) + len(lopo_pairs)
    done = [0]

    def tick(*_):
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    base = cross_fit_nested(table, settings, tick, folds=folds)
    pred, fold, fits = base.pred, base.fold, base.fits
    t = table.assign(pred=pred, fold=fold, **{f"inner_pred_{f}": base.inner_pred[f] for f in range(len(folds))},
                     **{f"inner_fold_{f}": base.inner_fold[f] for f in range(len(folds))})
    probe_fits = {}
    for k, pt in sorted(probe_tables.items()):
        pt = pt.reset_index(drop=True)
        cf = cross_fit_nested(pt, replace(settings, probe_k=k), tick,
                              folds=_folds_like(pt, fold_of_key, len(folds)))
        probe_fits[str(k)] = cf.fits
        t = _with_probe_columns(t, pt, cf, k)
    pairs_data = _pairs(t, min_problems)
    for p in pairs_data:
        p.extra["features"] = _problem_features(p, t, base)
        policy, prm = _pair_keys(t, p.name)
        for k, pt in probe_tables.items():
            per = pt[(pt["policy"] == policy) & (pt["prm"] == prm)].drop_duplicates("problem_id").set_index("problem_id")
            p.extra[f"probe_features_k{k}"] = per.reindex(p.extra["problem_ids"])[list(PROBE_FEATURES)].to_numpy(
                dtype=float)
    pairs = {p.name: evaluate_pair(p, seed=settings.seed) for p in pairs_data}
    skipped = sorted({Pair(a, b).name for a, b in t[["policy", "prm"]].drop_duplicates().itertuples(index=False)}
                     - set(pairs))
    gaps = [b["gap_recovered"] for p in pairs.values() for b in p["budgets"].values()
            if b["gap_recovered"] == b["gap_recovered"]]
    mults = [p["curve"]["compute_multiplier"] for p in pairs.values()
             if p["curve"]["compute_multiplier"] not in (None, float("inf"))]
    calib = calibration_table(t["pred"].to_numpy(), t["label"].to_numpy(), bins=10)
    report = {
        "mode": "cross-fitted", "folds": settings.folds, "settings": settings.to_dict(), "fits": fits,
        "gap_recovered": float(np.mean(gaps)) if gaps else None,
        "compute_multiplier": float(np.median(mults)) if mults else None,
        "brier": brier(t["pred"].to_numpy(), t["label"].to_numpy()),
        "calibration": calib.to_dict("records"), "pairs": pairs, "rows": len(t),
        "probe_ks": sorted(probe_tables), "probe_fits": probe_fits, "skipped_pairs": skipped,
        "min_problems": min_problems,
    }
    for k in sorted(probe_tables):
        col = t[f"pred_probe{k}"].to_numpy()
        ok = ~np.isnan(col)
        report[f"brier_probe{k}"] = brier(col[ok], t["label"].to_numpy()[ok]) if ok.any() else None
    if lopo:
        report["lopo"] = leave_one_pair_out(table, settings, calibration=lopo_calibration, min_problems=min_problems,
                                            progress=tick)
    report["seconds"] = time.perf_counter() - start
    return report


# --------------------------------------------------------------------------- leave one pair out


def lopo_candidates(table: pd.DataFrame, min_problems: int = MIN_PROBLEMS) -> list[tuple[str, str]]:
    """Pairs that can be held out: at least four pairs in the table, and this one with ``min_problems`` complete."""
    pairs = table[["policy", "prm"]].drop_duplicates()
    if len(pairs) < 4:
        return []
    out = []
    for (policy, prm), g in table.groupby(["policy", "prm"], sort=False):
        counts = g.groupby("problem_id")["strategy"].nunique()
        if (counts == counts.max()).sum() >= min_problems:
            out.append((policy, prm))
    return out


def lopo_split(table: pd.DataFrame, policy: str, prm: str, calibration: int = LOPO_CALIBRATION, *,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(training rows, test rows, calibration question keys) for holding out the pair (policy, prm).

    Training: every other pair's rows, except on the held-out pair's evaluation questions, plus
    the held-out pair's own rows on ``calibration`` of its questions (a small calibration sweep,
    drawn with ``seed`` among its complete problems); test: the held-out pair on the rest. So no
    question the held-out pair is evaluated on is seen in training, under any pair, and the only
    held-out-pair labels seen are the calibration ones.
    """
    is_pair = ((table["policy"] == policy) & (table["prm"] == prm)).to_numpy()
    if not is_pair.any():
        raise ValueError(f"no rows for pair {policy} + {prm}")
    g = table[is_pair]
    counts = g.groupby("question_key")["strategy"].nunique()
    complete = sorted(counts[counts == counts.max()].index)
    if len(complete) <= calibration:
        raise ValueError(f"{policy} + {prm}: {len(complete)} complete problems, need more than {calibration}")
    rng = np.random.default_rng(seed)
    calib = sorted(rng.choice(np.array(complete), size=calibration, replace=False).tolist())
    held = set(g["question_key"]) - set(calib)
    in_held = table["question_key"].isin(held).to_numpy()
    in_calib = table["question_key"].isin(calib).to_numpy()
    train = (~is_pair & ~in_held) | (is_pair & in_calib)
    test = is_pair & in_held & table["question_key"].isin(complete).to_numpy()
    return np.flatnonzero(train), np.flatnonzero(test), calib


def leave_one_pair_out(table: pd.DataFrame, settings: TrainSettings, *, calibration: int = LOPO_CALIBRATION,
                       min_problems: int = MIN_PROBLEMS, progress=None) -> dict[str, Any]:
    """Per pair that can be held out (:func:`lopo_candidates`): train (tuned) on :func:`lopo_split`'s
    training rows, route the held-out problems, and compare with the best fixed strategy chosen on
    the calibration problems and with the oracle, at every budget."""
    out: dict[str, Any] = {"calibration_problems": calibration, "pairs": {}}
    for policy, prm in lopo_candidates(table, min_problems):
        train, test, calib = lopo_split(table, policy, prm, calibration, seed=settings.seed)
        fit = tune_and_fit(table.iloc[train].reset_index(drop=True), settings)
        cal_rows = table.iloc[train]
        cal_rows = cal_rows[(cal_rows["policy"] == policy) & (cal_rows["prm"] == prm)]
        te = table.iloc[test].assign(pred=predict(fit, table.iloc[test]), fold=1)
        both = pd.concat([cal_rows.assign(pred=np.nan, fold=0), te], ignore_index=True)
        (p,) = _pairs(both.assign(pred=both["pred"].fillna(0.0)))
        cal, held = np.flatnonzero(p.fold == 0), np.flatnonzero(p.fold == 1)
        budgets, gaps = {}, []
        for budget in BUDGETS:
            allowed = p.n <= budget
            if not allowed.any():
                continue
            cost = np.where(allowed, p.tokens[cal].mean(axis=0), np.inf)
            pick = _argmax_cheapest(np.where(allowed, p.pred[held], -np.inf), np.broadcast_to(cost, (len(held), len(cost))))
            router = p.label[held, pick]
            s = _fixed_choice(p.label, p.tokens, cal, allowed)
            fixed = p.label[held, s]
            oracle = np.where(allowed, p.label[held], -np.inf).max(axis=1)
            ci = paired_bootstrap(router, fixed, seed=settings.seed)
            gap = gap_recovered(float(router.mean()), float(fixed.mean()), float(oracle.mean()))
            if gap == gap:
                gaps.append(gap)
            budgets[str(budget)] = {"router": {"accuracy": float(router.mean()), "ci95": [ci["lo"], ci["hi"]],
                                               "flops": float(p.flops[held, pick].mean())},
                                    "best_fixed": {"accuracy": float(fixed.mean()), "strategy": p.strategies[s]},
                                    "oracle": {"accuracy": float(oracle.mean())}, "gap_recovered": gap}
        out["pairs"][p.name] = {"train_rows": int(len(train)), "test_problems": int(len(held)),
                                "calibration_keys": calib, "budgets": budgets,
                                "gap_recovered_mean": float(np.mean(gaps)) if gaps else None,
                                "brier": brier(p.pred[held].ravel(), p.label[held].ravel())}
        if progress is not None:
            progress()
    return out


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


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _markdown_core(report: dict[str, Any]) -> str:
    """The evaluation as markdown tables: one row per pair × budget, then the compute curves' summary."""
    lines = [f"Evaluation ({report['mode']}, {report['folds']} folds by question key, {report['rows']} rows): "
             f"gap recovered {_fmt(report['gap_recovered'], '.3f')} (mean over pairs and budgets), "
             f"Brier {report['brier']:.4f}",
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



_RULE_LABELS = {"router": "router", "router_shrunk": "shrunk", "router_margin": "margin", "router_topk": "top-K",
                "level_rule_oracle": "level rule (oracle level)", "level_rule_predicted": "level rule (predicted level)",
                "level_blend": "level blend", "per_bin_predicted_text": "per-bin (text-predicted bins)"}


def _label(name: str) -> str:
    if name.startswith("router_probe"):
        return f"router + probe k={name[len('router_probe'):]}"
    if name.startswith("per_bin_predicted_probe"):
        return f"per-bin (probe k={name[len('per_bin_predicted_probe'):]} bins)"
    return _RULE_LABELS.get(name, name)


def _cell(rec: dict[str, Any] | None, gap: float | None = None) -> str:
    if rec is None:
        return ""
    gap = rec.get("gap_recovered") if gap is None else gap
    lo, hi = rec["ci95"]
    mark = "↓" if hi < 0 else ("↑" if lo > 0 else "")
    return f"{rec['accuracy']:.3f}{mark} ({'' if gap != gap else f'{gap:+.2f}'})"


def markdown(report: dict[str, Any]) -> str:
    """The evaluation as markdown tables: the original two, then every rule, allocation, target mode and LOPO."""
    lines = [_markdown_core(report).rstrip("\n")]
    pairs = {n: p for n, p in report["pairs"].items() if "summary" in p}
    if report.get("skipped_pairs"):
        lines += ["", f"Not evaluated (fewer than {report.get('min_problems')} complete problems; still in training): "
                  + ", ".join(report["skipped_pairs"])]
    for name, pair in pairs.items():
        rules = list(pair["summary"])
        lines += ["", f"### {name}: every rule at each budget N (accuracy, gap recovered; ↓/↑ = 95% CI of the "
                  "difference with the best fixed strategy entirely below/above 0)", "",
                  "| N | best fixed | oracle | " + " | ".join(_label(r) for r in rules) + " |",
                  "|---|---|---|" + "---|" * len(rules)]
        for n, b in pair["budgets"].items():
            cells = [_cell(b.get(r), b["gap_recovered"] if r == "router" else None) for r in rules]
            lines.append(f"| {n} | {b['best_fixed']['accuracy']:.3f} | {b['oracle']['accuracy']:.3f} | "
                         + " | ".join(cells) + " |")
        c = pair["curve"]
        lines += ["", "| rule | mean gap recovered (N = 1–16) | never significantly below best fixed | issue target "
                  "(≥ 0.30 and never below) | AIQ | compute × at best-fixed accuracy | knob per fold |",
                  "|---|---|---|---|---|---|---|"]
        for r in rules:
            sm = pair["summary"][r]
            cur = {"aiq": c["aiq"]["router"], "compute_multiplier_at_best_fixed_accuracy":
                   c["compute_multiplier_at_best_fixed_accuracy"]} if r == "router" else c["rules"].get(r, {})
            m = cur.get("compute_multiplier_at_best_fixed_accuracy")
            knob = next((b[r].get("params") for b in pair["budgets"].values() if r in b and "params" in b[r]), None)
            g = sm["gap_recovered_mean"]
            lines.append(f"| {_label(r)} | {'' if g is None else f'{g:+.2f}'} | "
                         f"{'yes' if sm['never_significantly_below_best_fixed'] else 'no'} | "
                         f"{'yes' if sm['meets_issue_target'] else 'no'} | "
                         f"{cur.get('aiq', float('nan')):.3f} | {'not reached' if m is None else f'{m:.2f}'} | "
                         f"{'' if knob is None or len(set(knob)) == 1 and knob[0] == 0.0 else knob} |")
        lines.append(f"| (AIQ: fixed {c['aiq']['fixed']:.3f}, per-level rule {c['aiq']['per_level_rule']:.3f}, "
                     f"oracle {c['aiq']['oracle']:.3f}) | | | | | | |")
        if pair.get("classifiers"):
            lines += ["", "Online classifiers (cross-fitted accuracy): " + ", ".join(
                f"{k.replace('_', ' ')} {v:.2f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
                for k, v in pair["classifiers"].items())]
        alloc = pair.get("allocation", {})
        if alloc:
            names = list(alloc)
            lines += ["", f"Batch allocation ({name}): one token budget B per problem × the held-out problems of a fold, "
                      "split greedily on predicted accuracies, vs the best fixed strategy (training folds) that fits B "
                      "(accuracy, realized tokens/problem; Δ vs uniform [95% CI])", "",
                      "| B tokens/problem | uniform | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
            for i, row in enumerate(alloc[names[0]]):
                cells = []
                for nm in names:
                    a = alloc[nm][i]
                    cells.append(f"{a['allocated']['accuracy']:.3f} ({a['allocated']['tokens']:.0f}) "
                                 f"Δ {a['diff']:+.3f} [{a['ci95'][0]:+.3f}, {a['ci95'][1]:+.3f}]")
                lines.append(f"| {row['tokens_per_problem']:.0f} | {row['uniform']['accuracy']:.3f} "
                             f"({row['uniform']['tokens']:.0f}) | " + " | ".join(cells) + " |")
        tm = pair.get("target_mode", {})
        if tm:
            names = list(tm)
            lines += ["", f"Target-accuracy mode ({name}): achieved accuracy, tokens/problem, share flagged unreachable",
                      "", "| target | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for i, row in enumerate(tm[names[0]]):
                lines.append(f"| {row['target']:.1f} | " + " | ".join(
                    f"{tm[nm][i]['accuracy']:.3f}, {tm[nm][i]['tokens']:.0f} tok, {tm[nm][i]['unreachable']:.0%} unreachable"
                    for nm in names) + " |")
    lopo = report.get("lopo")
    if lopo and lopo.get("pairs"):
        lines += ["", f"### Leave one pair out (train on the other pairs minus the held-out pair's evaluation questions, "
                  f"plus {lopo['calibration_problems']} calibration problems of the held-out pair; best fixed chosen on "
                  "those; accuracy router / best fixed / oracle, gap)", "",
                  "| held-out pair | test problems | " + " | ".join(f"N={n}" for n in BUDGETS) + " | mean gap |",
                  "|---|---|" + "---|" * (len(BUDGETS) + 1)]
        for name, lp in lopo["pairs"].items():
            cells = []
            for n in BUDGETS:
                b = lp["budgets"].get(str(n))
                cells.append("" if b is None else f"{b['router']['accuracy']:.3f} / {b['best_fixed']['accuracy']:.3f} / "
                             f"{b['oracle']['accuracy']:.3f} ({b['gap_recovered']:+.2f})")
            g = lp["gap_recovered_mean"]
            lines.append(f"| {name} | {lp['test_problems']} | " + " | ".join(cells) + f" | {'' if g is None else f'{g:+.2f}'} |")
    return "\n".join(lines) + "\n"


__all__ = ["BUDGETS", "CrossFit", "LAMBDAS", "cross_fit", "cross_fit_nested", "evaluate", "evaluate_as_is",
           "evaluate_pair", "leave_one_pair_out", "load_probe_tables", "lopo_candidates", "lopo_split", "markdown"]


def _main(argv: list[str] | None = None) -> None:
    """``python3 -m ttsopt.train.evaluate --data DIR... --trials T --probe-k 1 2 4 --json J --markdown M``:
    the cross-fitted evaluation straight from snapshot folders (no router artifact needed; ``ttsopt
    evaluate`` does the same from a router's settings)."""
    import argparse
    import json
    import os
    import platform

    from .table import load_training_table

    ap = argparse.ArgumentParser(description="cross-fitted selector evaluation from snapshot folders")
    ap.add_argument("--data", nargs="+", required=True)
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-k", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--min-problems", type=int, default=MIN_PROBLEMS)
    ap.add_argument("--no-lopo", action="store_true")
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--markdown", dest="markdown_out")
    args = ap.parse_args(argv)
    table = load_training_table(args.data)
    probes, missing = load_probe_tables(args.data, args.probe_k)
    settings = TrainSettings(trials=args.trials, folds=args.folds, seed=args.seed)
    start = time.perf_counter()
    report = evaluate(table, settings, probe_tables=probes, min_problems=args.min_problems, lopo=not args.no_lopo,
                      progress=lambda d, n: print(f"fit {d}/{n} ({time.perf_counter() - start:.0f} s)", flush=True))
    report["probe_missing"] = {str(k): v for k, v in missing.items()}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    report["machine"] = {"cpu": cpu, "cores": os.cpu_count(), "loadavg_end": os.getloadavg()}
    report["data"] = [str(d) for d in args.data]
    text = markdown(report)
    if args.json_out:
        with open(args.json_out, "w") as fh:
            fh.write(json.dumps(report, indent=1, default=float) + "\n")
    if args.markdown_out:
        with open(args.markdown_out, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    _main()
