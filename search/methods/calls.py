"""The batched model calls of a search, and who pays for them.

Every strategy talks to the policy and the PRM only through a ``Ledger``: it sends the
prompts of *all* problems of a chunk in one call and the ledger books each problem's
prompt (once, see ``ttsopt.search.compute``), its generated tokens, each PRM item's tokens
and a fair share of the call's wall time to the problem that owns it. One place doing the
bookkeeping keeps the methods' compute comparable.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..compute import Compute
from ..result import Candidate
from ..types import DEFAULT_STEP_DELIMITER, PRM, Generation, Policy, SamplingParams, StepScores


@dataclass(frozen=True)
class Settings:
    """Sampling knobs shared by every method (``run_search`` fills them in).

    ``max_tokens`` caps a full solution (one sample, or one path of a tree search);
    ``step_max_tokens`` caps one step of a tree search.
    """

    seed: int = 0
    temperature: float = 0.7
    max_tokens: int = 512
    step_max_tokens: int = 128
    delimiter: str = DEFAULT_STEP_DELIMITER

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.max_tokens < 1 or self.step_max_tokens < 1:
            raise ValueError(
                f"max_tokens and step_max_tokens must be >= 1, got {self.max_tokens} and {self.step_max_tokens}"
            )
        if not self.delimiter:
            raise ValueError("the step delimiter must be a non-empty string")


@dataclass
class Outcome:
    """What a method found for one problem, before correctness and compute are attached."""

    answer: str | None
    candidates: list[Candidate]
    trace: dict[str, Any] = field(default_factory=dict)


def derive_seed(seed: int, *parts: int | str) -> int:
    """A 31-bit seed from ``seed`` and a call's coordinates (chunk, depth...).

    Hash-based rather than ``seed + depth`` so that neighbouring runs (seed 0 depth 1,
    seed 1 depth 0) never share a random stream; stable across processes and Python
    versions (no ``hash()``).
    """
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % (2**31 - 1)


class Ledger:
    """Runs batched policy/PRM calls for a chunk of problems and books their cost per problem."""

    def __init__(self, policy: Policy, prm: PRM | None, num_problems: int, seed: int, chunk: int = 0):
        self.policy = policy
        self.prm = prm
        self.compute = [Compute() for _ in range(num_problems)]
        self._prompted: set[int] = set()  # problems whose prompt has been charged (once each)
        self._seed = seed
        self._chunk = chunk

    def seed_for(self, depth: int) -> int:
        """The seed of the generate call at ``depth`` (0 for single-call methods) of this chunk."""
        return derive_seed(self._seed, self._chunk, depth)

    def generate(self, owners: Sequence[int], prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        """One ``policy.generate`` call; ``owners[i]`` is the problem that ``prompts[i]`` belongs to."""
        if not prompts:
            return []
        start = time.perf_counter()
        gens = self.policy.generate(list(prompts), params)
        elapsed = time.perf_counter() - start
        if len(gens) != len(prompts):
            raise RuntimeError(
                f"policy {self.policy.name!r} returned {len(gens)} generations for {len(prompts)} prompts"
            )
        for owner, gen in zip(owners, gens):
            if len(gen.completions) != params.n:
                raise RuntimeError(
                    f"policy {self.policy.name!r} returned {len(gen.completions)} completions, expected n={params.n}"
                )
            # The first call of a problem sends its bare prompt; later calls (the next depth of
            # a tree search) send prompt + path, which a prefix-caching engine does not re-read.
            first = owner not in self._prompted
            self._prompted.add(owner)
            self.compute[owner].add_policy(gen.prompt_tokens if first else 0, gen.generated_tokens,
                                           self.policy.num_parameters, context_tokens=gen.prompt_tokens)
        self._share_time(owners, elapsed)
        return gens

    def score(self, owners: Sequence[int], items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """One ``prm.score`` call; every item must get one score per step."""
        if not items:
            return []
        if self.prm is None:
            raise ValueError("this strategy needs a PRM, but none was given")
        start = time.perf_counter()
        scored = self.prm.score(list(items))
        elapsed = time.perf_counter() - start
        if len(scored) != len(items):
            raise RuntimeError(f"PRM {self.prm.name!r} returned {len(scored)} results for {len(items)} items")
        for owner, (_, steps), result in zip(owners, items, scored):
            if len(result.scores) != len(steps):
                raise RuntimeError(
                    f"PRM {self.prm.name!r} returned {len(result.scores)} scores for {len(steps)} steps"
                )
            self.compute[owner].add_prm(result.tokens, self.prm.num_parameters)
        self._share_time(owners, elapsed)
        return scored

    def _share_time(self, owners: Sequence[int], elapsed: float) -> None:
        """A batched call cannot be split honestly, so its problems share its time equally."""
        taking_part = set(owners)
        for owner in taking_part:
            self.compute[owner].wall_time_s += elapsed / len(taking_part)


__all__ = ["Ledger", "Outcome", "Settings", "derive_seed"]
