"""Labels a selector learns from: one row per (pair, problem, strategy), the mean over its runs.

A pooled row is already an expected accuracy (the mean over subsets of one pool); a tree
row is one 0/1 run, so its label is the mean over the sweep's replicas (``tree_seeds``) and
seeds. Compute is averaged the same way. ``question_key`` travels with every row: splits
group by it, never by ``problem_id``.
"""

from __future__ import annotations

import pandas as pd

KEYS = ("policy", "prm", "problem_id", "question_key", "strategy")
STRATEGY_COLUMNS = ("method", "n", "m", "agg", "vote", "max_depth")
COMPUTE_COLUMNS = ("policy_prompt_tokens", "policy_generated_tokens", "prm_tokens", "tokens", "policy_flops",
                   "prm_flops", "flops")


def strategy_labels(outcomes: pd.DataFrame, *, replicas: int | None = None) -> pd.DataFrame:
    """Mean correctness (``label``) and compute per (pair, problem, strategy), with ``runs`` counted.

    ``replicas``: use only the first ``replicas`` tree replicas (to measure how much averaging
    changes the labels); None uses all of them.
    """
    df = outcomes
    if replicas is not None:
        df = df[df["replica"] < replicas]
    extra = [c for c in ("level", "difficulty", "pass_at_1") if c in df.columns]
    agg = {"label": ("correct", "mean"), "runs": ("correct", "size"),
           **{c: (c, "mean") for c in COMPUTE_COLUMNS if c in df.columns},
           **{c: (c, "first") for c in (*STRATEGY_COLUMNS, *extra) if c in df.columns}}
    return df.groupby(list(KEYS), sort=False, observed=True).agg(**agg).reset_index()


__all__ = ["COMPUTE_COLUMNS", "KEYS", "STRATEGY_COLUMNS", "strategy_labels"]
