"""The router's seams: one compute shape (Compute.to_dict's keys) for a search, a probe and a solution, and
one copy of the pooled strategies' scoring and vote (search/methods/sampling.py) for the sweep and the router."""

from __future__ import annotations

import json

import pytest
import router_fixtures as rf

from ttsopt.search.compute import Compute
from ttsopt.search.methods import Ledger
from ttsopt.search.methods.sampling import decide_pools
from ttsopt.search.registry import load_prm
from ttsopt.search.result import Candidate
from ttsopt.search.strategy import Strategy
from ttsopt.search.types import split_steps
from ttsopt.selector.router import Budget
from ttsopt.selector.solving import LEGACY_COMPUTE_KEYS, compute_dict, compute_of

SHAPE = set(Compute().to_dict())
Q = "What is 12 + 30?"


def test_compute_dicts_have_compute_to_dicts_keys_and_the_legacy_copies():
    c = Compute()
    c.add_policy(10, 20, 1000, context_tokens=15)
    c.add_prm(7, 10)
    d = compute_dict(c)
    assert set(d) == SHAPE | set(LEGACY_COMPUTE_KEYS)
    assert all(d[old] == d[new] for old, new in LEGACY_COMPUTE_KEYS.items())
    assert d["tokens"] == 37 and d["flops"] == pytest.approx(2 * 1000 * 30 + 2 * 10 * 7)
    assert compute_of(d) == c
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize("budget", [Budget(n=4), Budget(tokens=1)])
def test_a_solutions_compute_is_one_shape_at_every_level(tmp_path, budget):
    s = rf.tiny_router(tmp_path).solve(Q, budget)
    top, search, probe = s.compute, s.compute["search"], s.compute["probe"]
    assert set(top) == SHAPE | set(LEGACY_COMPUTE_KEYS) | {"search", "probe"}
    assert set(search) == set(probe) == SHAPE | set(LEGACY_COMPUTE_KEYS)
    for key in ("policy_prompt_tokens", "policy_generated_tokens", "prm_tokens", "tokens"):
        assert top[key] == search[key] + probe[key]
    assert top["flops"] == pytest.approx(search["flops"] + probe["flops"])
    assert probe["tokens"] == s.decision.probe["tokens"]


def test_the_cascades_compute_is_the_same_shape(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False)
    router.cascade["budgets"]["8"] = {"tau": 0.5, "escalate": "majority:n=4", "router_tau": 0.5, "keep_value": 0.0}
    for s in router.solve_many([Q, "What is 21 + 4 * 6?"], Budget(n=8), cascade="fitted"):
        assert set(s.compute) == SHAPE | set(LEGACY_COMPUTE_KEYS) | {"probe"}
        assert s.compute["policy_generated_tokens"] > 0 and s.compute["prm_tokens"] > 0


def _pool(texts):
    return [Candidate(text=t, steps=split_steps(t), answer=t.split()[-1]) for t in texts]


def test_decide_pools_scores_only_what_is_unscored_and_votes():
    prm = load_prm("calc")
    strategy = Strategy.from_key("best_of_n:n=3,agg=min,vote=prm_vote")
    pool = _pool(["2 + 2 = 4\nThe answer is 4", "2 + 2 = 5\nThe answer is 5", "2 + 2 = 4\nThe answer is 4"])
    pool[0].step_scores = [0.25, 0.5]  # drawn earlier (a probe), scored by the same PRM: not re-scored
    ledger = Ledger(rf.ScriptedPolicy(), prm, 1, seed=0)
    out, = decide_pools(ledger, ["What is 2 + 2?"], [pool], strategy)
    assert pool[0].step_scores == [0.25, 0.5] and pool[0].score == 0.25  # aggregated by agg=min
    assert pool[1].step_scores is not None and pool[2].step_scores is not None
    assert ledger.compute[0].prm_tokens > 0 and out.candidates is pool
    assert out.trace["vote"] == "prm_vote" and out.answer == "4"
    # without a PRM (majority), nothing is scored and the majority wins
    plain = _pool(["x 5", "y 5", "z 4"])
    out, = decide_pools(Ledger(rf.ScriptedPolicy(), None, 1, seed=0), ["q"], [plain], Strategy.from_key("majority:n=3"))
    assert out.answer == "5" and out.trace["vote"] == "majority" and all(c.score is None for c in plain)
