"""``run_search``: one strategy over many problems, with batched calls, compute and grading."""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

from .result import SearchResult
from .methods import RUNNERS, Ledger, Settings
from .strategy import Strategy
from .types import DEFAULT_STEP_DELIMITER, PRM, Policy

if TYPE_CHECKING:
    from ttsopt.data import Problem

#: Sequences (problems x samples) one chunk may put into a single generate call by default.
MAX_SEQUENCES_PER_CALL = 4096


def default_problem_batch_size(strategy: Strategy) -> int:
    """Problems per chunk: as many as keep one call under ``MAX_SEQUENCES_PER_CALL`` sequences."""
    return max(1, MAX_SEQUENCES_PER_CALL // strategy.n)


def run_search(
    problems: Sequence["Problem"],
    strategy: Strategy | str,
    policy: Policy,
    prm: PRM | None = None,
    *,
    seed: int = 0,
    temperature: float = 0.7,
    max_tokens: int = 512,
    step_max_tokens: int = 128,
    delimiter: str = DEFAULT_STEP_DELIMITER,
    progress: Callable[[int, int], None] | None = None,
    problem_batch_size: int | None = None,
) -> list[SearchResult]:
    """Run ``strategy`` on every problem and return one graded ``SearchResult`` per problem, in order.

    Problems are processed in chunks of ``problem_batch_size`` (default: enough to
    keep one generate call near ``MAX_SEQUENCES_PER_CALL`` sequences); within a chunk
    every model call is batched across all problems. ``progress(done, total)`` is
    called after each chunk. Seeds for every call derive from ``seed``, the chunk and
    the depth, so the same arguments (and chunking) reproduce the same run on the same
    backend. ``temperature`` does not apply to ``cot``, which is greedy. The adaptive methods
    (``majority_stop``, ``bon_verified``) draw in rounds and may stop before ``strategy.n``
    samples; each result's ``trace`` says how many it drew and why it stopped.
    """
    problems = list(problems)
    if isinstance(strategy, str):
        strategy = Strategy.from_key(strategy)
    if strategy.uses_prm and prm is None:
        raise ValueError(
            f"strategy {strategy.key!r} scores steps with a process reward model; pass prm= "
            "(e.g. ttsopt.search.registry.load_prm('calc'))"
        )
    if problem_batch_size is None:
        problem_batch_size = default_problem_batch_size(strategy)
    if problem_batch_size < 1:
        raise ValueError(f"problem_batch_size must be >= 1, got {problem_batch_size}")
    settings = Settings(
        seed=seed, temperature=temperature, max_tokens=max_tokens, step_max_tokens=step_max_tokens,
        delimiter=delimiter,
    )
    from ttsopt.data import is_equivalent

    runner = RUNNERS[strategy.method]
    results: list[SearchResult] = []
    for chunk_index, start in enumerate(range(0, len(problems), problem_batch_size)):
        chunk = problems[start:start + problem_batch_size]
        ledger = Ledger(policy, prm if strategy.uses_prm else None, len(chunk), seed, chunk_index)
        questions = [p.question for p in chunk]
        prompts = [policy.format_prompt(q) for q in questions]
        outcomes = runner(ledger, questions, prompts, strategy, settings)
        for problem, outcome, compute in zip(chunk, outcomes, ledger.compute):
            results.append(SearchResult(
                problem_id=problem.id, strategy=strategy.key, answer=outcome.answer,
                candidates=outcome.candidates, compute=compute,
                correct=bool(is_equivalent(outcome.answer, problem.answer)) if outcome.answer is not None else False,
                trace=outcome.trace,
            ))
        if progress is not None:
            progress(len(results), len(problems))
    return results


__all__ = ["MAX_SEQUENCES_PER_CALL", "default_problem_batch_size", "run_search"]
