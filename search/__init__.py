"""Search strategies and the models (policies, PRMs) they drive."""

from .compute import Compute
from .registry import load_policy, load_prm
from .result import Candidate, SearchResult
from .run import run_search
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
    "SamplingParams", "SearchResult", "StepScores", "Strategy", "load_policy", "load_prm", "run_search",
    "split_steps",
]
