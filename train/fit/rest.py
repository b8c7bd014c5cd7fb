"""The rest of the budget: pooled strategies at n = N - 1, estimated from a snapshot's pools.

Why: the verify-first cascade (:mod:`.cascade`) spends one of its N generations on the greedy
CoT, so at N = 16 the escalation may use 15; the sweep's budgets are 1, 2, 4, 8, 16, and without
these rows the cascade could only escalate to 8, throwing away half of what it may spend.
Pooled Best-of-N and majority at any n are estimated from the pools the sweep already stored,
exactly as the sweep estimates its own budgets (:func:`~ttsopt.train.sweep.pooled.estimate_budgets`, the
config's rules and ``n_subsets``, the same subset seed, the same compute measure), so a derived
row is what the sweep would have written had its budget list held that n. Tree methods (beam,
DVTS) cannot be derived this way and get no such rows.

These rows are escalation options of the cascade only: the fixed strategies, the router and the
oracle keep the sweep's own catalogue (a fixed n = N - 1 is never better in expectation than
n = N from the same pool, and the evaluation reports the best fixed strategy over both).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

#: n = N - 1 for the evaluation's budgets N = 4, 8, 16 (N = 2 leaves 1, already a budget).
REST_NS = (3, 7, 15)

_COLUMNS = ("policy", "prm", "problem_id", "strategy", "n", "label", "tokens", "flops")


def rest_of_budget(folder: str | Path, ns: Sequence[int] = REST_NS) -> pd.DataFrame:
    """Per (pair, problem, pooled rule, n in ``ns``): ``label`` (expected accuracy over the subsets),
    ``tokens`` and ``flops`` (the docs/architecture.md measure), from the snapshot's pools."""
    from ttsopt.search.methods.calls import derive_seed
    from ttsopt.search.result import Candidate
    from ttsopt.search.types import split_steps

    from ..sweep.config import SweepConfig
    from ..sweep.pooled import PoolItem, estimate_budgets
    from ..sweep.snapshot import read_manifest

    folder = Path(folder)
    fields = read_manifest(folder)["config_fields"]
    rules = [tuple(r) for r in fields["pooled_rules"]]
    n_subsets = int(fields["n_subsets"])
    rows = []
    for r, cands, scores, prompt, (p_params, prm_params) in scored_pools(folder):
        graded = {c["answer"]: bool(c["correct"]) for c in cands}
        items = [PoolItem(Candidate(c["text"], split_steps(c["text"]), c["answer"], s["step_scores"], None,
                                    c["finish_reason"]), c["tokens"], s["prm_tokens"]) for c, s in zip(cands, scores)]
        for est in estimate_budgets(items, list(ns), rules, lambda a: graded.get(a, False), n_subsets=n_subsets,
                                    seed=derive_seed(int(r.seed), r.problem_id)):
            prm_tokens = est.prm_tokens if est.vote != "majority" else 0.0
            rows.append({"policy": r.policy, "prm": r.prm, "problem_id": r.problem_id,
                         "strategy": SweepConfig.pooled_strategy(est.n, est.agg, est.vote).key, "n": est.n,
                         "label": est.accuracy, "tokens": prompt + est.generated_tokens + prm_tokens,
                         "flops": 2.0 * p_params * (prompt + est.generated_tokens) + 2.0 * prm_params * prm_tokens})
    return pd.DataFrame(rows, columns=list(_COLUMNS))


def scored_pools(folder: str | Path) -> Iterator[tuple[Any, list[dict], list[dict], float, tuple[float, float]]]:
    """Each stored pool of a snapshot with a PRM's scores of it: the PRM's pool row, the pool's candidates,
    their scores, the prompt's tokens and the pair's (policy, PRM) parameters; what every estimate from the
    pools (:func:`rest_of_budget`, :mod:`.adaptive`) starts from."""
    from ..sweep.snapshot import read_table

    folder = Path(folder)
    pools = read_table(folder, "pools")
    params = _parameters(folder)
    drawn = {(r.policy, r.problem_id, int(r.seed)): r for r in pools[pools["prm"] == ""].itertuples(index=False)}
    for r in pools[pools["prm"] != ""].itertuples(index=False):
        pool = drawn.get((r.policy, r.problem_id, int(r.seed)))
        if pool is None or (r.policy, r.prm) not in params:
            continue
        cands, scores = json.loads(pool.candidates), json.loads(r.candidates)
        if len(cands) != len(scores):
            raise ValueError(f"{folder}: pool of {r.policy}/{r.problem_id} has {len(cands)} candidates but "
                             f"{len(scores)} scored by {r.prm}")
        yield r, cands, scores, float(json.loads(pool.compute)["prompt_tokens"]), params[(r.policy, r.prm)]


def _parameters(folder: Path) -> dict[tuple[str, str], tuple[float, float]]:
    """(policy, PRM) -> (policy parameters, PRM parameters), read back from the FLOPs the sweep charged."""
    from ..sweep.snapshot import read_table
    from .labels import strategy_labels
    from .table import _pair_params

    return {(r.policy, r.prm): (float(r.policy_params), float(r.prm_params))
            for r in _pair_params(strategy_labels(read_table(folder, "outcomes"))).itertuples(index=False)}


def load_rest(folders: Sequence[str | Path], ns: Sequence[int] = REST_NS) -> pd.DataFrame:
    frames = [rest_of_budget(f, ns) for f in folders]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(_COLUMNS))


__all__ = ["REST_NS", "load_rest", "rest_of_budget", "scored_pools"]
