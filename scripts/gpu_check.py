"""The GPU check: the CUDA code paths of ttsopt, end to end, on random-weight models built from configs.

Run it as ``bash scripts/gpu_check.sh`` (this file does the work; ``tests/test_gpu_check.py`` runs the
same checks under pytest with ``-m gpu``). Nothing is downloaded: every model is built from a config
with random weights, every tokenizer is a byte-level BPE trained in-process on a few lines. On one
GPU it finishes in a few minutes; without CUDA it says so and exits 0, and ``--cpu`` dry-runs the
same checks on the CPU with small sizes.

Checks (``--only`` picks some; each prints its figures):

* ``policy``: the transformers engine (``search/engines/hf_policy.py``) on a Qwen2.5-1.5B-shaped
  Qwen2 (bf16 on CUDA): greedy generate, then n samples per prompt over the shared prefix
  (``search/engines/shared_prefix.py``: each prompt prefilled once) and the same through plain
  ``generate`` (tokens/s of each, the speed-up); the shared-prefix decoder's logits step by step
  against a full forward of the same tokens, and its attention function against plain attention.
* ``prms``: the four transformers PRM adapters (Math-Shepherd, RLHFlow, Skywork, Qwen-PRM) on
  1.5B-shaped models of their architectures: tokens/s of a batch, batched = one at a time, bf16
  against float32 of the same weights.
* ``sweep``: a tiny ``ttsopt sweep`` (the command, in a subprocess) with ``device: cuda`` in its
  config, a small Qwen2 policy and a Math-Shepherd PRM loaded from folders; then a router trained
  on its snapshot by the real training code and ``Router.solve`` with the models on the device.

Options: ``--cpu`` (the dry run; sizes ``small``), ``--size full|small|shapes|tiny`` (``shapes``: the full
sizes' vocabularies, widths and heads with one layer each, for checking on a CPU that the GPU run's
shapes fit together), ``--dtype`` (default bf16 on CUDA, float32 on a CPU; ``--cpu --dtype bfloat16``
runs the low-precision tolerances on a CPU), ``--only``, ``--json FILE``, ``--keep DIR``.

Exit status: 0 when every check passed (or there is no GPU and ``--cpu`` was not given), 1 otherwise;
2 for a usage error.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)


def ensure_importable() -> None:
    """Make ``import ttsopt`` work from a bare checkout (the repository root is the package folder, and
    its name need not be ``ttsopt``): a link named ttsopt in a temporary folder, also for subprocesses."""
    try:
        import ttsopt  # noqa: F401

        return
    except ImportError:
        pass
    link_dir = Path(tempfile.mkdtemp(prefix="ttsopt-gpu-check-path-"))
    (link_dir / "ttsopt").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(link_dir))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(link_dir), *filter(None, [os.environ.get("PYTHONPATH")])])


# --------------------------------------------------------------------------- sizes

#: Qwen2.5-1.5B's shape (its config.json): what the policy runs at on a GPU.
QWEN25_15B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                  num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1e6,
                  tie_word_embeddings=True)
SMALL = dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True)
#: What the real PRMs' vocabularies are (their embeddings are part of the memory and the LM heads' cost).
PRM_VOCAB = {"math-shepherd": 32000, "rlhflow": 128256, "qwen-prm": 151936, "skywork": 151936}


@dataclass(frozen=True)
class Size:
    name: str
    policy: dict
    prm: dict
    sweep_policy: dict
    prompts: int
    samples: int
    max_tokens: int
    batch_size: int
    prm_items: int
    sweep_per_level: int


SIZES = {
    "full": Size("full", QWEN25_15B, {k: v for k, v in QWEN25_15B.items() if k != "vocab_size"},
                 dict(SMALL, hidden_size=256, intermediate_size=512, num_hidden_layers=4),
                 prompts=8, samples=16, max_tokens=128, batch_size=32, prm_items=64, sweep_per_level=2),
    "small": Size("small", SMALL, {k: v for k, v in SMALL.items() if k != "vocab_size"}, SMALL,
                  prompts=3, samples=4, max_tokens=12, batch_size=8, prm_items=8, sweep_per_level=1),
    # the full sizes' shapes (vocabularies, widths, heads) with one layer each: on a CPU, checks that the
    # shapes the GPU run uses fit together, in minutes instead of hours
    "shapes": Size("shapes", dict(QWEN25_15B, num_hidden_layers=1),
                   {k: v for k, v in QWEN25_15B.items() if k != "vocab_size"} | {"num_hidden_layers": 1},
                   dict(SMALL, hidden_size=256, intermediate_size=512, num_hidden_layers=4),
                   prompts=2, samples=2, max_tokens=3, batch_size=4, prm_items=4, sweep_per_level=1),
    # the default test suite's CPU run of the fast checks: seconds on a shared CPU
    "tiny": Size("tiny", dict(SMALL, vocab_size=512, hidden_size=32, intermediate_size=64),
                 {k: v for k, v in SMALL.items() if k != "vocab_size"}, SMALL,
                 prompts=2, samples=3, max_tokens=6, batch_size=4, prm_items=4, sweep_per_level=1),
}


# --------------------------------------------------------------------------- building blocks

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
)
CORPUS = [
    "Question: What is 3 + 4?\n\nStep 1: 3 + 4 = 7\n\nThe answer is 7.",
    "Question: What is 12 * 5?\n\n12 * 5 = 60\n\nThe answer is \\boxed{60}.",
    "Tom has 5 apples and buys 3 more. How many apples does he have?\n\n5 + 3 = 8\n\nThe answer is 8.",
    "Is this step correct? Yes No + - ки <extra_0>",
]
PRM_SPECIALS = ("ки", "<extra_0>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
QUESTION = "Tom has 5 apples and buys 3 more. How many apples does he have?"
PRM_ITEMS = [
    (QUESTION, ["5 + 3 = 8\n\n", "The answer is 8."]),
    ("What is 3 + 4?", ["3 + 4 = 7"]),
    (QUESTION, ["Tom starts with 5 apples.\n\n", "He buys 3 more.\n\n", "5 + 3 = 8\n\n", "The answer is 8."]),
    ("What is 12 * 5?", ["12 * 5 = 60\n\n", "The answer is \\boxed{60}."]),
]


def tiny_tokenizer(extra_special: tuple[str, ...] = (), chat_template: str = CHAT_TEMPLATE):
    """A byte-level BPE tokenizer trained in-process on a few lines (as tests/conftest.py builds it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *extra_special]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None)
    fast.chat_template = chat_template
    return fast


