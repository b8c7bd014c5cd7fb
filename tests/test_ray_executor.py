"""The Ray executor on a local Ray cluster (CPU): same rows as the local executor."""

from __future__ import annotations

import pytest

from ttsopt.data import load_problems
from ttsopt.train.sweep.config import config_from_dict
from ttsopt.train.sweep.store import OutcomeStore
from ttsopt.train.sweep.driver import run_sweep

ray = pytest.importorskip("ray")


def _cfg(model_dir):
    return config_from_dict({
        "name": "ray", "problems": "builtin:arith", "problem_options": {"per_level": 1},
        "pairs": [{"policy": f"hf:{model_dir}", "prm": "calc"}],
        "methods": {"majority": {}, "best_of_n": {"vote": ["prm_vote"]}, "beam": {"m": [2]}},
        "budgets": [2, 4], "n_subsets": 4, "chunk_size": 2, "max_depth": 2,
        "sampling": {"temperature": 0.8, "max_tokens": 12, "step_max_tokens": 6},
    })


def test_ray_sweep_writes_the_same_rows_as_a_local_sweep(tmp_path, tiny_model_dir):
    cfg = _cfg(tiny_model_dir)
    problems = load_problems(cfg.problems, **cfg.problem_options)
    with OutcomeStore(tmp_path / "local.sqlite") as local:
        run_sweep(cfg, local, problems)
        want = local.outcomes(with_candidates=True).drop(columns=["created_at", "wall_time_s"])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with OutcomeStore(tmp_path / "ray.sqlite") as remote:
            counts = run_sweep(cfg, remote, problems, executor="ray", ray_options={"actors": 2})
            got = remote.outcomes(with_candidates=True).drop(columns=["created_at", "wall_time_s"])
    finally:
        ray.shutdown()
    assert counts["done"] > 0
    key = ["problem_id", "strategy"]
    assert got.sort_values(key).astype(str).values.tolist() == want.sort_values(key).astype(str).values.tolist()
