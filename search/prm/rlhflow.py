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

FAMILY = "rlhflow"


def rlhflow_conversation(question: str, steps: Sequence[str], assistant: Sequence[str]) -> list[dict]:
    """The chat messages: user turn per step (the first with the question), assistant reply after each."""
    messages = []
    for j, (step, reply) in enumerate(zip(steps, assistant)):
        messages.append({"role": "user", "content": f"{question} {step}" if j == 0 else step})
        messages.append({"role": "assistant", "content": reply})
    return messages


class RLHFlowPRM:
    """RLHFlow-style PRM: a chat causal LM that answers "+" or "-" after each step."""

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "auto", batch_size: int = 8,
                 max_length: int = 4096, truncation: str = "error", good_token: str = "+", bad_token: str = "-"):
        from ..engines.models import load_causal_lm

        check_options(batch_size, max_length, truncation)
        lm, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
        self._setup(lm, tokenizer, name=f"{FAMILY}:{model}", batch_size=batch_size, max_length=max_length,
                    truncation=truncation, good_token=good_token, bad_token=bad_token)

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str | None = None, batch_size: int = 8,
                   max_length: int = 4096, truncation: str = "error", good_token: str = "+",
                   bad_token: str = "-") -> "RLHFlowPRM":
        """Wrap an already-loaded causal LM and its tokenizer (tests, custom loading)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name=name or model_label(FAMILY, model), batch_size=batch_size,
                    max_length=max_length, truncation=truncation, good_token=good_token, bad_token=bad_token)
        return self

    def _setup(self, model, tokenizer, *, name, batch_size, max_length, truncation, good_token, bad_token) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{name}: the RLHFlow format needs a tokenizer with a chat template")
        attach(self, model, tokenizer, name=name, batch_size=batch_size, max_length=max_length, truncation=truncation)
        self.good_token = good_token
        self.candidate_ids = [single_token_id(tokenizer, good_token, what="good token"),
                              single_token_id(tokenizer, bad_token, what="bad token")]

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

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """P("+") per step; see :mod:`search.prm.hf_common` for long inputs."""
        return score_batched(items, encode=self.encode, forward=self._forward, batch_size=self.batch_size,
                             max_length=self.max_length, truncation=self.truncation,
                             pad_id=pad_id_of(self.tokenizer), device=model_device(self.model), name=self.name)
