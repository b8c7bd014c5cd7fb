"""RLHFlow PRMs (RLHFlow/Llama3.1-8B-PRM-Mistral-Data, -Deepseek-Data): one chat turn per step.

Format, from RLHFlow/RLHF-Reward-Modeling ``math-rm`` (README and ``prm_evaluate.py``):
a conversation with one user turn per (stripped) step, the first holding
``question + " " + step 1``, each followed by an assistant turn ``"+"``, rendered with
the model's chat template (Llama 3.1: BOS, default system header, ``<|eot_id|>``s)::

    user: "{question} {step 1}"   assistant: "+"   user: "{step 2}"   assistant: "+"  ...

The score of step k is P("+") against "-" (ids of ``encode("+")[-1]``, ``encode("-")[-1]``)
from the logits at the position that *predicts* the k-th assistant "+" (the reference
reads position -3 of each prefix conversation; one pass over the whole conversation
reads the same positions, attention being causal).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from .hf_common import (
    HFPRM,
    Encoded,
    encode_marked_text,
    lm_candidate_probs,
    render_with_markers,
    single_token_id,
)

FAMILY = "rlhflow"


def rlhflow_conversation(question: str, steps: Sequence[str], assistant: Sequence[str]) -> list[dict]:
    """The chat messages: user turn per step (the first with the question), assistant reply after each."""
    messages = []
    for j, (step, reply) in enumerate(zip(steps, assistant)):
        messages.append({"role": "user", "content": f"{question} {step}" if j == 0 else step})
        messages.append({"role": "assistant", "content": reply})
    return messages


class RLHFlowPRM(HFPRM):
    """RLHFlow-style PRM: a chat causal LM that answers "+" or "-" after each step.

    Options: ``good_token`` / ``bad_token`` (``+`` / ``-``)."""

    FAMILY = FAMILY
    OPTIONS: ClassVar[dict[str, Any]] = {"good_token": "+", "bad_token": "-"}

    def _check_model(self, model, tokenizer, name: str) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{name}: the RLHFlow format needs a tokenizer with a chat template")

    def _configure(self, *, good_token, bad_token) -> None:
        self.good_token = good_token
        self.candidate_ids = [single_token_id(self.tokenizer, good_token, what="good token"),
                              single_token_id(self.tokenizer, bad_token, what="bad token")]

    def encode(self, question: str, steps: list[str], first_step: int = 0) -> Encoded:
        """Token ids and, per step, the position whose next-token logits score it."""
        text, starts = render_with_markers(
            lambda markers: self.tokenizer.apply_chat_template(
                rlhflow_conversation(question, steps, markers), tokenize=False, add_generation_prompt=False),
            len(steps), self.good_token,
        )
        # apply_chat_template(tokenize=True) tokenizes its rendering without adding special tokens.
        return encode_marked_text(self.tokenizer, text, starts, len(self.good_token), self.candidate_ids[0],
                                  add_special_tokens=False, shift=-1)

    def _forward(self, input_ids, attention_mask, rows, cols):
        return lm_candidate_probs(self.model, input_ids, attention_mask, rows, cols, self.candidate_ids)
