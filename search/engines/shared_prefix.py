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

The sampler's kernels live here too (:func:`sampling_weights`: temperature, then top-p;
:func:`inverse_cdf_draw`: one draw per row): the decoder's rows are sampled with them, and
the llama.cpp sampler is held to the same definition of top-p.
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
    suffix_bias: object = None  # (rows, suffix length): -inf past a row's own last token, when rows differ


class SuffixCache:
    """Per-sample keys/values of generated tokens in preallocated buffers of ``capacity`` rows.

    Row r writes its next token at ``positions[r]``, so rows admitted at different steps
    (continuous batching) share one buffer; the attention masks each row's unwritten tail
    through ``PrefixContext.suffix_bias``. Dropping finished rows compacts the live ones to
    the front in place, copying only the positions written so far.
    """

    is_compileable = False

    def __init__(self, layers: int, capacity: int, kv_heads: list[int], head_dims: list[int], max_len: int,
                 dtype, device) -> None:
        import torch

        # zeros, not empty: a row's masked tail is still read, and -inf + NaN garbage is NaN
        self.keys = [torch.zeros(capacity, kv_heads[i], max_len, head_dims[i], dtype=dtype, device=device)
                     for i in range(layers)]
        self.values = [torch.zeros_like(k) for k in self.keys]
        self.capacity = capacity
        self.max_len = max_len
        self.rows = 0
        self.positions = torch.zeros(0, dtype=torch.long, device=device)  # where each row writes next
        self.length = 0  # positions the next update returns (max position + 1)
        self.written = 0  # positions holding keys/values in some row

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        import torch

        rows = torch.arange(self.rows, device=key_states.device)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[rows, :, self.positions] = key_states[:, :, 0]
        values[rows, :, self.positions] = value_states[:, :, 0]
        self.written = max(self.written, self.length)
        return keys[:self.rows, :, :self.length], values[:self.rows, :, :self.length]

    def select(self, rows) -> None:
        """Keep only ``rows`` (a tensor of indices into the current rows), in that order, at the front."""
        n, t = len(rows), self.written
        for buffers in (self.keys, self.values):
            for b in buffers:
                b[:n, :, :t] = b[:self.rows, :, :t].index_select(0, rows)
        self.positions = self.positions.index_select(0, rows)
        self.rows = n

    def append(self, count: int) -> None:
        """Room for ``count`` new rows at the end, writing from position 0."""
        import torch

        if self.rows + count > self.capacity:
            raise ValueError(f"{self.rows} + {count} rows exceed the cache's {self.capacity}")
        fresh = torch.zeros(count, dtype=torch.long, device=self.positions.device)
        self.positions = torch.cat([self.positions, fresh])
        self.rows += count

    # what model code may ask of a cache when no mask is built
    def get_seq_length(self, layer_idx: int = 0) -> int:
        return max(self.length - 1, 0)

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
    if q_len == 1 and _FLASH_CPU is not None and query.device.type == "cpu":
        return _flash_merge(query, key, value, pk, pv, ctx, scaling)
    dt = query.dtype
    # Matmuls in the model's dtype (no float copies of the caches: this is memory-bound);
    # the softmax over the joined scores in float32. Scores are laid out per row as
    # (rows, kv_heads, g * q_len, positions).
    qs = query.reshape(rows, kv_heads, g * q_len, d)
    s_suf = torch.matmul(qs, key.transpose(-1, -2)).float() * scaling
    if ctx.suffix_bias is not None:
        s_suf = s_suf + ctx.suffix_bias[:, None, None, :s_suf.shape[-1]]
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


def _flash_cpu():
    import torch

    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


_FLASH_CPU = _flash_cpu()


