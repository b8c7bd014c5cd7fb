"""Methods that sample whole solutions in one call: CoT, majority vote, Best-of-N.

Each sends one prompt per problem with ``n`` samples, so a chunk of problems costs one
``policy.generate`` call (and, for Best-of-N, one ``prm.score`` call over every step of
every candidate).
"""

from __future__ import annotations

from typing import Sequence

from ..aggregate import aggregate_scores, extract, vote
from ..result import Candidate
from ..strategy import Strategy
from ..types import SamplingParams, split_steps
from .calls import Ledger, Outcome, Settings


def sample_candidates(
    ledger: Ledger, prompts: Sequence[str], n: int, temperature: float, settings: Settings, *,
    owners: Sequence[int] | None = None, call: int = 0,
) -> list[list[Candidate]]:
    """``n`` full solutions per prompt (one prompt per problem), unscored.

    ``owners[i]`` is the problem of ``prompts[i]`` (default: the i-th); ``call`` numbers the
    chunk's generate calls for their seeds (the adaptive methods draw in several rounds)."""
    params = SamplingParams(
        n=n, temperature=temperature, max_tokens=settings.max_tokens, seed=ledger.seed_for(call)
    )
    gens = ledger.generate(range(len(prompts)) if owners is None else owners, prompts, params)
    return [
        [
            Candidate(
                text=c.text, steps=split_steps(c.text, settings.delimiter), answer=extract(c.text),
                finish_reason=c.finish_reason,
            )
            for c in gen.completions
        ]
        for gen in gens
    ]


def score_candidates(
    ledger: Ledger, questions: Sequence[str], pools: Sequence[Sequence[Candidate]], agg: str, *,
    owners: Sequence[int] | None = None,
) -> None:
    """Fill ``step_scores`` and ``score`` of every candidate with one PRM call for all problems.

    ``owners[i]`` is the problem of ``pools[i]`` (default: the i-th). A candidate with no
    steps (empty text) is not sent; it scores 0.0 (no evidence).
    """
    items, targets, by = [], [], []
    for p, question, pool in zip(range(len(pools)) if owners is None else owners, questions, pools):
        for cand in pool:
            if cand.steps:
                by.append(p)
                items.append((question, cand.steps))
                targets.append(cand)
            else:
                cand.step_scores, cand.score = [], aggregate_scores([], agg)
    for cand, result in zip(targets, ledger.score(by, items)):
        cand.step_scores = list(result.scores)
        cand.score = aggregate_scores(cand.step_scores, agg)


def _decide(pool: list[Candidate], rule: str) -> Outcome:
    result = vote(pool, rule)
    return Outcome(answer=result.answer, candidates=pool, trace={"vote": rule, "tally": result.tally,
                                                                 "winner": result.winner})


def run_cot(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
            settings: Settings) -> list[Outcome]:
    """One greedy solution per problem; the temperature setting does not apply."""
    pools = sample_candidates(ledger, prompts, 1, 0.0, settings)
    return [_decide(pool, "majority") for pool in pools]


def run_majority(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
                 settings: Settings) -> list[Outcome]:
    """``n`` samples, the most frequent answer wins; no PRM is consulted."""
    pools = sample_candidates(ledger, prompts, strategy.n, settings.temperature, settings)
    return [_decide(pool, "majority") for pool in pools]


def run_best_of_n(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
                  settings: Settings) -> list[Outcome]:
    """``n`` samples, every step PRM-scored, scores aggregated by ``agg``, answer by ``vote``."""
    pools = sample_candidates(ledger, prompts, strategy.n, settings.temperature, settings)
    score_candidates(ledger, questions, pools, strategy.agg)
    return [_decide(pool, strategy.vote) for pool in pools]


__all__ = ["run_best_of_n", "run_cot", "run_majority", "sample_candidates", "score_candidates"]