def wide_tokenizer(vocab_size: int, chat_template: str = CHAT_TEMPLATE):
    """A byte-level BPE tokenizer with exactly ``vocab_size`` ids (bytes, byte pairs, then byte triples; the
    special tokens last), so that every id a random policy samples decodes to text: a tokenizer smaller than
    the model's vocabulary would decode most sampled ids to nothing."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    want = vocab_size - len(special)
    if want < len(alphabet):
        raise ValueError(f"vocab_size must be at least {len(alphabet) + len(special)}, got {vocab_size}")
    vocab = {c: i for i, c in enumerate(alphabet)}
    merges: list[tuple[str, str]] = []
    pairs = ((a, b) for a in alphabet for b in alphabet)
    triples = ((a + b, c) for a in alphabet for b in alphabet for c in alphabet)
    for left, right in itertools.chain(pairs, triples):
        if len(vocab) >= want:
            break
        if left + right not in vocab:
            vocab[left + right] = len(vocab)
            merges.append((left, right))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   bos_token=None)
    fast.chat_template = chat_template
    return fast


#: ``--dtype`` (None: bf16 on CUDA, float32 on a CPU)
DTYPE: str | None = None


def dtype_for(device: str):
    import torch

    if DTYPE is not None:
        return getattr(torch, DTYPE)
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def build_on(device: str, dtype, factory: Callable[[], Any], seed: int = 0):
    """``factory()`` with its weights initialised on ``device`` (fast for a 1.5B model on a GPU), in ``dtype``."""
    import torch

    torch.manual_seed(seed)
    with torch.device(device):
        model = factory()
    return model.to(dtype).eval()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], Any]) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def peak_memory_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def questions(count: int) -> list[str]:
    from ttsopt.data import load_problems

    problems = load_problems("builtin:arith", per_level=max(1, math.ceil(count / 5)), seed=0)
    return [p.question for p in problems[:count]]


class CheckFailed(AssertionError):
    pass


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


# --------------------------------------------------------------------------- policy + shared prefix


def check_policy(device: str, size: Size, figures: dict[str, Any]) -> None:
    """The transformers engine on a Qwen2.5-1.5B-shaped policy: greedy, shared-prefix and plain sampling."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from ttsopt.search.engines.hf_policy import TransformersPolicy
    from ttsopt.search.types import SamplingParams

    dtype = dtype_for(device)
    tok = wide_tokenizer(size.policy["vocab_size"])
    config = Qwen2Config(**size.policy)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    model, build_s = timed(device, lambda: build_on(device, dtype, lambda: Qwen2ForCausalLM(config)))
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    policy = TransformersPolicy.from_loaded(model, tok, name="qwen2.5-1.5b-shaped-random",
                                            batch_size=size.batch_size)
    prompts = [policy.format_prompt(q) for q in questions(size.prompts)]
    n, t = size.samples, size.max_tokens
    policy.generate(prompts[:1], SamplingParams(n=2, temperature=0.7, max_tokens=4, seed=0))  # warm-up
    figures.update({"device": str(policy.device), "dtype": str(model.dtype).replace("torch.", ""),
                    "parameters": policy.num_parameters, "build_s": round(build_s, 2),
                    "prompts": len(prompts), "samples_per_prompt": n, "max_tokens": t})

    def run(params: SamplingParams, shared: bool):
        policy.shared_prefix = shared
        gens, secs = timed(device, lambda: policy.generate(prompts, params))
        tokens = sum(c.tokens for g in gens for c in g.completions)
        expect(all(len(g.completions) == params.n for g in gens), "a prompt got the wrong number of completions")
        expect(all(1 <= c.tokens <= params.max_tokens for g in gens for c in g.completions),
               "a completion has no tokens or more than max_tokens")
        expect(all(c.logprob is not None and math.isfinite(c.logprob) and c.logprob <= 0
                   for g in gens for c in g.completions), "a completion's logprob is missing or not finite")
        return gens, secs, tokens

    _, secs, tokens = run(SamplingParams(n=1, temperature=0.0, max_tokens=t, seed=0), shared=True)
    figures.update(greedy_s=round(secs, 2), greedy_tokens=tokens, greedy_tok_s=round(tokens / secs, 1))
    sampling = SamplingParams(n=n, temperature=0.7, top_p=0.95, max_tokens=t, seed=1)
    shared, secs, tokens = run(sampling, shared=True)
    expect(all(g.prefill_tokens == g.prompt_tokens for g in shared),
           "the shared-prefix decoder was not used (a prompt was prefilled more than once)")
    figures.update(shared_s=round(secs, 2), shared_tokens=tokens, shared_tok_s=round(tokens / secs, 1))
    plain, secs, tokens = run(sampling, shared=False)
    expect(all(g.prefill_tokens == n * g.prompt_tokens for g in plain), "plain generate did not prefill n copies")
    figures.update(plain_s=round(secs, 2), plain_tokens=tokens, plain_tok_s=round(tokens / secs, 1))
    figures["shared_speedup"] = round(figures["shared_tok_s"] / figures["plain_tok_s"], 2)
    again, _, _ = run(sampling, shared=True)
    # a figure, not a failure: GPU kernels need not be bitwise deterministic across calls
    figures["seeded_call_repeats"] = [[c.text for c in g.completions] for g in again] == \
        [[c.text for c in g.completions] for g in shared]
    policy.shared_prefix = True
    figures.update(shared_decoder_vs_forward(policy, prompts, steps=min(8, t)))
    figures.update(shared_attention_vs_plain(device, dtype))
    figures["peak_memory_gib"] = None if (m := peak_memory_gib(device)) is None else round(m, 2)
    if device.startswith("cuda"):
        del policy, model  # the figures are taken: free the memory for the next check
        torch.cuda.empty_cache()


