"""The verify-first cascade evaluated held out: each variant's choice (one plan per budget, per bin
of the router's predicted CoT accuracy, per predicted level, or escalation by the router) made on the
training folds and applied to the test fold, against the best fixed strategy and on the compute axis;
and a saved router's fitted plans scored as they are (:func:`cascade_as_is`).

The plans themselves, and the matrices both sides read, are fitted in :mod:`ttsopt.train.fit.cascade`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ttsopt.selector.decide import bin_of
from ttsopt.selector.plan import default_mode

from ..fit.cascade import (
    CASCADE_LAMBDAS,
    NO_LEVEL,
    _Cascade,
    _choose,
    _choose_per_bin,
    _matrices,
    _pick,
    bin_edges,
    level_plan_is_default,
)
from ..fit.folds import outer_folds
from ..fit.pairs import BUDGETS, _argmax_cheapest, _Pair
from .curves import _curve_summary, _hull_range
from .metrics import aiq_difference, gap_recovered, paired_bootstrap
from .rules import _allowed, _best_fixed_vector


def _apply(c: _Cascade, p: _Pair, choose) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict], np.ndarray]:
    """Cross-fitted: each fold's (τ, S) from ``choose(train_rows)``, applied to that fold's problems."""
    idx = np.arange(len(p.fold))
    acc, tok, fl, esc = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx), dtype=bool)
    picks = []
    for f, train, test in outer_folds(p.fold):
        t, s = choose(train)
        acc[test], tok[test], fl[test] = c.acc[test, t, s], c.tokens[test, t, s], c.flops[test, t, s]
        esc[test] = ~c.passed[test, t]
        picks.append(_pick(c, p, t, s))
    return acc, tok, fl, picks, esc


def _binned(c: _Cascade, p: _Pair, allowed: np.ndarray, lam: float = 0.0):
    """The cascade with (τ, S) chosen per bin of the router's predicted CoT accuracy.

    Why: the text tells how hard a problem is across levels (the router's prediction carries it),
    the check tells it within a level; a plan per predicted-difficulty bin uses both (one τ and S
    for all problems uses only the check). The bins are cut on the training folds' *inner*
    out-of-fold predictions (``inner_pred_f``: models that never saw the test fold), the choice
    per bin is made on the training problems in it, and a test problem's bin comes from its
    held-out prediction: what the router can compute online before the CoT runs.
    """
    idx = np.arange(len(p.fold))
    cot = p.strategies.index("cot")
    acc, tok, fl, esc = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx), dtype=bool)
    picks = []
    for f, train, test in outer_folds(p.fold):
        inner = p.extra[f"inner_pred_{int(f)}"][train, cot]
        edges = bin_edges(inner)
        k = len(edges) + 1
        choices = _choose_per_bin(c, train, bin_of(inner, edges), k, allowed, lam)
        b_test = bin_of(p.pred[test, cot], edges)
        for b, (_, t, s) in enumerate(choices):
            te = test[b_test == b]
            acc[te], tok[te], fl[te] = c.acc[te, t, s], c.tokens[te, t, s], c.flops[te, t, s]
            esc[te] = ~c.passed[te, t]
            picks.append({**_pick(c, p, t, s), "bin": b})
    return acc, tok, fl, picks, esc


def cross_fitted_levels(p: _Pair, seed: int = 0) -> np.ndarray | None:
    """Each problem's level predicted from its text by :func:`~ttsopt.selector.levels.fit_levels`
    fitted on the other folds' problems (their levels are training labels), with fold ``f``'s own
    feature pipeline (``p.extra["features"][f]``); None without features or levels."""
    from ttsopt.selector.levels import fit_levels

    feats = p.extra.get("features")
    if feats is None or len(set(p.levels)) < 2 or set(p.levels) & NO_LEVEL:
        return None
    idx = np.arange(len(p.fold))
    out = np.empty(len(idx), dtype=object)
    for f, train, test in outer_folds(p.fold):
        x = np.nan_to_num(np.asarray(feats[int(f)], dtype=float))
        model = fit_levels(x[train], p.levels[train], [f"x{j}" for j in range(x.shape[1])], seed=seed)
        out[test] = model.predict(x[test])[0]
    return out.astype(str)


def _by_level(c: _Cascade, p: _Pair, allowed: np.ndarray, lam: float = 0.0):
    """The cascade with (τ, S) chosen per level: on the training problems of each level (their level
    is a training label), applied to each test problem by its level predicted from its text
    (``p.extra["level_pred"]``: :func:`cross_fitted_levels`); a predicted level the training folds
    lack takes the choice on all of them."""
    idx = np.arange(len(p.fold))
    pred = p.extra["level_pred"]
    acc, tok, fl, esc = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx), dtype=bool)
    picks = []
    for f, train, test in outer_folds(p.fold):
        levels = sorted(set(p.levels[train]))
        bins = np.array([levels.index(v) for v in p.levels[train]])
        choices = dict(zip(levels, _choose_per_bin(c, train, bins, len(levels), allowed, lam)))
        everyone = (train, *_choose(c, train, allowed, lam))
        for level in sorted(set(pred[test])):
            _, t, s = choices.get(level, everyone)
            te = test[pred[test] == level]
            acc[te], tok[te], fl[te] = c.acc[te, t, s], c.tokens[te, t, s], c.flops[te, t, s]
            esc[te] = ~c.passed[te, t]
            picks.append({**_pick(c, p, t, s), "level": level})
    return acc, tok, fl, picks, esc


def _routed(c: _Cascade, p: _Pair, budget: int, lam: float = 0.0):
    """The cascade with the router deciding the escalation: τ as the plain cascade chooses it among
    the gated options on the training folds; for a test problem whose check fails, the strategy with
    the best held-out prediction − λ·(its expected escalation tokens) among those that fit N - 1,
    run only if that beats keeping the CoT (its training accuracy where the check failed)."""
    idx = np.arange(len(p.fold))
    cot = p.strategies.index("cot")
    acc, tok, fl = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx))
    esc = np.zeros(len(idx), dtype=bool)
    picks = []
    gated = c.n <= budget
    gated[-1] = False
    fits = p.n + 1 <= budget
    fits[cot] = False  # the greedy CoT again is the same answer
    for f, train, test in outer_folds(p.fold):
        if not gated.any() or not fits.any():  # no CoT-then-search fits: the plain cascade's choice
            allowed = c.n <= budget
            t, s = _choose(c, train, allowed, lam)
            acc[test], tok[test], fl[test] = c.acc[test, t, s], c.tokens[test, t, s], c.flops[test, t, s]
            esc[test] = ~c.passed[test, t]
            picks.append(_pick(c, p, t, s))
            continue
        t, _ = _choose(c, train, gated, lam)
        failed_train = train[~c.passed[train, t]]
        keep = float(p.label[failed_train, cot].mean()) if len(failed_train) else 0.0
        cost = (c.tokens[train, t, :] - c.first_tokens[train, None])[~c.passed[train, t]].mean(axis=0) \
            if len(failed_train) else p.tokens[train].mean(axis=0)
        pred = np.nan_to_num(p.pred[test], nan=-np.inf)  # rest-of-budget options: no prediction, never routed to
        score = np.where(fits[None, :], pred - lam * cost[None, :], -np.inf)
        choice = _argmax_cheapest(score, np.broadcast_to(cost, score.shape))
        go = ~c.passed[test, t] & (score.max(axis=1) > keep + 1e-12)
        acc[test] = np.where(go, p.label[test, choice], p.label[test, cot])
        tok[test] = np.where(go, c.tokens[test, t, choice], c.first_tokens[test])
        fl[test] = np.where(go, c.flops[test, t, choice], c.first_flops[test])
        esc[test] = go
        picks.append({"tau": float(c.taus[t]), "escalate": "router", "keep_value": keep})
    return acc, tok, fl, picks, esc


#: The offline variants that ``Router.solve(..., cascade=True)`` can run (``plain`` is online ``"fitted"``).
DEFAULT_VARIANTS = ("level", "binned", "plain")


def default_variant_name(report: dict[str, Any] | None) -> str | None:
    """A pair's cascade report (``report["cascade"]``) -> the name of the variant ``cascade=True`` runs
    online, by the same rule the router applies (:func:`~ttsopt.selector.plan.default_mode`): the level
    plan where every level has :data:`MIN_LEVEL` problems, else the binned plan, else the one plan per budget."""
    if not report:
        return None
    mode = default_mode(levels="level" in report, bins="binned" in report,
                        level_preferred=bool(report.get("levels", {}).get("default", False)))
    name = "plain" if mode == "fitted" else mode
    return name if name in report else None


def default_variant(report: dict[str, Any] | None) -> dict[str, Any] | None:
    """A pair's cascade report (``report["cascade"]``) -> the variant ``cascade=True`` runs online."""
    name = default_variant_name(report)
    return None if name is None else report[name]


def evaluate_cascade(p: _Pair, gate: np.ndarray, prm_tokens: np.ndarray, prm_flops: np.ndarray,
                     prompt: np.ndarray, *, base: dict[str, Any], seed: int = 0,
                     options: _Pair | None = None) -> dict[str, Any]:
    """The cascade per budget N (beside ``base``'s best fixed and oracle) and on the compute axis,
    with its escalation chosen per fold (``plain``) and per problem by the router (``router``).
    ``options`` is ``p`` with more escalation strategies (:func:`with_rest`); the baselines stay ``p``'s."""
    if "cot" not in p.strategies:
        raise ValueError(f"{p.name}: the cascade needs the CoT strategy in the catalogue")
    wide = options if options is not None else p
    base_p, p = p, wide
    c = _matrices(p, gate, prm_tokens, prm_flops, prompt)
    everything = np.ones_like(c.n, dtype=bool)
    variants = {
        "plain": (lambda budget: _apply(c, p, lambda tr: _choose(c, tr, c.n <= budget)),
                  lambda lam: _apply(c, p, lambda tr: _choose(c, tr, everything, lam))),
        "router": (lambda budget: _routed(c, p, budget), lambda lam: _routed(c, p, 10 ** 9, lam)),
    }
    if all(f"inner_pred_{f}" in p.extra for f, _, _ in outer_folds(p.fold)):
        variants["binned"] = (lambda budget: _binned(c, p, c.n <= budget), lambda lam: _binned(c, p, everything, lam))
    if p.extra.get("level_pred") is not None:
        variants["level"] = (lambda budget: _by_level(c, p, c.n <= budget),
                             lambda lam: _by_level(c, p, everything, lam))
    out = {name: _variant_report(base_p, base, at_budget, at_price, seed, wide=p)
           for name, (at_budget, at_price) in variants.items()}
    cot = p.label[:, p.strategies.index("cot")]
    out["gate"] = {"by_score": {f"{v:g}": {"problems": int((gate == v).sum()),
                                           "cot_accuracy": float(cot[gate == v].mean())}
                                for v in np.unique(gate)[:20]}}
    if p.extra.get("level_pred") is not None:
        values, counts = np.unique(p.levels, return_counts=True)
        out["levels"] = {"held_out_accuracy": float((p.extra["level_pred"] == p.levels).mean()),
                         "problems": {str(v): int(n) for v, n in zip(values, counts)},
                         "default": level_plan_is_default(p.levels)}
    return out


def _variant_report(p: _Pair, base: dict[str, Any], at_budget, at_price, seed: int,
                    wide: _Pair | None = None) -> dict[str, Any]:
    """One cascade variant against ``p``'s best fixed strategy per N; with ``wide`` (``p`` plus the
    rest-of-budget options) also the best fixed strategy over those (``best_fixed_with_rest``), to
    show that the baseline does not gain from them."""
    budgets, gaps, worst_hi = {}, [], np.inf
    for budget in BUDGETS:
        b = base["budgets"].get(str(budget))
        if b is None:
            continue
        acc, tok, fl, picks, esc = at_budget(budget)
        fixed = _best_fixed_vector(p, _allowed(p, budget, 0))
        ci = paired_bootstrap(acc, fixed, seed=seed)
        gap = gap_recovered(float(acc.mean()), float(fixed.mean()), b["oracle"]["accuracy"])
        budgets[str(budget)] = {"accuracy": float(acc.mean()), "tokens": float(tok.mean()), "flops": float(fl.mean()),
                                "ci95": [ci["lo"], ci["hi"]], "diff_vs_best_fixed": ci["mean"], "gap_recovered": gap,
                                "escalated": float(esc.mean()), "choices": picks}
        if wide is not None and wide is not p:
            budgets[str(budget)]["best_fixed_with_rest"] = float(
                _best_fixed_vector(wide, _allowed(wide, budget, 0)).mean())
        if gap == gap:
            gaps.append(gap)
        worst_hi = min(worst_hi, ci["hi"])
    points, per_problem = [], []
    for lam in CASCADE_LAMBDAS:
        acc, tok, fl, picks, esc = at_price(lam)
        points.append({"lambda": lam, "accuracy": float(acc.mean()), "flops": float(fl.mean()),
                       "tokens": float(tok.mean()), "escalated": float(esc.mean()), "choices": picks})
        per_problem.append((acc, fl))
    mean_gap = float(np.mean(gaps)) if gaps else None
    lo, hi = _hull_range(base["curve"])
    curve = _curve_summary(points, base["curve"]["fixed"], lo, hi)
    mine = (np.stack([a for a, _ in per_problem]), np.stack([f for _, f in per_problem]))
    curve["aiq_minus"] = {name: aiq_difference(mine, other, lo=lo, hi=hi, seed=seed)
                          for name, other in (p.extra.get("curve_problems") or {}).items()}
    return {
        "budgets": budgets,
        "summary": {"gap_recovered_mean": mean_gap, "never_significantly_below_best_fixed": bool(worst_hi >= 0),
                    "meets_issue_target": bool(mean_gap is not None and mean_gap >= 0.3 and worst_hi >= 0)},
        "curve": curve,
    }


def cascade_as_is(p: _Pair, entry: dict[str, Any], gate: np.ndarray, prm_tokens: np.ndarray, prm_flops: np.ndarray,
                  prompt: np.ndarray, budget: int,
                  levels: np.ndarray | None = None) -> dict[str, dict[str, Any]] | None:
    """A saved router's fitted cascade (``manifest["cascade"][pair]``) on data it never saw, at budget N:
    per problem outcome, tokens, FLOPs and whether it escalated, for the ``fitted``, ``binned`` (by the
    router's prediction of the CoT's accuracy, ``p.pred``), ``level`` (by ``levels``, each problem's level
    as the artifact's level model predicts it) and ``router`` modes (as :meth:`Router.solve_many` runs
    them). None when no plan is fitted at or below N."""
    fitted = sorted(int(k) for k in entry.get("budgets", {}) if int(k) <= budget)
    if not fitted or "cot" not in p.strategies:
        return None
    plan = entry["budgets"][str(fitted[-1])]
    cot = p.strategies.index("cot")
    first_t = p.tokens[:, cot] + prm_tokens
    first_f = p.flops[:, cot] + prm_flops
    esc_t = first_t[:, None] + p.tokens - prompt[:, None]
    esc_f = first_f[:, None] + p.flops - 2.0 * p.policy_params * prompt[:, None]
    rows = np.arange(len(gate))
    out = {}

    def run(plans: Sequence[dict], which: np.ndarray):
        """Each problem under plan ``plans[which[i]]`` (τ, S); None when a plan's S is not in the data."""
        if any(q["escalate"] not in p.strategies for q in plans):
            return None
        s = np.array([p.strategies.index(q["escalate"]) for q in plans])[which]
        tau = np.array([np.inf if q["tau"] is None else q["tau"] for q in plans])[which]
        gated = np.array([q["tau"] is not None for q in plans])[which]
        kept = gated & (gate >= tau)
        return (np.where(kept, p.label[:, cot], p.label[rows, s]),
                np.where(kept, first_t, np.where(gated, esc_t[rows, s], p.tokens[rows, s])),
                np.where(kept, first_f, np.where(gated, esc_f[rows, s], p.flops[rows, s])), ~kept)

    for mode, result in (("fitted", run([plan], np.zeros(len(rows), dtype=int))),
                         ("binned", run(entry["bins"]["budgets"][str(fitted[-1])],
                                        bin_of(p.pred[:, cot], entry["bins"]["edges"]))
                          if str(fitted[-1]) in entry.get("bins", {}).get("budgets", {}) else None)):
        if result is not None:
            out[mode] = result
    level_plans = entry.get("levels", {}).get("budgets", {}).get(str(fitted[-1]))
    if level_plans is not None and levels is not None:
        names = sorted(level_plans)  # a level without a plan takes the budget's, as online
        which = np.array([names.index(v) if v in level_plans else len(names) for v in map(str, levels)])
        result = run([*(level_plans[k] for k in names), plan], which)
        if result is not None:
            out["level"] = result
    tau = plan.get("router_tau")
    fits = p.n <= (budget - 1 if tau is not None else budget)
    if tau is not None:
        fits[cot] = False  # after the greedy CoT, never the greedy CoT again
    if fits.any():
        cost = np.where(fits, p.tokens.mean(axis=0), np.inf)
        score = np.where(fits, np.nan_to_num(p.pred, nan=-np.inf), -np.inf)  # rest-of-budget options: no prediction
        choice = _argmax_cheapest(score, np.broadcast_to(cost, score.shape))
        if tau is None:
            out["router"] = (p.label[rows, choice], p.tokens[rows, choice], p.flops[rows, choice],
                             np.ones(len(gate), dtype=bool))
        else:
            go = (gate < tau) & (score.max(axis=1) > plan["keep_value"])
            out["router"] = (np.where(go, p.label[rows, choice], p.label[:, cot]),
                             np.where(go, esc_t[rows, choice], first_t), np.where(go, esc_f[rows, choice], first_f), go)
    return out



__all__ = ["DEFAULT_VARIANTS", "cascade_as_is", "cross_fitted_levels", "default_variant", "default_variant_name",
           "evaluate_cascade"]
