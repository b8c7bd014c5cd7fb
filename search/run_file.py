"""One strategy over a problem set into a JSONL results file, batch by batch, resumable (``ttsopt run``).

Each batch's rows are appended and fsynced before the next batch runs, so a killed run loses at most
the batch in flight. Each batch draws from its own seed stream (the run's seed and the batch's first
problem), so a resumed run reproduces the batches it redoes. A row is the problem's
:class:`~ttsopt.search.result.SearchResult` plus the policy and PRM specs, the seed, and the
problem's level, gold answer and source.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ttsopt.data.files import append_jsonl, read_jsonl

from .methods import derive_seed
from .run import run_search
from .strategy import Strategy
from .types import PRM, Policy

if TYPE_CHECKING:
    from ttsopt.data import Problem


def results(out: str | Path, strategy: Strategy, problems: Sequence["Problem"] | None = None) -> list[dict[str, Any]]:
    """The rows of ``out`` for ``strategy`` (and, given ``problems``, for those problems only); none if
    there is no file yet."""
    out = Path(out)
    if not out.exists():
        return []
    ids = None if problems is None else {p.id for p in problems}
    return [r for r in read_jsonl(out) if r.get("strategy") == strategy.key and (ids is None or r["problem_id"] in ids)]


def pending(problems: Sequence["Problem"], out: str | Path, strategy: Strategy, *,
            resume: bool) -> tuple[list["Problem"], int]:
    """(the problems still to run, how many ``out`` already holds for ``strategy``): with ``resume``,
    a problem whose row is in ``out`` is not run again; without, every problem runs."""
    done = {r["problem_id"] for r in results(out, strategy)} if resume else set()
    return [p for p in problems if p.id not in done], len(done)


def run_to_jsonl(problems: Sequence["Problem"], strategy: Strategy, policy: Policy, prm: PRM | None,
                 out: str | Path, *, policy_spec: str, prm_spec: str | None, seed: int = 0,
                 temperature: float = 0.7, max_tokens: int = 256, batch: int = 8,
                 progress: Callable[[int], None] | None = None) -> None:
    """Run ``strategy`` on ``problems`` in batches of ``batch``, appending each batch's rows to ``out``.

    ``policy_spec`` and ``prm_spec`` are what the rows record (the PRM's only where the strategy uses
    one); ``progress(k)`` is called with the problems of each batch once they are on disk.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    problems = list(problems)
    for start in range(0, len(problems), batch):
        chunk = problems[start:start + batch]
        # each batch draws from its own stream: a resumed run reproduces the same batches
        found = run_search(chunk, strategy, policy, prm, seed=derive_seed(seed, "cli", chunk[0].id),
                           temperature=temperature, max_tokens=max_tokens, problem_batch_size=len(chunk))
        rows = []
        for prob, res in zip(chunk, found):
            row = res.to_dict()
            row.update(policy=policy_spec, prm=prm_spec if strategy.uses_prm else None, seed=seed, level=prob.level,
                       gold=prob.answer, source=prob.source)
            rows.append(row)
        append_jsonl(out, rows)
        if progress is not None:
            progress(len(chunk))


__all__ = ["pending", "results", "run_to_jsonl"]