def shared_decoder_vs_forward(policy, prompts: list[str], steps: int) -> dict[str, Any]:
    """The shared-prefix decoder's logits at each step against a full forward of the same tokens (two
    prompts of different lengths, two samples each: the left padding and the groups are exercised)."""
    import torch
    from ttsopt.search.engines import shared_prefix as sp

    model = policy.model
    device = policy.device
    encoded = sorted((policy.encode_prompt(p) for p in prompts[:2]), key=len)
    if len(encoded) < 2 or len(encoded[0]) == len(encoded[1]):
        encoded = [encoded[0][:-3] or encoded[0], encoded[-1]]
    worst, rms, agree, total = 0.0, 0.0, 0, 0
    with torch.inference_mode():
        batch = sp.SharedBatch(model, capacity=4, max_tokens=steps + 1, pad_id=policy.pad_token_id)
        logits = batch.admit(encoded, 2, [0, 1, 2, 3])
        seqs = [list(e) for e in encoded]
        for _ in range(steps):
            tokens = logits.argmax(-1)
            for g, seq in enumerate(seqs):
                ref = model(input_ids=torch.tensor([seq], device=device)).logits[0, -1].float()
                spread = ref.std()
                for row in (2 * g, 2 * g + 1):
                    diff = logits[row] - ref
                    worst = max(worst, float(diff.abs().max() / spread))
                    rms = max(rms, float(diff.pow(2).mean().sqrt() / spread))
                    agree += int(int(logits[row].argmax()) == int(ref.argmax()))
                    total += 1
                seq.append(int(tokens[2 * g]))
            logits = batch.step(tokens)
    # bf16: the two computations round differently in every layer (28 layers of a random Qwen2 on a CPU:
    # RMS ~1%, the largest of 150k logits ~5% of their spread); an error in the decoder is of order 1
    tolerance = 0.05 if model.dtype != torch.float32 else 1e-4
    expect(rms < tolerance, f"shared-prefix logits differ from a full forward by {rms:.3g} of their spread (RMS; "
                            f"tolerance {tolerance})")
    return {"decoder_vs_forward_rms_rel": float(f"{rms:.3g}"), "decoder_vs_forward_max_rel": float(f"{worst:.3g}"),
            "decoder_argmax_agreement": round(agree / total, 3)}


