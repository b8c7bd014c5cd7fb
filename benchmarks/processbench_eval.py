"""ProcessBench F1 of a PRM on one split, with a threshold sweep.

    HF_HUB_OFFLINE=1 python benchmarks/processbench_eval.py --prm judge:smollm2-135m \
        --data PATH/TO/processbench_gsm8k.json --limit 100 --threshold 0.5

``--limit`` takes a class-balanced seeded sample (the files are sorted by class);
``--first`` takes the first K records instead. Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prm", required=True, help="PRM spec, e.g. judge:smollm2-135m")
    ap.add_argument("--data", required=True, help="ProcessBench file (processbench_gsm8k.json, ...)")
    ap.add_argument("--limit", type=int, default=None, help="number of examples (class-balanced sample)")
    ap.add_argument("--first", action="store_true", help="take the first --limit records, not a balanced sample")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=8, help="examples per PRM call")
    ap.add_argument("--dtype", default=None, help="model dtype for neural PRMs (float32, bfloat16, auto)")
    ap.add_argument("--predictions", default=None, help="write per-example predictions to this JSON file")
    args = ap.parse_args(argv)

    from ttsopt.search.prm.processbench import (
        best_threshold, evaluate_prm, load_processbench, score_quantiles, threshold_sweep,
    )
    from ttsopt.search.registry import load_prm

    examples = load_processbench(args.data, args.limit, balanced=not args.first, seed=args.seed)
    t0 = time.perf_counter()
    kwargs = {"dtype": args.dtype} if args.dtype else {}
    prm = load_prm(args.prm, **kwargs)
    load_s = time.perf_counter() - t0

    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} examples, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)

    result = evaluate_prm(prm, examples, threshold=args.threshold, batch_size=args.batch_size, progress=progress)
    sweep = threshold_sweep(result)
    quantile_sweep = threshold_sweep(result, score_quantiles(result))
    report = {
        "prm": args.prm, "data": os.path.basename(args.data), "n": len(examples),
        "steps": sum(len(p.scores) for p in result.predictions),
        "load_s": round(load_s, 1), **result.summary(),
        "tokens_per_s": round(result.prm_tokens / result.wall_time_s, 1) if result.wall_time_s else None,
        "sweep": [vars(p) for p in sweep],
        "quantile_sweep": [vars(p) for p in quantile_sweep],
        "best_in_sample": vars(best_threshold(sweep + quantile_sweep)) if result.n_correct and result.n_erroneous
        else None,
        "loadavg": open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None,
    }
    if args.predictions:
        with open(args.predictions, "w") as f:
            json.dump([vars(p) for p in result.predictions], f)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
