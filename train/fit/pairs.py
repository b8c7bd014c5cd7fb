"""One pair's evaluation data as (problems × strategies) matrices, and the choices every baseline shares.

The cross-fitted table (one row per pair, problem and strategy, with held-out predictions and
folds) is pivoted per pair into :class:`_Pair`; every rule, curve and baseline of the evaluation
reads these matrices. Also here: the argmax with ties to the cheaper strategy, the best fixed
strategy on a set of training problems, the paper's rule and the per-method shares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ttsopt.search.pairs import Pair

BUDGETS = (1, 2, 4, 8, 16)
#: Pairs with fewer complete problems train the models but are not evaluated.
MIN_PROBLEMS = 30


@dataclass
class _Pair:
    """One pair's problems × strategies: labels, predictions, tokens, FLOPs, and who is in which fold."""

    name: str
    strategies: list[str]
    n: np.ndarray  # budget per strategy
    label: np.ndarray  # (problems, strategies)
    pred: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    fold: np.ndarray  # (problems,)
    bins: np.ndarray  # (problems,) difficulty (oracle)
    levels: np.ndarray  # (problems,) level (oracle)
    policy_params: float
    extra: dict[str, Any] = field(default_factory=dict)


#: Per-row columns pivoted into a (problems, strategies) matrix in ``_Pair.extra`` when present.
_MATRIX_PREFIXES = ("inner_pred_", "pred_probe")
#: Per-problem columns (the same on every strategy's row) kept as vectors in ``_Pair.extra``.
_PROBLEM_PREFIXES = ("inner_fold_", "probe_cost_k", "pass_at_1")


def _pairs(table: pd.DataFrame, min_problems: int = 0) -> list[_Pair]:
    out = []
    for (policy, prm), g in table.groupby(["policy", "prm"], sort=False):
        counts = g.groupby("problem_id")["strategy"].nunique()
        g = g[g["problem_id"].isin(counts[counts == counts.max()].index)]  # complete problems only
        if g["problem_id"].nunique() < min_problems:
            continue
        piv = lambda col: g.pivot(index="problem_id", columns="strategy", values=col)  # noqa: E731
        label = piv("label")
        strategies = list(label.columns)
        first = g.drop_duplicates("problem_id").set_index("problem_id").loc[label.index]
        n = g.drop_duplicates("strategy").set_index("strategy").loc[strategies, "n"].to_numpy()
        extra: dict[str, Any] = {"problem_ids": list(label.index)}
        for c in g.columns:
            if c.startswith(_MATRIX_PREFIXES):
                extra[c] = piv(c).loc[label.index, strategies].to_numpy(dtype=float)
            elif c.startswith(_PROBLEM_PREFIXES):
                extra[c] = first[c].to_numpy()
        out.append(_Pair(Pair(policy, prm).name, strategies, n, label.to_numpy(), piv("pred").to_numpy(),
                         piv("tokens").to_numpy(), piv("flops").to_numpy(), first["fold"].to_numpy(),
                         first["difficulty"].astype(str).to_numpy(), first["level"].astype(str).to_numpy(),
                         float(10 ** first["policy_log10_params"].iloc[0]), extra))
    return out


def _argmax_cheapest(score: np.ndarray, cost: np.ndarray) -> np.ndarray:
    """Per row, the best score; ties (1e-12) to the lower cost."""
    best = score.max(axis=1, keepdims=True)
    tied = score >= best - 1e-12
    return np.where(tied, cost, np.inf).argmin(axis=1)


def _fixed_choice(label: np.ndarray, tokens: np.ndarray, rows: np.ndarray, allowed: np.ndarray) -> int:
    means = np.where(allowed, label[rows].mean(axis=0), -np.inf)
    cost = tokens[rows].mean(axis=0)
    return int(_argmax_cheapest(means[None, :], cost[None, :])[0])


def _paper_rule(p: _Pair, budget: int) -> str | None:
    """The paper's finding as a rule: search (beam) for policies below 7B parameters, Best-of-N above."""
    wanted = ("beam:" if p.policy_params < 7e9 else "best_of_n:") + f"n={budget},"
    return next((s for s in p.strategies if s.startswith(wanted)), None)


def _shares(p: _Pair, pick: np.ndarray) -> dict[str, float]:
    methods = [s.split(":")[0] for s in p.strategies]
    out: dict[str, float] = {}
    for i in pick:
        out[methods[i]] = out.get(methods[i], 0.0) + 1 / len(pick)
    return dict(sorted(out.items()))


def _pair_keys(t: pd.DataFrame, name: str) -> tuple[str, str]:
    for (policy, prm), _ in t.groupby(["policy", "prm"], sort=False):
        if Pair(policy, prm).name == name:
            return policy, prm
    raise KeyError(name)


__all__ = ["BUDGETS", "MIN_PROBLEMS"]