def shared_attention_vs_plain(device: str, dtype) -> dict[str, Any]:
    """The attention function over [shared prefix ; own suffix] against softmax attention in float32, at
    Qwen2.5-1.5B's head shape (2 KV heads of 6 queries, d=128), even groups and a group that lost rows."""

    from ttsopt.search.engines import shared_prefix as sp

    out = {"attention_max_abs_err": _attention_error(device, dtype)}
    if device == "cpu" and sp._FLASH_CPU is not None:  # the matmul path CUDA takes, on the CPU too
        fused, sp._FLASH_CPU = sp._FLASH_CPU, None
        try:
            out["attention_matmul_path_max_abs_err"] = _attention_error(device, dtype)
        finally:
            sp._FLASH_CPU = fused
    return out


def _attention_error(device: str, dtype) -> float:
    import torch
    from ttsopt.search.engines.shared_prefix import (
        PrefixContext,
        shared_prefix_attention,
    )

    worst = 0.0
    gen = torch.Generator(device="cpu").manual_seed(0)
    for counts in ([8, 8], [8, 3]):
        groups, kv, g, d, width, steps = 2, 2, 6, 128, 96, 40
        rows, heads = sum(counts), kv * g
        rnd = lambda *shape: torch.randn(*shape, generator=gen).to(device)
        pk, pv, sk, sv, q = rnd(groups, kv, width, d), rnd(groups, kv, width, d), rnd(rows, kv, steps, d), \
            rnd(rows, kv, steps, d), rnd(rows, heads, 1, d)
        bias = torch.zeros(groups, width, device=device)
        bias[1, :7] = float("-inf")
        written = torch.tensor([steps - (r % 5) for r in range(rows)], device=device)
        suffix_bias = torch.zeros(rows, steps, device=device).masked_fill(
            torch.arange(steps, device=device)[None] >= written[:, None], float("-inf"))

        class Layer:
            layer_idx = 0

        got, _ = shared_prefix_attention(Layer(), q.to(dtype), sk.to(dtype), sv.to(dtype), None, scaling=d ** -0.5,
                                         shared_prefix=PrefixContext([pk.to(dtype)], [pv.to(dtype)], bias, counts,
                                                                     suffix_bias))
        owner = [k for k, c in enumerate(counts) for _ in range(c)]
        for r in range(rows):
            keep = bias[owner[r]] == 0
            k = torch.cat([pk[owner[r]][:, keep], sk[r, :, :written[r]]], 1).repeat_interleave(g, 0)
            v = torch.cat([pv[owner[r]][:, keep], sv[r, :, :written[r]]], 1).repeat_interleave(g, 0)
            want = (torch.softmax(q[r] @ k.transpose(-1, -2) * d ** -0.5, -1) @ v).transpose(0, 1)
            worst = max(worst, float((got[r].float() - want).abs().max()))
    tolerance = 3e-2 if dtype != torch.float32 else 1e-4
    expect(worst < tolerance, f"shared-prefix attention differs from plain attention by {worst:.3g} "
                              f"(tolerance {tolerance})")
    return float(f"{worst:.3g}")


