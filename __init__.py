"""ttsopt: learn which test-time-scaling strategy is compute-optimal per problem, and route to it.

The public API is re-exported lazily so that ``import ttsopt`` stays cheap (no torch
import) for the CLI's ``--help`` and for users who only read outcome data.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Problem": "ttsopt.data",
    "load_problems": "ttsopt.data",
    "extract_answer": "ttsopt.data",
    "is_equivalent": "ttsopt.data",
    "SamplingParams": "ttsopt.search",
    "Strategy": "ttsopt.search",
    "Compute": "ttsopt.search",
    "SearchResult": "ttsopt.search",
    "load_policy": "ttsopt.search",
    "load_prm": "ttsopt.search",
    "run_search": "ttsopt.search",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ttsopt' has no attribute {name!r}")
