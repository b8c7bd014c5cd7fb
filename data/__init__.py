"""Problem sets, answer grading, difficulty labels and features.

Importing this package is cheap: math-verify and sympy load only when a comparison
needs them (and then in a worker process, see ``grading``); the feature names below
load numpy (and, for embeddings, sentence-transformers) only when first used.
"""

import importlib
from typing import Any

from .difficulty import DIFFICULTY_BINS, DIFFICULTY_LEVELS, difficulty_bin, label_difficulty, pass_at_1, pass_at_k
from .grading import extract_answer, is_equivalent, normalize_answer
from .loaders import ProblemFileError, load_problems
from .problem import Problem

_FEATURES = (
    "Embedder", "FeatureSchema", "PCAReducer", "policy_descriptor", "prm_descriptor", "probe_features",
    "problem_features", "strategy_descriptor", "text_stats",
)

__all__ = [
    "Problem", "ProblemFileError", "load_problems", "extract_answer", "is_equivalent", "normalize_answer",
    "DIFFICULTY_BINS", "DIFFICULTY_LEVELS", "difficulty_bin", "label_difficulty", "pass_at_1", "pass_at_k",
    *_FEATURES,
]


def __getattr__(name: str) -> Any:
    if name in _FEATURES:
        return getattr(importlib.import_module(".features", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
