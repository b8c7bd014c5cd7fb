"""Step-level tree search guided by the PRM: beam search and DVTS.

Both grow solutions one step at a time (a step ends at the delimiter). At every depth
the active paths of *all* problems of the chunk go out in one ``policy.generate`` call
and all their children in one ``prm.score`` call, so a chunk costs ``max_depth`` calls
of each at most, whatever its number of problems, beams or subtrees.

Choices the paper leaves open, made here and pinned by tests:

* **Depth 1** sends the problem's prompt once with ``n = N`` (the same as ``N`` prompts
  of one sample each, at the cost of one prompt); later depths send each active path
  with ``n = M``.
* **Finished paths** (the model ended, the step states the final answer, or the path
  spent ``max_tokens``) leave the active set. In beam search a finished path keeps its
  beam slot: a depth keeps the top ``N/M - finished so far`` children, so the active
  set shrinks, each depth samples at most ``N`` steps, and the final pool holds exactly
  ``N/M`` solutions. Finished children that rank outside the kept slots are pruned
  like any other child. (search-and-learn instead refills the active set to ``N``; the
  paper's "top N/M, then M each" budget is kept here.)
* **max_depth**: the expansion at the last depth samples the rest of the solution (no
  step stop, up to ``max_tokens``) instead of one step, so every path ends with a
  complete solution and ``max_depth`` bounds the number of calls exactly.
* **Ranking** is by the aggregated score of the whole path (``agg``; with ``last`` that
  is the newest step's score). Ties go to the child sampled first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..aggregate import aggregate_scores, extract, has_final_answer, vote
from ..result import Candidate
from ..strategy import Strategy
from ..types import SamplingParams, split_steps
from .calls import Ledger, Outcome, Settings

#: Step texts in a trace are cut to this many characters: enough to recognise a step.
TRACE_STEP_CHARS = 80


@dataclass
class _Path:
    """A partial solution: where it came from, what it says, and how it scored."""

    problem: int
    group: int  # the DVTS subtree it grows in (beam search ignores it)
    index: int  # position among its problem's children at its depth
    parent: int | None  # the parent's index at the previous depth
    text: str
    tokens: int
    last_step: str
    finish_reason: str | None = None  # None while the path is still active
    steps: list[str] = field(default_factory=list)
    step_scores: list[float] = field(default_factory=list)
    score: float = 0.0

    def to_candidate(self) -> Candidate:
        return Candidate(
            text=self.text, steps=self.steps, answer=extract(self.text), step_scores=self.step_scores,
            score=self.score, finish_reason=self.finish_reason or "length",
        )

    def trace_entry(self) -> dict:
        return {
            "index": self.index, "parent": self.parent, "subtree": self.group, "score": self.score,
            "step": self.last_step[:TRACE_STEP_CHARS], "finished": self.finish_reason,
        }


def _finish_reason(completion_reason: str, step: str, tokens: int, final: bool, settings: Settings) -> str | None:
    if final:
        return completion_reason
    if completion_reason == "eos":
        return "eos"
    if has_final_answer(step):
        return "answer"
    if tokens >= settings.max_tokens:
        return "length"
    return None


def _expand(
    ledger: Ledger, prompts: Sequence[str], parents: Sequence[_Path], n: int, group_size: int,
    depth: int, final: bool, settings: Settings,
) -> list[list[_Path]]:
    """One generate call for every active path of every problem; children grouped by problem."""
    params = SamplingParams(
        n=n, temperature=settings.temperature,
        max_tokens=settings.max_tokens if final else settings.step_max_tokens,
        stop=() if final else (settings.delimiter,), seed=ledger.seed_for(depth),
    )
    gens = ledger.generate(
        [pa.problem for pa in parents], [prompts[pa.problem] + pa.text for pa in parents], params
    )
    children: list[list[_Path]] = [[] for _ in prompts]
    for parent, gen in zip(parents, gens):
        for k, c in enumerate(gen.completions):
            kids = children[parent.problem]
            tokens = parent.tokens + c.tokens
            kids.append(_Path(
                problem=parent.problem, group=k // group_size if depth == 1 else parent.group,
                index=len(kids), parent=parent.index if depth > 1 else None, text=parent.text + c.text,
                tokens=tokens, last_step=c.text,
                finish_reason=_finish_reason(c.finish_reason, c.text, tokens, final, settings),
            ))
    return children


def _score(ledger: Ledger, questions: Sequence[str], paths: Sequence[_Path], agg: str, delimiter: str) -> None:
    """One PRM call for every new path of every problem (a path with no steps scores 0.0)."""
    owners, items, targets = [], [], []
    for path in paths:
        path.steps = split_steps(path.text, delimiter)
        if path.steps:
            owners.append(path.problem)
            items.append((questions[path.problem], path.steps))
            targets.append(path)
    for path, result in zip(targets, ledger.score(owners, items)):
        path.step_scores = list(result.scores)
        path.score = aggregate_scores(path.step_scores, agg)


def _ranked(paths: Sequence[_Path]) -> list[_Path]:
    return sorted(paths, key=lambda p: -p.score)  # stable: ties keep sampling order


# A selector takes one problem's children and its pool, moves finished winners to the
# pool and returns (the paths that stay active, the paths kept at this depth: in rank
# order for beam search, in subtree order for DVTS).
Selector = Callable[[list[_Path], list[_Path]], tuple[list[_Path], list[_Path]]]


def _beam_selector(strategy: Strategy) -> Selector:
    width = strategy.n // strategy.m

    def select(children: list[_Path], pool: list[_Path]) -> tuple[list[_Path], list[_Path]]:
        kept = _ranked(children)[: width - len(pool)]
        pool.extend(p for p in kept if p.finish_reason)
        return [p for p in kept if not p.finish_reason], kept

    return select


def _dvts_selector(strategy: Strategy) -> Selector:
    def select(children: list[_Path], pool: list[_Path]) -> tuple[list[_Path], list[_Path]]:
        best: dict[int, _Path] = {}
        for path in _ranked(children):
            best.setdefault(path.group, path)
        kept = sorted(best.values(), key=lambda p: p.group)
        pool.extend(p for p in kept if p.finish_reason)
        pool.sort(key=lambda p: p.group)
        return [p for p in kept if not p.finish_reason], kept

    return select


def _tree_search(
    ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
    settings: Settings, select: Selector, group_size: int,
) -> list[Outcome]:
    """Grow, score and select until no path is active; ``group_size`` first-step samples form
    one subtree (``N`` for beam search: one tree; ``M`` for DVTS: ``N/M`` subtrees)."""
    pools: list[list[_Path]] = [[] for _ in prompts]
    depths: list[list[dict]] = [[] for _ in prompts]
    active = [_Path(problem=p, group=0, index=0, parent=None, text="", tokens=0, last_step="")
              for p in range(len(prompts))]
    for depth in range(1, strategy.max_depth + 1):
        if not active:
            break
        final = depth == strategy.max_depth
        n = strategy.n if depth == 1 else strategy.m
        children = _expand(ledger, prompts, active, n, group_size, depth, final, settings)
        _score(ledger, questions, [c for kids in children for c in kids], strategy.agg, settings.delimiter)
        active = []
        for p, kids in enumerate(children):
            if not kids:
                continue
            still_active, kept = select(kids, pools[p])
            active.extend(still_active)
            depths[p].append({"depth": depth, "generated": len(kids), "kept": [k.trace_entry() for k in kept]})

    outcomes = []
    for pool, trace_depths in zip(pools, depths):
        candidates = [path.to_candidate() for path in pool]
        result = vote(candidates, strategy.vote)
        outcomes.append(Outcome(
            answer=result.answer, candidates=candidates,
            trace={"depths": trace_depths, "vote": strategy.vote, "tally": result.tally, "winner": result.winner},
        ))
        if strategy.method == "dvts":
            outcomes[-1].trace["subtrees"] = [path.group for path in pool]
    return outcomes


def run_beam(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
             settings: Settings) -> list[Outcome]:
    """Beam search with budget ``N`` and beam width ``M``: ``N/M`` beams, each expanded ``M`` ways."""
    return _tree_search(ledger, questions, prompts, strategy, settings, _beam_selector(strategy), strategy.n)


def run_dvts(ledger: Ledger, questions: Sequence[str], prompts: Sequence[str], strategy: Strategy,
             settings: Settings) -> list[Outcome]:
    """Diverse verifier tree search: ``N/M`` independent subtrees, each a greedy search of width ``M``."""
    return _tree_search(ledger, questions, prompts, strategy, settings, _dvts_selector(strategy), strategy.m)


__all__ = ["TRACE_STEP_CHARS", "run_beam", "run_dvts"]
