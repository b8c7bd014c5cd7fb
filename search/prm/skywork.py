"""Skywork-o1-Open-PRM (Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B, -7B): a value head on Qwen2.5,
score = sigmoid(value) at the newline that ends each step.

The checkpoint is a Qwen2 causal LM plus a TRL-style value head, stored next to the
base weights as ``v_head.summary.weight`` (1, hidden) and ``v_head.summary.bias`` (1,).
It is rebuilt here without remote code: transformers' ``Qwen2Model`` (the ``model.*``
weights) and a ``Linear(hidden, 1)`` read from the same files; ``lm_head`` is unused.
The value is read from the final (normed) hidden state, as ``hidden_states[-1]`` was.

Format, from SkyworkAI/skywork-o1-prm-inference ``prepare_input``: token ids of
``bos_token + question + "\\n"``, then for every step its *separately tokenized* text
followed by the id of the step token ``"\\n"``; the reward is read at that id. Steps are
stripped; a newline inside a step stays (the model was trained on one-line steps, so
it reads more step ends than are scored).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from .hf_common import (
    HFPRM,
    Encoded,
    index_tensors,
    load_tokenizer,
    single_token_id,
    torch_dtype,
)

FAMILY = "skywork"
STEP_TOKEN = "\n"
HEAD_KEYS = ("v_head.summary.weight", "v_head.summary.bias")


class ValueHead(nn.Module):
    """``summary``: Linear(hidden, 1), kept in float32 whatever the base model's dtype."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1, dtype=torch.float32)

    def forward(self, hidden):
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


class ValueHeadModel(nn.Module):
    """A base transformer (``model``) with a scalar value per token (``v_head``)."""

    def __init__(self, model, v_head: ValueHead):
        super().__init__()
        self.model = model
        self.v_head = v_head
        self.config = model.config

    def forward(self, input_ids, attention_mask=None):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return self.v_head(hidden)


def read_value_head(folder: str | Path) -> dict:
    """The ``v_head.*`` tensors of a checkpoint folder (safetensors, else PyTorch .bin), read alone."""
    folder = Path(folder)
    for index_name, kind in (("model.safetensors.index.json", "safetensors"),
                             ("pytorch_model.bin.index.json", "bin")):
        index = folder / index_name
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted({weight_map[k] for k in HEAD_KEYS if k in weight_map})
            return _read_keys([folder / f for f in files], kind, folder)
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return _read_keys(files, "safetensors", folder)
    return _read_keys(sorted(folder.glob("*.bin")), "bin", folder)


def _read_keys(files: list[Path], kind: str, folder: Path) -> dict:
    found: dict = {}
    for f in files:
        if kind == "safetensors":
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as sf:
                for k in HEAD_KEYS:
                    if k in sf.keys():
                        found[k] = sf.get_tensor(k)
        else:
            state = torch.load(str(f), map_location="cpu", weights_only=True, mmap=True)
            found.update({k: state[k].clone() for k in HEAD_KEYS if k in state})
    missing = [k for k in HEAD_KEYS if k not in found]
    if missing:
        raise FileNotFoundError(
            f"{folder}: no value-head weights {missing} in the checkpoint files; a Skywork PRM checkpoint "
            "stores its head as v_head.summary.weight / v_head.summary.bias"
        )
    return found


def load_value_head_model(folder: str | Path, *, device: str = "cpu", dtype: str = "auto") -> ValueHeadModel:
    """Base model through transformers' own classes, value head from the checkpoint's tensors."""
    from transformers import AutoModel

    base = AutoModel.from_pretrained(str(folder), dtype=torch_dtype(dtype, device), trust_remote_code=False)
    hidden = base.config.hidden_size
    tensors = read_value_head(folder)
    weight, bias = tensors[HEAD_KEYS[0]], tensors[HEAD_KEYS[1]]
    if tuple(weight.shape) != (1, hidden) or tuple(bias.shape) != (1,):
        raise ValueError(f"{folder}: value head has shapes {tuple(weight.shape)}, {tuple(bias.shape)}; "
                         f"expected (1, {hidden}) and (1,)")
    head = ValueHead(hidden)
    head.summary.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return ValueHeadModel(base, head).to(device).eval()


def _snapshot(model: str) -> str:
    """A local folder for a path or hub name (the head is read from its files directly)."""
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    from huggingface_hub import snapshot_download

    return snapshot_download(model)


class SkyworkPRM(HFPRM):
    """Skywork-o1-Open-PRM-style PRM: sigmoid of a value head at each step's newline.

    :meth:`from_model` wraps a :class:`ValueHeadModel`. Options: ``step_token`` (``"\\n"``)."""

    FAMILY = FAMILY
    OPTIONS: ClassVar[dict[str, Any]] = {"step_token": STEP_TOKEN}

    @classmethod
    def load(cls, model: str, *, device: str, dtype: str):
        folder = _snapshot(model)
        tokenizer, _ = load_tokenizer(folder)
        return load_value_head_model(folder, device=device, dtype=dtype), tokenizer

    @classmethod
    def _label_model(cls, model):
        return getattr(model, "model", model)

    def _check_model(self, model, tokenizer, name: str) -> None:
        if not isinstance(model, ValueHeadModel):
            raise TypeError(f"{name}: expected a ValueHeadModel (base model + v_head), got {type(model).__name__}")

    def _configure(self, *, step_token) -> None:
        self.step_token_id = single_token_id(self.tokenizer, step_token, what="step token")
        # The reference prepends bos_token as text; Qwen2.5 tokenizers may have none.
        self.prompt_prefix = self.tokenizer.bos_token or ""

    def encode(self, question: str, steps: list[str], first_step: int = 0) -> Encoded:
        """Prompt ids, then each step's own ids plus the step token; scored at each step token."""
        ids = list(self.tokenizer(self.prompt_prefix + question + "\n", add_special_tokens=False)["input_ids"])
        step_ids = self.tokenizer(list(steps), add_special_tokens=False)["input_ids"] if steps else []
        positions = []
        for piece in step_ids:
            ids += list(piece)
            ids.append(self.step_token_id)
            positions.append(len(ids) - 1)
        return Encoded(input_ids=ids, positions=positions)

    def _forward(self, input_ids, attention_mask, rows, cols):
        values = self.model(input_ids, attention_mask)
        r, c = index_tensors(rows, cols, values.device)
        return values[r, c].float().sigmoid()
