"""Accuracy and compute per (pair, strategy) from a sweep's outcome store.

    ttsopt sweep arith-report
    python benchmarks/sweep_table.py runs/arith-report/outcomes.sqlite [--by-level]
    python benchmarks/sweep_table.py STORE --compare --budgets 4,16 --by level   # markdown, one row per pair x method x N

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
    ap.add_argument("--compare", action="store_true",
                    help="markdown: rows pair x method x N for CoT (the same row at every N), majority, "
                         "Best-of-N (PRM-Vote, agg last and min), beam and DVTS, one column per value of --by, with the best method per column marked")
    ap.add_argument("--by", default="level", choices=("level", "difficulty"), help="--compare: the columns")
    ap.add_argument("--budgets", default="4,16", help="--compare: the budgets N")
    args = ap.parse_args()
    from ttsopt.train.sweep.snapshot import read_outcomes

    df = read_outcomes(args.store)
    if args.compare:
        print(compare(df, [int(b) for b in args.budgets.split(",")], args.by))
        return
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


def _label(row) -> str | None:
    if row["method"] == "cot":
        return "CoT"
    if row["method"] == "majority":
        return "majority"
    if row["method"] == "best_of_n" and row["vote"] == "prm_vote":
        return f"BoN PRM-Vote ({row['agg']})"
    if row["method"] in ("beam", "dvts"):
        return {"beam": "beam", "dvts": "DVTS"}[row["method"]]
    return None


def compare(df: pd.DataFrame, budgets: list[int], by: str) -> str:
    """Accuracy per (pair, method, N) and per level or difficulty bin, markdown; per pair, N and
    column the best method is bold, so where the best method changes is visible at a glance."""
    cot = df[df["method"] == "cot"]  # one sample, whatever N: a reference row in every block
    df = pd.concat([df[(df["n"].isin(budgets)) & (df["method"] != "cot")],
                    *[cot.assign(n=n) for n in budgets]], ignore_index=True)
    df["method_label"] = df.apply(_label, axis=1)
    df = df.dropna(subset=["method_label"])
    df = df[df["prm"] != ""]
    df["pair"] = df["policy"] + " + " + df["prm"]
    rank = {"easy": 0, "medium": 1, "hard": 2}
    cols = [*sorted(df[by].dropna().unique(), key=lambda v: (rank.get(v, 3), str(v))), "all"]
    acc = df.pivot_table(index=["pair", "n", "method_label"], columns=by, values="correct", aggfunc="mean")
    acc["all"] = df.groupby(["pair", "n", "method_label"])["correct"].mean()
    problems = df.groupby(["pair", "n", "method_label"])["problem_id"].nunique()
    lines = [f"| pair | N | method | {' | '.join(f'{by} {c}' if c != 'all' else 'all' for c in cols)} | problems |",
             "|" + "---|" * (len(cols) + 4)]
    for (pair, n), block in acc.groupby(level=[0, 1], sort=True):
        for (_, _, method), row in block.iterrows():
            cells = []
            for c in cols:
                v, present = row.get(c), block[c].dropna()
                text = "" if pd.isna(v) else f"{v:.3f}"
                cells.append(f"**{text}**" if text and v == present.max() and present.nunique() > 1 else text)
            lines.append(f"| {pair} | {n} | {method} | {' | '.join(cells)} | {problems[(pair, n, method)]} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
