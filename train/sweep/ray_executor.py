"""Fan a sweep out over a Ray cluster: one model-holding actor per GPU (or CPU slot).

Actors compute whole jobs (every unit of a chunk and seed, in plan order) and return the
rows; the driver alone writes the store, so crash-safety and resumability are the same as
in a local sweep. Ray is an optional extra (``pip install 'ttsopt[ray]'``), imported here only.
"""

from __future__ import annotations

from typing import Any, Sequence

from .config import SweepConfig
from .store import OutcomeStore, claim_models, commit_new
from .units import ChunkJob, ChunkWorker, progress_group


class _ChunkActor:
    def __init__(self, cfg: SweepConfig, policy: str, prms: Sequence[str]):
        self.worker = ChunkWorker(cfg, policy, prms)

    def fingerprints(self) -> dict[str, str]:
        return self.worker.fingerprints()

    def run_job(self, job: ChunkJob):
        return list(self.worker.run_units(job.problems, job.units, job.pools, job.probes))


def run_ray(cfg: SweepConfig, store: OutcomeStore, jobs: dict[str, list[ChunkJob]],
            by_policy: dict[str, list[str]], *, progress: Any = None, options: dict[str, Any]) -> int:
    """Compute ``jobs`` (per policy) on Ray actors and commit their units; returns how many."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("the ray executor needs Ray: pip install 'ttsopt[ray]'") from e

    if not ray.is_initialized():
        ray.init(address=options.get("address"), include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=False, **({"num_cpus": options["num_cpus"]} if options.get("num_cpus") else {}))
    actor_cls = ray.remote(num_gpus=float(options.get("num_gpus") or 0), num_cpus=1)(_ChunkActor)
    done = 0
    for policy, policy_jobs in jobs.items():
        if not policy_jobs:
            continue
        n_actors = max(1, min(int(options.get("actors") or 1), len(policy_jobs)))
        actors = [actor_cls.remote(cfg, policy, by_policy[policy]) for _ in range(n_actors)]

        for fingerprints in ray.get([a.fingerprints.remote() for a in actors]):
            claim_models(store, fingerprints)
        pending = {actors[i % n_actors].run_job.remote(job): i for i, job in enumerate(policy_jobs)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                for unit, rows in ray.get(ref):
                    if not commit_new(store, unit.key, rows):
                        continue
                    done += 1
                    if progress is not None:
                        progress.advance(progress_group(unit), 1)
        for a in actors:
            ray.kill(a)
    return done
