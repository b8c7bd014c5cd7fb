"""Fan a sweep out over a Ray cluster: one model-holding actor per GPU (or CPU slot).

Actors compute whole chunks (every unit of a chunk, in plan order) and return the rows;
the driver alone writes the store, so crash-safety and resumability are the same as in
a local sweep. Ray is an optional extra (``pip install 'ttsopt[ray]'``), imported here only.
"""

from __future__ import annotations

from typing import Any, Sequence

from ttsopt.data import Problem

from .config import SweepConfig
from .store import OutcomeStore


class _ChunkActor:
    def __init__(self, cfg: SweepConfig, policy: str, prms: Sequence[str]):
        from .sweep import ChunkWorker

        self.worker = ChunkWorker(cfg, policy, prms)

    def run_chunk(self, problems, units, pool_rows):
        return list(self.worker.run_units(problems, units, pool_rows))


def run_ray(cfg: SweepConfig, store: OutcomeStore, parts: Sequence[Sequence[Problem]], plans: dict[str, list],
            by_policy: dict[str, list[str]], done: set[str], *, progress: Any = None,
            options: dict[str, Any]) -> dict[str, int]:
    try:
        import ray
    except ImportError as e:
        raise ImportError("the ray executor needs Ray: pip install 'ttsopt[ray]'") from e
    from .sweep import _group, _stored_pools

    if not ray.is_initialized():
        ray.init(address=options.get("address"), include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=False, **({"num_cpus": options["num_cpus"]} if options.get("num_cpus") else {}))
    actor_cls = ray.remote(num_gpus=float(options.get("num_gpus") or 0), num_cpus=1)(_ChunkActor)
    counts = {"done": 0, "skipped": 0}
    for policy, units in plans.items():
        todo = [u for u in units if u.key not in done]
        counts["skipped"] += len(units) - len(todo)
        if not todo:
            continue
        jobs = []
        for c, part in enumerate(parts):
            for seed in cfg.seeds:
                chunk_units = [u for u in todo if u.chunk == c and u.seed == seed]
                if chunk_units:
                    pools = _stored_pools(store, policy, part, seed) if chunk_units[0].kind != "pool" else None
                    jobs.append((part, chunk_units, pools))
        n_actors = max(1, min(int(options.get("actors") or 1), len(jobs)))
        actors = [actor_cls.remote(cfg, policy, by_policy[policy]) for _ in range(n_actors)]
        pending = {actors[i % n_actors].run_chunk.remote(*job): i for i, job in enumerate(jobs)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                for unit, outcomes, pools in ray.get(ref):
                    store.commit_unit(unit.key, outcomes, pools)
                    counts["done"] += 1
                    if progress is not None:
                        progress.advance(_group(unit), 1)
        for a in actors:
            ray.kill(a)
    return counts
