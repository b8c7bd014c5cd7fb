"""Leave one pair out: train on the other pairs plus a small calibration sweep of the held-out one."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..fit.pairs import BUDGETS, MIN_PROBLEMS, _argmax_cheapest, _fixed_choice, _pairs
from ..fit.tuning import TrainSettings, predict, tune_and_fit
from .metrics import brier, gap_recovered, paired_bootstrap

LOPO_CALIBRATION = 20


def lopo_candidates(table: pd.DataFrame, min_problems: int = MIN_PROBLEMS) -> list[tuple[str, str]]:
    """Pairs that can be held out: at least four pairs in the table, and this one with ``min_problems`` complete."""
    pairs = table[["policy", "prm"]].drop_duplicates()
    if len(pairs) < 4:
        return []
    out = []
    for (policy, prm), g in table.groupby(["policy", "prm"], sort=False):
        counts = g.groupby("problem_id")["strategy"].nunique()
        if (counts == counts.max()).sum() >= min_problems:
            out.append((policy, prm))
    return out


def lopo_split(table: pd.DataFrame, policy: str, prm: str, calibration: int = LOPO_CALIBRATION, *,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(training rows, test rows, calibration question keys) for holding out the pair (policy, prm).

    Training: every other pair's rows, except on the held-out pair's evaluation questions, plus
    the held-out pair's own rows on ``calibration`` of its questions (a small calibration sweep,
    drawn with ``seed`` among its complete problems); test: the held-out pair on the rest. So no
    question the held-out pair is evaluated on is seen in training, under any pair, and the only
    held-out-pair labels seen are the calibration ones.
    """
    is_pair = ((table["policy"] == policy) & (table["prm"] == prm)).to_numpy()
    if not is_pair.any():
        raise ValueError(f"no rows for pair {policy} + {prm}")
    g = table[is_pair]
    counts = g.groupby("question_key")["strategy"].nunique()
    complete = sorted(counts[counts == counts.max()].index)
    if len(complete) <= calibration:
        raise ValueError(f"{policy} + {prm}: {len(complete)} complete problems, need more than {calibration}")
    rng = np.random.default_rng(seed)
    calib = sorted(rng.choice(np.array(complete), size=calibration, replace=False).tolist())
    held = set(g["question_key"]) - set(calib)
    in_held = table["question_key"].isin(held).to_numpy()
    in_calib = table["question_key"].isin(calib).to_numpy()
    train = (~is_pair & ~in_held) | (is_pair & in_calib)
    test = is_pair & in_held & table["question_key"].isin(complete).to_numpy()
    return np.flatnonzero(train), np.flatnonzero(test), calib


def leave_one_pair_out(table: pd.DataFrame, settings: TrainSettings, *, calibration: int = LOPO_CALIBRATION,
                       min_problems: int = MIN_PROBLEMS, progress=None) -> dict[str, Any]:
    """Per pair that can be held out (:func:`lopo_candidates`): train (tuned) on :func:`lopo_split`'s
    training rows, route the held-out problems, and compare with the best fixed strategy chosen on
    the calibration problems and with the oracle, at every budget."""
    out: dict[str, Any] = {"calibration_problems": calibration, "pairs": {}}
    for policy, prm in lopo_candidates(table, min_problems):
        train, test, calib = lopo_split(table, policy, prm, calibration, seed=settings.seed)
        fit = tune_and_fit(table.iloc[train].reset_index(drop=True), settings)
        cal_rows = table.iloc[train]
        cal_rows = cal_rows[(cal_rows["policy"] == policy) & (cal_rows["prm"] == prm)]
        te = table.iloc[test].assign(pred=predict(fit, table.iloc[test]), fold=1)
        both = pd.concat([cal_rows.assign(pred=np.nan, fold=0), te], ignore_index=True)
        (p,) = _pairs(both.assign(pred=both["pred"].fillna(0.0)))
        cal, held = np.flatnonzero(p.fold == 0), np.flatnonzero(p.fold == 1)
        budgets, gaps = {}, []
        for budget in BUDGETS:
            allowed = p.n <= budget
            if not allowed.any():
                continue
            cost = np.where(allowed, p.tokens[cal].mean(axis=0), np.inf)
            pick = _argmax_cheapest(np.where(allowed, p.pred[held], -np.inf), np.broadcast_to(cost, (len(held), len(cost))))
            router = p.label[held, pick]
            s = _fixed_choice(p.label, p.tokens, cal, allowed)
            fixed = p.label[held, s]
            oracle = np.where(allowed, p.label[held], -np.inf).max(axis=1)
            ci = paired_bootstrap(router, fixed, seed=settings.seed)
            gap = gap_recovered(float(router.mean()), float(fixed.mean()), float(oracle.mean()))
            if gap == gap:
                gaps.append(gap)
            budgets[str(budget)] = {"router": {"accuracy": float(router.mean()), "ci95": [ci["lo"], ci["hi"]],
                                               "flops": float(p.flops[held, pick].mean())},
                                    "best_fixed": {"accuracy": float(fixed.mean()), "strategy": p.strategies[s]},
                                    "oracle": {"accuracy": float(oracle.mean())}, "gap_recovered": gap}
        out["pairs"][p.name] = {"train_rows": int(len(train)), "test_problems": int(len(held)),
                                "calibration_keys": calib, "budgets": budgets,
                                "gap_recovered_mean": float(np.mean(gaps)) if gaps else None,
                                "brier": brier(p.pred[held].ravel(), p.label[held].ravel())}
        if progress is not None:
            progress()
    return out


__all__ = ["LOPO_CALIBRATION", "leave_one_pair_out", "lopo_candidates", "lopo_split"]
