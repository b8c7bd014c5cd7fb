"""Accuracy against compute: the router and the rules traced over a price λ, AIQ and the compute multiplier.

The router is traced over a penalty λ on expected tokens (argmax of predicted accuracy −
λ·tokens), every fixed strategy is a point, and the per-level rule of docs/results.md (per
level, the strategy maximising accuracy − λ·tokens on the training folds; the level is an
oracle label, so this rule is a bound the router should reach from the text) is traced the
same way. Areas under the non-decreasing hull (RouterBench's AIQ) are taken on one FLOPs
range per pair, so AIQs in one pair compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ttsopt.selector.decide import penalized

from ..fit.folds import fold_means, outer_folds
from ..fit.pairs import _argmax_cheapest, _Pair
from .metrics import compute_multiplier, hull_area

LAMBDAS = (0.0, 1e-5, 3e-5, 1e-4, 2e-4, 3e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2)


def _curves(p: _Pair) -> dict[str, Any]:
    idx = np.arange(len(p.fold))
    router_pts, level_pts = [], []
    level_problems = []  # per λ, each problem's (outcome, FLOPs) under the per-level rule: for AIQ CIs
    cost = fold_means(p.fold, p.tokens)  # expected tokens per strategy from the training folds: known before routing
    for lam in LAMBDAS:
        pick = penalized(p.pred, cost, lam)
        router_pts.append({"lambda": lam, "accuracy": float(p.label[idx, pick].mean()),
                           "flops": float(p.flops[idx, pick].mean())})
        chosen = np.zeros(len(idx), dtype=int)
        for f, train, test in outer_folds(p.fold):
            for lv in np.unique(p.levels[test]):
                tr = train[p.levels[train] == lv]
                tr = tr if len(tr) else train
                score = p.label[tr].mean(axis=0) - lam * p.tokens[tr].mean(axis=0)
                chosen[test[p.levels[test] == lv]] = int(np.argmax(score))
        level_pts.append({"lambda": lam, "accuracy": float(p.label[idx, chosen].mean()),
                          "flops": float(p.flops[idx, chosen].mean())})
        level_problems.append((p.label[idx, chosen], p.flops[idx, chosen]))
    # the per-problem points of the per-level rule and of the fixed strategies, for the paired AIQ
    # bootstrap of rules evaluated later (train/fit/cascade.py); not part of the JSON report
    p.extra["curve_problems"] = {
        "per_level_rule": (np.stack([a for a, _ in level_problems]), np.stack([f for _, f in level_problems])),
        "fixed": (p.label.T, p.flops.T)}
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


__all__ = ["LAMBDAS"]
