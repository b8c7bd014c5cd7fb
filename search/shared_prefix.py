"""Sampling n continuations of a prompt with transformers, the prompt's KV read once per step.

``generate(num_return_sequences=n)`` gives every sample its own copy of the prompt's keys
and values: the prompt is prefilled n times, and every decoding step reads n copies of it
from memory. On a CPU that memory traffic, not arithmetic, bounds decoding (SmolLM2 at 64
samples: a step spent ~50% of its time concatenating and re-reading cache copies). Here
the prompts of a batch are prefilled once (left-padded) and kept as one *shared* prefix per
prompt; each sample only owns the keys and values of the tokens it generated. A custom
attention function (registered with transformers' ``AttentionInterface``) attends to both
parts with one softmax: the query rows of all samples of a prompt are stacked against that
prompt's prefix in a single matmul (cascade attention, as FlashInfer calls it), then against
their own suffixes.

Only used where it is exact: decoder-only models whose attention goes through the
attention interface with plain causal attention (Llama/SmolLM2, Qwen2, Gemma 3 when prompt +
completion fit its sliding window), sampling with n > 1. Everything else takes ``generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

ATTENTION_NAME = "ttsopt_shared_prefix"
_REGISTERED = False


@dataclass
class PrefixContext:
    """What the attention function needs besides the query and the sample's own keys."""

    keys: list  # per layer: (groups, kv_heads, width, head_dim)
    values: list
    bias: object  # (groups, width): 0 on real prompt tokens, -inf on left padding
    counts: list[int]  # live samples per group; rows are group-major


