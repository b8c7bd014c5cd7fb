"""Decision rules over predicted accuracies (lead's minimal version)."""

from __future__ import annotations

import numpy as np


def _as_cost(pred: np.ndarray, cost) -> np.ndarray:
    cost = np.asarray(cost, dtype=float)
    return np.broadcast_to(cost, pred.shape) if cost.ndim == 1 else cost


def penalized(pred, cost, lam: float) -> np.ndarray:
    """Per problem, argmax of pred - lam * cost; ties (1e-12) to the cheaper strategy."""
    pred = np.asarray(pred, dtype=float)
    cost = _as_cost(pred, cost)
    score = pred - lam * cost
    best = score.max(axis=1, keepdims=True)
    return np.where(score >= best - 1e-12, cost, np.inf).argmin(axis=1)
