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


def decide_pools(ledger: Ledger, questions: Sequence[str], pools: Sequence[list[Candidate]],
                 strategy: Strategy) -> list[Outcome]:
    """The end every pooled strategy shares: score what a pool still needs scored, then vote.

    For a strategy that uses the PRM (Best-of-N), candidates without ``step_scores`` are scored in one
    PRM call through ``ledger`` (which books it), and candidates that already carry step scores (a
    router's probe samples, scored by the same PRM) are only aggregated by ``strategy.agg``; the
    answer is ``strategy.vote``. Otherwise (CoT, majority) nothing is scored and the majority wins.
    One copy of this rule, so that the online router's pools that reuse a probe's samples
    (``selector/solving.py``) are decided exactly as the sweep's pools are.
    """
    if strategy.uses_prm:
        fresh = []
        for pool in pools:
            for cand in pool:
                if cand.step_scores is not None:
                    cand.score = aggregate_scores(cand.step_scores, strategy.agg)
            fresh.append([cand for cand in pool if cand.step_scores is None])
        score_candidates(ledger, questions, fresh, strategy.agg)
    rule = strategy.vote if strategy.uses_prm else "majority"
    return [_decide(pool, rule) for pool in pools]


def run_cot(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
            settings: Settings) -> list[Outcome]:
    """One greedy solution per problem; the temperature setting does not apply."""
    pools = sample_candidates(ledger, prompts, 1, 0.0, settings)
    return decide_pools(ledger, questions, pools, strategy)


def run_majority(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
                 settings: Settings) -> list[Outcome]:
    """``n`` samples, the most frequent answer wins; no PRM is consulted."""
    pools = sample_candidates(ledger, prompts, strategy.n, settings.temperature, settings)
    return decide_pools(ledger, questions, pools, strategy)


def run_best_of_n(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
                  settings: Settings) -> list[Outcome]:
    """``n`` samples, every step PRM-scored, scores aggregated by ``agg``, answer by ``vote``."""
    pools = sample_candidates(ledger, prompts, strategy.n, settings.temperature, settings)
    return decide_pools(ledger, questions, pools, strategy)


__all__ = ["decide_pools", "run_best_of_n", "run_cot", "run_majority", "sample_candidates", "score_candidates"]
