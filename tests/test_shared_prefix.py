"""Sampling n completions over one shared copy of the prompt's KV (transformers backend).

Pinned: with a temperature so low that sampling is argmax, the shared-prefix decoder writes
exactly what ``generate`` writes greedily (same stops, same token counts, same logprobs) for
prompts of different lengths batched together; each prompt is prefilled once; seeded calls
repeat; the attention function equals plain attention over [prefix ; suffix]; sampled
first tokens follow softmax(logits / T); and this sampler and the llama.cpp one apply one
definition of top-p (same tokens kept, same probabilities, same token for the same uniform).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ttsopt.search.types import SamplingParams

from ttsopt.search.engines.hf_policy import TransformersPolicy

QUESTION = "What is 3 + 4?"
CONTINUATION = "Tom has 5 apples"


def load_tiny(model_dir, **kw) -> TransformersPolicy:
    """The tiny random Llama in float32, with an untied random head so greedy text varies."""
    policy = TransformersPolicy(str(model_dir), dtype="float32", **kw)
    head = policy.model.lm_head
    gen = torch.Generator().manual_seed(1)
    head.weight = torch.nn.Parameter(torch.randn(head.weight.shape, generator=gen), requires_grad=False)
    return policy


@pytest.fixture(scope="module")
def policy(tiny_model_dir):
    return load_tiny(tiny_model_dir, name="tiny")


def _texts(gens):
    return [[(c.text, c.tokens, c.finish_reason) for c in g.completions] for g in gens]


@pytest.mark.parametrize("rows", [256, 6, 3], ids=["all prompts at once", "admitted mid-decode", "one at a time"])
def test_near_zero_temperature_reproduces_greedy_generate(policy, rows):
    prompts = [policy.format_prompt(QUESTION), CONTINUATION, "Tom has 5 apples and buys 3 more."]
    # the stop string ends the prompts' rows after 3, 14 and 20 tokens, so rows are admitted mid-decode
    cold = SamplingParams(n=3, temperature=1e-6, max_tokens=20, seed=0, stop=("a",))
    policy.shared_prefix = False
    plain = policy.generate(prompts, cold)
    policy.shared_prefix, policy.shared_rows = True, rows
    try:
        shared = policy.generate(prompts, cold)
    finally:
        policy.shared_rows = 256
    assert _texts(shared) == _texts(plain)
    for gs, gp in zip(shared, plain):
        assert gs.prefill_tokens == gs.prompt_tokens  # once, not n times
        assert gp.prefill_tokens == 3 * gp.prompt_tokens
        for a, b in zip(gs.completions, gp.completions):
            assert math.isclose(a.logprob, b.logprob, rel_tol=1e-3, abs_tol=1e-3)


def test_stop_strings_cut_shared_samples_like_generate(policy):
    prompts = [CONTINUATION]
    policy.shared_prefix = False
    free = policy.generate(prompts, SamplingParams(n=2, temperature=1e-6, max_tokens=20))[0].completions[0].text
    stop = free[6:8] if len(free) >= 8 and free[6:8].strip() else None
    if not stop:
        pytest.skip(f"no usable stop string in {free!r}")
    params = SamplingParams(n=2, temperature=1e-6, max_tokens=20, stop=(stop,))
    plain = policy.generate(prompts, params)
    policy.shared_prefix = True
    shared = policy.generate(prompts, params)
    assert _texts(shared) == _texts(plain)
    assert shared[0].completions[0].finish_reason == "stop" and shared[0].completions[0].text.endswith(stop)


def test_seeded_shared_sampling_repeats_and_seeds_differ(policy):
    prompts = [policy.format_prompt(QUESTION), CONTINUATION]
    params = SamplingParams(n=4, temperature=1.0, max_tokens=12, seed=7)
    assert _texts(policy.generate(prompts, params)) == _texts(policy.generate(prompts, params))
    assert _texts(policy.generate(prompts, params.replace(seed=8))) != _texts(policy.generate(prompts, params))


@pytest.mark.parametrize("path", ["fused", "matmul"])
@pytest.mark.parametrize("counts", [[3, 3], [3, 1]], ids=["even groups", "a group that lost rows"])
def test_the_attention_function_equals_attention_over_prefix_and_suffix(counts, path, monkeypatch):
    from ttsopt.search.engines import shared_prefix
    from ttsopt.search.engines.shared_prefix import PrefixContext, shared_prefix_attention

    if path == "matmul":
        monkeypatch.setattr(shared_prefix, "_FLASH_CPU", None)
    elif shared_prefix._FLASH_CPU is None:
        pytest.skip("this torch has no fused CPU attention op")
    torch.manual_seed(0)
    groups, kv, g, d, width, steps = 2, 2, 2, 8, 5, 4
    rows, heads = sum(counts), kv * g
    pk, pv = torch.randn(groups, kv, width, d), torch.randn(groups, kv, width, d)
    bias = torch.zeros(groups, width)
    bias[1, :2] = float("-inf")  # the second prompt is left-padded by 2
    sk, sv = torch.randn(rows, kv, steps, d), torch.randn(rows, kv, steps, d)
    written = torch.tensor([steps - (r % 3) for r in range(rows)])  # rows admitted at different steps
    suffix_bias = torch.zeros(rows, steps).masked_fill(torch.arange(steps)[None] >= written[:, None], float("-inf"))
    q = torch.randn(rows, heads, 1, d)

    class Layer:
        layer_idx = 0

    got, _ = shared_prefix_attention(Layer(), q, sk, sv, None, scaling=d ** -0.5,
                                     shared_prefix=PrefixContext([pk], [pv], bias, counts, suffix_bias))
    owner = [k for k, c in enumerate(counts) for _ in range(c)]
    for r in range(rows):
        grp = owner[r]
        keep = bias[grp] == 0
        k = torch.cat([pk[grp][:, keep], sk[r, :, :written[r]]], dim=1).repeat_interleave(g, 0)  # (heads, len, d)
        v = torch.cat([pv[grp][:, keep], sv[r, :, :written[r]]], dim=1).repeat_interleave(g, 0)
        w = torch.softmax(q[r] @ k.transpose(-1, -2) * d ** -0.5, -1)
        want = (w @ v).transpose(0, 1)  # (1, heads, d)
        assert torch.allclose(got[r], want, atol=1e-5)


def test_inverse_cdf_draw_never_picks_a_token_without_mass(monkeypatch):
    from ttsopt.search.engines.hf_policy import _inverse_cdf_draw

    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]] * 2)
    for block in (256, 2, 3):  # one block; several, the last one padded
        for u, want in [(0.0, 1), (0.4999, 1), (0.5, 3), (1.0, 3)]:  # u = 1.0: rounding up to the total mass
            monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.full(shape, u))
            assert _inverse_cdf_draw(probs, block=block).tolist() == [want, want], (block, u)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 1.0), (0.7, 0.9)])
def test_sampled_tokens_carry_their_raw_log_probability(temperature, top_p):
    from ttsopt.search.engines.hf_policy import _sample_tokens

    torch.manual_seed(0)
    logits = torch.randn(8, 1000) * 3
    tok, lp = _sample_tokens(logits, SamplingParams(temperature=temperature, top_p=top_p), logprobs=True)
    want = torch.log_softmax(logits, -1).gather(1, tok[:, None])[:, 0]
    assert torch.allclose(lp, want, atol=1e-5)
    assert _sample_tokens(logits, SamplingParams(temperature=temperature, top_p=top_p))[1] is None


def test_inverse_cdf_draw_follows_the_weights_across_blocks():
    from ttsopt.search.engines.hf_policy import _inverse_cdf_draw

    torch.manual_seed(0)
    weights = torch.rand(1, 10) ** 3
    draws = _inverse_cdf_draw(weights.expand(20000, 10).contiguous(), block=4)
    freq = torch.bincount(draws, minlength=10) / len(draws)
    p = weights[0] / weights.sum()
    assert torch.all((freq - p).abs() < 4 * torch.sqrt(p * (1 - p) / len(draws)) + 1e-3)


def test_first_tokens_follow_the_tempered_softmax(policy):
    prompt = policy.format_prompt(QUESTION)
    ids = torch.tensor([policy.encode_prompt(prompt)])
    with torch.inference_mode():
        logits = policy.model(input_ids=ids).logits[0, -1].float()
    t = 1.5
    probs = torch.softmax(logits / t, -1)
    top = torch.topk(probs, 3)
    (gen,) = policy.generate([prompt], SamplingParams(n=2000, temperature=t, max_tokens=1, seed=3))
    first = [policy.tokenizer.encode(c.text, add_special_tokens=False)[:1] for c in gen.completions]
    counts = {}
    for f in first:
        if f:
            counts[f[0]] = counts.get(f[0], 0) + 1
    for token, p in zip(top.indices.tolist(), top.values.tolist()):
        got = counts.get(token, 0) / len(first)
        assert abs(got - p) < 4 * math.sqrt(p * (1 - p) / len(first)) + 0.01


# ---- one top-p for both local samplers ------------------------------------------------


def _nucleus_reference(logits: np.ndarray, temperature: float, top_p: float) -> list[set[int]]:
    """The standard nucleus, token by token in float64: softmax(logits / T), tokens by
    probability (ties: lower id first), the smallest head whose mass reaches ``top_p``."""
    out = []
    for row in logits.astype(np.float64):
        p = np.exp((row - row.max()) / temperature)
        p /= p.sum()
        kept, mass = set(), 0.0
        for i in sorted(range(len(p)), key=lambda i: (-p[i], i)):
            kept.add(i)
            mass += p[i]
            if mass >= top_p:
                break
        out.append(kept)
    return out


def _top_p_logits(vocab: int = 3001) -> np.ndarray:
    """Rows where the cut falls among distinct values, among ties (bf16-rounded logits, as a
    bf16 model emits them), inside a block of equal logits, and at the top token alone."""
    gen = torch.Generator().manual_seed(0)
    smooth = torch.randn(6, vocab, generator=gen) * 2.5
    rounded = (torch.randn(6, vocab, generator=gen) * 2.5).bfloat16().float()
    block = torch.randn(2, vocab, generator=gen) - 4.0
    block[:, torch.randperm(vocab, generator=gen)[:400]] = 1.0  # 400 equal logits at random ids
    block[:, 7] = 3.0
    peaked = torch.randn(1, vocab, generator=gen)
    peaked[0, 123] = 30.0
    return torch.cat([smooth, rounded, block, peaked]).numpy()


def _distance_to_a_step(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """How far each u lies from the nearest step of its row's CDF (float64): a draw closer
    than float32 rounding to a step may land on either neighbour."""
    cdf = np.cumsum(probs.astype(np.float64), axis=1)
    return np.abs(cdf[:, :, None] - u[:, None, :]).min(axis=1)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 0.9), (0.7, 0.95), (1.3, 0.5), (0.6, 0.3), (1.0, 1.0)])
def test_both_samplers_keep_the_standard_nucleus_and_draw_alike(temperature, top_p):
    from ttsopt.search.engines.llamacpp_policy import inverse_cdf, sampling_weights as numpy_weights
    from ttsopt.search.engines.shared_prefix import inverse_cdf_draw, sampling_weights

    logits = _top_p_logits()
    params = SamplingParams(temperature=temperature, top_p=top_p)
    ours = numpy_weights(logits, params)
    theirs = sampling_weights(torch.from_numpy(logits), temperature, top_p).numpy()
    assert [set(np.flatnonzero(r)) for r in ours] == [set(np.flatnonzero(r)) for r in theirs]
    if top_p < 1.0:
        assert [set(np.flatnonzero(r)) for r in ours] == _nucleus_reference(logits, temperature, top_p)
        assert np.count_nonzero(ours[-1]) == 1  # one token above top_p: it alone
    p_ours = ours / ours.sum(axis=1, keepdims=True)
    p_theirs = theirs / theirs.sum(axis=1, keepdims=True)
    assert np.allclose(p_ours, p_theirs, rtol=1e-6, atol=1e-12)  # np.exp and torch.exp: an ulp apart

    u = ((np.arange(64) + 0.5) / 64)[None, :].repeat(len(logits), 0).astype(np.float32)
    clear = _distance_to_a_step(p_ours, u) > 1e-5  # float32 CDFs of 3k tokens: ~1e-6 apart
    for block in (256, 7):  # one block of the two-level draw, and many with a padded last one
        for k in range(u.shape[1]):
            a = inverse_cdf(ours, u[:, k])
            b = inverse_cdf_draw(torch.from_numpy(theirs), block=block, u=torch.from_numpy(u[:, k])).numpy()
            assert (ours[np.arange(len(a)), a] > 0).all() and (theirs[np.arange(len(b)), b] > 0).all()
            assert (a == b)[clear[:, k]].all(), (block, k)
    assert clear.mean() > 0.9


def test_both_policies_sample_the_same_token_for_the_same_uniform(monkeypatch):
    """End to end: the llama.cpp policy's ``sample_rows`` and the transformers sampler's
    ``_sample_tokens`` (the shared-prefix decoder's) pick the same token at the same u."""
    from ttsopt.search.engines.hf_policy import _sample_tokens
    from ttsopt.search.engines.llamacpp_policy import sample_rows

    logits = _top_p_logits()
    u = np.linspace(0.01, 0.99, len(logits)).astype(np.float32)
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.from_numpy(u).reshape(shape))
    for temperature, top_p in [(1.0, 0.9), (0.7, 1.0), (1.3, 0.5)]:
        params = SamplingParams(temperature=temperature, top_p=top_p)
        ours = sample_rows(logits, params, u)
        theirs = _sample_tokens(torch.from_numpy(logits), params)[0].numpy()
        assert ours.tolist() == theirs.tolist(), (temperature, top_p)
