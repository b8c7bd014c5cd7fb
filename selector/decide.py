"""Decision rules: from predicted accuracies and expected compute to one strategy per problem.

The same rules serve the online router (one problem at a time, so they must stay cheap: plain
numpy, no per-call allocation beyond a few arrays) and the offline evaluation (thousands of
problems at once, so everything is vectorised over problems).

Conventions shared by every rule:

- ``pred`` is ``(n_problems, n_strategies)``, finite: the model's predicted accuracy.
- ``cost`` is ``(n_strategies,)`` (the same expected compute for every problem) or
  ``(n_problems, n_strategies)``; non-negative, in any unit (tokens, FLOPs). ``+inf`` marks a
  strategy unavailable for that problem (it is never chosen); NaN is refused.
- Ties in predicted accuracy within :data:`TIE` go to the cheaper strategy, then to the lower
  index, so that a decision never pays for a difference the model cannot resolve, and so that
  it is deterministic.
- A problem for which no strategy qualifies gets index ``-1``. Beware: ``-1`` is a valid numpy
  index (the last column); check ``idx >= 0`` before indexing with it.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: Predicted accuracies closer than this are a tie (broken towards the cheaper strategy).
TIE = 1e-12

#: Index returned for a problem where no strategy qualifies (nothing fits, nothing available).
NONE = -1


# --------------------------------------------------------------------------- validation


def _check(pred: ArrayLike, cost: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``pred`` as a float matrix and ``cost`` broadcast to its shape, or a ValueError saying why not."""
    pred = np.asarray(pred, dtype=float)
    if pred.ndim != 2:
        raise ValueError(f"pred must be (n_problems, n_strategies), got shape {pred.shape} "
                         "(for one problem pass pred[None, :])")
    if pred.shape[1] == 0:
        raise ValueError("pred has no strategies (0 columns)")
    if not np.isfinite(pred).all():
        raise ValueError("pred has NaN or infinite values; mark unavailable strategies with cost=inf instead")
    cost = np.asarray(cost, dtype=float)
    if cost.ndim == 1 and cost.shape[0] == pred.shape[1]:
        cost = np.broadcast_to(cost, pred.shape)
    elif cost.shape != pred.shape:
        raise ValueError(f"cost must be (n_strategies,) = ({pred.shape[1]},) or {pred.shape} like pred, "
                         f"got shape {cost.shape}")
    if np.isnan(cost).any():
        raise ValueError("cost has NaN values (use +inf for an unavailable strategy)")
    if (cost < 0).any():
        raise ValueError("cost must be non-negative")
    return pred, cost


def _per_problem(value: ArrayLike, n_problems: int, name: str) -> NDArray[np.float64]:
    """A scalar or ``(n_problems,)`` argument as a ``(n_problems, 1)`` column; NaN refused."""
    value = np.asarray(value, dtype=float)
    if value.ndim == 0:
        value = np.full(n_problems, float(value))
    if value.shape != (n_problems,):
        raise ValueError(f"{name} must be a scalar or ({n_problems},), got shape {value.shape}")
    if np.isnan(value).any():
        raise ValueError(f"{name} has NaN values")
    return value[:, None]


# --------------------------------------------------------------------------- the core choice


def _best_cheapest(score: NDArray, cost: NDArray, allowed: NDArray) -> NDArray[np.intp]:
    """Per row, among ``allowed``, the highest score; ties (TIE) to the lower cost, then the lower index.

    Rows with nothing allowed get :data:`NONE`.
    """
    masked = np.where(allowed, score, -np.inf)
    best = masked.max(axis=1, keepdims=True)
    tied = allowed & (masked >= best - TIE)
    idx = np.where(tied, cost, np.inf).argmin(axis=1)  # argmin takes the first: the lower index
    return np.where(allowed.any(axis=1), idx, NONE)


def fits(pred: ArrayLike, cost: ArrayLike, budget: ArrayLike, *, extra_cost: ArrayLike = 0.0) -> NDArray[np.bool_]:
    """Which strategies fit the budget: ``cost + extra_cost <= budget``, per problem and strategy.

    The comparison is exact (no tolerance), so a strategy that fits never overspends. ``budget``
    and ``extra_cost`` are scalars or per-problem arrays; ``extra_cost`` is compute already spent
    on the problem (a probe), charged to the same budget. Unavailable (``inf``-cost) strategies
    never fit, even under an infinite budget.
    """
    pred, cost = _check(pred, cost)
    budget = _per_problem(budget, pred.shape[0], "budget")
    extra = _per_problem(extra_cost, pred.shape[0], "extra_cost")
    if (extra < 0).any():
        raise ValueError("extra_cost must be non-negative")
    return np.isfinite(cost) & (cost + extra <= budget)


