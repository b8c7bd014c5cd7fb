"""Cross-fitting: held-out predictions for every row, tuning inside every fold.

Every problem's prediction comes from a model that never saw its question: the table is cut
into folds by question key, and per fold the feature pipeline (the PCA included) and the
Optuna tuning run on the training folds only. The inner out-of-fold predictions of each fold's
training rows are kept too, so decision rules on top of the model pick their knobs on them.
Probe tables (the training table with probe features of k samples) are cross-fitted on the
same question folds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..fit.folds import fold_splits
from ..fit.pairs import _Pair, _pair_keys
from ..fit.table import fold_lists
from ..fit.tuning import TrainSettings, predict, tune_and_fit


@dataclass
class CrossFit:
    """Held-out predictions for every row, plus what the decision rules on top are tuned on.

    ``inner_pred[f]`` holds, for the training rows of outer fold ``f``, the out-of-fold
    predictions of the inner CV inside that fold (NaN on fold ``f``'s own test rows), and
    ``inner_fold[f]`` which inner fold each came from (-1 on test rows): rules such as shrinkage
    or a margin pick their knob on these, so the outer test rows never shape them.
    """

    pred: np.ndarray
    fold: np.ndarray
    fits: list[dict]
    inner_pred: np.ndarray  # (n_folds, rows)
    inner_fold: np.ndarray  # (n_folds, rows)
    pipelines: list[Any]  # the feature pipeline of each fold (PCA fitted on its training rows)


def cross_fit_nested(table: pd.DataFrame, settings: TrainSettings,
                     progress: Callable[[int, int], None] | None = None, *,
                     folds: list[tuple[np.ndarray, np.ndarray]] | None = None) -> CrossFit:
    """:func:`cross_fit` with the inner out-of-fold predictions of every fold (see :class:`CrossFit`)."""
    pred = np.full(len(table), np.nan)
    fold_of = np.full(len(table), -1)
    folds = folds if folds is not None else fold_lists(table, settings.folds, seed=settings.seed)
    inner_pred = np.full((len(folds), len(table)), np.nan)
    inner_fold = np.full((len(folds), len(table)), -1)
    fits, pipelines = [], []
    for f, (train, test) in enumerate(folds):
        fit = tune_and_fit(table.iloc[train].reset_index(drop=True), settings, oof=True)
        pred[test] = predict(fit, table.iloc[test])
        fold_of[test] = f
        inner_pred[f, train], inner_fold[f, train] = fit.oof, fit.oof_fold
        pipelines.append(fit.pipeline)
        fits.append({"fold": f, "params": fit.params, "rounds": fit.rounds, "cv_loss": fit.cv_loss,
                     "seconds": fit.seconds})
        if progress is not None:
            progress(f + 1, len(folds))
    return CrossFit(pred, fold_of, fits, inner_pred, inner_fold, pipelines)


def cross_fit(table: pd.DataFrame, settings: TrainSettings,
              progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Held-out predictions for every row, and each row's fold (tuning inside each fold)."""
    c = cross_fit_nested(table, settings, progress)
    return c.pred, c.fold, c.fits


def _with_probe_columns(t: pd.DataFrame, probe: pd.DataFrame, cf: CrossFit, k: int) -> pd.DataFrame:
    """``t`` plus the probe router's held-out predictions and the probe's cost (NaN where a problem has no probe)."""
    keys = ["policy", "prm", "problem_id", "strategy"]
    rows = probe[keys].assign(**{f"pred_probe{k}": cf.pred})
    cost = probe.drop_duplicates(["policy", "prm", "problem_id"])[
        ["policy", "prm", "problem_id", "probe_cost_tokens", "probe_cost_flops"]].rename(
        columns={"probe_cost_tokens": f"probe_cost_k{k}_tokens", "probe_cost_flops": f"probe_cost_k{k}_flops"})
    return t.merge(rows, on=keys, how="left").merge(cost, on=["policy", "prm", "problem_id"], how="left")


def _folds_like(table: pd.DataFrame, fold_of_key: dict[str, int], n_folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fold lists of ``table`` that put every question in the fold it has in the main table."""
    fold = table["question_key"].map(fold_of_key)
    if fold.isna().any():
        raise ValueError("the probe table has questions the main table does not")
    fold = fold.to_numpy(dtype=int)
    return fold_splits(fold, n_folds)


def load_probe_tables(folders, ks=(1, 2, 4)) -> tuple[dict[int, pd.DataFrame], dict[int, str]]:
    """The training table with probe features per k, for the snapshots that have them; why not, per k, otherwise."""
    from ..fit.table import load_training_table

    tables, missing = {}, {}
    for k in ks:
        try:
            tables[int(k)] = load_training_table(folders, probe_k=int(k))
        except (ValueError, FileNotFoundError) as e:
            missing[int(k)] = str(e)
    return tables, missing




def _problem_features(p: _Pair, t: pd.DataFrame, cf: CrossFit) -> list[np.ndarray]:
    """Per fold, the pair's per-problem online inputs (text statistics, that fold's PCA of the embedding)."""
    from ttsopt.selector.features import TEXT_COLUMNS

    policy, prm = _pair_keys(t, p.name)
    rows = t[(t["policy"] == policy) & (t["prm"] == prm)].drop_duplicates("problem_id").set_index("problem_id")
    rows = rows.loc[p.extra["problem_ids"]]
    out = []
    for pipe in cf.pipelines:
        x = pipe.transform(rows.reset_index())
        cols = [c for c in x.columns if c in TEXT_COLUMNS or c.startswith("emb_")]
        out.append(x[cols].to_numpy(dtype=float))
    return out

__all__ = ["CrossFit", "_problem_features", "cross_fit", "cross_fit_nested", "load_probe_tables"]
