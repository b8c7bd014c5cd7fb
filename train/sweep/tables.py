"""Tables of a sweep's outcomes: accuracy and compute by pair x method x budget x difficulty."""

from __future__ import annotations

import pandas as pd


def accuracy_table(df: pd.DataFrame, *, by: tuple[str, ...] = ("policy", "prm", "strategy", "difficulty")) -> pd.DataFrame:
    """Mean accuracy, problems and mean compute per group (pooled rows carry expected accuracy)."""
    if df.empty:
        return pd.DataFrame(columns=[*by, "accuracy", "problems", "policy_tokens", "prm_tokens", "flops"])
    d = df.copy()
    d["policy_tokens"] = d["policy_prompt_tokens"] + d["policy_generated_tokens"]
    out = (d.groupby(list(by), dropna=False)
           .agg(accuracy=("correct", "mean"), problems=("problem_id", "nunique"),
                policy_tokens=("policy_tokens", "mean"), prm_tokens=("prm_tokens", "mean"), flops=("flops", "mean"))
           .reset_index())
    return out


def method_budget_matrix(df: pd.DataFrame, *, policy: str, prm: str) -> pd.DataFrame:
    """Rows: strategy family (method + rule); columns: difficulty bins and 'all'. For one pair."""
    d = df[(df["policy"] == policy) & (df["prm"] == prm)].copy()
    if d.empty:
        return pd.DataFrame()
    d["family"] = d.apply(_family, axis=1)
    table = d.pivot_table(index=["family", "n"], columns="difficulty", values="correct", aggfunc="mean")
    table["all"] = d.groupby(["family", "n"])["correct"].mean()
    cols = [c for c in ("easy", "medium", "hard") if c in table.columns] + ["all"]
    return table[cols]


def _family(row) -> str:
    if row["method"] in ("cot", "majority"):
        return row["method"]
    if row["method"] == "best_of_n":
        return f"best_of_n/{row['agg']}/{row['vote']}"
    return f"{row['method']}/m={row['m']}/{row['agg']}/{row['vote']}"