# --------------------------------------------------------------------------- PRMs


def build_prm(family: str, device: str, size: Size, dtype=None):
    """(adapter class, model, tokenizer) of one family, random weights of its architecture at ``size``."""
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForTokenClassification,
        Qwen2Model,
    )
    from ttsopt.search.prm.math_shepherd import MathShepherdPRM
    from ttsopt.search.prm.qwen_math import QwenMathPRM
    from ttsopt.search.prm.rlhflow import RLHFlowPRM
    from ttsopt.search.prm.skywork import SkyworkPRM, ValueHead, ValueHeadModel

    dtype = dtype or dtype_for(device)
    dims = dict(size.prm, vocab_size=PRM_VOCAB[family] if size.name in ("full", "shapes") else 1024)
    dims.pop("rope_theta", None)
    if family == "math-shepherd":
        dims.pop("tie_word_embeddings", None)
        return MathShepherdPRM, build_on(device, dtype, lambda: MistralForCausalLM(MistralConfig(**dims))), \
            tiny_tokenizer(PRM_SPECIALS)
    if family == "rlhflow":
        dims.pop("tie_word_embeddings", None)
        return RLHFlowPRM, build_on(device, dtype, lambda: LlamaForCausalLM(LlamaConfig(**dims))), \
            tiny_tokenizer(PRM_SPECIALS, LLAMA3_TEMPLATE)
    if family == "qwen-prm":
        return QwenMathPRM, build_on(device, dtype, lambda: Qwen2ForTokenClassification(Qwen2Config(**dims,
                                                                                                  num_labels=2))), \
            tiny_tokenizer(PRM_SPECIALS)

    def value_model():
        model = ValueHeadModel(Qwen2Model(Qwen2Config(**dims)), ValueHead(dims["hidden_size"]))
        torch.nn.init.normal_(model.v_head.summary.weight, std=0.5)
        return model

    model = build_on(device, dtype, value_model)
    model.v_head.float()  # the head stays float32 whatever the base's dtype, as the loader builds it
    return SkyworkPRM, model, tiny_tokenizer(PRM_SPECIALS)


