"""What a search returns: the answer, every candidate it weighed, and what it cost."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .compute import Compute


@dataclass
class Candidate:
    """A finished (or depth-limited) solution the search produced."""

    text: str
    steps: list[str]
    answer: str | None
    step_scores: list[float] | None = None
    score: float | None = None  # aggregated step scores (None without a PRM)
    finish_reason: str = "eos"


@dataclass
class SearchResult:
    """Outcome of one strategy on one problem.

    ``trace`` is method-specific and JSON-serialisable (e.g. the beams kept at each
    depth), for people who want to see why the search answered what it did.
    """

    problem_id: str
    strategy: str
    answer: str | None
    candidates: list[Candidate]
    compute: Compute
    correct: bool | None = None
    trace: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["compute"] = self.compute.to_dict()
        return d
