"""What the online router takes and returns: the budget, and the decision and solution records.

Plain data classes with ``to_dict`` (the service's JSON and the CLI's ``--json`` are these dicts),
apart from :class:`~ttsopt.selector.router.Router` so that a client, the service's schemas and the
tests can build and read them without the router's model machinery.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Budget", "Candidate", "Decision", "RouterError", "Solution"]


class RouterError(ValueError):
    """An unknown pair, a missing model, an artifact trained for another policy or PRM, a bad budget."""


@dataclass(frozen=True)
class Budget:
    """One value object for every way to bound a decision (like vLLM's SamplingParams).

    Exactly one of ``n`` (generations: strategies with N <= n), ``tokens`` / ``flops`` (expected
    compute per problem, probe included) or ``target_accuracy`` (the cheapest strategy predicted to
    reach it; flagged when none does).
    """

    n: int | None = None
    tokens: float | None = None
    flops: float | None = None
    target_accuracy: float | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("n", "tokens", "flops", "target_accuracy") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a Budget takes exactly one of n, tokens, flops or target_accuracy, got "
                             + (", ".join(given) if given else "none"))
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer))
                                   or self.n < 1):
            raise ValueError(f"budget n must be an integer >= 1 (generations), got {self.n!r}")
        for name in ("tokens", "flops"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                                      or not value >= 0 or math.isnan(value)):
                raise ValueError(f"budget {name} must be a number >= 0, got {value!r}")
        t = self.target_accuracy
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float, np.number))
                              or not 0.0 <= t <= 1.0):
            raise ValueError(f"target_accuracy must be in [0, 1], got {t!r}")

    @property
    def kind(self) -> str:
        return next(k for k in ("n", "tokens", "flops", "target_accuracy") if getattr(self, k) is not None)

    @property
    def value(self) -> float:
        return getattr(self, self.kind)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class Candidate:
    """One catalogue strategy for one question: its predicted accuracy and what it is expected to cost."""

    strategy: str
    method: str
    n: int
    predicted_accuracy: float
    tokens: float  # expected compute from the catalogue (training-problem mean)
    flops: float
    fits: bool  # within the budget (probe compute included); target mode: predicted to reach it
    total_tokens: float = 0.0  # what choosing it is expected to cost in all: probe included, reuse deducted
    total_flops: float = 0.0
    reuses_probe: int = 0  # probe samples it would take as part of its N

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    question: str
    question_key: str
    pair: str
    budget: Budget
    strategy: str | None  # the chosen catalogue key (None only if nothing fits at all)
    predicted_accuracy: float | None
    reached: bool | None  # target mode: whether the target is predicted reached
    candidates: list[Candidate]
    features: dict[str, float]  # txt_*, emb_* (after the PCA), probe_*
    probe: dict | None
    seconds: float

    @property
    def chosen(self) -> Candidate | None:
        return next((c for c in self.candidates if c.strategy == self.strategy), None)

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "question_key": self.question_key, "pair": self.pair,
                "budget": self.budget.to_dict(), "strategy": self.strategy,
                "predicted_accuracy": self.predicted_accuracy, "reached": self.reached,
                "candidates": [c.to_dict() for c in self.candidates],
                "features": {k: _json_float(v) for k, v in self.features.items()},
                "probe": self.probe, "seconds": self.seconds}


@dataclass
class Solution:
    answer: str | None
    decision: Decision
    trace: dict
    compute: dict
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"answer": self.answer, "decision": self.decision.to_dict(), "trace": self.trace,
                "compute": self.compute, "seconds": self.seconds}


def _json_float(v: Any) -> Any:
    """NaN is not JSON: a missing probe statistic (no answer among the samples) becomes null."""
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    return v
