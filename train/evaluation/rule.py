"""The record every decision rule of the evaluation is: how its scores are formed, the predictions
and bins it reads, and what its probes cost. Apart from :mod:`.rules`, which applies rules, so that
:mod:`.difficulty_rule` can build rules without importing the module that calls it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass
class _Rule:
    """A decision rule: ``kind`` says how scores are formed (see :func:`_rule_scores`)."""

    name: str
    kind: str  # "pred" | "shrink" | "margin" | "topk" | "bin" | "blend"
    pred: np.ndarray | None = None  # (problems, strategies) held-out predictions
    inner: tuple[Mapping[int, np.ndarray], Mapping[int, np.ndarray]] | None = None  # per outer fold: inner preds (problems, S), inner folds
    bins_pred: np.ndarray | None = None  # (problems,) bins used for test problems (predicted online)
    bins_true: np.ndarray | None = None  # (problems,) bins of training problems (known in training)
    probe_k: int = 0
    probe_tokens: np.ndarray | None = None  # (problems,)
    probe_flops: np.ndarray | None = None
    fallback: "_Rule | None" = None  # used at a budget where no strategy fits n + k <= N
    grid: tuple[float, ...] = (0.0,)
    #: (problems, strategies) expected tokens known before routing for each problem (its own outer fold's
    #: model), used instead of the training mean on the compute axis (see :mod:`.difficulty_rule`).
    cost: np.ndarray | None = None


__all__ = ["_Rule"]
