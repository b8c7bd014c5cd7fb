"""Accuracy and compute per (pair, strategy) from a sweep's outcome store.

    ttsopt sweep arith-report
    python benchmarks/sweep_table.py runs/arith-report/outcomes.sqlite [--by-level]

Pooled rows (majority, Best-of-N) carry the expected accuracy over random subsets of one
pool; their tokens are the mean over those subsets. Wall time of pooled rows is the
pool's time scaled by N / N_max.
"""

from __future__ import annotations

import argparse

import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="outcomes.sqlite or an exported .parquet")
    ap.add_argument("--by-level", action="store_true", help="one column per problem level")
    ap.add_argument("--by-difficulty", action="store_true", help="one column per difficulty bin")
    args = ap.parse_args()
    from ttsopt.train.store import read_outcomes

    df = read_outcomes(args.store)
    df["policy_tokens"] = df["policy_prompt_tokens"] + df["policy_generated_tokens"]
    keys = ["policy", "prm", "strategy"]
    table = df.groupby(keys, sort=False).agg(
        problems=("problem_id", "nunique"), accuracy=("correct", "mean"),
        gen_tokens=("policy_generated_tokens", "mean"), prm_tokens=("prm_tokens", "mean"),
        tflops=("flops", lambda s: s.mean() / 1e12), wall_s=("wall_time_s", "mean"))
    for col, flag in (("level", args.by_level), ("difficulty", args.by_difficulty)):
        if flag:
            table = table.join(df.pivot_table(index=keys, columns=col, values="correct", aggfunc="mean")
                               .add_prefix(f"{col}="))
    with pd.option_context("display.width", 200, "display.max_rows", 500, "display.max_columns", 30):
        print(table.round(3).to_string())


if __name__ == "__main__":
    main()
