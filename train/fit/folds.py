"""The one shape of every cross-fitted loop: fit on a fold's training problems, score its held-out ones.

Why one helper: the evaluation has some twenty such loops (rules, cascades, curves, allocation, the
deployed choice); written out each time, one that slipped a test row into its training side would go
unnoticed. Each loop now asks :func:`outer_folds` for its rows, so the split is made in one place.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def outer_folds(fold: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Each fold ``f`` (ascending) with its training rows (every other fold) and its held-out rows.

    ``fold`` holds each row's fold; rows marked negative (not in any fold) are on no side.
    """
    fold = np.asarray(fold)
    for f in np.unique(fold[fold >= 0]):
        yield int(f), np.flatnonzero((fold != f) & (fold >= 0)), np.flatnonzero(fold == f)


def fold_splits(fold: np.ndarray, n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) for folds 0 … ``n_folds`` - 1, in order (an empty fold stays in
    its place, so the list's position is the fold's number)."""
    fold = np.asarray(fold)
    return [(np.flatnonzero((fold != f) & (fold >= 0)), np.flatnonzero(fold == f)) for f in range(n_folds)]


def fold_means(fold: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each row gets the column means of ``values`` over its fold's training rows: what is known
    about a strategy's cost before routing a held-out problem."""
    out = np.empty(values.shape, dtype=float)
    for _, train, test in outer_folds(fold):
        out[test] = values[train].mean(axis=0)
    return out


__all__ = ["fold_means", "fold_splits", "outer_folds"]