class SuffixCache:
    """Per-sample keys/values of generated tokens, preallocated; the model writes step t."""

    is_compileable = False

    def __init__(self, layers: int, rows: int, kv_heads: list[int], head_dims: list[int], max_len: int,
                 dtype, device) -> None:
        import torch

        self.keys = [torch.zeros(rows, kv_heads[i], max_len, head_dims[i], dtype=dtype, device=device)
                     for i in range(layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.t = 0

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        q = key_states.shape[-2]
        self.keys[layer_idx][:, :, self.t:self.t + q] = key_states
        self.values[layer_idx][:, :, self.t:self.t + q] = value_states
        end = self.t + q
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def select(self, rows) -> None:
        """Keep only ``rows`` (a tensor of row indices), in that order."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]

    # what model code may ask of a cache when no mask is built
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.t

    def __len__(self) -> int:
        return len(self.keys)


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            shared_prefix: PrefixContext | None = None, **kwargs):
    """Attention over [shared prompt prefix ; own suffix] with one joint softmax.

    ``query``: (rows, heads, q, d); ``key``/``value``: the rows' suffixes (rows, kv_heads, s, d).
    Returns (rows, q, heads, d) like transformers' attention functions.
    """
    import torch

    if shared_prefix is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    ctx = shared_prefix
    layer = module.layer_idx
    pk, pv = ctx.keys[layer], ctx.values[layer]
    rows, heads, q_len, d = query.shape
    groups, kv_heads, width, _ = pk.shape
    g = heads // kv_heads
    if scaling is None:
        scaling = d ** -0.5
    dt = query.dtype
    # Matmuls in the model's dtype (no float copies of the caches: this is memory-bound);
    # the softmax over the joined scores in float32. Scores are laid out per row as
    # (rows, kv_heads, g * q_len, positions).
    qs = query.reshape(rows, kv_heads, g * q_len, d)
    s_suf = torch.matmul(qs, key.transpose(-1, -2)).float() * scaling
    if q_len > 1:
        s = key.shape[-2]
        causal = torch.ones(q_len, s, dtype=torch.bool, device=query.device).tril(s - q_len)
        s_suf = s_suf.masked_fill(~causal.repeat(g, 1)[None, None], float("-inf"))
    counts = ctx.counts
    if len(set(counts)) == 1:  # every group as many rows: one batched matmul for all prefixes
        c = counts[0]
        qg = qs.reshape(groups, c, kv_heads, g * q_len, d).transpose(1, 2).reshape(groups, kv_heads, c * g * q_len, d)
        s_pre = torch.matmul(qg, pk.transpose(-1, -2)).float() * scaling + ctx.bias[:, None, None, :]
        s_pre = s_pre.reshape(groups, kv_heads, c, g * q_len, width).transpose(1, 2).reshape(rows, kv_heads, g * q_len, width)
    else:  # groups lost rows at different times: one matmul per group
        parts, start = [], 0
        for k, c in enumerate(counts):
            qk = qs[start:start + c].transpose(0, 1).reshape(kv_heads, c * g * q_len, d)
            sk = torch.matmul(qk, pk[k].transpose(-1, -2)).float() * scaling + ctx.bias[k]
            parts.append(sk.reshape(kv_heads, c, g * q_len, width).transpose(0, 1))
            start += c
        s_pre = torch.cat(parts, 0)
    m = torch.maximum(s_pre.amax(-1, keepdim=True), s_suf.amax(-1, keepdim=True))
    e_pre = torch.exp(s_pre - m)
    e_suf = torch.exp(s_suf - m)
    z = e_pre.sum(-1, keepdim=True) + e_suf.sum(-1, keepdim=True)
    o_suf = torch.matmul(e_suf.to(dt), value).float()
    if len(set(counts)) == 1:
        c = counts[0]
        eg = e_pre.to(dt).reshape(groups, c, kv_heads, g * q_len, width).transpose(1, 2)
        o_pre = torch.matmul(eg.reshape(groups, kv_heads, c * g * q_len, width), pv).float()
        o_pre = o_pre.reshape(groups, kv_heads, c, g * q_len, d).transpose(1, 2).reshape(rows, kv_heads, g * q_len, d)
    else:
        parts, start = [], 0
        for k, c in enumerate(counts):
            ek = e_pre[start:start + c].to(dt).transpose(0, 1).reshape(kv_heads, c * g * q_len, width)
            parts.append(torch.matmul(ek, pv[k]).float().reshape(kv_heads, c, g * q_len, d).transpose(0, 1))
            start += c
        o_pre = torch.cat(parts, 0)
    out = (o_pre + o_suf) / z
    out = out.reshape(rows, kv_heads, g, q_len, d).reshape(rows, heads, q_len, d).transpose(1, 2)
    return out.to(query.dtype).contiguous(), None


def register() -> None:
    global _REGISTERED
    if not _REGISTERED:
        from transformers import AttentionInterface

        AttentionInterface.register(ATTENTION_NAME, shared_prefix_attention)
        _REGISTERED = True


def supports(model, width: int, max_tokens: int) -> bool:
    """Whether this model's attention can be swapped for the shared-prefix one, exactly."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if config.model_type not in ("llama", "qwen2", "mistral", "gemma3_text", "gemma3", "qwen3"):
        return False
    if getattr(config, "attn_logit_softcapping", None):
        return False
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types) and window is not None and width + max_tokens > window:
        return False
    return True


def prefill(model, prompts: Sequence[Sequence[int]], pad_id: int):
    """Prefill left-padded prompts once; returns (per-layer keys, values, bias, last logits, lengths)."""
    import torch
    from transformers import DynamicCache

    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.as_tensor(list(p), dtype=torch.long)
        mask[i, width - len(p):] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device),
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    keys = [layer.keys for layer in cache.layers]
    values = [layer.values for layer in cache.layers]
    bias = torch.zeros((len(prompts), width), dtype=torch.float32, device=device)
    bias[mask.to(device) == 0] = float("-inf")
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    return keys, values, bias, out.logits[:, -1, :].float(), lengths


__all__ = ["ATTENTION_NAME", "PrefixContext", "SuffixCache", "shared_prefix_attention", "register", "supports", "prefill"]