def within_budget(pred: ArrayLike, cost: ArrayLike, budget: ArrayLike, *,
                  extra_cost: ArrayLike = 0.0) -> NDArray[np.intp]:
    """Per problem, the strategy with the highest predicted accuracy among those that fit the budget.

    This is the router's rule under a hard per-problem budget. A strategy fits when
    ``cost + extra_cost <= budget`` (see :func:`fits`, which returns that mask). Ties within
    :data:`TIE` go to the cheaper strategy, then the lower index.

    Returns an int array ``(n_problems,)``; a problem where nothing fits gets ``-1`` rather than
    an exception, because in a batch one over-spent probe should not sink the others: callers
    fall back (e.g. to the cheapest strategy, or answer with the probe) where ``idx < 0``.
    """
    pred, cost = _check(pred, cost)
    return _best_cheapest(pred, cost, fits(pred, cost, budget, extra_cost=extra_cost))


def for_target(pred: ArrayLike, cost: ArrayLike, target: ArrayLike) -> tuple[NDArray[np.intp], NDArray[np.bool_]]:
    """Per problem, the cheapest strategy whose predicted accuracy reaches ``target``.

    This is the "accuracy first" mode: pay only for what the target needs. Among equally cheap
    reaching strategies the higher prediction wins, then the lower index. Where no strategy
    reaches the target, the best available one is returned (highest prediction, ties to the
    cheaper) and ``reached`` is False, so the caller knows the target is out of reach rather than
    getting nothing. A prediction within :data:`TIE` below the target counts as reaching it.

    ``target`` is a scalar or per-problem array. Returns ``(idx, reached)``; ``idx`` is ``-1``
    only for a problem with no available strategy (every cost ``inf``).
    """
    pred, cost = _check(pred, cost)
    target = _per_problem(target, pred.shape[0], "target")
    available = np.isfinite(cost)
    reach = available & (pred >= target - TIE)
    reached = reach.any(axis=1)
    cheapest_cost = np.where(reach, cost, np.inf).min(axis=1, keepdims=True)
    cheapest = _best_cheapest(pred, cost, reach & (cost == cheapest_cost))
    best = _best_cheapest(pred, cost, available)
    return np.where(reached, cheapest, best), reached


