"""The per-level rule made continuous and learned from text: predicted difficulty → accuracy per strategy.

The per-level rule (per oracle level, the strategy with the best training accuracy) is strong
because a level says how hard a problem is, and the best strategy changes with that. Here the
difficulty is a number predicted from online features only:

1. a regressor (random forest) maps a problem's online inputs (text statistics, the fold's PCA
   of the embedding) to the pool's Pass@1 — an oracle column, used as the *training target*
   of training problems only, never as an input, never read for a test problem;
2. per strategy, accuracy is fitted as a smooth function of that predicted difficulty on the
   training problems, using their *out-of-fold* predicted difficulty (so the curve sees
   predictions of the same quality as a test problem gets): isotonic (non-decreasing: an
   easier problem is never predicted to be solved less often) or binned means over quantile
   bins of predicted difficulty; the expected tokens per strategy are binned the same way (word
   problems cost more);
3. per problem, the argmax of acc_s(d̂) within the budget, or of acc_s(d̂) − λ·tokens_s(d̂).

A variant blends in LightGBM's prediction: (1 − α)·acc_s(d̂) + α·pred. The curve method and α
are chosen per outer fold on the inner folds of its training problems (mean accuracy over the
budgets), as for the other rules in :mod:`.rules`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..fit.folds import outer_folds
from ..fit.pairs import BUDGETS, _Pair
from .rule import _Rule

#: Curve methods tried per fold: isotonic in predicted difficulty, or means over q quantile bins of it.
#: ``"level"`` (means per level predicted from the text: the per-level rule with a learned level) may
#: be passed to :func:`fit_difficulty_rule` too; offering it to the knob search measured no better on
#: arith-embedded / arith-router (the inner folds are too small to choose among five methods reliably).
METHODS = ("isotonic", "bins:3", "bins:5", "bins:8")
#: Blend weights on LightGBM's prediction for the blended variant (0: the curves alone).
BLEND_ALPHAS = (0.0, 0.25, 0.5, 0.75)
#: Quantile bins of the token curves when the accuracy curve is isotonic.
TOKEN_BINS = 5
#: Inner folds made when the pair carries none (small tables, tests).
DEFAULT_INNER = 3
#: Trees of the difficulty regressor and the level classifier (random forests: small data, no tuning).
N_TREES = 200


def _bin_index(edges: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, d, side="right")


def _binned(d_fit: np.ndarray, values: np.ndarray, d_rows: np.ndarray, q: int) -> np.ndarray:
    """Per row, the mean of ``values`` (fit rows × strategies) over the fit rows in the row's quantile bin
    of predicted difficulty (q bins on ``d_fit``; the overall mean where a bin is empty)."""
    edges = np.unique(np.quantile(d_fit, np.linspace(0, 1, q + 1)[1:-1])) if q > 1 else np.array([])
    return _by_group(_bin_index(edges, d_fit), values, _bin_index(edges, d_rows))


def _isotonic(d_fit: np.ndarray, values: np.ndarray, d_rows: np.ndarray) -> np.ndarray:
    """Per strategy, a non-decreasing fit of ``values`` in predicted difficulty (Pass@1: higher is easier)."""
    from sklearn.isotonic import IsotonicRegression

    out = np.empty((len(d_rows), values.shape[1]))
    for s in range(values.shape[1]):
        iso = IsotonicRegression(increasing=True, out_of_bounds="clip", y_min=0.0, y_max=1.0)
        out[:, s] = iso.fit(d_fit, values[:, s]).predict(d_rows)
    return out


def _by_group(g_fit: np.ndarray, values: np.ndarray, g_rows: np.ndarray) -> np.ndarray:
    """Per row, the mean of ``values`` over the fit rows of the row's group (the overall mean where none)."""
    overall = values.mean(axis=0)
    out = np.empty((len(g_rows), values.shape[1]))
    for b in np.unique(g_rows):
        sel = g_fit == b
        out[g_rows == b] = values[sel].mean(axis=0) if sel.any() else overall
    return out


