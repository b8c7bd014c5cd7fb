"""``ttsopt train``: tune and fit the selector on snapshots and write the router artifact."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from ttsopt.search.pairs import Pair
from ttsopt.selector.artifact import save_artifact

from .table import load_training_table, table_hash
from .tuning import TrainSettings, tune_and_fit


def catalogue(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per pair: its models and every strategy with its budget N and mean compute on the training
    problems (what a router charges against a compute budget), plus its training accuracy."""
    out: dict[str, dict[str, Any]] = {}
    for (policy, prm), g in table.groupby(["policy", "prm"], sort=False):
        first = g.iloc[0]
        name = Pair(policy, prm).name
        per = g.groupby("strategy", sort=False).agg(n=("n", "first"), tokens=("tokens", "mean"),
                                                    flops=("flops", "mean"), train_accuracy=("label", "mean"))
        entry = {
            "policy": policy, "prm": prm,
            "descriptors": {c: (first[c].item() if hasattr(first[c], "item") else first[c])
                            for c in ("policy_name", "policy_log10_params", "prm_family", "prm_log10_params")},
            "strategies": [{"key": k, "n": int(r.n), "tokens": float(r.tokens), "flops": float(r.flops),
                            "train_accuracy": float(r.train_accuracy)} for k, r in per.iterrows()],
            "problems": int(g["question_key"].nunique()),
        }
        if "probe_cost_tokens" in g.columns:
            entry["probe_cost"] = {"tokens": float(g["probe_cost_tokens"].mean()),
                                   "flops": float(g["probe_cost_flops"].mean())}
        out[name] = entry
    return out


def train_router(folders: Sequence[str | Path], out: str | Path, settings: TrainSettings, *,
                 storage: str | None = None, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Tune (resuming the study in ``storage``), fit on every row, save the artifact; returns its manifest."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = load_training_table(folders, probe_k=settings.probe_k)
    storage = storage or f"sqlite:///{(out / 'study.sqlite3').resolve()}"
    start = time.perf_counter()
    fit = tune_and_fit(table, settings, storage=storage, progress=progress)
    manifest = {
        "name": out.name, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "catalogue": catalogue(table), "budgets": sorted(int(n) for n in table["n"].unique()),
        "settings": settings.to_dict(), "params": fit.params, "rounds": fit.rounds,
        "metrics": {"cv_cross_entropy": fit.cv_loss, "trials_in_study": fit.trials,
                    "train_seconds": time.perf_counter() - start, "rows": len(table)},
        "training_data": {"snapshots": [str(f) for f in folders], "hash": table_hash(table), "rows": len(table),
                          "questions": int(table["question_key"].nunique()),
                          "question_keys": sorted(table["question_key"].unique().tolist())},
        "study": storage,
    }
    save_artifact(out, fit.booster, fit.pipeline, manifest)
    return manifest


__all__ = ["catalogue", "train_router"]
