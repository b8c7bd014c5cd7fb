"""``ttsopt train``: tune and fit the selector on snapshots and write the router artifact."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from ttsopt.search.pairs import Pair
from ttsopt.selector.artifact import save_artifact

from ..sweep.snapshot import read_manifest
from .table import load_training_table, table_hash
from .tuning import FitResult, TrainSettings, tune_and_fit

#: The sweep settings a search needs to run as the labels were produced (``manifest["search"][pair]``).
SEARCH_FIELDS = ("engine", "device", "temperature", "max_tokens", "step_max_tokens", "max_depth")


def catalogue(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per pair: its models and every strategy with its budget N and mean compute on the training
    problems (what a router charges against a compute budget), plus its training accuracy.

    The mean prompt, generated and PRM tokens are kept apart too: a router that reuses a probe's
    samples for a pooled strategy charges only the part it still has to generate and score.
    """
    out: dict[str, dict[str, Any]] = {}
    for (policy, prm), g in table.groupby(["policy", "prm"], sort=False):
        first = g.iloc[0]
        name = Pair(policy, prm).name
        per = g.groupby("strategy", sort=False).agg(
            n=("n", "first"), tokens=("tokens", "mean"), flops=("flops", "mean"), train_accuracy=("label", "mean"),
            prompt_tokens=("policy_prompt_tokens", "mean"), generated_tokens=("policy_generated_tokens", "mean"),
            prm_tokens=("prm_tokens", "mean"))
        entry = {
            "policy": policy, "prm": prm,
            "descriptors": {c: (first[c].item() if hasattr(first[c], "item") else first[c])
                            for c in ("policy_name", "policy_log10_params", "prm_family", "prm_log10_params")},
            "strategies": [{"key": k, "n": int(r.n), "tokens": float(r.tokens), "flops": float(r.flops),
                            "train_accuracy": float(r.train_accuracy), "prompt_tokens": float(r.prompt_tokens),
                            "generated_tokens": float(r.generated_tokens), "prm_tokens": float(r.prm_tokens)}
                           for k, r in per.iterrows()],
            "problems": int(g["question_key"].nunique()),
        }
        for col in ("policy_params", "prm_params"):
            if col in g.columns:
                entry[col] = int(first[col])
        if "probe_cost_tokens" in g.columns:
            entry["probe_cost"] = {"tokens": float(g["probe_cost_tokens"].mean()),
                                   "flops": float(g["probe_cost_flops"].mean())}
        out[name] = entry
    return out


def _fingerprint_fields(text: str | None) -> dict[str, Any] | None:
    """``{"name", "num_parameters"}`` out of a store's model fingerprint (``HASH {json...}``, cut at 300
    characters, so read by pattern rather than parsed)."""
    if not text:
        return None
    name = re.search(r'"name": "((?:[^"\\]|\\.)*)"', text)
    params = re.search(r'"num_parameters": (\d+)', text)
    if name is None or params is None:
        return None
    return {"name": name.group(1), "num_parameters": int(params.group(1))}


def search_settings(folders: Sequence[str | Path], table: pd.DataFrame, settings: TrainSettings) -> dict[str, Any]:
    """Per pair, how its sweep ran the searches (engine, sampling, depth, the probe) and which models it ran.

    ``ttsopt solve`` runs the chosen strategy with exactly these settings, so that what it does is
    what the labels measured. Two snapshots of one pair with different settings are refused: the
    labels would mix two searches that no single online setting reproduces.
    """
    out: dict[str, Any] = {}
    for folder in folders:
        folder = Path(folder)
        manifest = read_manifest(folder)
        fields = manifest.get("config_fields") or {}
        models = manifest.get("models") or {}
        rows = table[table["snapshot"] == folder.name] if "snapshot" in table.columns else table
        for policy, prm in rows[["policy", "prm"]].drop_duplicates().itertuples(index=False):
            entry: dict[str, Any] = {f: fields.get(f) for f in SEARCH_FIELDS}
            if settings.probe_k is not None:
                probe = fields.get("probe") or {}
                entry["probe"] = {"k": int(settings.probe_k), "sweep_k": probe.get("k"), "seed": probe.get("seed")}
            else:
                entry["probe"] = None
            name = Pair(policy, prm).name
            if name in out and {k: v for k, v in out[name].items() if k not in ("models", "snapshots")} != entry:
                raise ValueError(f"pair {name}: snapshots {out[name]['snapshots']} and {folder} ran its searches "
                                 f"with different settings ({out[name]} vs {entry}); train on one of them")
            known = out.get(name, {}).get("models") or {}
            entry["models"] = {"policy": known.get("policy") or _fingerprint_fields(models.get(f"policy:{policy}")),
                               "prm": known.get("prm") or _fingerprint_fields(models.get(f"prm:{prm}"))}
            entry["snapshots"] = [*out.get(name, {}).get("snapshots", []), str(folder)]
            out[name] = entry
    return out


