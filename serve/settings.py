"""Every knob and bound of the service in one frozen record (``ttsopt serve`` fills it from flags).

The models behind a router answer one call at a time, so each bound caps how long one request
can hold them for everybody else; a request past a bound is refused up front with a 4xx that
names the bound and its value (:meth:`ServeSettings.refusal` and friends), before any model work.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace

#: the environment variable that sets the API key when ``--api-key`` is not given
API_KEY_ENV = "TTSOPT_API_KEY"


@dataclass(frozen=True)
class ServeSettings:
    """What the service binds to, how it batches, and what one request may ask."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: when set, every route but ``/healthz`` demands ``Authorization: Bearer <api_key>``
    api_key: str | None = None
    #: requests arriving within this many milliseconds of the first are solved together
    #: (one ``solve_many`` / ``route_many`` call per budget); 0 solves each request alone
    batch_window_ms: float = 10.0
    #: questions in one engine call the window may merge (a queue past it waits for the next call)
    max_batch: int = 64
    #: questions waiting for the models; past it a request is refused with 503 (back-pressure)
    max_queue: int = 1024
    #: bytes of one request body
    max_body_bytes: int = 1024 * 1024
    #: characters of one question
    max_question_chars: int = 8000
    #: questions in one ``/v1/route`` or ``/v1/solve`` call
    max_questions: int = 64
    #: the largest budgets a request may ask for, per budget kind
    max_budget_n: int = 256
    max_budget_tokens: float = 1_000_000.0
    max_budget_flops: float = 1e15
    #: the budget of a request that names none (``None``: a request must name one); the paper's axis, N
    default_budget_n: int | None = 16

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("host", "api_key"):
                continue
            if f.name == "batch_window_ms":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 10_000:
                    raise ValueError(f"batch_window_ms must be a number of milliseconds in [0, 10000], got {value!r}")
                continue
            if f.name == "default_budget_n" and value is None:
                continue
            if f.name == "port":
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 65535:
                    raise ValueError(f"port must be an integer in [0, 65535], got {value!r}")
                continue
            integral = f.name not in ("max_budget_tokens", "max_budget_flops")
            kinds = (int,) if integral else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value <= 0:
                kind = "a positive integer" if integral else "a positive number"
                raise ValueError(f"{f.name} must be {kind}, got {value!r}")
        if self.api_key is not None and not self.api_key.strip():
            raise ValueError("api_key must not be empty (leave it unset to serve without one)")
        if self.default_budget_n is not None and self.default_budget_n > self.max_budget_n:
            raise ValueError(f"default_budget_n={self.default_budget_n} exceeds max_budget_n={self.max_budget_n}")

    @property
    def batch_window_s(self) -> float:
        return self.batch_window_ms / 1000.0

    def with_env(self) -> "ServeSettings":
        """These settings with the API key from ``$TTSOPT_API_KEY`` when none is set here."""
        if self.api_key is None and os.environ.get(API_KEY_ENV):
            return replace(self, api_key=os.environ[API_KEY_ENV])
        return self

    def question_refusal(self, question: str, where: str = "question") -> str | None:
        """Why ``question`` is refused, or None."""
        if not question.strip():
            return f"{where} is empty"
        if len(question) > self.max_question_chars:
            return (f"{where} has {len(question)} characters, over this server's limit "
                    f"max_question_chars={self.max_question_chars}")
        return None

    def count_refusal(self, count: int) -> str | None:
        """Why a call with ``count`` questions is refused, or None."""
        if count < 1:
            return "give a question or a non-empty list of questions"
        if count > self.max_questions:
            return (f"{count} questions in one call, over this server's limit max_questions={self.max_questions}; "
                    "send fewer per call")
        return None

    def budget_refusal(self, kind: str, value: float) -> str | None:
        """Why a budget of ``value`` in ``kind`` (n, tokens, flops) is refused, or None."""
        limit = {"n": self.max_budget_n, "tokens": self.max_budget_tokens, "flops": self.max_budget_flops}[kind]
        if value > limit:
            return f"budget {kind}={_shown(value)} over this server's limit max_budget_{kind}={limit:g}"
        return None


def _shown(value: float) -> str:
    """``value`` in ``%g``; an integer too large for a float (a JSON ``1e400`` written out) says so."""
    try:
        return f"{float(value):g}"
    except OverflowError:
        return "(an integer over 1e308)"


__all__ = ["ServeSettings", "API_KEY_ENV"]
