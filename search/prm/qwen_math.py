"""Qwen2.5-Math-PRM (Qwen/Qwen2.5-Math-PRM-7B, -72B): ``<extra_0>`` after every step,
a two-label classification head, score = softmax(logits)[1] at each separator.

Format, from the model card: the chat template applied to::

    system:    "Please reason step by step, and put your final answer within \\boxed{}."
    user:      question
    assistant: "<extra_0>".join(steps) + "<extra_0>"

(``add_generation_prompt=False``), tokenized as is. The checkpoint's architecture
(``Qwen2ForProcessRewardModel``) ships as remote code; it is only run when the caller
opts in with ``trust_remote_code=True``. Without it a plain
``AutoModelForTokenClassification`` load is tried and refused if the head's weights do
not match, rather than scoring with a randomly initialised head.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

from .hf_common import (
    HFPRM,
    Encoded,
    encode_marked_text,
    index_tensors,
    load_tokenizer,
    render_with_markers,
    single_token_id,
    torch_dtype,
)

FAMILY = "qwen-prm"
SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
STEP_SEPARATOR = "<extra_0>"

_REMOTE_CODE_HINT = (
    "Qwen2.5-Math-PRM checkpoints define their model (Qwen2ForProcessRewardModel) in remote code "
    "shipped with the weights. Review that code, then pass trust_remote_code=True "
    "(e.g. load_prm('qwen-prm:PATH', trust_remote_code=True)) to run it."
)


class RemoteCodeRequiredError(RuntimeError):
    """The checkpoint cannot be run by transformers' own classes; it needs its remote code."""


def qwen_prm_messages(question: str, steps: Sequence[str], separators: Sequence[str],
                      system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "".join(f"{s}{sep}" for s, sep in zip(steps, separators))},
    ]


def load_qwen_prm(folder: str, *, device: str = "cpu", dtype: str = "auto", trust_remote_code: bool = False):
    """Load the model, refusing a load whose classification head would be left random."""
    from transformers import AutoModel, AutoModelForTokenClassification

    kwargs = {"dtype": torch_dtype(dtype, device)}
    if trust_remote_code:
        model = AutoModel.from_pretrained(folder, trust_remote_code=True, **kwargs)
    else:
        try:
            model, info = AutoModelForTokenClassification.from_pretrained(folder, output_loading_info=True, **kwargs)
        except Exception as e:  # noqa: BLE001 - any failure here means the same thing to the user
            raise RemoteCodeRequiredError(f"could not load {folder} as a token classifier ({e}). "
                                          + _REMOTE_CODE_HINT) from e
        missing = list(info.get("missing_keys") or []) + list(info.get("mismatched_keys") or [])
        if missing:
            raise RemoteCodeRequiredError(
                f"loading {folder} as a plain token classifier left weights uninitialised "
                f"({', '.join(map(str, missing[:5]))}). " + _REMOTE_CODE_HINT
            )
    return model.to(device).eval()


class QwenMathPRM(HFPRM):
    """Qwen2.5-Math-PRM-style PRM: a two-label token classifier read at each ``<extra_0>``.

    Options: ``system_prompt``, ``step_separator`` (``<extra_0>``); loading only:
    ``trust_remote_code`` (default False, see the module docstring)."""

    FAMILY = FAMILY
    OPTIONS: ClassVar[dict[str, Any]] = {"system_prompt": SYSTEM_PROMPT, "step_separator": STEP_SEPARATOR}
    LOAD_OPTIONS: ClassVar[dict[str, Any]] = {"trust_remote_code": False}

    @classmethod
    def load(cls, model: str, *, device: str, dtype: str, trust_remote_code: bool = False):
        tokenizer, folder = load_tokenizer(model)
        return load_qwen_prm(folder, device=device, dtype=dtype, trust_remote_code=trust_remote_code), tokenizer

    def _check_model(self, model, tokenizer, name: str) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{name}: the Qwen PRM format needs a tokenizer with a chat template")
        num_labels = getattr(getattr(model, "config", None), "num_labels", 2)
        if num_labels != 2:
            raise ValueError(f"{name}: expected a two-label classification head, the model has {num_labels}")

    def _configure(self, *, system_prompt, step_separator) -> None:
        self.system_prompt = system_prompt
        self.step_separator = step_separator
        ids = self.tokenizer.encode(step_separator, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"{self.name}: step separator {step_separator!r} must be one token, got {ids}")
        self.separator_id = single_token_id(self.tokenizer, step_separator, what="step separator")

    def encode(self, question: str, steps: list[str], first_step: int = 0) -> Encoded:
        """Token ids and the index of each step's ``<extra_0>``."""
        text, starts = render_with_markers(
            lambda seps: self.tokenizer.apply_chat_template(
                qwen_prm_messages(question, steps, seps, self.system_prompt),
                tokenize=False, add_generation_prompt=False),
            len(steps), self.step_separator,
        )
        return encode_marked_text(self.tokenizer, text, starts, len(self.step_separator), self.separator_id,
                                  add_special_tokens=False)

    def _forward(self, input_ids, attention_mask, rows, cols):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        logits = out.logits if hasattr(out, "logits") else out[0]
        r, c = index_tensors(rows, cols, logits.device)
        return logits[r, c].float().softmax(dim=-1)[:, 1]
