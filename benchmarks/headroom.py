"""How much a per-problem router could gain on a sweep: best fixed strategy, per-bin best, oracle.

For each pair and budget N (strategies with n <= N; CoT at every N), cross-fitted over 5 folds
grouped by question key (no question on both sides):
- best fixed: the strategy with the best mean label on the training folds, scored on the test fold;
- per-bin best (oracle bins): the same choice made per difficulty bin, applied to each test problem
  by its bin (Snell et al.'s upper bound: the bin is a label of the sweep, not an online feature);
- oracle: each problem's best label within the budget (ties to the cheaper);
- the oracle again with tree labels from one replica, to show how much of it is seed noise.

    python benchmarks/headroom.py /work/runs/arith-router/outcomes.sqlite [--markdown]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold

from ttsopt.train.fit.labels import strategy_labels
from ttsopt.train.sweep.snapshot import read_outcomes

BUDGETS = (1, 2, 4, 8, 16)


def _oracle(labels: pd.DataFrame) -> float:
    return float(labels.groupby("problem_id")["label"].max().mean())


def headroom(outcomes: pd.DataFrame, *, folds: int = 5, seed: int = 0) -> pd.DataFrame:
    rows = []
    full = strategy_labels(outcomes)
    one = strategy_labels(outcomes, replicas=1)
    for (policy, prm), pair in full.groupby(["policy", "prm"], sort=False):
        pair_one = one[(one["policy"] == policy) & (one["prm"] == prm)]
        # problems with every strategy of the pair (a sweep in progress has partial chunks)
        complete = pair.groupby("problem_id")["strategy"].nunique()
        keep = complete[complete == complete.max()].index
        pair = pair[pair["problem_id"].isin(keep)]
        pair_one = pair_one[pair_one["problem_id"].isin(keep)]
        problems = pair.drop_duplicates("problem_id")[["problem_id", "question_key", "difficulty"]]
        if len(problems) < folds:
            continue
        splitter = GroupKFold(n_splits=folds)
        for budget in BUDGETS:
            within = pair[pair["n"] <= budget]
            table = within.pivot_table(index="problem_id", columns="strategy", values="label")
            bins = problems.set_index("problem_id").loc[table.index, "difficulty"]
            groups = problems.set_index("problem_id").loc[table.index, "question_key"]
            fixed, per_bin = np.zeros(len(table)), np.zeros(len(table))
            for train, test in splitter.split(table, groups=groups):
                tr, te = table.iloc[train], table.iloc[test]
                fixed[test] = te[tr.mean().idxmax()].to_numpy()
                overall = tr.mean().idxmax()
                for b in bins.iloc[test].unique():
                    in_b_tr, in_b_te = (bins.iloc[train] == b).to_numpy(), (bins.iloc[test] == b).to_numpy()
                    choice = tr[in_b_tr].mean().idxmax() if in_b_tr.any() else overall
                    per_bin[test[in_b_te]] = te[in_b_te][choice].to_numpy()
            test_best = table.mean().max()
            rows.append({"pair": f"{policy}+{prm.split(':')[0]}", "N": budget, "problems": len(table),
                         "best_fixed": fixed.mean(), "best_fixed_on_test": test_best, "per_bin_best": per_bin.mean(),
                         "oracle": _oracle(within), "oracle_1_replica": _oracle(pair_one[pair_one["n"] <= budget]),
                         "best_strategy": table.mean().idxmax()})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="outcomes.sqlite, a .parquet export or a snapshot folder")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    table = headroom(read_outcomes(args.data)).round(3)
    if args.markdown:  # without pandas' optional tabulate dependency
        print("| " + " | ".join(table.columns) + " |\n|" + "---|" * len(table.columns))
        for row in table.itertuples(index=False):
            print("| " + " | ".join(str(v) for v in row) + " |")
    else:
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
