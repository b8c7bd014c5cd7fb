"""Fresh questions solved online against the offline estimate the router was trained with.

The deployed default's accuracy is an offline, cross-fitted estimate from the sweep's stored
outcomes. This script checks it where it matters: questions no snapshot holds, solved end to end
by ``Router.solve_many`` (the deployed mode, the real policy and PRM), graded against their gold
answers, and set per level beside ``manifest["deployed"]``'s held-out figures for that level (its
accuracy with a 95% Wilson interval from the fresh runs, and the compute against the predicted).

    python3 benchmarks/fresh_online.py --router R --pair smollm2-135m+calc --n 4 \
        --exclude benchmarks/results/arith-router --per-level 40 --out benchmarks/results/fresh

Results are appended to ``OUT/PAIR-nN.jsonl`` as they land (a rerun resumes), the summary is
``OUT/PAIR-nN.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, loadavg  # noqa: E402

from ttsopt.data.arith import arith_problems  # noqa: E402
from ttsopt.data.grading import is_equivalent  # noqa: E402
from ttsopt.data.problem import question_key  # noqa: E402
from ttsopt.selector.records import Budget  # noqa: E402
from ttsopt.selector.router import Router  # noqa: E402


def known_keys(folders: list[str]) -> set[str]:
    """Every question key the given snapshots hold: a fresh question is none of them."""
    keys: set[str] = set()
    for folder in folders:
        problems = pd.read_parquet(Path(folder) / "problems.parquet")
        keys.update(problems["question"].map(question_key) if "question" in problems else problems["question_key"])
    return keys


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--router", required=True)
    ap.add_argument("--pair", required=True)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--levels", default="3,4,5")
    ap.add_argument("--per-level", type=int, default=40)
    ap.add_argument("--seed", type=int, default=9001)
    ap.add_argument("--exclude", nargs="*", default=[], help="snapshot folders whose questions are not fresh")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default="benchmarks/results/fresh")
    a = ap.parse_args()

    levels = tuple(int(v) for v in a.levels.split(","))
    keys = known_keys(a.exclude)
    problems = arith_problems(a.per_level, seed=a.seed, levels=levels, exclude=frozenset(keys))
    fresh = [p for p in problems if question_key(p.question) not in keys]  # a level out of fresh ones repeats
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{a.pair}-n{a.n}"
    log = out / f"{stem}.jsonl"
    done = {json.loads(line)["id"] for line in log.read_text().splitlines()} if log.exists() else set()
    router = Router.load(a.router, pair=a.pair)
    todo = [p for p in fresh if p.id not in done]
    start = time.perf_counter()
    for i in range(0, len(todo), a.batch):
        chunk = todo[i:i + a.batch]
        sols = router.solve_many([p.question for p in chunk], Budget(n=a.n))
        with log.open("a") as fh:
            for p, s in zip(chunk, sols):
                fh.write(json.dumps({"id": p.id, "level": p.metadata["level"], "answer": s.answer, "gold": p.answer,
                                     "correct": bool(is_equivalent(s.answer, p.answer)),
                                     "mode": s.trace.get("deployed", {}).get("mode"),
                                     "tokens": s.compute.get("tokens"), "flops": s.compute.get("flops"),
                                     "seconds": s.seconds}, default=str) + "\n")
                fh.flush()
        print(f"{min(i + a.batch, len(todo))}/{len(todo)} solved, {time.perf_counter() - start:.0f} s", flush=True)

    rows = pd.DataFrame([json.loads(line) for line in log.read_text().splitlines()])
    deployed = router.deployed(Budget(n=a.n))
    by_level = (deployed.evidence or {}).get("by_level") or {}
    summary = {"pair": a.pair, "n": a.n, "mode": deployed.mode, "cpu": cpu_model(), "loadavg": loadavg(),
               "fresh_questions": len(rows), "seed": a.seed, "excluded": a.exclude, "levels": {}}
    for lv, g in rows.groupby("level"):
        k, n = int(g["correct"].sum()), len(g)
        lo, hi = wilson(k, n)
        est = by_level.get(str(lv), {})
        entry = {"problems": n, "accuracy": k / n, "wilson95": [lo, hi], "tokens": float(g["tokens"].mean()),
                 "flops": float(g["flops"].mean()), "seconds": float(g["seconds"].mean()),
                 "offline": est}
        if est:
            entry["offline_inside_ci"] = bool(lo <= est["mode_accuracy"] <= hi)
            entry["flops_vs_predicted"] = entry["flops"] / est["mode_flops"] if est.get("mode_flops") else None
            entry["tokens_vs_predicted"] = entry["tokens"] / est["mode_tokens"] if est.get("mode_tokens") else None
        summary["levels"][str(lv)] = entry
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    print(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