def write_router(table: pd.DataFrame, out: str | Path, settings: TrainSettings, *, search: Mapping[str, Any],
                 snapshots: Sequence[str | Path] = (), storage: str | None = None,
                 progress: Callable[[int, int], None] | None = None, fit: FitResult | None = None,
                 gates: pd.DataFrame | None = None, rest: pd.DataFrame | None = None,
                 deployed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Tune and fit on a training table, save the artifact under ``out``; returns its manifest.

    ``search`` is :func:`search_settings` (tests pass their own for a synthetic table); ``fit``, a
    model fitted already (``fit_fixed``: tests that need an artifact in a fraction of a second), skips
    the tuning. ``gates`` (:func:`~ttsopt.train.fit.cascade.load_gates`) adds the verify-first cascade
    per pair that has them (``manifest["cascade"]``), escalating within the rest of the budget
    where ``rest`` (:func:`~ttsopt.train.fit.rest.load_rest`) has the pooled options at n = N - 1.
    ``deployed`` (:func:`ttsopt.train.evaluation.deploy.manifest_record`) is the mode each pair runs
    when a caller names none, as the nested comparison chose it; without it the router runs its argmax.
    """
    from .cascade import fit_cascade
    from .tuning import out_of_fold_predictions

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'study.sqlite3').resolve()}"
    start = time.perf_counter()
    if fit is None:
        fit = tune_and_fit(table, settings, storage=storage, progress=progress)
    manifest = {
        "name": out.name, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "catalogue": catalogue(table), "budgets": sorted(int(n) for n in table["n"].unique()),
        "search": dict(search),
        "settings": settings.to_dict(), "params": fit.params, "rounds": fit.rounds,
        "metrics": {f"cv_{settings.tune_metric}": fit.cv_loss, "trials_in_study": fit.trials,
                    "train_seconds": time.perf_counter() - start, "rows": len(table)},
        "training_data": {"snapshots": [str(f) for f in snapshots], "hash": table_hash(table), "rows": len(table),
                          "questions": int(table["question_key"].nunique()),
                          "question_keys": sorted(table["question_key"].unique().tolist())},
        "study": storage,
        "cascade": fit_cascade(table, gates, rest, out_of_fold_predictions(fit, table, settings)
                               if gates is not None and len(gates) and settings.probe_k is None else None),
        "deployed": dict(deployed or {}),
    }
    levels = level_model(table, fit.pipeline, settings.seed) if any(
        "levels" in c for c in manifest["cascade"].values()) else None
    save_artifact(out, fit.booster, fit.pipeline, manifest, levels=levels)
    return manifest


def level_model(table: pd.DataFrame, pipeline: Any, seed: int = 0) -> Any:
    """The question's level from its text (:mod:`ttsopt.selector.levels`), fitted on one row per
    training question with the router's own text statistics and embedding; None without levels."""
    from ttsopt.selector.features import TEXT_COLUMNS
    from ttsopt.selector.levels import fit_levels

    from .cascade import NO_LEVEL

    if "level" not in table.columns:
        return None
    q = table.drop_duplicates("question_key").reset_index(drop=True)
    levels = q["level"].astype(str)
    if levels.nunique() < 2 or levels.isin(NO_LEVEL).any():
        return None
    x = pipeline.transform(q)
    cols = [c for c in x.columns if c in TEXT_COLUMNS or c.startswith("emb_")]
    return fit_levels(x[cols].to_numpy(dtype=float), levels.to_numpy(), cols, seed=seed)


def train_router(folders: Sequence[str | Path], out: str | Path, settings: TrainSettings, *,
                 storage: str | None = None, progress: Callable[[int, int], None] | None = None,
                 gate_models: bool = False, device: str = "cpu", gates: pd.DataFrame | None = None,
                 rest: pd.DataFrame | None = None, deployed: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Tune (resuming the study in ``storage``), fit on every row, save the artifact; returns its manifest.

    ``gate_models``: also score the stored CoTs with PRMs that have weights (loaded on ``device``), so
    that their pairs get a cascade; a PRM without parameters (calc) always does. ``gates`` and
    ``rest``, when a caller has them already (:func:`~ttsopt.train.fit.cascade.load_gates`,
    :func:`~ttsopt.train.fit.rest.load_rest` of the same ``folders``), are used instead of reading them again."""
    from .cascade import load_gates
    from .rest import load_rest

    table = load_training_table(folders, probe_k=settings.probe_k)
    if gates is None:
        gates = load_gates(folders, score_models=gate_models, device=device)
    return write_router(table, out, settings, search=search_settings(folders, table, settings), snapshots=folders,
                        storage=storage, progress=progress, gates=gates,
                        rest=load_rest(folders) if rest is None else rest, deployed=deployed)


__all__ = ["SEARCH_FIELDS", "catalogue", "level_model", "search_settings", "train_router", "write_router"]
