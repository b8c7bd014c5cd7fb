"""Evaluation metrics (lead's minimal version)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def paired_bootstrap(a, b, *, n_boot: int = 2000, seed: int = 0) -> dict[str, float]:
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    return {"mean": float(d.mean()), "lo": float(np.percentile(means, 2.5)), "hi": float(np.percentile(means, 97.5))}


def gap_recovered(router: float, best_fixed: float, oracle: float) -> float:
    gap = oracle - best_fixed
    return float("nan") if gap <= 1e-12 else (router - best_fixed) / gap


def nondecreasing_hull(costs, accs):
    pts = sorted(zip(map(float, costs), map(float, accs)), key=lambda p: (p[0], -p[1]))
    front = []
    for c, a in pts:
        if not front or a > front[-1][1] + 1e-12:
            front.append((c, a))
    return [p[0] for p in front], [p[1] for p in front]


def hull_area(costs, accs, *, lo: float, hi: float, log: bool = True) -> float:
    xs, ys = nondecreasing_hull(costs, accs)
    f = (lambda v: math.log10(max(v, 1e-300))) if log else (lambda v: v)
    xs = [f(x) for x in xs]
    a, b = f(lo), f(hi)
    if b <= a:
        return float(ys[-1]) if ys else 0.0
    grid = np.linspace(a, b, 2001)
    vals = np.interp(grid, xs, ys, left=0.0, right=ys[-1])
    vals[grid < xs[0]] = 0.0
    return float(np.trapezoid(vals, grid) / (b - a))


def compute_multiplier(target_acc, target_cost, baseline_costs, baseline_accs, *, log: bool = True) -> float:
    xs, ys = nondecreasing_hull(baseline_costs, baseline_accs)
    if target_acc > ys[-1] + 1e-12:
        return float("inf")
    if target_acc <= ys[0]:
        return xs[0] / target_cost
    f = np.log10 if log else (lambda v: v)
    lx = f(np.asarray(xs))
    need = np.interp(target_acc, ys, lx)
    return float((10 ** need if log else need) / target_cost)


def brier(pred, label) -> float:
    return float(np.mean((np.asarray(pred, float) - np.asarray(label, float)) ** 2))


def calibration_table(pred, label, bins: int = 10) -> pd.DataFrame:
    pred, label = np.asarray(pred, float), np.asarray(label, float)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(pred, edges) - 1, 0, bins - 1)
    rows = [{"bin_lo": edges[i], "bin_hi": edges[i + 1], "count": int((which == i).sum()),
             "mean_pred": float(pred[which == i].mean()) if (which == i).any() else float("nan"),
             "mean_label": float(label[which == i].mean()) if (which == i).any() else float("nan")}
            for i in range(bins)]
    return pd.DataFrame(rows)
