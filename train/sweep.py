"""The offline sweep: every strategy x budget x (policy, PRM) pair over a problem set.

``run_sweep`` plans the units (``train/units.py``), skips those the store has, and runs the
rest on the local executor (one ``ChunkWorker`` per policy, in this process) or on Ray
(``train/ray_executor.py``). Either way only this process writes the store.
"""

from __future__ import annotations

from typing import Any, Sequence

from ttsopt.data import Problem
from ttsopt.data.files import atomic_path

from .config import SweepConfig
from .store import OutcomeStore
from .units import ChunkWorker, check_chunks, chunk_jobs, chunks, plan_units, progress_group, progress_groups

__all__ = ["plan_sweep", "run_sweep", "write_problem_features"]


def run_sweep(cfg: SweepConfig, store: OutcomeStore, problems: Sequence[Problem], *,
              executor: str = "local", progress: Any = None,
              workers: dict[str, ChunkWorker] | None = None, ray_options: dict | None = None,
              only_chunks: Sequence[int] | None = None) -> dict[str, int]:
    """Run (or resume) a sweep into ``store``; returns counts of units done now and skipped.

    ``only_chunks``: run only these chunks (0-based): drivers given disjoint chunk sets can
    share one policy's work, on one store, with the rows an undivided sweep writes.

    ``workers`` injects ready ChunkWorkers per policy (tests use scripted models).
    ``progress``: an object with ``start(name, total)`` and ``advance(name, k)`` (the CLI passes rich bars).
    """
    claim_config(store, cfg)
    store.add_problems(problems)
    parts = chunks(problems, cfg.chunk_size)
    done = store.done_units()
    counts = {"done": 0, "skipped": 0}
    by_policy = _prms_by_policy(cfg)
    plans = plan_sweep(cfg, len(problems))
    if only_chunks is not None:
        wanted = check_chunks(only_chunks, len(parts))
        plans = {policy: [u for u in units if u.chunk in wanted] for policy, units in plans.items()}
    if progress is not None:
        for policy, units in plans.items():
            for name, total in progress_groups(units).items():
                progress.start(name, total, done=sum(1 for u in units if progress_group(u) == name and u.key in done))
    jobs = {policy: list(chunk_jobs(cfg, store, policy, units, parts, done)) for policy, units in plans.items()}
    for policy, units in plans.items():
        counts["skipped"] += sum(1 for u in units if u.key in done)
    if executor == "ray":
        from .ray_executor import run_ray

        counts["done"] = run_ray(cfg, store, jobs, by_policy, progress=progress, options=ray_options or {})
        return counts
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; expected 'local' or 'ray'")
    for policy, policy_jobs in jobs.items():
        if not policy_jobs:
            continue
        worker = (workers or {}).get(policy) or ChunkWorker(cfg, policy, by_policy[policy])
        claim_models(store, worker.fingerprints())
        for job in policy_jobs:
            for unit, rows in worker.run_units(job.problems, job.units, job.pools, job.probes):
                store.commit_unit(unit.key, **rows)
                counts["done"] += 1
                if progress is not None:
                    progress.advance(progress_group(unit), 1)
    return counts


def _prms_by_policy(cfg: SweepConfig) -> dict[str, list[str]]:
    by_policy: dict[str, list[str]] = {}
    for pair in cfg.pairs:
        by_policy.setdefault(pair.policy, []).append(pair.prm)
    return by_policy


def plan_sweep(cfg: SweepConfig, n_problems: int) -> dict[str, list]:
    """Every unit of the sweep over ``n_problems`` problems, per policy (what is done or not)."""
    n_chunks = len(range(0, n_problems, cfg.chunk_size))
    limits: dict[str, dict[str, int]] = {}
    for pair in cfg.pairs:
        limit = cfg.problem_limit(pair)
        if limit is not None:
            limits.setdefault(pair.policy, {})[pair.prm] = limit // cfg.chunk_size
    return {policy: plan_units(cfg, policy, prms, n_chunks, limits.get(policy))
            for policy, prms in _prms_by_policy(cfg).items()}


def claim_config(store: OutcomeStore, cfg: SweepConfig) -> None:
    """Record the config's fingerprint (and its fields, for a readable refusal) or refuse a different one."""
    import json

    store.claim("config_fingerprint", cfg.fingerprint(), what="the sweep's configuration (fingerprint)")
    store.claim("config_fields", json.dumps(cfg.fingerprint_fields(), sort_keys=True),
                what="the sweep's configuration")


def claim_models(store: OutcomeStore, fingerprints: dict[str, str]) -> None:
    """Each model's fingerprint (name, parameters, rendered prompt): a changed prompt or model is refused."""
    for key, value in fingerprints.items():
        store.claim(key, value, what=f"the model behind {key}")


def write_problem_features(problems: Sequence[Problem], out_dir, *, embeddings: bool = True):
    """Per-problem features next to the store: text statistics, and raw MiniLM embeddings.

    Raw 384-d embeddings are kept (cached under ``out_dir/embeddings``); the PCA that reduces
    them is fitted on the training split when the selector is trained, so that evaluation
    problems never shape it. Returns the path of ``features.parquet``.
    """
    from pathlib import Path

    import pandas as pd

    from ttsopt.selector.features import Embedder, problem_features

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = problem_features(problems)
    if embeddings:
        embedder = Embedder.minilm()
        raw = embedder.embed(problems, cache_dir=out_dir / "embeddings")
        emb = pd.DataFrame(raw, index=frame.index, columns=[f"raw_emb_{i}" for i in range(raw.shape[1])])
        frame = pd.concat([frame, emb], axis=1)
    path = out_dir / "features.parquet"
    with atomic_path(path) as tmp:
        frame.reset_index().to_parquet(tmp, index=False)
    return path