def strategy_curves(d_fit: np.ndarray, label: np.ndarray, tokens: np.ndarray, d_rows: np.ndarray,
                    method: str, level_fit: np.ndarray | None = None,
                    level_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(accuracy, expected tokens) per (row, strategy) at predicted difficulties ``d_rows``, from the fit
    problems' predicted difficulty ``d_fit`` and their labels and tokens (fit rows × strategies);
    ``method="level"`` groups by the predicted levels ``level_fit`` / ``level_rows`` instead."""
    if method == "level":
        if level_fit is None or level_rows is None:
            raise ValueError("method 'level' needs predicted levels for the fit problems and the rows")
        return _by_group(level_fit, label, level_rows), _by_group(level_fit, tokens, level_rows)
    if method == "isotonic":
        return _isotonic(d_fit, label, d_rows), _binned(d_fit, tokens, d_rows, TOKEN_BINS)
    if method.startswith("bins:"):
        q = int(method.split(":", 1)[1])
        return _binned(d_fit, label, d_rows, q), _binned(d_fit, tokens, d_rows, q)
    raise ValueError(f"unknown curve method {method!r} (known: {', '.join(METHODS)})")


def _regressor(seed: int):
    from sklearn.ensemble import RandomForestRegressor

    return RandomForestRegressor(n_estimators=N_TREES, min_samples_leaf=2, random_state=seed, n_jobs=1)


def predicted_difficulty(x: np.ndarray, target: np.ndarray, tr: np.ndarray, te: np.ndarray, groups: np.ndarray,
                         seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(out-of-fold predicted difficulty of the training problems ``tr``, predicted difficulty of ``te``).

    ``target`` is read on ``tr`` only. ``groups`` (one per ``tr`` problem) are the inner folds: each
    training problem is predicted by a regressor fitted on the other inner folds; ``te`` by one fitted
    on all of ``tr``.
    """
    x = np.nan_to_num(np.asarray(x, dtype=float))
    y = np.asarray(target, dtype=float)[tr]
    oof = np.empty(len(tr))
    for g in np.unique(groups):
        fit, val = groups != g, groups == g
        oof[val] = _regressor(seed).fit(x[tr][fit], y[fit]).predict(x[tr][val])
    return oof, _regressor(seed).fit(x[tr], y).predict(x[te])


def predicted_level(x: np.ndarray, levels: np.ndarray, tr: np.ndarray, te: np.ndarray, groups: np.ndarray,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`predicted_difficulty` for the level (a classifier; ``levels`` read on ``tr`` only)."""
    from sklearn.ensemble import RandomForestClassifier

    x = np.nan_to_num(np.asarray(x, dtype=float))
    y = np.asarray(levels).astype(str)[tr]

    def fit_predict(fit: np.ndarray, rows: np.ndarray) -> np.ndarray:
        if len(np.unique(y[fit])) == 1:
            return np.full(len(rows), y[fit][0])
        clf = RandomForestClassifier(n_estimators=N_TREES, random_state=seed, n_jobs=1).fit(x[tr][fit], y[fit])
        return clf.predict(rows).astype(str)

    oof = np.empty(len(tr), dtype=object)
    for g in np.unique(groups):
        oof[groups == g] = fit_predict(groups != g, x[tr][groups == g])
    return oof.astype(str), fit_predict(np.ones(len(tr), dtype=bool), x[te])


@dataclass
class DifficultyFit:
    """What the rule decided per outer fold: held-out scores and costs, the knobs, and how good d̂ was."""

    scores: np.ndarray  # (problems, strategies): held-out score of each problem (its own outer fold's model)
    cost: np.ndarray  # (problems, strategies): expected tokens at the problem's predicted difficulty
    difficulty: np.ndarray  # (problems,) held-out predicted difficulty
    knobs: dict[int, dict[str, Any]]


def _inner_groups(p: _Pair, f: int, tr: np.ndarray) -> np.ndarray:
    key = f"inner_fold_{f}"
    if key in p.extra:
        g = np.asarray(p.extra[key])[tr]
        if (g >= 0).all() and len(np.unique(g)) > 1:
            return g
    return np.arange(len(tr)) % min(DEFAULT_INNER, len(tr))


def fit_difficulty_rule(p: _Pair, features: list[np.ndarray], target: np.ndarray, *, alphas=(0.0,),
                        methods=METHODS, seed: int = 0) -> DifficultyFit:
    """Cross-fitted scores of the continuous-difficulty rule on every problem of ``p``.

    ``features[f]`` are the per-problem online inputs under outer fold ``f``'s pipeline; ``target``
    the per-problem Pass@1 (read on each fold's training problems only). ``alphas`` > 0 blend in
    LightGBM's held-out prediction ``p.pred`` (inner predictions ``p.extra['inner_pred_<f>']`` when
    choosing α); the method and α maximise the inner folds' accuracy summed over the budgets.
    """
    idx = np.arange(len(p.fold))
    scores, cost = np.zeros_like(p.label, dtype=float), np.zeros_like(p.tokens, dtype=float)
    difficulty = np.zeros(len(idx))
    knobs: dict[int, dict[str, Any]] = {}
    budgets = [b for b in BUDGETS if (p.n <= b).any()]
    for f, tr, te in outer_folds(p.fold):
        groups = _inner_groups(p, f, tr)
        d_oof, d_te = predicted_difficulty(features[f], target, tr, te, groups, seed)
        lv_oof = lv_te = None
        if "level" in methods:
            lv_oof, lv_te = predicted_level(features[f], p.levels, tr, te, groups, seed)
        inner_pred = p.extra.get(f"inner_pred_{f}")
        usable = [a for a in alphas if a == 0.0 or inner_pred is not None]
        best, best_val = (methods[0], 0.0), -np.inf
        for method in methods:
            totals = dict.fromkeys(usable, 0.0)
            for g in np.unique(groups):  # curves fitted on the other inner folds, scored on this one
                fit, val = groups != g, groups == g
                acc, _ = strategy_curves(d_oof[fit], p.label[tr[fit]], p.tokens[tr[fit]], d_oof[val], method,
                                         None if lv_oof is None else lv_oof[fit], None if lv_oof is None else lv_oof[val])
                cheap = p.tokens[tr[fit]].mean(axis=0)
                for alpha in usable:
                    score = acc if alpha == 0.0 else (1 - alpha) * acc + alpha * inner_pred[tr[val]]
                    for b in budgets:
                        pick = _argmax_cheapest_allowed(score, cheap, p.n <= b)
                        totals[alpha] += p.label[tr[val], pick].sum()
            for alpha in usable:
                if totals[alpha] > best_val + 1e-9:
                    best, best_val = (method, alpha), totals[alpha]
        method, alpha = best
        acc, tok = strategy_curves(d_oof, p.label[tr], p.tokens[tr], d_te, method, lv_oof, lv_te)
        scores[te] = acc if alpha == 0.0 else (1 - alpha) * acc + alpha * p.pred[te]
        cost[te], difficulty[te] = tok, d_te
        knobs[f] = {"method": method, "alpha": float(alpha),
                    "oof_corr": _corr(d_oof, np.asarray(target, dtype=float)[tr])}
    return DifficultyFit(scores, cost, difficulty, knobs)


def _argmax_cheapest_allowed(score: np.ndarray, cost: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    masked = np.where(allowed, score, -np.inf)
    tied = masked >= masked.max(axis=1, keepdims=True) - 1e-12
    return np.where(tied, np.broadcast_to(cost, score.shape), np.inf).argmin(axis=1)


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def difficulty_quality(fit: DifficultyFit, target: np.ndarray, levels: np.ndarray) -> dict[str, Any]:
    """How well the held-out d̂ tracks Pass@1: overall, and within each level (what the level cannot say)."""
    target = np.asarray(target, dtype=float)
    within = [_corr(fit.difficulty[levels == lv], target[levels == lv]) for lv in np.unique(levels)]
    within = [w for w in within if w is not None]
    return {"corr": _corr(fit.difficulty, target),
            "mae": float(np.abs(fit.difficulty - target).mean()),
            "mean_within_level_corr": float(np.mean(within)) if within else None,
            "knobs": {str(f): k for f, k in sorted(fit.knobs.items())}}




def difficulty_rules(p: _Pair, features: list[np.ndarray], seed: int = 0) -> tuple[list[Any], dict[str, Any]]:
    """The two rules for :func:`ttsopt.train.evaluation.rules._rules`: the curves alone, and blended with LightGBM.

    Both are ``pred`` rules over the cross-fitted scores, with each problem's expected tokens at
    its predicted difficulty as the compute-axis cost. The fits' quality and knobs go to
    ``p.extra['difficulty_rule']`` (reported per pair).
    """
    target = np.asarray(p.extra["pass_at_1"], dtype=float)
    plain = fit_difficulty_rule(p, features, target, seed=seed)
    blend = fit_difficulty_rule(p, features, target, alphas=BLEND_ALPHAS, seed=seed)
    p.extra["difficulty_rule"] = {"difficulty_curve": difficulty_quality(plain, target, p.levels),
                                  "difficulty_curve_blend": difficulty_quality(blend, target, p.levels)}
    q = p.extra["difficulty_rule"]["difficulty_curve"]
    info = {"difficulty_regression_corr": q["corr"], "difficulty_within_level_corr": q["mean_within_level_corr"]}
    return [_Rule("difficulty_curve", "pred", pred=plain.scores, cost=plain.cost),
            _Rule("difficulty_curve_blend", "pred", pred=blend.scores, cost=blend.cost)], info


__all__ = ["BLEND_ALPHAS", "DifficultyFit", "METHODS", "difficulty_quality", "difficulty_rules",
           "fit_difficulty_rule", "predicted_difficulty", "strategy_curves"]