def _flash_merge(query, key, value, pk, pv, ctx: PrefixContext, scaling: float):
    """The decode step (one query per row) with torch's fused CPU attention, twice, then merged.

    The prefix part and the suffix part are each one call of the flash kernel, which returns
    each query's log-sum-exp; the joint softmax is their LSE-weighted sum. This reads each
    K/V byte once, in place, instead of the matmul path's strided copies and float32 score
    tensors (2 ms -> ~1.2 ms per layer at 128 rows x 160 suffix tokens, bf16).
    """
    import torch

    rows, heads, _, d = query.shape
    groups, kv_heads, width, _ = pk.shape
    g = heads // kv_heads
    dt = query.dtype
    qs = query.reshape(rows, kv_heads, g, d)  # the g query heads of a KV head act as g queries
    suffix_mask = None
    if ctx.suffix_bias is not None:
        suffix_mask = ctx.suffix_bias[:, None, None, :key.shape[-2]].to(dt)
    o_suf, lse_suf = _FLASH_CPU(qs, key, value, 0.0, False, attn_mask=suffix_mask, scale=scaling)
    prefix_mask = ctx.bias[:, None, None, :].to(dt)
    counts = ctx.counts
    if len(set(counts)) == 1:
        c = counts[0]
        qg = qs.reshape(groups, c, kv_heads, g, d).transpose(1, 2).reshape(groups, kv_heads, c * g, d)
        o, lse = _FLASH_CPU(qg, pk, pv, 0.0, False, attn_mask=prefix_mask, scale=scaling)
        o_pre = o.reshape(groups, kv_heads, c, g, d).transpose(1, 2).reshape(rows, kv_heads, g, d)
        lse_pre = lse.reshape(groups, kv_heads, c, g).transpose(1, 2).reshape(rows, kv_heads, g)
    else:
        outs, lses, start = [], [], 0
        for k, c in enumerate(counts):
            qk = qs[start:start + c].transpose(0, 1).reshape(1, kv_heads, c * g, d)
            o, lse = _FLASH_CPU(qk, pk[k:k + 1], pv[k:k + 1], 0.0, False, attn_mask=prefix_mask[k:k + 1],
                                scale=scaling)
            outs.append(o.reshape(kv_heads, c, g, d).transpose(0, 1))
            lses.append(lse.reshape(kv_heads, c, g).transpose(0, 1))
            start += c
        o_pre, lse_pre = torch.cat(outs), torch.cat(lses)
    m = torch.maximum(lse_pre, lse_suf)
    a = torch.exp(lse_pre - m)[..., None]
    b = torch.exp(lse_suf - m)[..., None]
    out = (o_pre.float() * a + o_suf.float() * b) / (a + b)
    return out.reshape(rows, heads, 1, d).transpose(1, 2).to(dt).contiguous(), None


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


