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
from typing import Any, ClassVar, Sequence

from .hf_common import (
    HFPRM,
    Encoded,
    encode_marked_text,
    lm_candidate_probs,
    render_with_markers,
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


class MathShepherdPRM(HFPRM):
    """Math-Shepherd-style PRM over any causal LM trained with the ``ки`` step tag.

    Options (``MathShepherdPRM(path, ...)`` and :meth:`from_model`): ``step_prefix`` (number the
    steps ``Step k:``, default True), ``step_tag`` (``ки``), ``good_token`` / ``bad_token``
    (``+`` / ``-``)."""

    FAMILY = FAMILY
    OPTIONS: ClassVar[dict[str, Any]] = {"step_prefix": True, "step_tag": STEP_TAG, "good_token": GOOD_TOKEN,
                                         "bad_token": BAD_TOKEN}

    def _configure(self, *, step_prefix, step_tag, good_token, bad_token) -> None:
        self.step_prefix = step_prefix
        self.step_tag = step_tag
        self.step_tag_id = single_token_id(self.tokenizer, step_tag, what="step tag")
        candidates = self.tokenizer.encode(f"{good_token} {bad_token}", add_special_tokens=False)
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
