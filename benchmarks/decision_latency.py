"""Decision latency of the router, one question at a time: p50 / p99 per decision.

    HF_HUB_OFFLINE=1 python benchmarks/decision_latency.py --router /tmp/r-emb \
        --questions 200 --repeats 3 --out benchmarks/results/decision_latency.json

Paths timed, each per single question (a service's worst case: no batching), after a warm-up:

- ``precomputed``: the question's features given (text statistics, embedding, probe already
  computed, e.g. cached by the caller): :meth:`Router.route_features`, i.e. building the numpy
  input rows against the pipeline's columns, ``booster.predict`` on them, the budget rule and
  the :class:`Decision` record. Target < 1 ms.
- ``text_only``: precomputed embedding, text statistics computed (regexes over the question).
- ``embedded``: the whole :meth:`Router.route` with the MiniLM embedding computed for the
  question (the router's embedding cache off), text statistics, prediction, decision. Target
  < 20 ms. Its parts are timed apart too (``encode`` = the MiniLM call alone).
- ``pandas``: the reference path the fast path replaced: the offline table's columns for the
  question (``selector/rows.py``) through ``FeaturePipeline.transform`` and ``booster.predict`` on
  the DataFrame; the fast path's predictions are checked identical to it on every question.

Each figure is wall clock and, under ``cpu``, this thread's CPU time (what the call costs a core;
on a loaded machine the wall-clock tail is mostly waiting for one).

Questions are the router's training snapshots' problems when they are on disk (else the
built-in arithmetic set). Timings are wall clock on a shared machine; the CPU model, core
count and load averages before and after are recorded with them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

from ttsopt.data.files import atomic_write_text  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py: this folder is no package
from machine import cpu_flags, cpu_model  # noqa: E402


def stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {"n": int(ms.size), "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()), "max_ms": float(ms.max())}


def load_questions(router, count: int) -> list[str]:
    import pandas as pd

    seen: list[str] = []
    for folder in router.artifact.manifest.get("training_data", {}).get("snapshots", []):
        path = Path(folder) / "problems.parquet"
        if path.is_file():
            seen += pd.read_parquet(path)["question"].tolist()
    if not seen:
        from ttsopt.data import load_problems

        seen = [p.question for p in load_problems("builtin:arith?per_level=50&seed=3")]
    seen = list(dict.fromkeys(seen))
    return (seen * (count // max(len(seen), 1) + 1))[:count]


def timed(fn, items, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds (this thread's) per call."""
    wall, cpu = [], []
    for _ in range(repeats):
        for item in items:
            c0, t0 = time.thread_time(), time.perf_counter()
            fn(item)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.thread_time() - c0)
    return wall, cpu


def both(measured: tuple[list[float], list[float]]) -> dict[str, float]:
    wall, cpu = measured
    return {**stats(wall), "cpu": stats(cpu)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--router", required=True, type=Path)
    ap.add_argument("--pair", default=None)
    ap.add_argument("--questions", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=int, default=16, help="budget N of the decisions")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/decision_latency.json"))
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads for the encoder (1: one short sentence gains nothing from more, "
                         "and on a shared CPU extra threads only wait for each other)")
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(args.torch_threads)
    except ImportError:
        pass

    from ttsopt.selector.router import Budget, Router

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    router = Router.load(args.router, pair=args.pair, embedding_cache=0)
    load_s = time.perf_counter() - t0
    if router.pipeline.probes:
        print("this router runs a live probe per decision (model calls): its latency is the policy's, not the "
              "router's; benchmark a router trained without --probe-k", file=sys.stderr)
        return 2
    budget = Budget(n=args.budget)
    questions = load_questions(router, args.questions)
    distinct = list(dict.fromkeys(questions))

    t0 = time.perf_counter()
    router.route(questions[0], budget)  # loads the encoder
    encoder_load_s = time.perf_counter() - t0
    for q in distinct[:20]:
        router.route(q, budget)  # warm-up

    # features computed once per question, outside the timed region
    blocks = {}
    raws = {}
    for q in distinct:
        block, _ = router.question_features([q])
        blocks[q] = block
        if router.n_emb:
            raws[q] = router._raw_embeddings([q])

    results: dict[str, dict] = {}
    results["precomputed"] = both(timed(lambda q: router.route_features([q], blocks[q], budget), questions,
                                         args.repeats))
    if router.n_emb:
        def text_only(q):
            block = router._question_block([q], raws[q], None)
            router.route_features([q], block, budget)

        results["text_only"] = both(timed(text_only, questions, args.repeats))
        results["encode"] = both(timed(lambda q: router._raw_embeddings([q]), questions, 1))
    results["embedded"] = both(timed(lambda q: router.route(q, budget), questions, 1))
    parts = {
        "text_stats_and_pca": both(timed(lambda q: router._question_block([q], raws.get(q), None) if router.n_emb
                                  else router._question_block([q], None, None), questions, 1)),
        "predict": both(timed(lambda q: router.predict(blocks[q]), questions, args.repeats)),
    }

    # the pandas reference path, and the fast path's predictions checked identical to it
    mismatches = 0
    pandas_times = []
    for q in distinct[: min(len(distinct), 100)]:
        t0 = time.perf_counter()
        frame = router.model_frame(q, raws[q][0] if router.n_emb else None, None)
        ref = router.booster.predict(frame)
        pandas_times.append(time.perf_counter() - t0)
        if not np.array_equal(ref, router.predict(blocks[q])[0]):
            mismatches += 1
    results["pandas"] = stats(pandas_times)

    report = {
        "benchmark": "decision_latency",
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
                    "load_avg_before": list(load_before), "load_avg_after": list(os.getloadavg()),
                    "note": "shared machine: other jobs (sweeps, tests) ran at the same time"},
        "router": {"path": str(args.router), "pair": router.pair, "strategies": len(router.keys),
                   "columns": len(router.columns), "embedding_components": router.n_emb,
                   "trees": router.booster.num_trees(), "load_s": load_s, "encoder_load_s": encoder_load_s},
        "questions": len(questions), "distinct_questions": len(distinct), "repeats": args.repeats,
        "budget": budget.to_dict(), "torch_threads": args.torch_threads,
        "latency": results, "parts": parts,
        "fast_path_equals_pandas": {"checked": min(len(distinct), 100), "mismatches": mismatches},
        "targets_ms": {"precomputed": 1.0, "embedded": 20.0},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=1) + "\n")
    for name, s in {**results, **{f"  {k}": v for k, v in parts.items()}}.items():
        cpu = f"   cpu p50 {s['cpu']['p50_ms']:7.3f} ms  p99 {s['cpu']['p99_ms']:7.3f} ms" if "cpu" in s else ""
        print(f"{name:20s} wall p50 {s['p50_ms']:8.3f} ms  p99 {s['p99_ms']:8.3f} ms{cpu}  (n={s['n']})")
    print(f"fast path == pandas path on {report['fast_path_equals_pandas']['checked']} questions: "
          f"{mismatches} mismatches; written {args.out}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