class SharedBatch:
    """Rows sampling over shared per-prompt prefixes, admitted and retired while decoding.

    Continuous batching for the shared-prefix decoder: when a prompt's samples finish, the
    next prompt's are admitted in their place instead of the batch running on half empty
    until its longest sample ends (at 2 prompts x 64 samples a batch averaged 37 live rows
    of 128). Rows stay group-major (all samples of a prompt together), so the prefix
    attention remains one matmul per group. ``owner`` maps each current row to the
    caller's id for it; the caller samples from the logits that ``admit`` and ``step``
    return, in row order.
    """

    def __init__(self, model, capacity: int, max_tokens: int, pad_id: int) -> None:
        register()
        self.model = model
        self.capacity = capacity
        self.max_tokens = max_tokens
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.cache: SuffixCache | None = None
        self.ctx: PrefixContext | None = None
        self.owner: list[int] = []
        self.starts = None  # per row: its prompt's length (the position of its first generated token)
        self._logits = None

    @property
    def rows(self) -> int:
        return len(self.owner)

    def admit(self, prompts: Sequence[Sequence[int]], copies: int, owners: Sequence[int]):
        """Prefill ``prompts`` once and add ``copies`` rows for each; returns their first logits."""
        import torch

        keys, values, bias, logits, lengths = prefill(self.model, prompts, self.pad_id)
        if self.cache is None:
            self.cache = SuffixCache(len(keys), self.capacity, [k.shape[1] for k in keys],
                                     [k.shape[-1] for k in keys], self.max_tokens, keys[0].dtype, self.device)
            self.ctx = PrefixContext(keys, values, bias, [])
            self.starts = torch.zeros(0, dtype=torch.long, device=self.device)
        else:
            width = max(self.ctx.keys[0].shape[2], keys[0].shape[2])
            pad = lambda t, dim: _pad_left(t, width, dim, 0.0)  # noqa: E731
            self.ctx.keys = [torch.cat([pad(old, 2), pad(new, 2)]) for old, new in zip(self.ctx.keys, keys)]
            self.ctx.values = [torch.cat([pad(old, 2), pad(new, 2)]) for old, new in zip(self.ctx.values, values)]
            self.ctx.bias = torch.cat([_pad_left(self.ctx.bias, width, 1, float("-inf")),
                                       _pad_left(bias, width, 1, float("-inf"))])
        self.ctx.counts = [*self.ctx.counts, *([copies] * len(prompts))]
        self.cache.append(len(prompts) * copies)
        self.starts = torch.cat([self.starts, lengths.repeat_interleave(copies)])
        self.owner.extend(owners)
        return logits.repeat_interleave(copies, 0)

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only the current rows ``rows`` (ascending), dropping prompts none of whose rows is left."""
        import torch

        if len(rows) == self.rows:
            return
        index = torch.tensor(list(rows), dtype=torch.long, device=self.device)
        group_of = [g for g, c in enumerate(self.ctx.counts) for _ in range(c)]
        kept_groups = [group_of[r] for r in rows]
        groups = sorted(set(kept_groups))
        gi = torch.tensor(groups, dtype=torch.long, device=self.device)
        self.ctx.keys = [k.index_select(0, gi) for k in self.ctx.keys]
        self.ctx.values = [v.index_select(0, gi) for v in self.ctx.values]
        self.ctx.bias = self.ctx.bias.index_select(0, gi)
        self.ctx.counts = [kept_groups.count(g) for g in groups]
        self.cache.select(index)
        self.starts = self.starts.index_select(0, index)
        self.owner = [self.owner[r] for r in rows]

    def step(self, tokens):
        """Feed each row its latest token; returns the next logits (rows, vocab) in float32."""
        import torch

        cache, ctx = self.cache, self.ctx
        # a finished row left in the batch keeps stepping; its writes are clamped and ignored
        positions = cache.positions.clamp(max=self.max_tokens - 1)
        cache.positions = positions
        cache.length = int(positions.max()) + 1
        span = torch.arange(cache.length, device=self.device)
        ctx.suffix_bias = torch.zeros((self.rows, cache.length), dtype=torch.float32, device=self.device)
        ctx.suffix_bias.masked_fill_(span[None, :] > positions[:, None], float("-inf"))
        width = ctx.keys[0].shape[2]
        config = self.model.config
        plain, config._attn_implementation = config._attn_implementation, ATTENTION_NAME
        try:
            out = self.model(input_ids=tokens[:, None], position_ids=(self.starts + positions)[:, None],
                             cache_position=torch.tensor([width + cache.length - 1], device=self.device),
                             **cache_argument(self.model, cache), use_cache=True, logits_to_keep=1,
                             shared_prefix=ctx)
        finally:
            config._attn_implementation = plain
        cache.positions = positions + 1
        logits = out.logits[:, -1, :]
        if self._logits is None or self._logits.shape[1] != logits.shape[1]:
            self._logits = torch.empty(self.capacity, logits.shape[1], dtype=torch.float32, device=self.device)
        # a float32 copy into one buffer kept across steps: valid until the next step
        return self._logits[:self.rows].copy_(logits)


def cache_argument(model, cache) -> dict:
    """The KV cache as the keyword this transformers version's ``forward`` takes.

    transformers 5.x renamed ``past_key_values`` to ``cache`` (the old name warns a
    FutureWarning on every call); 4.x knows only ``past_key_values``.
    """
    name = _CACHE_KEYWORD.get(type(model))
    if name is None:
        import inspect

        name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        _CACHE_KEYWORD[type(model)] = name
    return {name: cache}


_CACHE_KEYWORD: dict[type, str] = {}


def _pad_left(tensor, width: int, dim: int, value: float):
    import torch

    missing = width - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([torch.full(shape, value, dtype=tensor.dtype, device=tensor.device), tensor], dim)


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
                **cache_argument(model, cache), use_cache=True, logits_to_keep=1)
    keys = [layer.keys for layer in cache.layers]
    values = [layer.values for layer in cache.layers]
    bias = torch.zeros((len(prompts), width), dtype=torch.float32, device=device)
    bias[mask.to(device) == 0] = float("-inf")
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    return keys, values, bias, out.logits[:, -1, :].float(), lengths


# ---- sampling -----------------------------------------------------------------------


def sampling_weights(logits, temperature: float, top_p: float, *, top=None, out=None):
    """Each row's sampling distribution, unnormalised: ``exp((logits - max) / T)``, zero
    outside the top-p nucleus (float32, written into ``out`` when given; ``top``: the rows'
    max logits when already known).

    The nucleus is the standard one: the smallest set of most probable tokens whose
    probability reaches ``top_p`` (at least the top token), after temperature. Ties rank
    the lower token id first, and the mass ranked above a token is summed in float64, so
    the cut does not drift with the order of a 49k-token tail. The llama.cpp sampler
    (:func:`ttsopt.search.engines.llamacpp_policy.sampling_weights`) follows the same steps;
    tests/test_shared_prefix.py pins that both keep the same tokens.
    """
    import torch

    if top is None:
        top = logits.amax(-1, keepdim=True)
    weights = torch.sub(logits, top, out=out).mul_(1.0 / temperature).exp_()
    if top_p < 1.0:
        weights.masked_fill_(~_nucleus(weights, top_p), 0.0)
    return weights


def _nucleus(weights, top_p: float):
    """Which tokens the top-p nucleus keeps: ranked by weight, those with less than ``top_p``
    of the row's mass ranked above them, cut at the last kept weight (no scatter back)."""
    import torch

    ranked = torch.sort(weights, dim=-1, descending=True).values
    cum = torch.cumsum(ranked, -1, dtype=torch.float64)
    count = 1 + (cum[:, :-1] < top_p * cum[:, -1:]).sum(-1)
    cut = ranked.gather(1, (count - 1)[:, None])
    kept = weights > cut
    return _take_ties(kept, weights == cut, count - kept.sum(-1))


