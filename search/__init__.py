"""Search strategies and the models (policies, PRMs) they drive."""

from .compute import Compute
from .result import Candidate, SearchResult
from .strategy import Strategy
from .types import (
    DEFAULT_STEP_DELIMITER,
    PRM,
    Completion,
    Generation,
    Policy,
    SamplingParams,
    StepScores,
    split_steps,
)

__all__ = [
    "Candidate", "Completion", "Compute", "DEFAULT_STEP_DELIMITER", "Generation", "PRM", "Policy",
    "SamplingParams", "SearchResult", "StepScores", "Strategy", "split_steps",
]
