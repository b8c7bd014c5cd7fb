"""Batch allocation (one total budget split across a batch) and target-accuracy mode, cross-fitted.

Both take a ``score_of_fold(f, train_rows, test_rows)`` that returns the held-out problems'
predicted accuracies per strategy from what fold ``f``'s training problems give, so any rule's
scores can be allocated or targeted the same way.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ttsopt.selector.decide import allocate, for_target

from ..fit.folds import outer_folds
from ..fit.pairs import _fixed_choice, _Pair
from .metrics import paired_bootstrap

TARGETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Per-problem token budgets of the batch-allocation evaluation (geometric, cheapest to dearest strategy).
ALLOCATION_POINTS = 7


def _allocation(p: _Pair, name: str, score_of_fold: Callable[[int, np.ndarray, np.ndarray], np.ndarray],
                seed: int, per_problem_budgets: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """One token budget per held-out fold (B tokens per problem × its problems), split by
    :func:`allocate` (greedy) on the predicted accuracies, against the same total spent uniformly
    (the best fixed strategy on the training folds whose expected tokens fit B)."""
    idx = np.arange(len(p.fold))
    train_cost = {f: p.tokens[tr].mean(axis=0) for f, tr, _ in outer_folds(p.fold)}
    lo = max(c.min() for c in train_cost.values())
    hi = max(c.max() for c in train_cost.values())
    out = []
    grid = np.geomspace(lo, hi, ALLOCATION_POINTS) if per_problem_budgets is None else per_problem_budgets
    for per_problem in grid:
        alloc, uni = np.zeros(len(idx), dtype=int), np.zeros(len(idx), dtype=int)
        expected_alloc = np.zeros(len(idx))
        for f, tr, te in outer_folds(p.fold):
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
        for f, tr, te in outer_folds(p.fold):
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


__all__ = ["ALLOCATION_POINTS", "TARGETS"]