def _take_ties(kept, tied, need):
    """``kept`` plus, per row, the ``need`` lowest-id ``tied`` tokens (the weights equal to
    the cut: the nucleus may take only some of them)."""
    partial = (tied.sum(-1) > need).nonzero()[:, 0]
    kept |= tied
    if len(partial):
        some = tied[partial]
        kept[partial] &= ~some | (some.cumsum(-1) <= need[partial, None])
    return kept


def inverse_cdf_draw(probs, block: int = 256, u=None):
    """One token per row of ``probs`` (non-negative, rows need not sum to 1), token i with
    probability proportional to probs[i]: the first token whose cumulative mass exceeds
    ``u`` times the row's mass, never one without mass. ``u``: one uniform in [0, 1) per
    row, drawn here when None.

    Two-level inverse CDF: pick a block of ``block`` tokens by the cumulative block masses,
    then a token inside it by its cumulative masses. A full-vocabulary ``cumsum`` is a
    sequential scan per row (~10 ms a step at 80 rows x 49k on this CPU); block sums
    vectorise, and only one block per row is scanned.
    """
    import torch
    import torch.nn.functional as F

    rows, vocab = probs.shape
    blocks = -(-vocab // block)
    padded = probs if vocab % block == 0 else F.pad(probs, (0, blocks * block - vocab))
    weights = padded.view(rows, blocks, block)
    mass = weights.sum(-1)
    cdf = mass.cumsum(-1)
    total = cdf[:, -1:].contiguous()
    if u is None:
        u = torch.rand(rows, 1, device=probs.device)
    u = torch.as_tensor(u, dtype=total.dtype, device=probs.device).reshape(rows, 1) * total
    chosen = _search_with_mass(cdf, u)
    arange = torch.arange(rows, device=probs.device)
    before = (cdf[arange, chosen] - mass[arange, chosen])[:, None]
    inner = weights[arange, chosen].cumsum(-1)
    within = _search_with_mass(inner, (u - before).clamp(min=0))
    return chosen * block + within


def _search_with_mass(cdf, u):
    """Per row, the first index whose cumulative mass exceeds ``u``, kept on an index that adds
    mass: ``u`` can round onto or past the row's total (then the last such index is taken)."""
    import torch

    index = torch.searchsorted(cdf, u.contiguous(), right=True)
    last = torch.searchsorted(cdf, cdf[:, -1:].contiguous(), right=False)
    return torch.minimum(index, last)[:, 0]


__all__ = ["ATTENTION_NAME", "PrefixContext", "SuffixCache", "SharedBatch", "shared_prefix_attention", "register",
           "supports", "prefill", "sampling_weights", "inverse_cdf_draw"]