PRM_FAMILIES = ("math-shepherd", "rlhflow", "qwen-prm", "skywork")


def check_prms(device: str, size: Size, figures: dict[str, Any]) -> None:
    """Each PRM adapter on the device: a timed batch, batched = one at a time, bf16 against float32."""
    import torch

    items = [PRM_ITEMS[i % len(PRM_ITEMS)] for i in range(size.prm_items)]
    failed = []
    for family in PRM_FAMILIES:  # one family's failure does not hide the others' figures
        entry = figures[family] = {}
        try:
            _check_prm(family, device, size, items, entry)
        except Exception as e:  # noqa: BLE001 (collected, raised below)
            entry["error"] = str(e) if isinstance(e, CheckFailed) else traceback.format_exc(limit=6)
            failed.append(family)
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    expect(not failed, f"PRM adapters failed: {', '.join(failed)} (see their error)")


def _check_prm(family: str, device: str, size: Size, items: list, entry: dict[str, Any]) -> None:
    import torch

    low = dtype_for(device) != torch.float32
    cls, model, tok = build_prm(family, device, size)
    prm = cls.from_model(model, tok, batch_size=16)
    expect(str(next(prm.model.parameters()).device).startswith(device.split(":")[0]),
           f"{family}: the model is not on {device}")
    entry["parameters"] = prm.num_parameters
    prm.score(items[:2])  # warm-up
    scored, secs = timed(device, lambda: prm.score(items))
    tokens = sum(s.tokens for s in scored)
    entry.update(tokens=tokens, s=round(secs, 3), tok_s=round(tokens / secs, 1))
    expect(all(len(s.scores) == len(steps) for s, (_, steps) in zip(scored, items)),
           f"{family}: not one score per step")
    expect(all(0.0 <= x <= 1.0 and math.isfinite(x) for s in scored for x in s.scores),
           f"{family}: a score outside [0, 1]")
    prm.batch_size = 1
    single = [prm.score([item])[0].scores for item in PRM_ITEMS]
    batch_err = max(abs(a - b) for s, one in zip(scored, single) for a, b in zip(s.scores, one))
    entry["batched_vs_single"] = float(f"{batch_err:.3g}")
    tolerance = 5e-2 if low else 1e-4
    expect(batch_err < tolerance, f"{family}: batched scores differ from one at a time by {batch_err:.3g}")
    if low:  # the same weights in float32
        (model.model if family == "skywork" else model).float()
        full = cls.from_model(model, tok, batch_size=16).score(PRM_ITEMS)
        err = max(abs(a - b) for s, f in zip(scored, full) for a, b in zip(s.scores, f.scores))
        entry["bf16_vs_fp32"] = float(f"{err:.3g}")
        expect(err < 0.1, f"{family}: bf16 scores differ from float32 by {err:.3g}")


# --------------------------------------------------------------------------- sweep + router

SWEEP_YAML = """
name: gpu-check
problems: builtin:arith
problem_options: {{per_level: {per_level}, seed: 0}}
pairs: [{{policy: "hf:{policy}", prm: "math-shepherd:{prm}"}}]
methods:
  cot: {{}}
  majority: {{}}
  best_of_n: {{agg: [min], vote: [prm_vote]}}
  beam: {{m: [2]}}
budgets: [1, 2, 4]
n_subsets: 4
chunk_size: {chunk}
max_depth: 3
device: {device}
sampling: {{temperature: 0.8, max_tokens: 24, step_max_tokens: 8}}
"""
FIT_PARAMS = {"learning_rate": 0.1, "num_leaves": 8, "min_data_in_leaf": 3, "lambda_l2": 1e-3}


