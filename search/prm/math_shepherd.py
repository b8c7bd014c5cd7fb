"""Math-Shepherd PRM (peiyi9979/math-shepherd-mistral-7b-prm): a step tag after every step,
score = P("+") against "-" from the LM head at the tag.

Format, from the model card and the Math-Shepherd data (``input`` field)::

    {question} Step 1: {step 1} ки\\nStep 2: {step 2} ки\\n...Step n: {step n} ки

tokenized with the tokenizer's BOS (``tokenizer.encode``). The logits *at* each ``ки``
token, restricted to the ids of ``encode("+ -")`` (``▁+``, ``▁-`` for Mistral),
softmaxed, give P(+). The training data numbers its steps ``Step k:``; a policy's steps
do not, so the prefix is added unless a step already starts with one (``step_prefix``).
"""

from __future__ import annotations

import re
from typing import Sequence

from ..types import StepScores
from .hf_common import (
    attach,
    Encoded,
    check_options,
    count_parameters,
    encode_marked_text,
    lm_candidate_probs,
    model_device,
    model_label,
    pad_id_of,
    render_with_markers,
    score_batched,
    single_token_id,
)

FAMILY = "math-shepherd"
STEP_TAG = "ки"
GOOD_TOKEN = "+"
BAD_TOKEN = "-"
#: A step the policy already numbered ("Step 2:", "## Step 2:") keeps its own label.
_NUMBERED = re.compile(r"^(#+\s*)?Step\s*\d+\s*:", re.IGNORECASE)


def render_math_shepherd(question: str, steps: Sequence[str], markers: Sequence[str], *,
                         first_step: int = 0, step_prefix: bool = True) -> str:
    """The Math-Shepherd input text with ``markers[k]`` where step k's tag goes."""
    lines = []
    for j, (step, marker) in enumerate(zip(steps, markers)):
        prefix = f"Step {first_step + j + 1}: " if step_prefix and not _NUMBERED.match(step) else ""
        lines.append(f"{prefix}{step} {marker}")
    return f"{question} " + "\n".join(lines)


class MathShepherdPRM:
    """Math-Shepherd-style PRM over any causal LM trained with the ``ки`` step tag."""

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "auto", batch_size: int = 8,
                 max_length: int = 4096, truncation: str = "error", step_prefix: bool = True,
                 step_tag: str = STEP_TAG, good_token: str = GOOD_TOKEN, bad_token: str = BAD_TOKEN):
        from ..engines.models import load_causal_lm

        check_options(batch_size, max_length, truncation)
        lm, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
        self._setup(lm, tokenizer, name=f"{FAMILY}:{model}", batch_size=batch_size, max_length=max_length,
                    truncation=truncation, step_prefix=step_prefix, step_tag=step_tag,
                    good_token=good_token, bad_token=bad_token)

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str | None = None, batch_size: int = 8,
                   max_length: int = 4096, truncation: str = "error", step_prefix: bool = True,
                   step_tag: str = STEP_TAG, good_token: str = GOOD_TOKEN,
                   bad_token: str = BAD_TOKEN) -> "MathShepherdPRM":
        """Wrap an already-loaded causal LM and its tokenizer (tests, custom loading)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name=name or model_label(FAMILY, model), batch_size=batch_size,
                    max_length=max_length, truncation=truncation, step_prefix=step_prefix,
                    step_tag=step_tag, good_token=good_token, bad_token=bad_token)
        return self

    def _setup(self, model, tokenizer, *, name, batch_size, max_length, truncation, step_prefix,
               step_tag, good_token, bad_token) -> None:
        attach(self, model, tokenizer, name=name, batch_size=batch_size, max_length=max_length, truncation=truncation)
        self.step_prefix = step_prefix
        self.step_tag = step_tag
        self.step_tag_id = single_token_id(tokenizer, step_tag, what="step tag")
        candidates = tokenizer.encode(f"{good_token} {bad_token}", add_special_tokens=False)
        if len(candidates) != 2:
            raise ValueError(
                f"'{good_token} {bad_token}' should encode to exactly two tokens (good, bad), got {candidates}"
            )
        self.candidate_ids = list(candidates)

    def encode(self, question: str, steps: list[str], first_step: int = 0) -> Encoded:
        """Token ids and the index of each step's tag (steps already stripped)."""
        text, starts = render_with_markers(
            lambda markers: render_math_shepherd(question, steps, markers, first_step=first_step,
                                                 step_prefix=self.step_prefix),
            len(steps), self.step_tag,
        )
        return encode_marked_text(self.tokenizer, text, starts, len(self.step_tag), self.step_tag_id,
                                  add_special_tokens=True)

    def _forward(self, input_ids, attention_mask, rows, cols):
        return lm_candidate_probs(self.model, input_ids, attention_mask, rows, cols, self.candidate_ids)

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """P(step is good) per step; see :mod:`search.prm.hf_common` for long inputs."""
        return score_batched(items, encode=self.encode, forward=self._forward, batch_size=self.batch_size,
                             max_length=self.max_length, truncation=self.truncation,
                             pad_id=pad_id_of(self.tokenizer), device=model_device(self.model), name=self.name)
