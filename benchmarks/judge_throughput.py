"""How fast the LLM-as-judge PRM scores a Best-of-N pool, per engine.

    HF_HUB_OFFLINE=1 python benchmarks/judge_throughput.py --engines transformers,llamacpp \
        --judges smollm2-135m,gemma3-270m --per-level 2 --candidates 16 --out judge_throughput.json

The pool is built, not sampled, so both engines score exactly the same steps: for each
builtin:arith problem, ``--candidates`` step-by-step solutions of its formula (one
equation per step, then "The answer is N."), a seeded share of them with a wrong result
in one step. A judge prompt for step k holds the question and steps 1..k, so the prompts
of one solution share their start: the transformers engine reads every prompt in full, the
llama.cpp engine prefills a shared start once (the figure ``prefilled`` shows how much it
really read). Model load time is excluded. Figures move with machine load: it is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py: this folder is no package
from machine import loadavg  # noqa: E402


def _evaluate(tokens: list[str], steps: list[tuple[str, int]]) -> int:
    """Evaluate number/operator tokens, products first, recording one equation per operation."""
    tokens = list(tokens)
    i = 0
    while i + 2 < len(tokens):
        if tokens[i + 1] == "*":
            x, y = int(tokens[i]), int(tokens[i + 2])
            steps.append((f"{x} * {y}", x * y))
            tokens[i:i + 3] = [str(x * y)]
        else:
            i += 2
    value = int(tokens[0])
    for op, y in zip(tokens[1::2], tokens[2::2]):
        new = value + int(y) if op == "+" else value - int(y)
        steps.append((f"{value} {op} {y}", new))
        value = new
    return value


def solution_steps(operands: list[int], formula: str, rng: random.Random, wrong: bool) -> list[str]:
    """Steps that evaluate the arith set's ``formula`` (one parenthesised group at most)."""
    text = formula
    for name, value in zip("abcd", operands):
        text = text.replace(name, str(value))
    steps: list[tuple[str, int]] = []
    if "(" in text:
        inner = text[text.index("(") + 1:text.index(")")]
        text = text[:text.index("(")] + str(_evaluate(inner.split(), steps)) + text[text.index(")") + 1:]
    value = _evaluate(text.split(), steps)
    bad = rng.randrange(len(steps)) if wrong else -1
    out = [f"{expr} = {result + (rng.choice([-2, -1, 1, 3]) if k == bad else 0)}\n\n"
           for k, (expr, result) in enumerate(steps)]
    out.append(f"The answer is {value}.")
    return out


def build_pool(per_level: int, candidates: int, seed: int) -> list[tuple[str, list[str]]]:
    from ttsopt.data import load_problems

    rng = random.Random(seed)
    items = []
    for p in load_problems("builtin:arith", per_level=per_level, seed=seed):
        meta = p.metadata
        for _ in range(candidates):
            items.append((p.question, solution_steps(list(meta["operands"]), meta["formula"], rng, rng.random() < 0.5)))
    return items


def measure(engine: str, judge: str, items) -> dict:
    from ttsopt.search.registry import load_prm, on_engine

    spec = on_engine(f"judge:{judge}", engine)
    t0 = time.perf_counter()
    prm = load_prm(spec)
    load_s = time.perf_counter() - t0
    prm.score(items[:2])  # warm-up (first-call allocations), then start cold
    if hasattr(prm, "reset_cache"):
        prm.reset_cache()
    stats0 = dict(prm.engine.stats) if getattr(prm, "engine", None) is not None else None
    before = loadavg()
    t0 = time.perf_counter()
    scored = prm.score(items)
    wall = time.perf_counter() - t0
    tokens = sum(s.tokens for s in scored)
    prefilled = (prm.engine.stats["prefilled"] - stats0["prefilled"]) if stats0 is not None else tokens
    return {
        "engine": engine, "judge": judge, "spec": spec, "solutions": len(items),
        "steps": sum(len(s.scores) for s in scored), "prompt_tokens": tokens, "prefilled_tokens": prefilled,
        "wall_s": round(wall, 3), "prompt_tok_per_s": round(tokens / wall, 1),
        "steps_per_s": round(sum(len(s.scores) for s in scored) / wall, 2), "load_s": round(load_s, 2),
        "loadavg_before": before, "loadavg_after": loadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--engines", default="transformers,llamacpp")
    ap.add_argument("--judges", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--per-level", type=int, default=2)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="judge_throughput.json")
    args = ap.parse_args(argv)
    items = build_pool(args.per_level, args.candidates, args.seed)
    rows = []
    for judge in [j for j in args.judges.split(",") if j]:
        for engine in [e for e in args.engines.split(",") if e]:
            try:
                rows.append(measure(engine, judge, items))
            except Exception as e:  # an engine that is not installed is a row, not a crash
                rows.append({"engine": engine, "judge": judge, "error": f"{type(e).__name__}: {e}"})
            print(json.dumps(rows[-1]), flush=True)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"judge scoring, {len(items)} solutions ({os.cpu_count()} CPUs)")
    for col in ("engine", "judge", "steps", "prompt tok", "prefilled", "wall s", "prompt tok/s", "steps/s"):
        table.add_column(col, justify="left" if col in ("engine", "judge") else "right")
    for r in rows:
        if "error" in r:
            table.add_row(r["engine"], r["judge"], "ERROR", "", "", "", "", "")
            continue
        table.add_row(r["engine"], r["judge"], str(r["steps"]), f"{r['prompt_tokens']:,}", f"{r['prefilled_tokens']:,}",
                      f"{r['wall_s']:.1f}", f"{r['prompt_tok_per_s']:.0f}", f"{r['steps_per_s']:.1f}")
    Console(width=140).print(table)
    Path(args.out).write_text(json.dumps({
        "command": [sys.executable, *sys.argv], "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": rows,
    }, indent=2))
    print(f"wrote {args.out}")
    return 0 if any("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
