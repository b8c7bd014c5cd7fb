"""The cascade plan record (selector/plan.py): it reads the manifest layout written before it existed,
round-trips, takes "plain" for "fitted", decides the default mode once, and the router reads through it."""

from __future__ import annotations

import copy
import json

import pytest
import router_fixtures as rf

from ttsopt.selector.plan import (PLAN_VERSION, BinnedPlans, CascadePlan, LevelPlans, PlanError, RouterGate,
                                  StagePlan, canonical_mode, default_mode, plans_from_manifest, plans_to_manifest)
from ttsopt.selector.router import Budget

STAGE = {"tau": 0.5, "escalate": "majority:n=4", "train_accuracy": 0.75, "tokens": 120.0, "flops": 2.4e8,
         "escalated": 0.25, "problems": 40}
#: ``manifest["cascade"][pair]`` as train/fit/cascade.py's fit_cascade wrote it before the record (no version).
OLD_LAYOUT = {
    "gate": "min step score of the greedy CoT", "problems": 40,
    "budgets": {"1": {**STAGE, "tau": None, "escalate": "cot", "router_tau": None, "keep_value": None},
                "8": {**STAGE, "router_tau": 0.5, "keep_value": 0.1}},
    "bins": {"score": "the router's predicted accuracy of the greedy CoT (out of fold)", "edges": [0.3, 0.6],
             "budgets": {"1": [STAGE, STAGE, STAGE], "8": [STAGE, {**STAGE, "tau": None}, STAGE]}},
    "default_mode": "level",
    "levels": {"by": "the question's level, predicted online from its text (the artifact's level model)",
               "budgets": {"1": {"1": STAGE, "2": STAGE}, "8": {"1": {**STAGE, "escalate": "cot"}, "2": STAGE}}},
}


def test_an_old_layout_plan_reads_into_typed_fields():
    plan = CascadePlan.from_dict(OLD_LAYOUT)
    assert plan.version == PLAN_VERSION and plan.problems == 40 and plan.default_mode == "level"
    assert sorted(plan.budgets) == [1, 8]  # keyed by N, not by its string
    assert plan.budgets[1] == StagePlan(None, "cot", 0.75, 120.0, 2.4e8, 0.25, 40, RouterGate(None, None))
    assert plan.budgets[8].tau == 0.5 and plan.budgets[8].router == RouterGate(0.5, 0.1)
    assert plan.bins.edges == (0.3, 0.6) and len(plan.bins.budgets[8]) == 3 and plan.bins.budgets[8][1].tau is None
    assert plan.bins.budgets[8][0].router is None  # bin and level stages carry no router gate
    assert plan.levels.budgets[8]["1"].escalate == "cot"
    assert plan.fitted_budget(12) == 8 and plan.fitted_budget(7) == 1 and plan.fitted_budget(0) is None


def test_the_record_round_trips_and_writes_the_old_layout_plus_a_version():
    plan = CascadePlan.from_dict(OLD_LAYOUT)
    written = plan.to_dict()
    assert written == {**OLD_LAYOUT, "version": PLAN_VERSION}
    assert CascadePlan.from_dict(written) == plan
    assert CascadePlan.from_dict(json.loads(json.dumps(written))) == plan  # through the manifest's JSON
    # built by hand (as the writer will), then read back
    built = CascadePlan(budgets={4: StagePlan(0.5, "majority:n=3", router=RouterGate(0.5, 0.0))},
                        bins=BinnedPlans((0.5,), {4: (StagePlan(None, "cot"), StagePlan(0.4, "majority:n=3"))}),
                        levels=LevelPlans({4: {"1": StagePlan(0.6, "cot")}}),
                        default_mode=default_mode(levels=True, bins=True, level_preferred=False))
    assert built.default_mode == "binned"
    assert CascadePlan.from_dict(built.to_dict()) == built
    assert plans_from_manifest({"cascade": plans_to_manifest({"p": built})}) == {"p": built}
    assert plans_from_manifest({}) == {}


def test_plain_is_another_name_for_fitted():
    assert canonical_mode("plain") == "fitted" and canonical_mode("fitted") == "fitted"
    assert CascadePlan.from_dict({**OLD_LAYOUT, "default_mode": "plain"}).default_mode == "fitted"
    with pytest.raises(PlanError, match="unknown cascade mode"):
        canonical_mode("sometimes")


def test_one_rule_decides_the_default_mode():
    assert default_mode(levels=True, bins=True) == "level"
    assert default_mode(levels=True, bins=True, level_preferred=False) == "binned"
    assert default_mode(levels=False, bins=False) == "fitted"
    plan = CascadePlan.from_dict(OLD_LAYOUT)
    assert plan.online_default_mode(level_model=True) == "level"
    assert plan.online_default_mode(level_model=False) == "binned"  # level plans need the level model
    fitted = CascadePlan.from_dict({**OLD_LAYOUT, "default_mode": "plain"})
    assert fitted.online_default_mode(level_model=True) == "binned"  # training did not prefer the levels
    bare = CascadePlan.from_dict({"budgets": OLD_LAYOUT["budgets"]})
    assert bare.online_default_mode(level_model=True) == "fitted" and bare.gate is None


def test_a_hand_written_stage_needs_only_tau_and_escalate():
    stage = StagePlan.from_dict({"tau": None, "escalate": "cot", "router_tau": 0.5, "keep_value": 0.0})
    assert stage.train_accuracy is None and stage.router == RouterGate(0.5, 0.0)
    assert stage.to_dict() == {"tau": None, "escalate": "cot", "router_tau": 0.5, "keep_value": 0.0}
    with pytest.raises(PlanError, match="escalate"):
        StagePlan.from_dict({"tau": 0.5})


def test_a_newer_plan_or_a_bad_budget_is_refused_not_misread():
    with pytest.raises(PlanError, match="newer"):
        CascadePlan.from_dict({**OLD_LAYOUT, "version": PLAN_VERSION + 1})
    with pytest.raises(PlanError, match="keyed by N"):
        CascadePlan.from_dict({"budgets": {"eight": STAGE}})


def test_the_router_reads_the_fitted_plan_through_the_record(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False)
    raw = copy.deepcopy(router.cascade)
    assert router.plan == CascadePlan.from_dict(raw)  # what train wrote, as the record reads it
    assert CascadePlan.from_dict(raw).to_dict() == {**raw, "version": PLAN_VERSION}  # the writer's layout, kept
    n = router.plan.fitted_budget(12)
    assert router.cascade_plan(Budget(n=12)) == {"n": n, **raw["budgets"][str(n)]}
    has_levels = router.artifact.levels is not None
    assert router.default_cascade_mode == router.plan.online_default_mode(level_model=has_levels)
    # "plain" runs the one plan per budget, as "fitted" does
    q = "What is 12 + 30?"
    plain = router.solve(q, Budget(n=8), cascade="plain")
    fitted = router.solve(q, Budget(n=8), cascade="fitted")
    assert plain.trace["cascade"]["mode"] == "fitted" and plain.answer == fitted.answer
