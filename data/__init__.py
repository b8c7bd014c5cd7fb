"""The ground floor: problem sets and answer grading. Imports nothing else of ttsopt.

Importing this package is cheap: math-verify and sympy load only when a comparison
needs them (and then in a worker process, see ``grading``).
"""

from .grading import extract_answer, is_equivalent, normalize_answer
from .loaders import ProblemFileError, load_problems
from .problem import Problem, normalize_question, question_key

__all__ = ["Problem", "normalize_question", "question_key", "ProblemFileError", "load_problems", "extract_answer", "is_equivalent", "normalize_answer"]
