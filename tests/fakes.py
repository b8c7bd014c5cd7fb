"""Scripted stand-ins for a policy and a PRM, shared by the sweep, selector, router and explain tests.

No model is loaded: :class:`LevelPolicy` answers from the problems it is given, right with a
probability set by each problem's level, and :class:`HashPRM` scores a step by a stable hash of its
text. Both are deterministic across processes (seeded ``random.Random`` on strings; ``zlib.crc32``
or BLAKE2b, never Python's ``hash()``, which is salted per process), so a sweep run by them can be
compared with one run in another process.

``tests/conftest.py`` puts this folder on ``sys.path`` (tests run under ``--import-mode=importlib``,
where test files cannot import each other by name), so a test imports it as ``from fakes import ...``.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from typing import Callable

from ttsopt.search import Completion, Generation, StepScores

#: Chance that one sample is right, by the problem's level (1 easy .. 3 hard).
P_RIGHT = {1: 0.9, 2: 0.5, 3: 0.1}


class LevelPolicy:
    """Right with a probability set by the problem's level; step mode (a stop string) writes one step, then
    the answer. A wrong sample answers the gold answer plus 1 to 3.

    ``logprob`` is what every full (answer-giving) completion reports as its summed log-probability
    (``None``: the backend does not report one), for the tests of probes that read it.
    """

    name = "levels"
    num_parameters = 1000

    def __init__(self, problems, logprob: float | None = None):
        self.by_question = {p.question: p for p in problems}
        self.logprob = logprob

    def format_prompt(self, question: str) -> str:
        return f"Q: {question}\nA: "

    def generate(self, prompts, params):
        out = []
        for i, prompt in enumerate(prompts):
            problem = self.by_question[prompt.split("\n")[0][3:]]
            rng = random.Random(f"{params.seed}:{i}:{prompt}")
            p_right = P_RIGHT[problem.level]
            comps = []
            for _ in range(params.n):
                answer = problem.answer if rng.random() < p_right else str(int(problem.answer) + rng.randint(1, 3))
                if params.stop and prompt.count("Step ") < 1:
                    comps.append(Completion("Step 1: 1 + 1 = 2\n\n", 6, "stop"))
                else:
                    comps.append(Completion(f"Step 1: 1 + 1 = 2\n\nThe answer is {answer}.", 11, "eos",
                                            logprob=self.logprob))
            out.append(Generation(prompt_tokens=len(prompt.split()), completions=comps))
        return out


def blake2b32(data: bytes) -> int:
    """A 32-bit BLAKE2b digest as an int: another stable hash than ``zlib.crc32``, for tests pinned to it."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "big")


class HashPRM:
    """Step scores in (0, 1] from a stable hash of each step's text: arbitrary but deterministic.

    ``step_hash`` maps the step's UTF-8 bytes to an int (``zlib.crc32`` by default, or :func:`blake2b32`);
    it must not be Python's ``hash()``, which changes from process to process.
    """

    name = "hash"
    num_parameters = 10

    def __init__(self, step_hash: Callable[[bytes], int] = zlib.crc32):
        self.step_hash = step_hash

    def score(self, items):
        return [StepScores([(self.step_hash(s.encode()) % 97 + 1) / 98 for s in steps], tokens=3 * len(steps))
                for _, steps in items]
