"""Budgets from one pool: evaluate Best-of-N and voting at every N <= N_max by subsampling.

Sampling N_max candidates once and scoring each budget N on N-subsets costs N_max
generations instead of the sum over budgets, and it estimates the *expected* accuracy of
an N-sample run (the mean over subsets) with less variance than one run. Where there are
no more than ``n_subsets`` subsets (N = 1 of a 16-pool: 16 singletons; N = N_max: one)
every subset is used, so the estimate is exact for that pool: at N = 1 it *is* Pass@1.
The votes are cast by ``ttsopt.search.aggregate``: the same rules a live search uses.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from ttsopt.search.aggregate import aggregate_scores, vote
from ttsopt.search.result import Candidate


@dataclass(frozen=True)
class PoolItem:
    """A pooled candidate with what it cost: generated tokens, and PRM tokens to score it."""

    candidate: Candidate
    tokens: int
    prm_tokens: int = 0


@dataclass
class BudgetEstimate:
    n: int
    agg: str
    vote: str
    accuracy: float          # mean correctness over the subsets
    answer: str | None       # the most common answer over the subsets (ties: the first seen)
    generated_tokens: float  # mean over subsets
    prm_tokens: float        # mean over subsets
    n_subsets: int


def subsets(pool_size: int, n: int, n_subsets: int, rng: random.Random) -> list[list[int]]:
    """The n-subsets of range(pool_size) a budget is estimated on, each in pool order.

    All of them when there are at most ``n_subsets`` (exact), else ``n_subsets`` random ones.
    """
    if not 1 <= n <= pool_size:
        raise ValueError(f"budget {n} must be between 1 and the pool size {pool_size}")
    if math.comb(pool_size, n) <= n_subsets:
        return [list(c) for c in itertools.combinations(range(pool_size), n)]
    return [sorted(rng.sample(range(pool_size), n)) for _ in range(n_subsets)]


def modal_answer(answers: Sequence[str | None]) -> str | None:
    """The answer most subsets gave (None when most gave none); ties go to the first seen."""
    counts = Counter(answers)
    return max(counts, key=lambda a: (counts[a], -answers.index(a))) if counts else None


def estimate_budgets(
    pool: Sequence[PoolItem],
    budgets: Sequence[int],
    rules: Sequence[tuple[str, str]],
    grade: Callable[[str | None], bool],
    *,
    n_subsets: int = 16,
    seed: int = 0,
) -> list[BudgetEstimate]:
    """Expected accuracy and cost of every (budget, agg, vote) rule on one problem's pool.

    The same subsets are used for every rule at a budget (paired comparison), and the
    subsets depend only on ``seed``, so reruns reproduce the estimates exactly.
    """
    graded: dict[str | None, bool] = {}

    def correct(answer: str | None) -> bool:
        if answer not in graded:
            graded[answer] = bool(grade(answer)) if answer is not None else False
        return graded[answer]

    out: list[BudgetEstimate] = []
    for n in budgets:
        if n > len(pool):
            continue
        picks = subsets(len(pool), n, n_subsets, random.Random(f"{seed}:{n}"))
        gen = sum(sum(pool[i].tokens for i in pick) for pick in picks) / len(picks)
        prm = sum(sum(pool[i].prm_tokens for i in pick) for pick in picks) / len(picks)
        for agg, rule in rules:
            answers = []
            for pick in picks:
                cands = [_scored(pool[i].candidate, agg, rule) for i in pick]
                answers.append(vote(cands, rule).answer)
            acc = sum(correct(a) for a in answers) / len(answers)
            out.append(BudgetEstimate(n, agg, rule, acc, modal_answer(answers), gen,
                                      prm if rule != "majority" else 0.0, len(picks)))
    return out


def _scored(c: Candidate, agg: str, rule: str) -> Candidate:
    if rule == "majority":
        return c
    if c.step_scores is None:
        raise ValueError("a PRM vote needs step scores on every pooled candidate")
    return Candidate(c.text, c.steps, c.answer, c.step_scores, aggregate_scores(c.step_scores, agg), c.finish_reason)