def bin_of(scores: ArrayLike, edges: ArrayLike) -> NDArray[np.intp]:
    """The bin of each score among sorted ``edges`` (a score on an edge goes to the bin above): the
    binned cascade's bin offline (train/fit/cascade.py) and online (the Router) alike."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(scores, dtype=float), side="right")


def penalized(pred: ArrayLike, cost: ArrayLike, lam: float) -> NDArray[np.intp]:
    """Per problem, the argmax of ``pred - lam * cost``; ties (TIE) to the cheaper strategy.

    ``lam`` (>= 0, accuracy per unit of cost) is the price of compute: sweeping it from 0 upwards
    traces the router's accuracy-against-compute curve, from "best regardless of cost" to
    "cheapest". ``-1`` only for a problem with no available strategy.
    """
    pred, cost = _check(pred, cost)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be finite and >= 0, got {lam}")
    available = np.isfinite(cost)
    score = pred - lam * np.where(available, cost, 0.0)  # 0 * inf would be NaN
    return _best_cheapest(score, cost, available)


# --------------------------------------------------------------------------- the frontier


def frontier(cost: ArrayLike, value: ArrayLike) -> NDArray[np.intp]:
    """Indices of the upper concave hull of the points ``(cost, value)``, by increasing cost.

    First the Pareto frontier: sorted by cost, a point is kept only if its value beats every
    cheaper point by more than :data:`TIE` (at equal cost the higher value is the candidate).
    Then its upper concave hull: a point on or below the segment joining its neighbours is
    dropped, because mixing the two neighbours at random reaches that segment (in expected cost
    and value) at no more cost. What is left has strictly increasing cost and value and strictly
    decreasing slopes: the efficient upgrades, in order.

    Points with a non-finite cost or value are ignored. Returns an empty array for no points.
    """
    cost = np.asarray(cost, dtype=float).ravel()
    value = np.asarray(value, dtype=float).ravel()
    if cost.shape != value.shape:
        raise ValueError(f"cost and value differ in length: {cost.shape[0]} vs {value.shape[0]}")
    ok = np.flatnonzero(np.isfinite(cost) & np.isfinite(value))
    order = ok[np.lexsort((ok, -value[ok], cost[ok]))]  # cost up, then value down, then index
    keep: list[int] = []
    for i in order:
        if keep and value[i] <= value[keep[-1]] + TIE:
            continue  # dominated: no better than something no dearer
        while len(keep) >= 2 and _on_or_below(cost, value, keep[-2], keep[-1], i):
            keep.pop()
        keep.append(int(i))
    return np.asarray(keep, dtype=np.intp)


def _on_or_below(c: NDArray, v: NDArray, a: int, b: int, z: int) -> bool:
    """Whether point ``b`` lies on or below the segment from ``a`` to ``z`` (costs a < b < z).

    The cross product, with a relative tolerance so that points collinear up to rounding
    (0.2, 0.4, 0.6 at costs 1, 2, 3) count as on the segment.
    """
    left = (c[b] - c[a]) * (v[z] - v[a])
    right = (v[b] - v[a]) * (c[z] - c[a])
    return left - right >= -1e-12 * (abs(left) + abs(right))


# --------------------------------------------------------------------------- batch allocation


def allocate(pred: ArrayLike, cost: ArrayLike, total_budget: float, *, method: str = "greedy",
             resolution: int = 1000) -> NDArray[np.intp]:
    """One strategy per problem maximising the sum of ``pred`` with the sum of ``cost`` <= ``total_budget``.

    A batch shares one budget, so compute moves from problems where it buys little (easy, or
    hopeless) to those where it buys most: a multiple-choice knapsack.

    - ``method="greedy"`` (the default; any batch size): every problem starts at its cheapest
      strategy; then the upgrades along each problem's :func:`frontier` (upper concave hull of
      ``(cost, pred)``) are taken in order of marginal gain per unit cost, best first, while
      they fit (an upgrade that does not fit blocks that problem's later upgrades; the others
      go on). This is the LP-relaxation greedy: it is within the largest single upgrade's gain
      of the optimum, and its total never exceeds the budget.
    - ``method="exact"`` (small batches, tests): a dynamic program over costs on a grid of
      ``resolution`` units of ``total_budget / resolution`` each. Costs are rounded *up* to the
      grid (a cost within 1e-9 units of a grid point is taken as that point), so the answer
      always fits; it is the true optimum whenever every cost is a multiple of the unit.
      Time and memory are ``O(n_problems * n_strategies * resolution)``. Among optimal
      choices (within TIE per problem) the one with the least grid cost is returned.

    Strategies with ``inf`` cost are unavailable. Raises ValueError when even the cheapest
    strategy of every problem together exceeds the budget (naming the minimum needed), or when
    a problem has no available strategy.
    """
    pred, cost = _check(pred, cost)
    total_budget = float(total_budget)
    if math.isnan(total_budget):
        raise ValueError("total_budget is NaN")
    available = np.isfinite(cost)
    if not available.any(axis=1).all():
        bad = np.flatnonzero(~available.any(axis=1))
        raise ValueError(f"problems {bad.tolist()} have no available strategy (every cost is inf)")
    minimum = math.fsum(np.where(available, cost, np.inf).min(axis=1))
    if minimum > total_budget:
        raise ValueError(f"the total budget {total_budget:g} is below the minimum needed, {minimum:g} "
                         "(the cheapest strategy of every problem)")
    if method == "greedy":
        return _allocate_greedy(pred, cost, total_budget)
    if method == "exact":
        return _allocate_exact(pred, cost, total_budget, int(resolution))
    raise ValueError(f"method must be 'greedy' or 'exact', got {method!r}")


def _allocate_greedy(pred: NDArray, cost: NDArray, total_budget: float) -> NDArray[np.intp]:
    """The LP greedy of :func:`allocate`: cheapest start, then the best upgrades per unit cost."""
    n = pred.shape[0]
    start = np.empty(n, dtype=np.intp)
    seg_problem, seg_to, seg_gain, seg_cost, seg_pos = [], [], [], [], []
    for k in range(n):
        hull = frontier(cost[k], pred[k])
        start[k] = hull[0]
        for pos in range(1, len(hull)):
            a, b = hull[pos - 1], hull[pos]
            seg_problem.append(k)
            seg_to.append(b)
            seg_gain.append(pred[k, b] - pred[k, a])
            seg_cost.append(cost[k, b] - cost[k, a])
            seg_pos.append(pos)
    choice = start.copy()
    if not seg_problem:
        return choice
    gain, dcost = np.asarray(seg_gain), np.asarray(seg_cost)
    # Concave hulls have decreasing slopes, so sorting by slope keeps each problem's upgrades in order;
    # (problem, position) break equal slopes so that order holds there too.
    order = np.lexsort((np.asarray(seg_pos), np.asarray(seg_problem), -(gain / dcost)))
    spent = math.fsum(cost[np.arange(n), choice])
    blocked = np.zeros(n, dtype=bool)
    for s in order:
        k = seg_problem[s]
        if blocked[k]:
            continue
        if spent + dcost[s] <= total_budget:
            choice[k] = seg_to[s]
            spent += dcost[s]
        else:
            blocked[k] = True
    return _undo_rounding(choice, start, pred, cost, total_budget)


def _undo_rounding(choice: NDArray, start: NDArray, pred: NDArray, cost: NDArray,
                   total_budget: float) -> NDArray[np.intp]:
    """Guarantee the greedy's total fits exactly: the running sum can drift by a rounding error.

    Should the exact sum exceed the budget, the upgrade with the least gain per unit cost is
    reverted to the problem's cheapest strategy until it fits (in practice never more than one).
    """
    rows = np.arange(len(choice))
    while math.fsum(cost[rows, choice]) > total_budget:
        upgraded = np.flatnonzero(choice != start)
        d_gain = pred[upgraded, choice[upgraded]] - pred[upgraded, start[upgraded]]
        d_cost = cost[upgraded, choice[upgraded]] - cost[upgraded, start[upgraded]]
        worst = upgraded[np.argmin(d_gain / d_cost)]
        choice[worst] = start[worst]
    return choice


def _grid_costs(cost: NDArray, total_budget: float, resolution: int) -> NDArray[np.int64]:
    """Costs in grid units of ``total_budget / resolution``, rounded up; unavailable ones beyond the grid."""
    beyond = resolution + 1
    if total_budget == 0:
        return np.where(cost == 0, 0, beyond).astype(np.int64)
    units = cost / (total_budget / resolution)
    near = np.round(units)
    snapped = np.where(np.abs(units - near) <= 1e-9 * np.maximum(1.0, near), near, np.ceil(units))
    return np.where(np.isfinite(cost) & (snapped <= resolution), snapped, beyond).astype(np.int64)


def _allocate_exact(pred: NDArray, cost: NDArray, total_budget: float, resolution: int) -> NDArray[np.intp]:
    """The dynamic program of :func:`allocate`: ``best[b]`` = best total prediction at grid cost <= b."""
    if not math.isfinite(total_budget):
        raise ValueError("method='exact' needs a finite total_budget (it discretises it)")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    n, m = pred.shape
    w = _grid_costs(cost, total_budget, resolution)
    if w.min(axis=1).sum() > resolution:
        raise ValueError("on a grid of this resolution the cheapest strategies no longer fit (costs are "
                         "rounded up to the grid): raise resolution")
    width = resolution + 1
    best = np.zeros(width)  # no problem yet: value 0 at any capacity
    took = np.full((n, width), NONE, dtype=np.intp)
    for k in range(n):
        new = np.full(width, -np.inf)
        for j in np.lexsort((np.arange(m), -pred[k], w[k])):  # cheaper first: ties keep the cheaper
            wj = int(w[k, j])
            if wj > resolution:
                continue
            cand = np.full(width, -np.inf)
            cand[wj:] = best[:width - wj] + pred[k, j]
            better = cand > new + TIE
            new[better] = cand[better]
            took[k, better] = j
        best = new
    # best is non-decreasing in capacity: spend the least capacity that reaches the optimum
    b = int(np.argmax(best >= best[-1] - TIE * n))
    choice = np.empty(n, dtype=np.intp)
    for k in range(n - 1, -1, -1):
        choice[k] = took[k, b]
        b -= int(w[k, choice[k]])
    return choice


__all__ = ["NONE", "TIE", "allocate", "bin_of", "fits", "for_target", "frontier", "penalized", "within_budget"]
