"""Generated tokens per second of a policy at several batch sizes.

    HF_HUB_OFFLINE=1 python benchmarks/generation_speed.py --policy smollm2-135m \
        --batch-sizes 1,8,32 --max-tokens 64 --out gen_speed.json

Every row samples (T=0.7 by default) from the same realistic 2-shot arithmetic prompt, so
the numbers include prefill, per-step overhead and rows that end early (EOS) while the rest
of the batch goes on: what a sweep sees, not a pure decode kernel. The machine's load
average is recorded before and after, because on a shared CPU it moves the result more
than anything else. ``--compare-logprobs`` repeats each batch with ``logprobs=False`` to
show what reporting ``Completion.logprob`` costs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py: this folder is no package
from machine import loadavg  # noqa: E402

QUESTION = (
    "A shop sells pencils at 3 dollars each. Mia buys 7 pencils and pays with a 50 dollar bill. "
    "How much change does she get?"
)


def measure(policy, prompt: str, batch: int, params, repeats: int) -> dict:
    """Best of ``repeats`` runs (the least disturbed by neighbours), plus every run's figures."""
    policy.batch_size = batch
    runs = []
    for r in range(repeats):
        t0 = time.perf_counter()
        gens = policy.generate([prompt] * batch, params.replace(seed=r))
        wall = time.perf_counter() - t0
        generated = sum(g.generated_tokens for g in gens)
        runs.append({
            "wall_s": round(wall, 3),
            "generated_tokens": generated,
            "prefill_tokens": sum(g.prefill_tokens or 0 for g in gens),
            "tokens_per_s": round(generated / wall, 2),
            "longest_row": max(c.tokens for g in gens for c in g.completions),
        })
    best = max(runs, key=lambda x: x["tokens_per_s"])
    return {"batch_size": batch, **best, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="smollm2-135m", help="policy spec: preset, hf:PATH or .gguf (transformers)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 where the CPU has it), float32, bfloat16")
    ap.add_argument("--batch-sizes", default="1,8,32", help="comma-separated batch sizes")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--repeats", type=int, default=1, help="runs per batch size; the fastest is reported")
    ap.add_argument("--no-warmup", action="store_true", help="skip the short untimed warm-up call")
    ap.add_argument("--compare-logprobs", action="store_true", help="also time each batch with logprobs off")
    ap.add_argument("--out", default=None, help="write the results as JSON to this file")
    args = ap.parse_args(argv)

    import torch
    import transformers

    from ttsopt.search.engines.hf_policy import TransformersPolicy
    from ttsopt.search.types import SamplingParams

    batches = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if not batches or min(batches) < 1:
        ap.error("--batch-sizes needs positive integers")
    load_before = loadavg()
    t0 = time.perf_counter()
    policy = TransformersPolicy(args.policy, device=args.device, dtype=args.dtype)
    load_s = time.perf_counter() - t0
    prompt = policy.format_prompt(QUESTION)
    params = SamplingParams(n=1, temperature=args.temperature, max_tokens=args.max_tokens)
    if not args.no_warmup:
        policy.generate([prompt], params.replace(max_tokens=4))

    results = []
    for b in batches:
        row = measure(policy, prompt, b, params, args.repeats)
        if args.compare_logprobs:
            policy.logprobs = False
            row["without_logprobs"] = measure(policy, prompt, b, params, args.repeats)
            policy.logprobs = True
        results.append(row)
        print(f"  batch {b}: {row['tokens_per_s']} tok/s", file=sys.stderr, flush=True)

    report = {
        "policy": args.policy,
        "num_parameters": policy.num_parameters,
        "device": args.device,
        "dtype": str(next(policy.model.parameters()).dtype).replace("torch.", ""),
        "prompt_tokens": len(policy.encode_prompt(prompt)),
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "repeats": args.repeats,
        "load_s": round(load_s, 2),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "results": results,
    }
    print(f"{report['policy']} ({report['dtype']}, {report['device']}, {report['torch_threads']} threads), "
          f"prompt {report['prompt_tokens']} tokens, max_tokens {args.max_tokens}, T={args.temperature}; "
          f"loadavg {load_before} -> {report['loadavg_after']}")
    header = f"{'batch':>5} {'tok/s':>8} {'wall s':>8} {'generated':>9} {'longest':>7}"
    if args.compare_logprobs:
        header += f" {'tok/s no-lp':>11}"
    print(header)
    for r in results:
        line = (f"{r['batch_size']:>5} {r['tokens_per_s']:>8.1f} {r['wall_s']:>8.2f} "
                f"{r['generated_tokens']:>9} {r['longest_row']:>7}")
        if args.compare_logprobs:
            line += f" {r['without_logprobs']['tokens_per_s']:>11.1f}"
        print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
