"""The deployed default's learning curve on a snapshot (train/evaluation/learning.py), with its plot.

    python3 benchmarks/learning_curve.py benchmarks/results/arith-router --trials 5 --repeats 3 \
        --out benchmarks/results/selector/arith-router-learning

Writes OUT.json, OUT.md and OUT.png; the CPU is recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model, loadavg  # noqa: E402

from ttsopt.train.evaluation.evaluate import evaluate  # noqa: E402
from ttsopt.train.evaluation.learning import learning_curve, recommended_size  # noqa: E402
from ttsopt.train.evaluation.markdown import learning_table  # noqa: E402
from ttsopt.train.fit.cascade import load_gates  # noqa: E402
from ttsopt.train.fit.options import load_options  # noqa: E402
from ttsopt.train.fit.table import load_training_table  # noqa: E402
from ttsopt.train.fit.tuning import TrainSettings  # noqa: E402
from ttsopt.train.report.plots import learning_curve as learning_figure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="+")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="25,50,100,200")
    ap.add_argument("--no-adaptive", action="store_true", help="rest-of-budget options only (faster)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    start = time.perf_counter()
    table = load_training_table(a.data)
    gates = load_gates(a.data)
    rest = load_options(a.data, adaptive=not a.no_adaptive)
    print(f"loaded in {time.perf_counter() - start:.0f} s", flush=True)
    settings = TrainSettings(trials=a.trials, folds=a.folds, seed=0)
    curve = learning_curve(table, settings, evaluate, sizes=[int(s) for s in a.sizes.split(",")],
                           repeats=a.repeats, gates=gates, rest=rest,
                           progress=lambda i, n: print(f"{i}/{n} draws, {time.perf_counter() - start:.0f} s", flush=True))
    curve.update({"data": a.data, "trials": a.trials, "cpu": cpu_model(), "loadavg_end": loadavg(),
                  "seconds": time.perf_counter() - start, "recommended": recommended_size(curve),
                  "adaptive_options": not a.no_adaptive})
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(curve, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(learning_table(curve) + "\n")
    learning_figure(curve).savefig(out.with_suffix(".png"), dpi=110)
    print(learning_table(curve))


if __name__ == "__main__":
    main()
