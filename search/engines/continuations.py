"""What every local backend shares around ``generate``: argument checks, continuation ids and
the greedy shortcut (one completion computed, copied n times).

A prompt that is an earlier prompt plus one of its completions (the next step of a tree
search) must continue from the token ids that were generated, not from a re-tokenisation
of the text (see ``TransformersPolicy.encode_prompt`` for the SmolLM2 case that broke).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Sequence

from ..types import Completion, SamplingParams

#: Continuations (prompt + completion -> token ids) remembered for the next step of a search.
CONTINUATION_CACHE_SIZE = 8192


class ContinuationIds:
    """prompt + completion text -> the ids that produced it, least recently used evicted."""

    def __init__(self, size: int = CONTINUATION_CACHE_SIZE) -> None:
        self.size = size
        self._ids: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def get(self, prompt: str) -> list[int] | None:
        ids = self._ids.get(prompt)
        if ids is None:
            return None
        self._ids.move_to_end(prompt)
        return list(ids)

    def remember(self, prompt: str, completion: str, prompt_ids: Sequence[int], generated: Sequence[int],
                 decode: Callable[[list[int]], str]) -> None:
        """Keep the ids of prompt + completion when they decode to exactly that completion's text
        (a completion cut inside a token, at a stop string, has no exact ids)."""
        if not generated or decode(list(generated)) != completion:
            return
        key = prompt + completion
        self._ids[key] = (*prompt_ids, *generated)
        self._ids.move_to_end(key)
        while len(self._ids) > self.size:
            self._ids.popitem(last=False)

    def clear(self) -> None:
        self._ids.clear()

    def __len__(self) -> int:
        return len(self._ids)


def check_generate_args(prompts: Sequence[str], params: SamplingParams) -> list[str]:
    """The prompts as a list, after the checks every backend makes the same way."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not a single string")
    if any(not s for s in params.stop):
        raise ValueError(f"stop strings must be non-empty, got {params.stop!r}")
    return list(prompts)


def check_encoded(encoded: Sequence[Sequence[int]]) -> None:
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty after tokenisation")


# Greedy decoding is deterministic, so a local backend computes one completion per prompt and
# copies it n times instead of decoding n identical rows.


def rows_per_prompt(params: SamplingParams) -> int:
    """Completions a local backend computes per prompt: one when greedy, else ``params.n``."""
    return 1 if params.greedy else params.n


def completions_per_row(params: SamplingParams) -> int:
    """Completions a computed row stands for (what progress counts): ``n`` when greedy, else 1."""
    return params.n if params.greedy else 1


def fill_greedy(computed: list[Completion], params: SamplingParams) -> list[Completion]:
    """A prompt's ``params.n`` completions from the ones computed for it: as they are, or, when
    greedy, the one completion and n - 1 copies (separate objects, so editing one edits one)."""
    if not params.greedy:
        return computed
    first = computed[0]
    return [first] + [Completion(**vars(first)) for _ in range(params.n - 1)]


__all__ = ["CONTINUATION_CACHE_SIZE", "ContinuationIds", "check_generate_args", "check_encoded",
           "rows_per_prompt", "completions_per_row", "fill_greedy"]
