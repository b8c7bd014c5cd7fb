"""Records and protocols shared by policies, PRMs and strategies.

Kept deliberately small (like vLLM's ``SamplingParams``): every backend takes the same
``SamplingParams`` and returns the same ``Generation`` records, so strategies never
know which engine produced the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol, Sequence, runtime_checkable

#: Steps of a solution are separated by a blank line unless a caller says otherwise.
DEFAULT_STEP_DELIMITER = "\n\n"


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding.

    ``stop`` strings end a completion; the matched stop string is *kept* at the end of
    ``Completion.text`` so that concatenating steps reproduces the solution exactly.
    ``seed`` makes a call reproducible for the same prompts, params and backend.
    """

    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if isinstance(self.stop, str):  # a lone string is a common slip
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes) -> "SamplingParams":
        return replace(self, **changes)


@dataclass
class Completion:
    """One sampled continuation of a prompt.

    ``finish_reason`` is ``"stop"`` (a stop string matched; it ends ``text``), ``"eos"``
    (the model ended the sequence) or ``"length"`` (``max_tokens`` reached).
    ``logprob`` is the summed log-probability of the generated tokens when the backend
    reports it (cheap difficulty probes use it), else ``None``.
    """

    text: str
    tokens: int
    finish_reason: str
    logprob: float | None = None


@dataclass
class Generation:
    """All completions of one prompt, with the prompt's token count.

    ``prompt_tokens`` counts the prompt once (the algorithmic cost, as the paper counts
    FLOPs); ``prefill_tokens`` is what the engine actually pushed through prefill for
    this prompt (``n * prompt_tokens`` for a naive engine, less with a shared prefix
    cache) and is an engine-efficiency figure, not a compute budget.
    """

    prompt_tokens: int
    completions: list[Completion]
    prefill_tokens: int | None = None

    @property
    def generated_tokens(self) -> int:
        return sum(c.tokens for c in self.completions)


@runtime_checkable
class Policy(Protocol):
    """A model that writes solutions. Every backend (transformers, vLLM, OpenAI-HTTP) has this shape."""

    name: str
    #: parameter count, for FLOPs = 2 * params * tokens
    num_parameters: int

    def format_prompt(self, question: str) -> str:
        """The text that a solution continues (chat template or few-shot prefix applied)."""
        ...

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        """Sample ``params.n`` completions for every prompt; one ``Generation`` per prompt, in order."""
        ...


@dataclass
class StepScores:
    """A PRM's verdict on one partial solution: one score in [0, 1] per step."""

    scores: list[float]
    tokens: int = 0


@runtime_checkable
class PRM(Protocol):
    """A process reward model: scores every step of many (question, steps) pairs at once."""

    name: str
    #: parameter count, for FLOPs = 2 * params * tokens (0 for a non-neural verifier)
    num_parameters: int

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Score each ``(question, steps)``; steps are the policy's raw step strings
        (they may end with the step delimiter; adapters strip what their format needs)."""
        ...


def split_steps(text: str, delimiter: str = DEFAULT_STEP_DELIMITER) -> list[str]:
    """Split a full solution into steps, each keeping its trailing delimiter.

    ``"".join(split_steps(t)) == t`` always holds, so a solution sampled in one go and
    one built step by step look the same to a PRM. Empty steps (runs of delimiters)
    are merged into the previous step.
    """
    if not text:
        return []
    steps: list[str] = []
    start = 0
    while True:
        idx = text.find(delimiter, start)
        if idx < 0:
            tail = text[start:]
            if tail:
                if tail.strip() or not steps:
                    steps.append(tail)
                else:
                    steps[-1] += tail
            break
        end = idx + len(delimiter)
        piece = text[start:end]
        if piece.strip() or not steps:
            steps.append(piece)
        else:
            steps[-1] += piece
        start = end
    return steps


__all__ = [
    "DEFAULT_STEP_DELIMITER",
    "SamplingParams",
    "Completion",
    "Generation",
    "Policy",
    "StepScores",
    "PRM",
    "split_steps",
]
