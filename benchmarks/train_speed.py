"""How long `ttsopt train` takes: 50 Optuna trials (TPE, pruning, grouped 5-fold lgb.cv) on a snapshot's table.

The issue's target is under 5 minutes on the 2 cores. Prints the row count and writes
``benchmarks/results/train_speed.json`` (CPU model, cores, rows, trials, seconds, load average
before and after, since the machine is shared with other work and timings are under load).

    python3 benchmarks/train_speed.py --data benchmarks/results/arith-router --trials 50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py: this folder is no package
from machine import cpu_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["benchmarks/results/arith-router"])
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--out", default="benchmarks/results/train_speed.json")
    ap.add_argument("--label", default="", help="what this run measures (e.g. the tuning code's version)")
    args = ap.parse_args()

    from ttsopt.train.fit.table import load_training_table
    from ttsopt.train.fit.tuning import TrainSettings, tune_and_fit

    table = load_training_table(args.data)
    print(f"rows: {len(table)} ({table['question_key'].nunique()} questions, "
          f"{table.groupby(['policy', 'prm']).ngroups} pairs, {table['strategy'].nunique()} strategies)", flush=True)
    settings = TrainSettings(trials=args.trials)
    load_before = os.getloadavg()
    start = time.perf_counter()
    fit = tune_and_fit(table, settings)
    seconds = time.perf_counter() - start
    load_after = os.getloadavg()
    states = {}
    for h in fit.history:
        states[h["state"]] = states.get(h["state"], 0) + 1
    record = {"label": args.label, "cpu": cpu_model(), "cores": os.cpu_count(), "rows": len(table),
              "questions": int(table["question_key"].nunique()), "trials": args.trials, "trial_states": states,
              "seconds": seconds, "under_5_min": seconds < 300, "best_cv_loss": fit.cv_loss, "rounds": fit.rounds,
              "loadavg_before": load_before, "loadavg_after": load_after, "data": args.data,
              "note": "shared machine: other helpers and background sweeps ran at the same time (timings under load)"}
    out = Path(args.out)
    runs = []
    if out.exists():
        old = json.loads(out.read_text())
        runs = old.get("runs", [old] if "seconds" in old else [])
    runs.append(record)
    out.write_text(json.dumps({**record, "runs": runs}, indent=1) + "\n")
    print(f"{args.trials} trials on {len(table)} rows: {seconds:.1f} s ({'under' if seconds < 300 else 'OVER'} 5 min); "
          f"load {load_before[0]:.1f} -> {load_after[0]:.1f}; wrote {out}")


if __name__ == "__main__":
    main()
