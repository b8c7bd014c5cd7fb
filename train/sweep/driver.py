"""The offline sweep: every strategy x budget x (policy, PRM) pair over a problem set.

``run_sweep`` plans the units (``train/sweep/units.py``), skips those the store has, and runs the
rest on the local executor (one ``ChunkWorker`` per policy, in this process) or on Ray
(``train/sweep/ray_executor.py``). Either way only driver processes write the store; several
drivers on one store lease units so that none is computed twice.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

from ttsopt.data import Problem
from ttsopt.data.files import atomic_path
from ttsopt.search.engines.llamacpp_engine import default_threads

from .config import SweepConfig, check_pairs
from .store import OutcomeStore, claim_models, commit_new, lease_owner
from .units import (
    ChunkWorker,
    Unit,
    check_chunks,
    chunk_jobs,
    chunks,
    plan_units,
    progress_group,
    progress_groups,
    take_job,
)

log = logging.getLogger(__name__)

__all__ = ["copy_missing_cot_rows", "plan_sweep", "run_sweep", "write_problem_features"]


def run_sweep(cfg: SweepConfig, store: OutcomeStore, problems: Sequence[Problem], *,
              executor: str = "local", progress: Any = None,
              workers: dict[str, ChunkWorker] | None = None, ray_options: dict | None = None,
              only_chunks: Sequence[int] | None = None,
              only_pairs: Sequence[str] | None = None, wait_s: float = 5.0) -> dict[str, int]:
    """Run (or resume) a sweep into ``store``; returns counts of units done now and skipped.

    ``only_chunks``: run only these chunks (0-based): drivers given disjoint chunk sets can
    share one policy's work, on one store, with the rows an undivided sweep writes.
    ``only_pairs``: run only these of the config's pairs (names); drivers given disjoint
    pairs write the rows of an undivided sweep too. The config keeps all its pairs, because a
    PRM-free unit (pool, CoT, probe) is shared by every pair of its policy: whichever driver
    runs it writes the CoT rows of every pair.

    Drivers started on overlapping work split it: each leases the units of a chunk before it
    computes them (``OutcomeStore.take``) and skips those another live driver holds; units
    that need a chunk pool another driver is drawing wait for it (polled every ``wait_s``).
    Counts: ``done`` now, ``skipped`` (done before, or another driver's), ``dropped``
    (computed, but a driver that takes no leases committed it first), ``cot_rows`` (see
    :func:`copy_missing_cot_rows`).

    ``workers`` injects ready ChunkWorkers per policy (tests use scripted models).
    ``progress``: an object with ``start(name, total)`` and ``advance(name, k)`` (the CLI passes rich
    bars), and optionally ``update(name, completed)``, which sets a bar to every unit done in the store.
    """
    claim_config(store, cfg)
    store.add_problems(problems)
    parts = chunks(problems, cfg.chunk_size)
    counts = {"done": 0, "skipped": 0, "dropped": 0, "cot_rows": copy_missing_cot_rows(cfg, store, len(parts))}
    done = store.done_units()
    by_policy = _prms_by_policy(cfg, only_pairs)
    plans = plan_sweep(cfg, len(problems))
    if only_pairs is not None:
        plans = {policy: [u for u in units if u.prm in by_policy[policy]
                          or (u.prm == "" and set(cfg.pair_prms(policy, u.chunk)) & set(by_policy[policy]))]
                 for policy, units in plans.items() if policy in by_policy}
    if only_chunks is not None:
        wanted = check_chunks(only_chunks, len(parts))
        plans = {policy: [u for u in units if u.chunk in wanted] for policy, units in plans.items()}
    if progress is not None:
        for policy, units in plans.items():
            for name, total in progress_groups(units).items():
                progress.start(name, total, done=sum(1 for u in units if progress_group(u) == name and u.key in done))
    jobs = {policy: list(chunk_jobs(cfg, store, policy, units, parts, done)) for policy, units in plans.items()}
    if executor == "ray":
        counts["skipped"] = sum(1 for units in plans.values() for u in units if u.key in done)
        from .ray_executor import run_ray

        counts["done"] = run_ray(cfg, store, jobs, by_policy, progress=progress, options=ray_options or {})
        return counts
    if executor != "local":
        raise ValueError(f"unknown executor {executor!r}; expected 'local' or 'ray'")
    owner = lease_owner()
    warned_cpus = False
    try:
        for policy, policy_jobs in jobs.items():
            worker = None
            waiting = policy_jobs
            while waiting:
                later = []
                for planned in waiting:
                    job, n_waiting = take_job(store, planned, owner)  # another driver may hold some of it
                    if n_waiting:
                        later.append(planned)
                    if job is None:
                        continue
                    if not warned_cpus:
                        warned_cpus = _warn_if_oversubscribed(store, owner)
                    if worker is None:
                        worker = (workers or {}).get(policy) or ChunkWorker(cfg, policy, by_policy[policy])
                        claim_models(store, worker.fingerprints())
                    _sync_progress(progress, plans, store)  # what other drivers finished meanwhile
                    for unit, rows in worker.run_units(job.problems, job.units, job.pools, job.probes):
                        if not commit_new(store, unit.key, rows):
                            counts["dropped"] += 1
                            continue
                        store.heartbeat(owner)
                        counts["done"] += 1
                        if progress is not None:
                            progress.advance(progress_group(unit), 1)
                waiting = later
                if waiting:
                    log.info("%d chunks wait for a pool or probe another driver is computing", len(waiting))
                    time.sleep(wait_s)
    finally:
        store.release(owner)
    counts["skipped"] = sum(len(units) for units in plans.values()) - counts["done"] - counts["dropped"]
    return counts


def oversubscription(drivers: int, threads: int, cpus: int) -> str | None:
    """Why ``drivers`` processes of ``threads`` threads each on ``cpus`` CPUs run slowly, or None.

    Each driver's engine spins one thread per CPU by default, so two drivers on two cores run
    four busy threads; measured on the 2-core Intel Xeon (arith-router, llama.cpp), a Gemma3 +
    calc chunk took ~28 min that way and ~6 with one thread per driver."""
    if drivers < 2 or drivers * threads <= cpus:
        return None
    return (f"{drivers} sweep drivers share this host's {cpus} CPUs and each computes with {threads} threads, "
            f"so the cores are oversubscribed and every driver runs several times slower; start each driver "
            f"with --threads {max(1, cpus // drivers)} (or TTSOPT_NUM_THREADS={max(1, cpus // drivers)})")


def _warn_if_oversubscribed(store: OutcomeStore, owner: str) -> bool:
    """Log :func:`oversubscription` for the live drivers of this store on this host; True once warned."""
    why = oversubscription(1 + len(store.live_drivers_here(exclude=owner)), default_threads(), os.cpu_count() or 1)
    if why:
        log.warning(why)
    return why is not None


def _sync_progress(progress: Any, plans: dict[str, list[Unit]], store: OutcomeStore) -> None:
    """Set the bars to every unit the store has done, this driver's and the others' alike,
    where the progress object can be set (``update(name, completed)``)."""
    update = getattr(progress, "update", None)
    if update is None:
        return
    done = store.done_units()
    for units in plans.values():
        for name in progress_groups(units):
            update(name, sum(1 for u in units if progress_group(u) == name and u.key in done))


def _prms_by_policy(cfg: SweepConfig, only_pairs: Sequence[str] | None = None) -> dict[str, list[str]]:
    if only_pairs is not None:
        check_pairs(cfg, only_pairs)
    by_policy: dict[str, list[str]] = {}
    for pair in cfg.pairs:
        if only_pairs is None or pair.name in only_pairs:
            by_policy.setdefault(pair.policy, []).append(pair.prm)
    return by_policy


def copy_missing_cot_rows(cfg: SweepConfig, store: OutcomeStore, n_chunks: int) -> int:
    """Give every pair the CoT rows of its chunks whose CoT unit is done; returns the units written.

    CoT uses no PRM, so its unit runs once per policy and writes one row per pair. Stores
    written before that rule (a driver given some of a policy's pairs wrote their rows only)
    and stores whose config gained a pair lack some pairs' rows; they are the CoT unit's rows
    with the pair changed, committed as a unit ``cot_rows|POLICY|PRM||SEED|CHUNK|0`` of their
    own so that a snapshot carries them.
    """
    done = store.done_units()
    by_unit: dict[str, list[dict]] = {}
    for r in store.rows("outcomes", strategy="cot"):
        by_unit.setdefault(r["unit"], []).append(r)
    written = 0
    for policy in _prms_by_policy(cfg):
        for seed in cfg.seeds:
            for c in range(n_chunks):
                cot = Unit("cot", policy, "", "", seed, c).key
                if cot not in done:
                    continue
                rows = by_unit.get(cot, [])
                have = {r["prm"] for r in rows}
                for prm in cfg.pair_prms(policy, c):
                    key = Unit("cot_rows", policy, prm, "", seed, c).key
                    if prm in have or key in done or not rows:
                        continue
                    source = min(have)
                    copies = [{**r, "prm": prm, "unit": key} for r in rows if r["prm"] == source]
                    for r in copies:
                        r.pop("created_at", None)
                    written += commit_new(store, key, {"outcomes": copies})
    return written


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


def write_problem_features(problems: Sequence[Problem], out_dir, *, embeddings: bool = True):
    """Per-problem features next to the store: text statistics, and raw MiniLM embeddings.

    Raw 384-d embeddings are kept (cached under ``out_dir/embeddings``); the PCA that reduces
    them is fitted on the training split when the selector is trained, so that evaluation
    problems never shape it. Returns the path of ``features.parquet``.

    Without ``embeddings`` no model is loaded, and the raw embeddings an existing
    ``features.parquet`` holds for these same problems are kept: a driver started with
    ``--no-embeddings`` must not strip what another run computed (a snapshot exported after
    it would lose them).
    """
    from pathlib import Path

    import pandas as pd

    from ttsopt.selector.features import Embedder, problem_features

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = problem_features(problems)
    path = out_dir / "features.parquet"
    if embeddings:
        embedder = Embedder.minilm()
        raw = embedder.embed(problems, cache_dir=out_dir / "embeddings")
        emb = pd.DataFrame(raw, index=frame.index, columns=[f"raw_emb_{i}" for i in range(raw.shape[1])])
        frame = pd.concat([frame, emb], axis=1)
    elif path.is_file():
        frame = _with_kept_embeddings(frame, pd.read_parquet(path))
    with atomic_path(path) as tmp:
        frame.reset_index().to_parquet(tmp, index=False)
    return path


def _with_kept_embeddings(frame, old):
    """``frame`` with ``old``'s raw embedding columns, when ``old`` covers the same problems
    with the same text statistics (the same questions); else ``frame`` as it is."""
    import numpy as np
    import pandas as pd

    old = old.set_index("problem_id") if "problem_id" in old.columns else old
    emb = [c for c in old.columns if c.startswith("raw_emb_")]
    if not emb or not frame.index.isin(old.index).all():
        return frame
    same = old.loc[frame.index, list(frame.columns)].to_numpy(dtype=float)
    if not np.allclose(same, frame.to_numpy(dtype=float), equal_nan=True):
        log.warning("features.parquet has embeddings of other questions under these ids; not kept")
        return frame
    return pd.concat([frame, old.loc[frame.index, emb]], axis=1)
