"""The options beyond the sweep's catalogue that the rules and cascades may choose: the pooled
strategies at n = N - 1 (:mod:`.rest`, what a cascade escalates to after its CoT) and the adaptive
strategies (:mod:`.adaptive`, which stop on what their own samples show), both estimated from the
stored pools with no new generation. The router's LightGBM has no prediction for them, so only the
rules, the cascades and the deployed default choose them, and only where they pay on training folds."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .adaptive import DEFAULT_GRID, STOP_COLUMNS, load_adaptive
from .rest import _COLUMNS, load_rest


def load_options(folders: Sequence[str | Path], *, adaptive: bool = True,
                 grid: Sequence[str] = DEFAULT_GRID) -> pd.DataFrame:
    """One row per (pair, problem, option): label, tokens, FLOPs, as :func:`~.rest.load_rest`; an adaptive
    strategy's estimate averaged over a problem's stored pools when it has several."""
    frames = [load_rest(folders)]
    if adaptive:
        a = load_adaptive(folders, grid)
        if len(a):
            keys = ["policy", "prm", "problem_id", "strategy", "n"]
            frames.append(a.groupby(keys, as_index=False, sort=False)[["label", "tokens", "flops", *STOP_COLUMNS]]
                          .mean())
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(_COLUMNS))
    out = pd.concat(frames, ignore_index=True)
    # how the adaptive options stopped (samples drawn, share of orders per reason): NaN on the others
    return out[[*_COLUMNS, *(c for c in STOP_COLUMNS if c in out)]]


__all__ = ["load_options"]
