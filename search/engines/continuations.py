"""What every backend shares around ``generate``: the preamble (:func:`begin_generate`: argument
checks, the stop strings an engine or server is told, per-prompt seeds), continuation ids and the
greedy shortcut (one completion computed, copied n times).

Every policy -- transformers, llama.cpp, vLLM, OpenAI-compatible -- starts ``generate`` with
``call = begin_generate(prompts, params, end_markers)`` and returns ``[]`` when ``call.empty``.

A prompt that is an earlier prompt plus one of its completions (the next step of a tree
search) must continue from the token ids that were generated, not from a re-tokenisation
of the text (see ``TransformersPolicy.encode_prompt`` for the SmolLM2 case that broke).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
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
        (a completion cut inside a token, at a stop string, has no exact ids). An empty completion
        (only an end-of-sequence token, which decodes to nothing) is not kept: its key would be the
        bare prompt, and the prompt's own lookup would then return the prompt with that token."""
        if not generated or not completion or decode(list(generated)) != completion:
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
    prompts = list(prompts)
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"prompts must be strings; prompt {i} is {type(p).__name__}")
    if any(not isinstance(s, str) or not s for s in params.stop):
        raise ValueError(f"stop strings must be non-empty strings, got {params.stop!r}")
    return prompts


def all_stop_strings(stop: Sequence[str], end_markers: Sequence[str]) -> list[str]:
    """Caller's stop strings first, then end markers not already among them."""
    out = list(stop)
    out += [m for m in end_markers if m not in out]
    return out


def prompt_seed(params: SamplingParams, prompt_index: int) -> int | None:
    """The seed of prompt ``prompt_index`` of a call for engines that take one seed per prompt (vLLM, an
    OpenAI-compatible server): ``seed + i * n``, so identical prompts of one call (DVTS starts several
    subtrees from one question) sample differently and sample j of prompt i can be re-drawn as ``+ j``."""
    return None if params.seed is None else params.seed + prompt_index * params.n


@dataclass(frozen=True)
class GenerateCall:
    """A ``generate`` call after its preamble: the checked prompts and what the engine is told.

    ``stops``: the caller's stop strings, then the prompt format's end markers (a base model starting
    the next ``Question:``) not among them -- what a server or vLLM must stop at; a local engine's
    ``StopRule`` tells the two kinds apart itself.
    """

    prompts: list[str]
    params: SamplingParams
    stops: list[str]

    @property
    def empty(self) -> bool:
        return not self.prompts

    def seed(self, prompt_index: int) -> int | None:
        """:func:`prompt_seed` of this call."""
        return prompt_seed(self.params, prompt_index)

    @property
    def rows_per_prompt(self) -> int:
        return rows_per_prompt(self.params)


def begin_generate(prompts: Sequence[str], params: SamplingParams,
                   end_markers: Sequence[str] = ()) -> GenerateCall:
    """The preamble of every backend's ``generate``: :func:`check_generate_args`, then the stop strings.

    A single string as ``prompts`` is a TypeError (it would be read as one prompt per character), as is a
    prompt that is not a string; an empty stop string is a ValueError (it would match everywhere).
    """
    checked = check_generate_args(prompts, params)
    return GenerateCall(prompts=checked, params=params, stops=all_stop_strings(params.stop, end_markers))


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


__all__ = ["CONTINUATION_CACHE_SIZE", "ContinuationIds", "GenerateCall", "all_stop_strings", "begin_generate",
           "check_generate_args", "check_encoded", "prompt_seed", "rows_per_prompt", "completions_per_row",
           "fill_greedy"]