def check_sweep_and_router(device: str, size: Size, work: Path, figures: dict[str, Any]) -> None:
    """`ttsopt sweep` with ``device: DEVICE``, then a router trained on its snapshot, solving on the device."""
    import torch
    from transformers import (
        MistralConfig,
        MistralForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )
    from ttsopt.selector.router import Budget, Router
    from ttsopt.train.fit.build import search_settings, write_router
    from ttsopt.train.fit.table import load_training_table
    from ttsopt.train.fit.tuning import TrainSettings, fit_fixed

    policy_dir, prm_dir = work / "policy", work / "prm"
    tok = wide_tokenizer(size.sweep_policy["vocab_size"])
    policy = build_on("cpu", torch.float32, lambda: Qwen2ForCausalLM(Qwen2Config(**size.sweep_policy)))
    policy.generation_config.eos_token_id = tok.eos_token_id
    policy.generation_config.pad_token_id = tok.pad_token_id
    policy.save_pretrained(policy_dir)
    tok.save_pretrained(policy_dir)
    prm_tok = tiny_tokenizer(PRM_SPECIALS)
    dims = {k: v for k, v in SMALL.items() if k != "tie_word_embeddings"}
    build_on("cpu", torch.float32, lambda: MistralForCausalLM(MistralConfig(**dims))).save_pretrained(prm_dir)
    prm_tok.save_pretrained(prm_dir)
    config = work / "sweep.yaml"
    per_level = size.sweep_per_level
    config.write_text(SWEEP_YAML.format(per_level=per_level, policy=policy_dir, prm=prm_dir, device=device,
                                        chunk=per_level * 5))
    store, snapshot = work / "store" / "outcomes.sqlite", work / "snapshot"
    env = {**os.environ, "TTSOPT_CACHE": str(work / "cache")}
    cmd = [sys.executable, "-m", "ttsopt.cli", "sweep", str(config), "--no-embeddings", "--store", str(store),
           "--snapshot", str(snapshot)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    sweep_s = time.perf_counter() - t0
    expect(done.returncode == 0, f"`ttsopt sweep` failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                                 f"{done.stderr[-3000:]}")
    said = (done.stdout + done.stderr).splitlines()
    summary = [line.strip() for line in said if "units run" in line] or said[-1:]
    figures.update(sweep_s=round(sweep_s, 1), sweep=summary[-1] if summary else "")

    t0 = time.perf_counter()
    settings = TrainSettings(trials=0, folds=3, n_components=0)
    table = load_training_table([snapshot])
    expect(len(table) > 0 and set(table["policy"]) == {f"hf:{policy_dir}"}, "the snapshot has no rows of the pair")
    fit = fit_fixed(table, settings, FIT_PARAMS, 20)
    write_router(table, work / "router", settings, search=search_settings([snapshot], table, settings),
                 snapshots=[snapshot], fit=fit, storage=f"sqlite:///{work / 'study.sqlite3'}")
    figures.update(table_rows=len(table), train_s=round(time.perf_counter() - t0, 2))

    router = Router.load(work / "router", device=device)
    qs = questions(4)
    first, secs = timed(device, lambda: router.solve(qs[0], Budget(n=4)))
    figures["solve_first_s"] = round(secs, 2)  # loads the policy and the PRM onto the device
    on = {str(next(router.policy.model.parameters()).device), str(next(router.prm.model.parameters()).device)}
    expect(all(d.startswith(device.split(":")[0]) for d in on), f"the router's models are on {on}, not {device}")
    expect(first.decision.strategy is not None and first.compute["search"]["tokens"] > 0,
           f"Router.solve ran no search: {first.trace}")
    again, secs = timed(device, lambda: router.solve(qs[1], Budget(n=4)))
    many, secs_many = timed(device, lambda: router.solve_many(qs, Budget(n=4)))
    expect(len(many) == len(qs), "solve_many lost a question")
    figures.update(solve_s=round(secs, 3), solve_many_4_s=round(secs_many, 3), models_on=sorted(on),
                   strategy=again.decision.strategy,
                   policy_dtype=str(router.policy.model.dtype).replace("torch.", ""))


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    name: str
    ok: bool
    seconds: float
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


CHECKS = ("policy", "prms", "sweep")


def run_check(name: str, device: str, size: Size, work: Path) -> Result:
    """One check, its failure caught and reported (the other checks still run)."""
    ensure_importable()
    figures: dict[str, Any] = {}  # filled as a check goes: what it measured before a failure is reported too
    fn = {"policy": lambda: check_policy(device, size, figures), "prms": lambda: check_prms(device, size, figures),
          "sweep": lambda: check_sweep_and_router(device, size, work / "sweep", figures)}[name]
    t0 = time.perf_counter()
    try:
        fn()
        return Result(name, True, time.perf_counter() - t0, figures)
    except Exception as e:  # noqa: BLE001 (reported; the other checks still run)
        detail = str(e) if isinstance(e, CheckFailed) else traceback.format_exc(limit=8)
        return Result(name, False, time.perf_counter() - t0, figures, error=detail)


def machine() -> dict[str, Any]:
    import torch
    import transformers

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
                            "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    try:
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        info["cpu"] = names[0] if names else platform.processor()
    except OSError:
        info["cpu"] = platform.processor()
    info["cpu_count"] = os.cpu_count()
    return info


def _print_figures(figures: dict[str, Any], indent: str = "    ") -> None:
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"{indent}{key}:")
            _print_figures(value, indent + "  ")
        else:
            print(f"{indent}{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="dry-run the same checks on the CPU (small sizes)")
    parser.add_argument("--size", choices=sorted(SIZES), help="model sizes (default: full on CUDA, small on CPU; "
                        "shapes: the full shapes with one layer each, for a CPU)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"],
                        help="the models' dtype (default: bfloat16 on CUDA, float32 on the CPU)")
    parser.add_argument("--only", help=f"comma-separated checks among {', '.join(CHECKS)}")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    global DTYPE
    DTYPE = args.dtype
    ensure_importable()
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    names = [n.strip() for n in args.only.split(",")] if args.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"--only: unknown check(s) {unknown}; choose among {', '.join(CHECKS)}")
    info = machine()
    if not args.cpu and not torch.cuda.is_available():
        print(f"gpu_check: no GPU found (torch {info['torch']}, torch.cuda.is_available() is False): nothing "
              f"was checked. CPU: {info['cpu']}. Run `bash scripts/gpu_check.sh --cpu` to dry-run the same checks "
              "on the CPU with small sizes.")
        if args.json:
            args.json.write_text(json.dumps({"machine": info, "gpu": False, "results": []}, indent=1) + "\n")
        return 0
    device = "cpu" if args.cpu else "cuda"
    size = SIZES[args.size or ("small" if args.cpu else "full")]
    print(f"gpu_check on {device} ({info.get('gpu') or info['cpu']}), sizes {size.name}, dtype "
          f"{str(dtype_for(device)).replace('torch.', '')}; torch {info['torch']} (CUDA {info['torch_cuda']}), "
          f"transformers {info['transformers']}, {info['cpu_count']} CPUs", flush=True)
    work_ctx = tempfile.TemporaryDirectory(prefix="ttsopt-gpu-check-") if args.keep is None else None
    work = Path(work_ctx.name) if work_ctx is not None else args.keep
    work.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.perf_counter()
    try:
        for name in names:
            print(f"\n[{name}] ...", flush=True)
            result = run_check(name, device, size, work)
            results.append(result)
            print(f"[{name}] {'ok' if result.ok else 'FAILED'} in {result.seconds:.1f} s")
            _print_figures(result.figures)
            if result.error:
                print("    " + result.error.replace("\n", "\n    "))
    finally:
        if work_ctx is not None:
            work_ctx.cleanup()
    total = time.perf_counter() - t0
    failed = [r.name for r in results if not r.ok]
    print(f"\ngpu_check: {len(results) - len(failed)} of {len(results)} checks passed on {device} "
          f"({info.get('gpu') or info['cpu']}) in {total:.1f} s" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "device": device, "size": size.name, "total_s": total,
                                         "results": [r.__dict__ for r in results]}, indent=1, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
