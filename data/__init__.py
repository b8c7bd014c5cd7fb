"""Problem sets, answer extraction and grading."""

from .problem import Problem

__all__ = ["Problem"]
