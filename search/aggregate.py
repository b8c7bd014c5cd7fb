"""From step scores to one score, and from many candidates to one answer.

Kept apart from the search loops so that the offline sweep can re-vote a stored pool
of candidates (Best-of-N budgets are subsampled from one pool of N_max) with exactly
the rules a live search uses.

Tie rules, chosen so that a result never depends on dict or hash order:

* ``majority``: the most frequent answer; on a tie, the answer that *appeared first*
  in candidate order wins.
* ``prm_vote``: the answer with the highest summed candidate score; ties as above.
* ``prm_max``: the answer of the highest-scoring candidate; on a tie, the earlier
  candidate.

Candidates without an extractable answer take no part in any vote (they cannot be an
answer); when no candidate has one, the result's answer is ``None``.
"""

from __future__ import annotations

import functools

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

from .result import Candidate
from .strategy import AGGREGATIONS, VOTES

#: A step that states the final answer ends a search path even if the model would go on.
_FINAL_ANSWER = re.compile(r"answer\s+is|\\boxed\s*\{", re.IGNORECASE)


def aggregate_scores(scores: Sequence[float], agg: str) -> float:
    """One solution score from its step scores, as the paper's PRM-Min/-Last/-Avg (and -Prod).

    A solution with no steps has no evidence for it and scores 0.0 under every rule.
    """
    if agg not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {agg!r}; expected one of {', '.join(AGGREGATIONS)}")
    if not scores:
        return 0.0
    if agg == "min":
        return float(min(scores))
    if agg == "last":
        return float(scores[-1])
    if agg == "avg":
        return float(sum(scores) / len(scores))
    return float(math.prod(scores))


def has_final_answer(text: str) -> bool:
    """Whether a step states the final answer ("The answer is ..." or ``\\boxed{...}``)."""
    return bool(_FINAL_ANSWER.search(text))


def extract(text: str) -> str | None:
    """The answer a solution states (``ttsopt.data.extract_answer``; imported late to keep
    ``ttsopt.search`` importable without the data layer)."""
    from ttsopt.data import extract_answer

    return extract_answer(text)


@functools.lru_cache(maxsize=65536)
def vote_key(answer: str | None) -> str | None:
    """The key two answers must share to count as the same vote.

    Cached: pooled estimates vote over up to 64 subsets per budget and rule, and normalising the same
    answer strings again dominated their cost (measured: 76 of 85 s for n = 15 on 365 pools)."""
    if answer is None:
        return None
    from ttsopt.data import normalize_answer

    key = normalize_answer(answer)
    return key if key else None


@dataclass
class VoteOutcome:
    """The winning answer, the index of a candidate that gave it, and the full tally.

    ``tally`` maps each answer key to its count (``majority``), summed score
    (``prm_vote``) or best score (``prm_max``), in order of first appearance.
    """

    answer: str | None
    winner: int | None
    tally: dict[str, float] = field(default_factory=dict)


def vote(candidates: Sequence[Candidate], rule: str) -> VoteOutcome:
    """Choose the final answer among ``candidates`` by ``rule`` (see the module doc for ties)."""
    if rule not in VOTES:
        raise ValueError(f"unknown vote {rule!r}; expected one of {', '.join(VOTES)}")
    if rule != "majority":
        unscored = [i for i, c in enumerate(candidates) if c.answer is not None and c.score is None]
        if unscored:
            raise ValueError(f"vote {rule!r} needs scored candidates; candidate {unscored[0]} has no score")

    tally: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, cand in enumerate(candidates):
        key = vote_key(cand.answer)
        if key is None:
            continue
        if key not in tally:
            first[key] = i
            tally[key] = 0.0 if rule != "prm_max" else -math.inf
        if rule == "majority":
            tally[key] += 1
        elif rule == "prm_vote":
            tally[key] += cand.score
        else:
            tally[key] = max(tally[key], cand.score)
    if not tally:
        return VoteOutcome(answer=None, winner=None, tally={})

    if rule == "prm_max":
        # The earliest candidate with the top score; a later equal score never displaces it.
        winner = None
        for i, cand in enumerate(candidates):
            if vote_key(cand.answer) is not None and (winner is None or cand.score > candidates[winner].score):
                winner = i
    else:
        # max() keeps the first of equal values, and the tally is in first-appearance order.
        best_key = max(tally, key=lambda k: tally[k])
        winner = first[best_key]
    return VoteOutcome(answer=candidates[winner].answer, winner=winner, tally=tally)


__all__ = ["VoteOutcome", "aggregate_scores", "extract", "has_final_answer", "vote", "vote_key"]
