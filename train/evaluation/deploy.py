"""Which decision to deploy for a pair, chosen the way it is judged: nested, on problems the choice never saw.

Why: the evaluation shows several ways to decide per problem — the LightGBM argmax (``router``), the
best fixed strategy, the per-level rule, the verify-first cascade with one plan (``cascade``) or one
plan per predicted level (``level_cascade``) — and which one is best differs by pair and budget (on
``arith-router`` the plain router loses at small N, the level cascade wins on SmolLM2 + calc). Deploying
one of them by assumption is the mistake this module removes: ``ttsopt train`` deploys the mode that
wins here, and ``ttsopt evaluate`` reports that choice as its own row (``deployed``).

How, per budget N:
- every candidate is a function of a pair's matrices that makes its choices fold by fold on the
  training problems and applies them to the test fold, so it yields one held-out outcome per
  problem (accuracy, tokens, FLOPs);
- for each outer fold ``f`` the candidates are scored on fold ``f``'s *training* problems by the
  inner cross-fitting inside it (the inner folds and the router's inner out-of-fold predictions
  that :func:`~.crossfit.cross_fit_nested` keeps, and a level model refitted per inner fold), the
  best is chosen there, and its outer held-out outcome on fold ``f``'s problems is what the
  deployed default scores. So neither the models nor the choice of the default saw a reported
  problem;
- the mode written into the artifact is the one the whole cross-fitted comparison ranks first (the
  nested figure is the honest estimate of deploying by this rule).

Strategies without a router prediction (the rest-of-budget and adaptive options) are open to every
candidate but the router, which can only choose what it predicts.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..fit.cascade import NO_LEVEL, _Cascade, _choose, _choose_per_bin, _matrices
from ..fit.folds import fold_means, outer_folds
from ..fit.pairs import BUDGETS, _argmax_cheapest, _fixed_choice, _Pair
from .cascade import _apply, _by_level, cross_fitted_levels
from .metrics import paired_bootstrap
from .rules import _allowed, _best_fixed_vector

#: The candidates, in the order ties are broken (the simpler decision first).
MODES = ("best_fixed", "per_level", "cascade", "level_cascade", "router")

Outcome = tuple[np.ndarray, np.ndarray, np.ndarray]  # per problem: accuracy, tokens, FLOPs


def _no_gate_matrices(p: _Pair) -> _Cascade:
    """Cascade matrices whose only usable options run a strategy alone (for pairs without CoT gates)."""
    zeros = np.zeros(len(p.fold))
    return _matrices(p, zeros, zeros, zeros, zeros) if "cot" in p.strategies else None


def candidates(p: _Pair, c: _Cascade | None, budget: int, *, gated: bool) -> dict[str, Callable[[], Outcome]]:
    """The modes available for ``p`` at ``budget``, each a thunk returning its held-out outcome per problem."""
    out: dict[str, Callable[[], Outcome]] = {}
    idx = np.arange(len(p.fold))
    fits = p.n <= budget
    predicted = fits & ~np.isnan(p.pred).all(axis=0)
    if predicted.any():
        def router() -> Outcome:
            cost = np.broadcast_to(np.where(predicted, p.tokens.mean(axis=0), np.inf), p.pred.shape)
            pick = _argmax_cheapest(np.where(predicted, np.nan_to_num(p.pred, nan=-np.inf), -np.inf), cost)
            return p.label[idx, pick], p.tokens[idx, pick], p.flops[idx, pick]
        out["router"] = router
    if c is None:
        if fits.any():
            def fixed() -> Outcome:  # the choice made on each fold's training problems, as _best_fixed_vector
                picks = np.zeros(len(idx), dtype=int)
                for f, tr, te in outer_folds(p.fold):
                    picks[te] = _fixed_choice(p.label, p.tokens, tr, fits)
                return p.label[idx, picks], p.tokens[idx, picks], p.flops[idx, picks]
            out["best_fixed"] = fixed
        return out
    alone = np.zeros_like(c.n, dtype=bool)
    alone[-1] = c.n[-1] <= budget  # the last τ runs the strategy without the CoT first
    if alone.any():
        out["best_fixed"] = lambda: _apply(c, p, lambda tr: _choose(c, tr, alone))[:3]
        if p.extra.get("level_pred") is not None:
            out["per_level"] = lambda: _by_level(c, p, alone)[:3]
    if gated and (c.n <= budget).any():
        out["cascade"] = lambda: _apply(c, p, lambda tr: _choose(c, tr, c.n <= budget))[:3]
        if p.extra.get("level_pred") is not None:
            out["level_cascade"] = lambda: _by_level(c, p, c.n <= budget)[:3]
    return out


def _inner_pair(p: _Pair, f: int) -> _Pair | None:
    """Fold ``f``'s training problems as a pair of their own: the inner folds, the router's inner
    out-of-fold predictions, and levels predicted by a level model refitted per inner fold."""
    fold = p.extra.get(f"inner_fold_{f}")
    pred = p.extra.get(f"inner_pred_{f}")
    if fold is None or pred is None:
        return None
    rows = np.flatnonzero(p.fold != f)
    fold = np.asarray(fold)[rows].astype(int)
    if (fold < 0).any() or len(np.unique(fold)) < 2:
        return None
    pred = np.asarray(pred, dtype=float)
    if pred.shape[1] < len(p.strategies):  # the options beyond the catalogue have no prediction
        pred = np.hstack([pred, np.full((pred.shape[0], len(p.strategies) - pred.shape[1]), np.nan)])
    extra: dict[str, Any] = {"problem_ids": [p.extra["problem_ids"][i] for i in rows]}
    feats = p.extra.get("features")
    q = replace(p, label=p.label[rows], pred=pred[rows], tokens=p.tokens[rows], flops=p.flops[rows], fold=fold,
                bins=p.bins[rows], levels=p.levels[rows], extra=extra)
    if feats is not None and p.extra.get("level_pred") is not None:
        x = np.asarray(feats[int(f)])[rows]  # outer fold f's feature pipeline, fitted on these problems only
        q.extra["features"] = {int(g): x for g in np.unique(fold)}
        q.extra["level_pred"] = cross_fitted_levels(q)
    return q


def _rank(scores: dict[str, tuple[float, float]]) -> str:
    """The best mean accuracy; ties (1e-9) to the lower FLOPs, then to the simpler mode."""
    best = max(a for a, _ in scores.values())
    tied = [m for m in MODES if m in scores and scores[m][0] >= best - 1e-9]
    return min(tied, key=lambda m: (scores[m][1], MODES.index(m)))


def deployed_default(p: _Pair, gate: tuple[np.ndarray, ...] | None, *, seed: int = 0,
                     options: _Pair | None = None) -> dict[str, Any]:
    """Per budget N: the nested choice's held-out accuracy and compute, its CI against the best fixed
    strategy (chosen on training folds over ``p``'s catalogue), which mode each fold chose, and the mode
    to deploy (``mode``: the one ranked first by the whole cross-fitted comparison).

    ``options`` is ``p`` with more strategies (rest-of-budget, adaptive; :func:`~ttsopt.train.fit.cascade.with_rest`)."""
    wide = options if options is not None else p
    c = _matrices(wide, *gate) if gate is not None and "cot" in wide.strategies else _no_gate_matrices(wide)
    inner: dict[int, tuple[_Pair, _Cascade | None]] = {}
    for f, rows, _ in outer_folds(wide.fold):
        q = _inner_pair(wide, f)
        if q is not None:
            qc = _matrices(q, *(v[rows] for v in gate)) if gate is not None and "cot" in q.strategies \
                else _no_gate_matrices(q)
            inner[f] = (q, qc)
    gated = gate is not None
    return _nested(wide, c, inner, BUDGETS, lambda q, qc, b: candidates(q, qc, b, gated=gated),
                   lambda b: _best_fixed_vector(p, _allowed(p, b, 0)), lambda b: _plans_on_all(wide, c, b), seed)


def _nested(wide: _Pair, outer_c: Any, inner: Mapping[int, tuple[_Pair, Any]], budgets: Sequence[Any],
            cands_of: Callable[[_Pair, Any, Any], dict[str, Callable[[], Outcome]]],
            fixed_of: Callable[[Any], np.ndarray], plans_of: Callable[[Any], dict[str, Any]],
            seed: int) -> dict[str, Any]:
    """The nested choice at every budget: each outer fold's mode ranked on its training problems' inner
    folds (``inner[f]``: that side as a pair of its own), its outcome scored on the fold's held-out
    problems; the mode to deploy is the one the whole cross-fitted comparison ranks first."""
    out: dict[str, Any] = {}
    idx = np.arange(len(wide.fold))
    for budget in budgets:
        cands = cands_of(wide, outer_c, budget)
        if not cands:
            continue
        outer = {m: fn() for m, fn in cands.items()}
        whole = {m: (float(o[0].mean()), float(o[2].mean())) for m, o in outer.items()}
        acc, tok, fl = np.zeros(len(idx)), np.zeros(len(idx)), np.zeros(len(idx))
        chosen = []
        for f, _, test in outer_folds(wide.fold):
            if f in inner:
                q, qc = inner[f]
                scores = {m: (float(o[0].mean()), float(o[2].mean()))
                          for m, o in ((m, fn()) for m, fn in cands_of(q, qc, budget).items()) if m in outer}
            else:
                scores = {}
            mode = _rank(scores) if scores else "best_fixed" if "best_fixed" in outer else next(iter(outer))
            chosen.append(mode)
            acc[test], tok[test], fl[test] = (v[test] for v in outer[mode])
        fixed = fixed_of(budget)
        ci = paired_bootstrap(acc, fixed, seed=seed)
        mode = _rank(whole)
        out[f"{budget:g}" if isinstance(budget, float) else str(budget)] = {
            "accuracy": float(acc.mean()), "tokens": float(tok.mean()), "flops": float(fl.mean()),
            "ci95": [ci["lo"], ci["hi"]], "diff_vs_best_fixed": ci["mean"], "fold_choices": chosen,
            "best_fixed_accuracy": float(fixed.mean()),
            "mode": mode, "candidates": {m: {"accuracy": a, "flops": fl_} for m, (a, fl_) in whole.items()},
            "by_level": _by_level_summary(wide.levels, (acc, tok, fl), outer[mode], fixed),
            **plans_of(budget),
        }
    return out


#: Compute budgets per problem (tokens, FLOPs) the deployed choice is made at: geometric from the
#: cheapest strategy to the dearest (by their mean cost), this many points.
COMPUTE_POINTS = 6
#: The compute kinds, and the modes open there (the cascades are fitted per N and stay there).
COMPUTE_KINDS = ("tokens", "flops")


def _cost(p: _Pair, kind: str) -> np.ndarray:
    """The (problems, strategies) matrix a compute budget of ``kind`` caps."""
    return p.tokens if kind == "tokens" else p.flops


def compute_grid(p: _Pair, kind: str, points: int = COMPUTE_POINTS) -> list[float]:
    """Budgets at which every fold's training side has a strategy that fits (its cheapest), up to the
    dearest strategy's mean cost, rounded to 3 significant digits (they are keys of the manifest)."""
    cost = _cost(p, kind)
    means = [cost[tr].mean(axis=0) for _, tr, _ in outer_folds(p.fold)]
    lo, hi = max(m.min() for m in means), max(m.max() for m in means)
    return sorted({float(f"{b:.3g}") for b in np.geomspace(lo, hi, points)} | {float(f"{hi:.3g}")})


def compute_candidates(p: _Pair, budget: float, kind: str) -> dict[str, Callable[[], Outcome]]:
    """The modes open at a compute budget per problem: the router's argmax among the strategies whose
    expected cost (the training folds' mean) fits, the best fixed strategy that fits, and per level
    (levels predicted from the text) the best strategy whose cost on that level's training problems fits."""
    cost = _cost(p, kind)
    idx = np.arange(len(p.fold))
    known = fold_means(p.fold, cost)
    tol = budget * (1 + 1e-9)
    out: dict[str, Callable[[], Outcome]] = {}

    def outcome(picks: np.ndarray) -> Outcome:
        return p.label[idx, picks], p.tokens[idx, picks], p.flops[idx, picks]

    predicted = ~np.isnan(p.pred).all(axis=0)
    ok = (known <= tol) & predicted[None, :]
    if ok.any(axis=1).all():
        out["router"] = lambda: outcome(_argmax_cheapest(np.where(ok, np.nan_to_num(p.pred, nan=-np.inf), -np.inf),
                                                         np.where(ok, known, np.inf)))
    if not all((cost[tr].mean(axis=0) <= tol).any() for _, tr, _ in outer_folds(p.fold)):
        return out

    def fixed() -> Outcome:
        picks = np.zeros(len(idx), dtype=int)
        for _, tr, te in outer_folds(p.fold):
            picks[te] = _fixed_choice(p.label, cost, tr, cost[tr].mean(axis=0) <= tol)
        return outcome(picks)
    out["best_fixed"] = fixed
    level_pred = p.extra.get("level_pred")
    if level_pred is not None:
        def per_level() -> Outcome:
            picks = np.zeros(len(idx), dtype=int)
            for _, tr, te in outer_folds(p.fold):
                everyone = _fixed_choice(p.label, cost, tr, cost[tr].mean(axis=0) <= tol)
                for lv in np.unique(level_pred[te]):
                    rows = tr[p.levels[tr] == lv]
                    fits = cost[rows].mean(axis=0) <= tol if len(rows) else None
                    s = _fixed_choice(p.label, cost, rows, fits) if fits is not None and fits.any() else everyone
                    picks[te[level_pred[te] == lv]] = s
            return outcome(picks)
        out["per_level"] = per_level
    return out


def _compute_plans(p: _Pair, budget: float, kind: str) -> dict[str, Any]:
    """What the fixed and per-level modes run online at a compute budget, chosen on every problem."""
    cost = _cost(p, kind)
    idx = np.arange(len(p.fold))
    tol = budget * (1 + 1e-9)
    fits = cost.mean(axis=0) <= tol
    if not fits.any():
        return {}
    out: dict[str, Any] = {"strategy": p.strategies[_fixed_choice(p.label, cost, idx, fits)]}
    levels = sorted(set(map(str, p.levels)))
    if len(levels) >= 2 and not set(levels) & NO_LEVEL:
        out["levels"] = {}
        for lv in levels:
            rows = idx[p.levels.astype(str) == lv]
            ok = cost[rows].mean(axis=0) <= tol
            out["levels"][lv] = p.strategies[_fixed_choice(p.label, cost, rows, ok)] if ok.any() else out["strategy"]
    return out


def compute_summary(pair_report: Mapping[str, Any]) -> dict[str, Any] | None:
    """The deployed default on the compute axis (its FLOPs-budget points, held out and nested): its AIQ
    beside the per-level rule's on the same FLOPs range (point estimates: no CI), and at the accuracy of
    the best fixed strategy with the most compute (``curve.best_fixed``), how many times less compute it
    needs (the cheapest deployed point that reaches it; None where none does)."""
    from .metrics import hull_area

    pts = (pair_report.get("deployed_compute") or {}).get("flops") or {}
    curve = pair_report.get("curve") or {}
    if not pts or not curve.get("per_level_rule"):
        return None
    flops = np.array([b["flops"] for b in pts.values()])
    acc = np.array([b["accuracy"] for b in pts.values()])
    lv = curve["per_level_rule"]
    lo, hi = max(flops.min(), min(q["flops"] for q in lv)), min(flops.max(), max(q["flops"] for q in lv))
    out: dict[str, Any] = {"flops_range": [float(lo), float(hi)]}
    if hi > lo > 0:
        out["aiq"] = hull_area(flops, acc, lo=lo, hi=hi)
        out["per_level_rule_aiq"] = hull_area([q["flops"] for q in lv], [q["accuracy"] for q in lv], lo=lo, hi=hi)
    best = curve.get("best_fixed")
    if best:
        reach = flops[acc >= best["accuracy"] - 1e-12]
        out["best_fixed"] = best
        out["compute_multiplier_at_best_fixed_accuracy"] = float(best["flops"] / reach.min()) if len(reach) else None
    return out


def deployed_compute(p: _Pair, *, seed: int = 0, options: _Pair | None = None,
                     kinds: Sequence[str] = COMPUTE_KINDS) -> dict[str, dict[str, Any]]:
    """The deployed default per kind of compute budget (tokens, FLOPs per problem): the nested choice
    among the router's argmax, the best fixed strategy and the per-level rule at each point of
    :func:`compute_grid`, scored as :func:`deployed_default` scores the budgets N, against the best fixed
    strategy over ``p``'s catalogue that fits (chosen on the training folds)."""
    wide = options if options is not None else p
    inner = {f: (q, None) for f, _, _ in outer_folds(wide.fold) if (q := _inner_pair(wide, f)) is not None}
    out = {}
    for kind in kinds:
        def fixed_of(b: float, kind: str = kind) -> np.ndarray:
            got = compute_candidates(p, b, kind).get("best_fixed")
            return got()[0] if got is not None else np.zeros(len(p.fold))
        out[kind] = _nested(wide, None, inner, compute_grid(p, kind), lambda q, _c, b, kind=kind: compute_candidates(q, b, kind),
                            fixed_of, lambda b, kind=kind: _compute_plans(wide, b, kind), seed)
    return out


def _by_level_summary(levels: np.ndarray, nested: tuple[np.ndarray, ...], deployed: tuple[np.ndarray, ...],
                      fixed: np.ndarray) -> dict[str, dict[str, float]]:
    """Per level: the nested choice's held-out outcome, and the held-out outcome of the mode that is
    deployed (``mode_*``): what a run on new questions of that level should land near. (The deployed
    mode was ranked on these same held-out problems, so ``mode_accuracy`` leans optimistic; the
    nested figures do not.)"""
    out = {}
    for lv in sorted(set(map(str, levels))):
        rows = np.array([str(v) == lv for v in levels])
        out[lv] = {"problems": int(rows.sum()), "accuracy": float(nested[0][rows].mean()),
                   "tokens": float(nested[1][rows].mean()), "flops": float(nested[2][rows].mean()),
                   "mode_accuracy": float(deployed[0][rows].mean()), "mode_tokens": float(deployed[1][rows].mean()),
                   "mode_flops": float(deployed[2][rows].mean()), "best_fixed_accuracy": float(fixed[rows].mean())}
    return out


def _plans_on_all(p: _Pair, c: _Cascade | None, budget: int) -> dict[str, Any]:
    """What the fixed and per-level modes run online, chosen on every training problem: the best
    strategy alone within N (``strategy``), and per level (``levels``; a level with too few problems
    takes ``strategy``). The cascade modes' plans are the cascade's own (``manifest["cascade"]``)."""
    idx = np.arange(len(p.fold))
    fits = p.n <= budget
    if not fits.any():
        return {}
    if c is None:
        return {"strategy": p.strategies[_fixed_choice(p.label, p.tokens, idx, fits)]}
    alone = np.zeros_like(c.n, dtype=bool)
    alone[-1] = fits
    out: dict[str, Any] = {"strategy": p.strategies[_choose(c, idx, alone)[1]]}
    levels = sorted(set(map(str, p.levels)))
    if len(levels) >= 2 and not set(levels) & NO_LEVEL:
        which = np.array([levels.index(str(v)) for v in p.levels])
        out["levels"] = {lv: p.strategies[s] for lv, (_, _, s) in zip(levels, _choose_per_bin(c, idx, which, len(levels), alone))}
    return out


def manifest_record(report: dict[str, Any]) -> dict[str, Any]:
    """``evaluate``'s report -> ``manifest["deployed"]``: per pair and budget N, the mode to run and what
    it runs, with the evidence (nested held-out accuracy, compute, CI against the best fixed strategy)."""
    out: dict[str, Any] = {}
    for name, pair in report.get("pairs", {}).items():
        budgets = {}
        for n, b in (pair.get("deployed") or {}).items():
            budgets[n] = _record(b)
        kinds = {kind: {b: _record(r) for b, r in by.items()} for kind, by in (pair.get("deployed_compute") or {}).items()
                 if by}
        if budgets or kinds:
            out[name] = {"format": 1, "kind": "generations", "budgets": budgets, "compute": kinds,
                         "chosen_by": "nested cross-fitting: each fold's mode chosen on its training problems' inner folds"}
    return out


def _record(b: Mapping[str, Any]) -> dict[str, Any]:
    """One budget's entry of ``manifest["deployed"]``: the mode, what it runs, the evidence."""
    rec = {k: b[k] for k in ("mode", "strategy", "levels") if k in b}
    rec["evidence"] = {"held_out_accuracy": b["accuracy"], "flops": b["flops"], "tokens": b["tokens"],
                       "ci95_vs_best_fixed": b["ci95"], "best_fixed_accuracy": b["best_fixed_accuracy"],
                       "fold_choices": b["fold_choices"], "by_level": b.get("by_level")}
    return rec


__all__ = ["COMPUTE_KINDS", "COMPUTE_POINTS", "MODES", "candidates", "compute_candidates", "compute_grid",
           "compute_summary", "deployed_compute", "deployed_default", "manifest_record"]

