"""The selector's training table: one row per (pair, problem, strategy), with only online inputs.

Built from one or more snapshot folders: the label is the mean accuracy over a strategy's
runs (``train/fit/labels.py``), the inputs are what a router can compute for a new question
before it chooses (text statistics, the question's embedding, optionally a probe's columns)
plus descriptors of the pair and the strategy. Columns a snapshot marks as oracle
(``pass_at_1``, ``difficulty``, ``level``, ``kind``) ride along for evaluation only and are
refused as inputs by :func:`check_inputs`, mechanically.

Embeddings stay raw here (``raw_emb_*``): the PCA that reduces them is fitted on the training
problems of each fit (``selector/pipeline.py``), so held-out problems never shape it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ttsopt.selector.pipeline import PROBE_FEATURES
from ttsopt.selector.probe import PROBE_COST_COLUMNS
from ttsopt.selector.rows import pair_columns, strategy_columns

from ..sweep.snapshot import read_manifest, read_table
from .folds import fold_splits
from .labels import strategy_labels


def _pair_params(labels: pd.DataFrame) -> pd.DataFrame:
    """Parameter counts per pair, read back from the FLOPs (2 x params x tokens) the sweep recorded."""
    rows = []
    for (policy, prm), g in labels.groupby(["policy", "prm"], sort=False):
        tokens = g["policy_prompt_tokens"] + g["policy_generated_tokens"]
        policy_params = float(np.median(g["policy_flops"] / tokens / 2))
        scored = g[g["prm_tokens"] > 0]
        prm_params = float(np.median(scored["prm_flops"] / scored["prm_tokens"] / 2)) if len(scored) else 0.0
        rows.append({"policy": policy, "prm": prm, "policy_params": int(round(policy_params)),
                     "prm_params": int(round(prm_params))})
    return pd.DataFrame(rows)


def load_snapshot_labels(folder: str | Path, *, probe_k: int | None = None) -> pd.DataFrame:
    """One snapshot's training rows (labels, compute, features, descriptors, oracle columns apart)."""
    folder = Path(folder)
    read_manifest(folder)
    labels = strategy_labels(read_table(folder, "outcomes"))
    features = pd.read_parquet(folder / "features.parquet")
    problems = pd.read_parquet(folder / "problems.parquet")
    meta = {r.problem_id: json.loads(r.metadata) if r.metadata else {} for r in problems.itertuples()}
    labels["kind"] = [meta.get(p, {}).get("kind") for p in labels["problem_id"]]
    params = _pair_params(labels)
    labels = labels.merge(params, on=["policy", "prm"], how="left")
    descriptors = []
    for r in params.itertuples():
        descriptors.append({"policy": r.policy, "prm": r.prm,
                            **pair_columns(r.policy, r.prm, r.policy_params, r.prm_params)})
    desc = pd.DataFrame(descriptors).drop(columns=["policy_params", "prm_params"])
    labels = labels.merge(desc, on=["policy", "prm"], how="left")
    strat = strategy_columns(list(labels["strategy"].unique()))
    labels = labels.merge(strat, on="strategy", how="left")
    labels = labels.merge(features, on="problem_id", how="left")
    if probe_k is not None:
        probes = pd.read_parquet(folder / "probe_features.parquet")
        probes = probes[probes["k"] == probe_k]
        if probes.empty:
            raise ValueError(f"{folder}: no probe features with k={probe_k} (the sweep ran no probe?)")
        cols = ["policy", "prm", "problem_id", *PROBE_FEATURES, *PROBE_COST_COLUMNS]
        labels = labels.merge(probes[cols], on=["policy", "prm", "problem_id"], how="inner")
    labels["snapshot"] = folder.name
    return labels


def load_training_table(folders: Sequence[str | Path], *, probe_k: int | None = None) -> pd.DataFrame:
    """Rows of every snapshot; a question key shared by two snapshots keeps its rows in both
    (the grouping key makes them one group in every split)."""
    frames = [load_snapshot_labels(f, probe_k=probe_k) for f in folders]
    if not frames:
        raise ValueError("no snapshot folders given")
    return canonical_order(pd.concat(frames, ignore_index=True))


#: The training table's row order: LightGBM's bagging depends on row order, and a sweep's rows
#: come in the order its drivers finished units, so two sweeps with the same labels would train
#: two different models (measured: CV loss 0.3592 vs 0.3631 on the same rows shuffled).
ORDER = ("snapshot", "policy", "prm", "question_key", "problem_id", "strategy")


def canonical_order(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` sorted by :data:`ORDER` (the columns it has), index reset: the same rows, one order."""
    cols = [c for c in ORDER if c in table.columns]
    return table.sort_values(cols, kind="stable").reset_index(drop=True)


def table_hash(table: pd.DataFrame) -> str:
    """A hash of the training data's keys and labels, recorded in the router artifact."""
    cols = ["policy", "prm", "question_key", "strategy", "label"]
    text = table[cols].sort_values(cols[:4]).to_csv(index=False)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def fold_lists(table: pd.DataFrame, n_folds: int, *, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train rows, test rows) per fold, grouped by question key: no question on both sides.

    Keys are shuffled with ``seed`` and dealt round-robin, so folds are balanced in questions.
    """
    keys = np.array(sorted(table["question_key"].unique()))
    if len(keys) < n_folds:
        raise ValueError(f"{len(keys)} distinct questions cannot fill {n_folds} folds")
    rng = np.random.default_rng(seed)
    rng.shuffle(keys)
    fold_of = {k: i % n_folds for i, k in enumerate(keys)}
    fold = table["question_key"].map(fold_of).to_numpy()
    return fold_splits(fold, n_folds)


