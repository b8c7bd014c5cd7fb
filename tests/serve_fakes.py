"""A scripted router for the service's tests: the Router's serving methods, no models.

It records every ``route_many`` / ``solve_many`` call (so a test can see what the batching
window merged), answers ``a + b`` questions exactly, can be told to fail on chosen questions,
and can be held on a gate (a ``threading.Event``) to keep the worker thread busy.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field

from ttsopt.selector.router import Budget, RouterError

SECRET = "/home/alice/models/secret.gguf: CUDA out of memory at 0xdeadbeef"


@dataclass
class FakeDecision:
    question: str
    budget: Budget
    strategy: str | None = "best_of_n:n=4,agg=last,vote=prm_vote"
    predicted_accuracy: float | None = 0.75

    def to_dict(self) -> dict:
        return {"question": self.question, "budget": asdict(self.budget), "strategy": self.strategy,
                "predicted_accuracy": self.predicted_accuracy,
                "candidates": [{"strategy": self.strategy, "predicted_accuracy": self.predicted_accuracy}]}


@dataclass
class FakeSolution:
    answer: str | None
    decision: FakeDecision
    compute: dict
    trace: dict = field(default_factory=lambda: {"method": "best_of_n", "candidates": []})
    seconds: float = 0.001

    def to_dict(self) -> dict:
        return {"answer": self.answer, "decision": self.decision.to_dict(), "trace": self.trace,
                "compute": self.compute, "seconds": self.seconds}


def _answer(question: str) -> str | None:
    m = re.search(r"(-?\d+)\s*\+\s*(-?\d+)", question)
    return str(int(m.group(1)) + int(m.group(2))) if m else None


class FakeRouter:
    name = "fake-router"
    pairs = ["fake-policy+calc"]
    pair = "fake-policy+calc"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], Budget]] = []
        self.fail_on: set[str] = set()       # questions whose call raises RuntimeError(SECRET)
        self.reject_on: set[str] = set()     # questions whose call raises RouterError
        self.gate: threading.Event | None = None
        self.entered = threading.Event()     # set when a call starts (before the gate)
        self.delay_s = 0.0
        self.lock = threading.Lock()
        self.concurrent = 0
        self.max_concurrent = 0

    def _enter(self, op: str, questions, budget) -> None:
        with self.lock:
            self.calls.append((op, list(questions), budget))
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        self.entered.set()
        try:
            if self.gate is not None:
                assert self.gate.wait(10), "test gate never opened"
            if self.delay_s:
                time.sleep(self.delay_s)
            for q in questions:
                if q in self.fail_on:
                    raise RuntimeError(SECRET)
                if q in self.reject_on:
                    raise RouterError(f"no strategy for {q!r}")
        finally:
            with self.lock:
                self.concurrent -= 1

    def route_many(self, questions, budget):
        self._enter("route", questions, budget)
        return [FakeDecision(q, budget) for q in questions]

    def solve_many(self, questions, budget, cascade: bool | str = False):
        """``budget``: one for all, or one per question (as Router.solve_many)."""
        self._enter(f"solve+cascade={cascade}" if cascade else "solve", questions, budget)
        budgets = [budget] * len(questions) if isinstance(budget, Budget) else list(budget)
        assert len(budgets) == len(questions)
        out = []
        for q, b in zip(questions, budgets):
            compute = {"prompt_tokens": 10 + len(q), "generated_tokens": 40, "prm_tokens": 55,
                       "tokens": 105 + len(q), "flops": 1.0e9}
            out.append(FakeSolution(_answer(q), FakeDecision(q, b), compute))
        return out

    def solve_calls(self) -> list[list[str]]:
        return [qs for op, qs, _ in self.calls if op == "solve"]
