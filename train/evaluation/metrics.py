"""Evaluation metrics: confidence intervals, gap recovered, accuracy-against-compute hulls, calibration.

Pure numpy (pandas only for the calibration table), so that every number in ``eval.json`` can be
recomputed by hand from the per-problem outcomes.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ttsopt.selector.decide import TIE, frontier

#: Bootstrap resamples are drawn in blocks of about this many indices, to bound memory.
_BOOT_BLOCK = 1 << 22


# --------------------------------------------------------------------------- confidence intervals


def _vector(x: ArrayLike, name: str) -> NDArray[np.float64]:
    """A non-empty 1-D float array without NaN, or a ValueError."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    if np.isnan(x).any():
        raise ValueError(f"{name} has NaN values")
    return x


def bootstrap_mean_ci(a: ArrayLike, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """The mean of ``a`` and its percentile-bootstrap confidence interval (``level``, 95% by default).

    Resamples problems with replacement ``n_boot`` times; ``lo``/``hi`` are the (1-level)/2 and
    (1+level)/2 percentiles of the resampled means. Seeded, so a report is reproducible.
    Returns ``{"mean", "lo", "hi"}``.
    """
    a = _vector(a, "a")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    rng = np.random.default_rng(seed)
    n = len(a)
    per_block = max(1, _BOOT_BLOCK // n)
    means = np.concatenate([a[rng.integers(0, n, size=(min(per_block, n_boot - start), n))].mean(axis=1)
                            for start in range(0, n_boot, per_block)])
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return {"mean": float(a.mean()), "lo": float(lo), "hi": float(hi)}


def paired_bootstrap(a: ArrayLike, b: ArrayLike, *, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict[str, float]:
    """The mean of ``a - b`` over problems with its percentile-bootstrap CI (see :func:`bootstrap_mean_ci`).

    Paired: ``a[i]`` and ``b[i]`` are two methods on the same problem, and resampling whole
    problems keeps the pairing, so problem difficulty (shared by both) cancels out of the
    interval instead of widening it.
    """
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must be paired (same length), got {len(a)} and {len(b)}")
    return bootstrap_mean_ci(a - b, n_boot=n_boot, seed=seed, level=level)


def gap_recovered(router: float, best_fixed: float, oracle: float) -> float:
    """The share of the best-fixed-to-oracle gap the router closes: (router - fixed) / (oracle - fixed).

    1 is the oracle, 0 the best fixed strategy, negative worse than it. NaN when the gap is at
    most 1e-12: with nothing to recover, the ratio is meaningless (and callers skip NaNs).
    """
    gap = oracle - best_fixed
    return float("nan") if not gap > 1e-12 else float((router - best_fixed) / gap)


# --------------------------------------------------------------------------- accuracy against compute


def nondecreasing_hull(costs: ArrayLike, accs: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The attainable accuracy-against-compute frontier of a set of (cost, accuracy) points.

    Sorted by cost, only points that improve on every cheaper one are kept (the Pareto frontier),
    then its upper concave hull in (cost, accuracy) (RouterBench's non-decreasing convex hull):
    choosing between two strategies at random per problem reaches, in expectation, any point on
    the segment between them, so a point below such a segment is never worth using. The hull is
    taken in linear cost because that is what mixing achieves (see :func:`hull_area` on the
    log axis). Returns ``(hull_costs, hull_accs)``, both strictly increasing.
    """
    costs, accs = _vector(costs, "costs"), _vector(accs, "accs")
    if costs.shape != accs.shape:
        raise ValueError(f"costs and accs differ in length: {len(costs)} vs {len(accs)}")
    if not np.isfinite(costs).all() or (costs < 0).any():
        raise ValueError("costs must be finite and non-negative")
    keep = frontier(costs, accs)
    return costs[keep], accs[keep]


def aiq_difference(a: tuple[ArrayLike, ArrayLike], b: tuple[ArrayLike, ArrayLike], *, lo: float, hi: float,
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """AIQ(a) − AIQ(b) with a paired percentile-bootstrap CI over problems.

    Each curve is ``(accuracy, flops)``, both ``(points, problems)``: a point's per-problem outcome
    and compute (one row per λ of a rule, or per fixed strategy). A resample draws problems with
    replacement, recomputes every point's mean accuracy and FLOPs on them and both hull areas on
    the same ``[lo, hi]``: the two curves share the problems, so their common difficulty cancels.
    """
    (aa, af), (ba, bf) = (tuple(np.asarray(x, dtype=float) for x in c) for c in (a, b))
    if not (aa.shape == af.shape and ba.shape == bf.shape and aa.ndim == ba.ndim == 2 and aa.shape[1] == ba.shape[1]):
        raise ValueError(f"curves must be (points, problems) on the same problems, got {aa.shape} and {ba.shape}")

    def diff(rows) -> float:
        return (hull_area(af[:, rows].mean(axis=1), aa[:, rows].mean(axis=1), lo=lo, hi=hi)
                - hull_area(bf[:, rows].mean(axis=1), ba[:, rows].mean(axis=1), lo=lo, hi=hi))

    rng = np.random.default_rng(seed)
    n = aa.shape[1]
    draws = np.array([diff(rng.integers(0, n, n)) for _ in range(n_boot)])
    q = (1 - level) / 2
    return {"mean": diff(np.arange(n)), "lo": float(np.quantile(draws, q)), "hi": float(np.quantile(draws, 1 - q))}


def _axis(costs: NDArray | float, log: bool, name: str) -> NDArray:
    """Costs on the metric's x axis: log10 cost when ``log`` (then costs must be positive)."""
    costs = np.asarray(costs, dtype=float)
    if not log:
        return costs
    if (costs <= 0).any():
        raise ValueError(f"{name}: log=True needs positive costs")
    return np.log10(costs)


def _hull_value(x: NDArray, hx: NDArray, hy: NDArray) -> NDArray:
    """The hull as a step-then-linear function of the axis: 0 before its first point, flat after its last."""
    return np.where(x < hx[0], 0.0, np.interp(x, hx, hy))


def hull_area(costs: ArrayLike, accs: ArrayLike, *, lo: float, hi: float, log: bool = True) -> float:
    """The average accuracy of the :func:`nondecreasing_hull` over costs ``[lo, hi]`` (RouterBench's AIQ).

    The area under the hull between ``lo`` and ``hi`` divided by the width, so it reads as an
    accuracy and compares across cost ranges. With ``log=True`` the axis is log10 cost (every
    decade weighs the same, as in compute-scaling plots) and the hull is interpolated linearly in
    log10 cost between its points; with ``log=False``, linear cost, where the interpolation is
    exactly what mixing two strategies reaches. Left of the hull's first (cheapest) point the
    value is 0: nothing cheaper exists, so that compute buys no accuracy; right of its last
    point it stays at the last accuracy (a larger budget can always be left unspent). The
    integral is exact (the function is piecewise linear). For ``lo == hi`` the value at ``lo``.
    """
    hc, ha = nondecreasing_hull(costs, accs)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f"need finite lo <= hi, got lo={lo}, hi={hi}")
    hx = _axis(hc, log, "costs")
    a, b = (float(v) for v in _axis(np.array([lo, hi]), log, "lo/hi"))
    if b == a:
        return float(_hull_value(np.array([a]), hx, ha)[0])
    edges = np.unique(np.concatenate([[a, b], hx[(hx > a) & (hx < b)]]))
    # linear between consecutive edges (the first hull point is an edge, so the jump from 0 is too):
    # the midpoint rule is exact on each piece
    mids = (edges[:-1] + edges[1:]) / 2
    return float(np.sum(np.diff(edges) * _hull_value(mids, hx, ha)) / (b - a))


def compute_multiplier(target_acc: float, target_cost: float, baseline_costs: ArrayLike,
                       baseline_accs: ArrayLike, *, log: bool = True) -> float:
    """How many times more compute the baseline needs for ``target_acc`` than the target spends.

    The cost at which the baseline's :func:`nondecreasing_hull` reaches ``target_acc``
    (interpolated between hull points, linearly in log10 cost when ``log``, in cost otherwise;
    the hull's cheapest point if that already reaches it), divided by ``target_cost``. Values
    above 1 mean the target (e.g. the router) is cheaper at equal accuracy; ``inf`` when the
    baseline never reaches ``target_acc`` (within 1e-12).
    """
    if not (math.isfinite(target_cost) and target_cost > 0):
        raise ValueError(f"target_cost must be finite and > 0, got {target_cost}")
    hc, ha = nondecreasing_hull(baseline_costs, baseline_accs)
    if target_acc > ha[-1] + TIE:
        return float("inf")
    if target_acc <= ha[0]:
        return float(hc[0] / target_cost)
    hx = _axis(hc, log, "baseline_costs")
    x = float(np.interp(target_acc, ha, hx))  # accs strictly increase along the hull: invertible
    return float((10.0 ** x if log else x) / target_cost)


# --------------------------------------------------------------------------- calibration


def _pairs(pred: ArrayLike, label: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    pred, label = _vector(np.ravel(pred), "pred"), _vector(np.ravel(label), "label")
    if pred.shape != label.shape:
        raise ValueError(f"pred and label differ in length: {len(pred)} vs {len(label)}")
    return pred, label


def brier(pred: ArrayLike, label: ArrayLike) -> float:
    """Mean squared error between predicted and observed accuracy (the labels are expected accuracies in [0, 1])."""
    pred, label = _pairs(pred, label)
    return float(np.mean((pred - label) ** 2))


def calibration_table(pred: ArrayLike, label: ArrayLike, bins: int = 10) -> pd.DataFrame:
    """Predictions in ``bins`` equal-width bins of [0, 1]: per bin, the count, mean prediction and mean label.

    Bin ``i`` is ``[i/bins, (i+1)/bins)``, the last one closed at 1; a regression model's
    predictions slightly outside [0, 1] fall in the end bins. Empty bins have count 0 and NaN
    means (kept, so the table always has ``bins`` rows). Columns: bin_lo, bin_hi, count,
    mean_pred, mean_label.
    """
    pred, label = _pairs(pred, label)
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins}")
    bins = int(bins)
    which = np.clip(np.floor(pred * bins), 0, bins - 1).astype(int)  # floor(0.3 * 10) = 3: no edge drift
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_pred = np.bincount(which, weights=pred, minlength=bins) / count
        mean_label = np.bincount(which, weights=label, minlength=bins) / count
    return pd.DataFrame({"bin_lo": np.arange(bins) / bins, "bin_hi": np.arange(1, bins + 1) / bins,
                         "count": count.astype(int), "mean_pred": mean_pred, "mean_label": mean_label})


__all__ = ["bootstrap_mean_ci", "brier", "calibration_table", "compute_multiplier", "gap_recovered",
           "hull_area", "nondecreasing_hull", "paired_bootstrap"]
