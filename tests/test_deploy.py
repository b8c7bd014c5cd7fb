"""The deployed default is the mode a nested comparison ranks first, scored on problems the choice never saw."""

import numpy as np

from ttsopt.train.evaluation.deploy import MODES, deployed_default
from ttsopt.train.fit.pairs import _Pair

STRATS = ["cot", "best_of_n:n=4,agg=min,vote=prm_vote"]


def two_level_pair(n: int = 60, folds: int = 3) -> _Pair:
    """Level "1": the CoT is right and Best-of-4 wrong; level "2": the other way round. The router's
    predictions carry no signal; the text feature says the level."""
    rng = np.random.default_rng(0)
    levels = np.array(["1", "2"] * (n // 2))
    label = np.where(levels[:, None] == "1", [[1.0, 0.0]], [[0.0, 1.0]])
    tokens = np.tile([[30.0, 100.0]], (n, 1))
    fold = rng.permutation(np.arange(n) % folds)
    inner = {}
    for f in range(folds):
        rows = np.flatnonzero(fold != f)
        g = np.full(n, -1)
        g[rows] = np.arange(len(rows)) % 3
        inner[f"inner_fold_{f}"] = g
        ip = np.full((n, 2), np.nan)
        ip[rows] = 0.5
        inner[f"inner_pred_{f}"] = ip
    x = (levels == "2").astype(float)[:, None] + rng.normal(0, 0.01, (n, 1))
    p = _Pair("x+calc", STRATS, np.array([1, 4]), label, np.full_like(label, 0.5), tokens, 2e6 * tokens, fold,
              bins=np.array(["a"] * n), levels=levels, policy_params=1e6,
              extra={"problem_ids": [f"p{i}" for i in range(n)], "features": [x] * folds, **inner})
    p.extra["level_pred"] = levels.copy()
    return p


def test_the_nested_choice_deploys_the_per_level_rule_where_only_the_level_matters():
    report = deployed_default(two_level_pair(), None)
    at4 = report["4"]
    assert at4["mode"] == "per_level"
    assert set(at4["fold_choices"]) == {"per_level"}
    assert at4["accuracy"] == 1.0
    assert at4["diff_vs_best_fixed"] > 0.4 and at4["ci95"][0] > 0
    # per level, what a run on new questions of that level should land near
    assert at4["by_level"]["1"]["problems"] == 30 and at4["by_level"]["2"]["mode_accuracy"] == 1.0
    assert at4["by_level"]["1"]["mode_tokens"] == 30.0 and at4["by_level"]["2"]["mode_tokens"] == 100.0
    # at N = 1 only the CoT fits: every mode is the CoT, and the tie goes to the simplest
    assert report["1"]["mode"] == "best_fixed"
    assert report["1"]["accuracy"] == 0.5


def test_without_a_level_signal_the_choice_is_one_of_the_candidates_and_scored_held_out():
    p = two_level_pair()
    p.extra.pop("level_pred")
    report = deployed_default(p, None)
    assert all(c in MODES for b in report.values() for c in b["fold_choices"])
    assert report["4"]["accuracy"] <= 0.5 + 1e-9  # no mode can see the level: no better than a fixed strategy


def test_the_default_train_writes_is_the_mode_its_own_nested_comparison_ranked_first(tmp_path):
    import json

    from router_fixtures import FIT_PARAMS, FIT_ROUNDS, search_settings, synthetic_gates, synthetic_table

    from ttsopt.train.evaluation.deploy import manifest_record
    from ttsopt.train.evaluation.evaluate import evaluate
    from ttsopt.train.fit.build import write_router
    from ttsopt.train.fit.tuning import TrainSettings, fit_fixed

    table = synthetic_table(False, count=60, levels=True).assign(difficulty="medium", pass_at_1=0.5)
    settings = TrainSettings(trials=1, folds=3, n_components=2)
    report = evaluate(table, settings, min_problems=3, lopo=False, gates=synthetic_gates(60))
    deployed = report["pairs"]["scripted+calc"]["deployed"]
    assert deployed, "every evaluated pair gets a deployed row"
    for n, b in deployed.items():
        ranked = max(b["candidates"].values(), key=lambda c: c["accuracy"])["accuracy"]
        assert b["candidates"][b["mode"]]["accuracy"] == ranked  # the first of the whole comparison
        assert set(b["fold_choices"]) <= set(b["candidates"])
    record = manifest_record(report)
    write_router(table, tmp_path / "r", settings, search=search_settings(False),
                 fit=fit_fixed(table, settings, FIT_PARAMS, FIT_ROUNDS), deployed=record)
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    written = manifest["deployed"]["scripted+calc"]["budgets"]
    assert {n: b["mode"] for n, b in written.items()} == {n: b["mode"] for n, b in deployed.items()}
    assert all("held_out_accuracy" in b["evidence"] for b in written.values())


def _router_with(tmp_path, deployed):
    from router_fixtures import (FIT_PARAMS, FIT_ROUNDS, ScriptedPolicy, fake_encoder, search_settings,
                                 synthetic_gates, synthetic_table)

    from ttsopt.search.registry import load_prm
    from ttsopt.selector.router import Router
    from ttsopt.train.fit.build import write_router
    from ttsopt.train.fit.tuning import TrainSettings, fit_fixed

    table = synthetic_table(False, count=60, levels=True)
    settings = TrainSettings(trials=0, folds=3, n_components=2)
    write_router(table, tmp_path / "r", settings, search=search_settings(False),
                 fit=fit_fixed(table, settings, FIT_PARAMS, FIT_ROUNDS), gates=synthetic_gates(60),
                 storage=f"sqlite:///{tmp_path / 'study.sqlite3'}", deployed=deployed)
    return Router.load(tmp_path / "r", policy=ScriptedPolicy(), prm=load_prm("calc"), encoder=fake_encoder)


def _record(mode, **what):
    return {"scripted+calc": {"format": 1, "kind": "generations",
                              "budgets": {"4": {"mode": mode, **what, "evidence": {}}}}}


def test_solve_runs_the_deployed_mode_unless_the_caller_names_one(tmp_path):
    from router_fixtures import questions

    from ttsopt.selector.records import Budget

    router = _router_with(tmp_path, _record("best_fixed", strategy="majority:n=2"))
    q = questions(3)
    assert router.deployed(Budget(n=8)).mode == "best_fixed"  # chosen at N = 4, the largest N <= 8
    assert router.deployed(Budget(n=2)).mode == "router"  # nothing chosen at or below N = 2
    sols = router.solve_many(q, Budget(n=4))
    assert [s.trace["deployed"]["mode"] for s in sols] == ["best_fixed"] * 3
    assert [s.decision.strategy for s in sols] == ["majority:n=2"] * 3
    assert all(s.compute["policy_generated_tokens"] > 0 for s in sols)
    explicit = router.solve_many(q, Budget(n=4), cascade=False)  # the caller's mode wins: the argmax
    assert all("deployed" not in s.trace for s in explicit)


def test_the_per_level_mode_runs_the_strategy_of_the_level_the_text_shows(tmp_path):
    from router_fixtures import question_level, questions

    from ttsopt.selector.records import Budget

    router = _router_with(tmp_path, _record("per_level", strategy="cot", levels={"1": "cot", "2": "majority:n=4"}))
    q = questions(6)
    sols = router.solve_many(q, Budget(n=4))
    for question, s in zip(q, sols):
        want = {"1": "cot", "2": "majority:n=4"}[s.trace["cascade"]["level"]]
        assert s.decision.strategy == want
    assert sum(s.trace["cascade"]["level"] == question_level(x) for x, s in zip(q, sols)) >= 4


def test_a_pair_without_problems_in_some_fold_is_still_evaluated():
    """A small draw can leave a pair with no problem in one fold (folds 0, 1, 2, 4): the rules then
    look the inner predictions up by the fold's number, not by its position."""
    from ttsopt.train.evaluation.rules import _fallback_params, _rules

    p = two_level_pair(n=60, folds=3)
    p.fold[p.fold == 2] = 4
    p.extra["inner_fold_4"], p.extra["inner_pred_4"] = p.extra.pop("inner_fold_2"), p.extra.pop("inner_pred_2")
    p.extra["features"] = [p.extra["features"][0]] * 5  # one feature pipeline per fold of the whole table
    rules, _ = _rules(p, seed=0)
    assert all(set(_fallback_params(p, r)) == {0, 1, 4} for r in rules)


def test_at_a_token_budget_the_nested_choice_is_made_too_and_the_cascades_stay_per_n():
    from ttsopt.train.evaluation.deploy import compute_grid, deployed_compute

    p = two_level_pair()
    report = deployed_compute(p)
    assert set(report) == {"tokens", "flops"}
    grid = compute_grid(p, "tokens")
    assert grid[0] == 30.0 and grid[-1] == 100.0  # from the cheapest strategy to the dearest
    at_most = report["tokens"]["100"]
    assert at_most["mode"] == "per_level" and at_most["accuracy"] == 1.0 and at_most["ci95"][0] > 0
    assert at_most["levels"] == {"1": "cot", "2": STRATS[1]}
    cheapest = report["tokens"]["30"]  # only the CoT fits: every mode is the CoT, ties to the simplest
    assert cheapest["mode"] == "best_fixed" and cheapest["accuracy"] == 0.5
    assert all(set(b["fold_choices"]) <= {"router", "best_fixed", "per_level"} for b in report["flops"].values())


def test_solve_under_a_token_budget_runs_the_mode_chosen_for_it(tmp_path):
    from router_fixtures import questions

    from ttsopt.selector.records import Budget

    record = _record("router")
    record["scripted+calc"]["compute"] = {"tokens": {"200": {"mode": "best_fixed", "strategy": "majority:n=2",
                                                             "evidence": {}}}}
    router = _router_with(tmp_path, record)
    assert router.deployed(Budget(tokens=150)).mode == "router"  # below every recorded budget: the argmax
    assert router.deployed(Budget(target_accuracy=0.5)).mode == "router"
    sols = router.solve_many(questions(2), Budget(tokens=500))
    assert [s.trace["deployed"]["mode"] for s in sols] == ["best_fixed"] * 2
    assert [s.decision.strategy for s in sols] == ["majority:n=2"] * 2
