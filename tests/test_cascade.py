"""The verify-first cascade: its outcomes and compute counted by hand, choices made on training
problems only, the fitted plan in the artifact, and the Router running it online."""

from __future__ import annotations

import numpy as np
import pytest
import router_fixtures as rf

from ttsopt.selector.router import Budget, RouterError
from ttsopt.train.evaluation.cascade import _apply, evaluate_cascade
from ttsopt.train.fit.cascade import _choose, _matrices, fit_cascade
from ttsopt.train.fit.pairs import _Pair

PARAMS = 1e6
STRATS = ["cot", "best_of_n:n=4,agg=min,vote=prm_vote"]


def tiny_pair() -> _Pair:
    """Four problems: the CoT is right where the PRM finds no bad step (gate 0.5) and wrong where it
    finds one (0.05); Best-of-4 is right on problems 1 and 3 only."""
    label = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    tokens = np.array([[30.0, 100.0]] * 4)  # each includes a 20-token prompt
    flops = 2 * PARAMS * np.array([[25.0, 90.0]] * 4)  # policy tokens only (the PRM is free)
    return _Pair("x+calc", STRATS, np.array([1, 4]), label, np.zeros_like(label), tokens, flops,
                 fold=np.array([0, 0, 1, 1]), bins=np.array(["a"] * 4), levels=np.array(["1"] * 4),
                 policy_params=PARAMS)


GATE = np.array([0.5, 0.05, 0.5, 0.05])
PRM_TOKENS = np.full(4, 3.0)
PROMPT = np.full(4, 20.0)


def test_a_kept_cot_costs_the_cot_and_its_check_and_an_escalation_adds_the_search_without_its_prompt():
    p = tiny_pair()
    c = _matrices(p, GATE, PRM_TOKENS, np.zeros(4), PROMPT)
    t = int(np.flatnonzero(c.taus == 0.5)[0])
    bon = 1
    assert c.passed[:, t].tolist() == [True, False, True, False]
    assert c.acc[:, t, bon].tolist() == [1.0, 1.0, 1.0, 1.0]
    # kept: 30 (CoT) + 3 (PRM); escalated: 33 + 100 - 20 (the prompt is read once)
    assert c.tokens[:, t, bon].tolist() == [33.0, 113.0, 33.0, 113.0]
    assert c.flops[:, t, bon].tolist() == pytest.approx([2 * PARAMS * 25, 2 * PARAMS * (25 + 90 - 20)] * 2)
    assert c.n[t, bon] == 5  # the CoT is one of the generations
    no_gate = len(c.taus) - 1  # "no CoT first": the strategy alone, as in the fixed table
    assert c.acc[:, no_gate, bon].tolist() == p.label[:, bon].tolist()
    assert c.tokens[:, no_gate, bon].tolist() == [100.0] * 4


def test_choices_come_from_the_training_folds_and_apply_to_the_test_fold():
    p = tiny_pair()
    c = _matrices(p, GATE, PRM_TOKENS, np.zeros(4), PROMPT)
    seen = []

    def choose(train):
        seen.append(sorted(train.tolist()))
        return _choose(c, train, np.ones_like(c.n, dtype=bool))

    acc, tokens, _, picks, escalated = _apply(c, p, choose)
    assert seen == [[2, 3], [0, 1]]  # fold 0's choice saw only fold 1's problems and vice versa
    assert acc.tolist() == [1.0, 1.0, 1.0, 1.0]
    assert escalated.tolist() == [False, True, False, True]
    assert all(q == {"tau": 0.5, "escalate": STRATS[1]} for q in picks)


def test_at_a_budget_where_the_cascade_does_not_fit_it_is_the_best_fixed_strategy():
    p = tiny_pair()
    base = {"budgets": {"1": {"oracle": {"accuracy": 0.5}}, "4": {"oracle": {"accuracy": 1.0}},
                        "8": {"oracle": {"accuracy": 1.0}}},
            "curve": {"router": [{"flops": 5e7, "accuracy": 0.5}], "per_level_rule": [{"flops": 5e7, "accuracy": 0.5}],
                      "fixed": [{"strategy": s, "flops": float(p.flops[:, i].mean()),
                                 "accuracy": float(p.label[:, i].mean())} for i, s in enumerate(STRATS)]}}
    out = evaluate_cascade(p, GATE, PRM_TOKENS, np.zeros(4), PROMPT, base=base)
    plain = out["plain"]["budgets"]
    assert plain["1"]["accuracy"] == 0.5  # N = 1: only the CoT fits
    assert plain["4"]["choices"][0]["tau"] is None  # CoT + Best-of-4 is 5 generations
    assert plain["8"]["accuracy"] == 1.0 and plain["8"]["escalated"] == 0.5
    assert out["gate"]["by_score"] == {"0.05": {"problems": 2, "cot_accuracy": 0.0},
                                       "0.5": {"problems": 2, "cot_accuracy": 1.0}}


def test_the_artifact_carries_the_cascade_fitted_on_every_training_problem():
    table = rf.synthetic_table(probe=False)
    fitted = fit_cascade(table, rf.synthetic_gates())
    plan = fitted["scripted+calc"]["budgets"]
    assert set(plan) >= {"1", "2", "4", "8", "16"}
    assert plan["1"]["tau"] is None and plan["1"]["escalate"] == "cot"
    assert fit_cascade(table, None) == {}


def test_the_router_keeps_a_verified_cot_and_escalates_a_doubted_one(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False)
    fitted = router.cascade["budgets"]
    assert router.cascade_plan(Budget(n=12))["n"] == 8  # the largest fitted N within the budget
    # a plan with a gate, set here (the synthetic labels favour no gate): the mechanics under test
    fitted["8"] = {"tau": 0.5, "escalate": "majority:n=4", "train_accuracy": 0.6, "router_tau": 0.5,
                   "keep_value": 0.0}
    plan = router.cascade_plan(Budget(n=8))
    easy, hard = "What is 12 + 30?", "What is 21 + 4 * 6?"  # the scripted greedy CoT of the second is wrong
    kept, escalated = router.solve_many([easy, hard], Budget(n=8), cascade="fitted")
    assert kept.trace["cascade"]["kept_first_answer"] is True and kept.answer == "42"
    assert kept.decision.strategy == "cot" and "escalation" not in kept.trace
    # what it spent: the CoT's tokens and the PRM's check of them, nothing else
    assert kept.compute["generated_tokens"] == len(kept.trace["first"]["candidates"][0]["text"].split())
    assert kept.compute["prm_tokens"] > 0
    assert escalated.trace["cascade"]["kept_first_answer"] is False
    assert escalated.trace["cascade"]["gate"] < plan["tau"]  # the PRM found the wrong step
    assert escalated.decision.strategy == plan["escalate"] and "escalation" in escalated.trace
    assert escalated.trace["escalation"]["strategy"] == "majority:n=4" and escalated.answer is not None
    assert escalated.compute["tokens"] > kept.compute["tokens"]
    # one problem, one prompt: the escalation's copy of it is re-sent context, not charged again
    assert escalated.compute["policy_prompt_tokens"] > 0
    assert escalated.compute["policy_context_tokens"] == 2 * escalated.compute["policy_prompt_tokens"]  # sent twice


def test_a_rest_of_budget_escalation_outside_the_catalogue_runs_online(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False)
    assert "majority:n=7" not in router.keys  # the sweep ran n = 1, 2, 4, 8, 16 only
    router.cascade["budgets"]["8"] = {"tau": 0.5, "escalate": "majority:n=7", "train_accuracy": 0.6,
                                      "router_tau": 0.5, "keep_value": 0.0}
    escalated = router.solve("What is 21 + 4 * 6?", Budget(n=8), cascade="fitted")
    assert escalated.trace["escalation"]["strategy"] == "majority:n=7"
    assert len(escalated.trace["escalation"]["candidates"]) == 7  # the CoT was the 8th generation


def test_the_cascade_takes_a_budget_of_generations_and_a_router_that_has_one(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False)
    with pytest.raises(RouterError, match="per budget N"):
        router.solve("What is 2 + 2?", Budget(tokens=500), cascade=True)
    router.artifact.manifest.pop("cascade")
    with pytest.raises(RouterError, match="no cascade"):
        router.solve("What is 2 + 2?", Budget(n=4), cascade=True)


def test_route_refuses_the_cascade_flag_it_cannot_honour(tmp_path):
    from typer.testing import CliRunner

    from ttsopt.cli import app

    result = CliRunner().invoke(app, ["route", "What is 2 + 2?", "--router", str(tmp_path), "--budget", "4",
                                      "--cascade", "router"])
    assert result.exit_code == 2
    assert "ttsopt solve --cascade" in " ".join(result.output.split())  # rich wraps lines


def test_with_the_router_escalating_a_doubted_cot_only_where_a_search_is_predicted_to_do_better():
    from ttsopt.train.evaluation.cascade import _routed

    p = tiny_pair()
    p.pred[:, 1] = [0.9, 0.9, 0.9, 0.0]  # the router expects Best-of-4 to fail on problem 3
    c = _matrices(p, GATE, PRM_TOKENS, np.zeros(4), PROMPT)
    acc, tokens, _, picks, escalated = _routed(c, p, budget=8)
    # the CoT fails its check on problems 1 and 3; only 1 is escalated (on the training side, the
    # CoT that failed its check was always wrong, so keeping it is worth 0 and 0.0 does not beat it)
    assert escalated.tolist() == [False, True, False, False]
    assert acc.tolist() == [1.0, 1.0, 1.0, 0.0]
    assert tokens.tolist() == [33.0, 113.0, 33.0, 33.0]
    assert all(q["tau"] == 0.5 and q["keep_value"] == 0.0 for q in picks)
    # the greedy CoT again would be the same answer: never the escalation, however high its prediction
    p.pred[:, 0] = 1.0
    assert _routed(c, p, budget=8)[4].tolist() == [False, True, False, False]


def test_with_the_router_escalating_it_routes_within_what_is_left_and_may_decline(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False)
    hard = "What is 21 + 4 * 6?"  # the scripted greedy CoT is wrong, and calc says so
    router.cascade["budgets"]["8"] = {"tau": None, "escalate": "cot", "router_tau": 0.5, "keep_value": 0.0}
    sol = router.solve(hard, Budget(n=8), cascade="router")
    assert sol.trace["cascade"]["mode"] == "router" and sol.trace["cascade"]["kept_first_answer"] is False
    assert sol.decision.budget == Budget(n=7)  # the CoT was one of the 8 generations
    assert sol.decision.chosen.n <= 7 and sol.decision.predicted_accuracy > 0.0
    assert sol.decision.strategy != "cot"  # after the greedy CoT, never the greedy CoT again
    assert next(c for c in sol.decision.candidates if c.strategy == "cot").fits is False
    # keeping the CoT is worth more than anything predicted: the router declines, nothing more runs
    router.cascade["budgets"]["8"]["keep_value"] = 1.0
    kept = router.solve(hard, Budget(n=8), cascade="router")
    assert kept.trace["cascade"]["kept_first_answer"] is True and "escalation" not in kept.trace
    assert kept.trace["cascade"]["router_declined"]["keep_value"] == 1.0
    assert kept.compute["generated_tokens"] == len(kept.trace["first"]["candidates"][0]["text"].split())
    with pytest.raises(RouterError, match="cascade must be"):
        router.solve(hard, Budget(n=8), cascade="sometimes")


def test_a_saved_cascade_on_unseen_data_runs_as_the_router_would():
    from ttsopt.train.evaluation.cascade import cascade_as_is

    p = tiny_pair()
    p.pred[:, 1] = [0.9, 0.9, 0.9, 0.0]
    entry = {"budgets": {"8": {"tau": 0.5, "escalate": STRATS[1], "router_tau": 0.5, "keep_value": 0.0},
                         "1": {"tau": None, "escalate": "cot", "router_tau": None, "keep_value": None}}}
    out = cascade_as_is(p, entry, GATE, PRM_TOKENS, np.zeros(4), PROMPT, budget=12)  # the plan fitted for N = 8
    acc, tokens, _, escalated = out["fitted"]
    assert acc.tolist() == [1.0] * 4 and tokens.tolist() == [33.0, 113.0, 33.0, 113.0]
    acc, tokens, _, escalated = out["router"]
    assert escalated.tolist() == [False, True, False, False] and acc.tolist() == [1.0, 1.0, 1.0, 0.0]
    # binned: the plan of each problem's bin of the router's predicted CoT accuracy
    p.pred[:, 0] = [0.0, 1.0, 0.0, 1.0]
    entry["bins"] = {"edges": [0.5], "budgets": {"8": [{"tau": None, "escalate": STRATS[1]},
                                                      {"tau": 0.5, "escalate": STRATS[1]}]}}
    acc, tokens, _, escalated = cascade_as_is(p, entry, GATE, PRM_TOKENS, np.zeros(4), PROMPT, budget=8)["binned"]
    assert acc.tolist() == [0.0, 1.0, 1.0, 1.0] and tokens.tolist() == [100.0, 113.0, 100.0, 113.0]
    plain = cascade_as_is(p, entry, GATE, PRM_TOKENS, np.zeros(4), PROMPT, budget=1)
    assert plain["fitted"][0].tolist() == p.label[:, 0].tolist()  # N = 1: the CoT alone
    assert cascade_as_is(p, {"budgets": {"8": entry["budgets"]["8"]}}, GATE, PRM_TOKENS, np.zeros(4), PROMPT, 4) is None


def test_rest_of_budget_options_widen_the_escalation_but_not_the_baselines():
    """with_rest adds pooled n = N - 1 strategies as escalation options: at N = 4 the cascade may run
    CoT + Best-of-3, the fixed strategies stay the sweep's, and the router never picks an option it
    has no prediction for."""
    import pandas as pd

    from ttsopt.train.fit.cascade import with_rest

    p = tiny_pair()
    p.extra["problem_ids"] = ["a", "b", "c", "d"]
    key = "best_of_n:n=3,agg=min,vote=prm_vote"
    rest = pd.DataFrame({"policy": "x", "prm": "calc", "problem_id": ["a", "b", "c", "d"], "strategy": key, "n": 3,
                         "label": [0.0, 1.0, 0.0, 1.0], "tokens": 80.0, "flops": 2 * PARAMS * 70.0})
    wide = with_rest(p, rest, "x", "calc")
    assert wide.strategies == [*STRATS, key] and wide.n.tolist() == [1, 4, 3]
    assert np.isnan(wide.pred[:, 2]).all() and p.label.shape == (4, 2)  # p itself is unchanged
    assert with_rest(p, rest, "x", "judge:x") is p  # no rows for that pair
    assert with_rest(p, rest.iloc[:3], "x", "calc") is p  # a problem without its pool: no options at all
    base = {"budgets": {"4": {"oracle": {"accuracy": 1.0}}},
            "curve": {"router": [{"flops": 5e7, "accuracy": 0.5}], "per_level_rule": [{"flops": 5e7, "accuracy": 0.5}],
                      "fixed": [{"strategy": s, "flops": float(p.flops[:, i].mean()),
                                 "accuracy": float(p.label[:, i].mean())} for i, s in enumerate(STRATS)]}}
    out = evaluate_cascade(p, GATE, PRM_TOKENS, np.zeros(4), PROMPT, base=base, options=wide)
    at4 = out["plain"]["budgets"]["4"]
    # CoT kept where the check passes (right), Best-of-3 where it fails (right): every problem right
    assert at4["accuracy"] == 1.0 and {c["escalate"] for c in at4["choices"]} == {key}
    assert at4["tokens"] == pytest.approx(np.mean([33.0, 33.0 + 80 - 20] * 2))
    assert at4["best_fixed_with_rest"] == at4["accuracy"] - at4["diff_vs_best_fixed"]  # Best-of-4 either way
    assert all(c["escalate"] == "router" for c in out["router"]["budgets"]["4"]["choices"])
    # a saved plan that escalates to it runs on unseen data; the router mode there never picks it
    from ttsopt.train.evaluation.cascade import cascade_as_is

    plan = {"budgets": {"4": {"tau": 0.5, "escalate": key, "router_tau": 0.5, "keep_value": -1.0}}}
    as_is = cascade_as_is(wide, plan, GATE, PRM_TOKENS, np.zeros(4), PROMPT, budget=4)
    assert as_is["fitted"][0].tolist() == [1.0] * 4
    assert as_is["router"][0].tolist() == [1.0, 0.0, 1.0, 0.0]  # nothing but the CoT fits N - 1 = 3 among
    # the predicted strategies (Best-of-4 is 4, the CoT again is excluded): doubted CoTs are kept


def _two_kinds_pair() -> _Pair:
    """20 problems in 2 folds: on the 'easy' half the CoT and Best-of-4 are both right, on the 'hard'
    half only Best-of-4; the check passes everywhere (it cannot tell them apart), the router's
    predicted CoT accuracy can (0.9 against 0.1)."""
    easy = np.arange(20) % 2 == 0
    label = np.stack([easy.astype(float), np.ones(20)], axis=1)
    tokens = np.array([[30.0, 100.0]] * 20)
    flops = 2 * PARAMS * np.array([[25.0, 90.0]] * 20)
    pred = np.stack([np.where(easy, 0.9, 0.1), np.full(20, 0.8)], axis=1)
    fold = (np.arange(20) // 2) % 2
    p = _Pair("x+calc", STRATS, np.array([1, 4]), label, pred, tokens, flops, fold=fold,
              bins=np.array(["a"] * 20), levels=np.array(["1"] * 20), policy_params=PARAMS)
    for f in (0, 1):  # the inner out-of-fold predictions exist on each fold's training rows only
        p.extra[f"inner_pred_{f}"] = np.where((fold != f)[:, None], pred, np.nan)
    return p


def test_the_binned_cascade_keeps_the_cot_where_the_router_expects_it_right_and_searches_elsewhere():
    from ttsopt.train.evaluation.cascade import _binned

    p = _two_kinds_pair()
    c = _matrices(p, np.full(20, 0.5), np.full(20, 3.0), np.zeros(20), np.full(20, 20.0))
    one = _apply(c, p, lambda tr: _choose(c, tr, c.n <= 8))
    binned = _binned(c, p, c.n <= 8)
    assert one[0].mean() == 1.0 and one[1].mean() == 100.0  # one plan for all: Best-of-4 everywhere
    acc, tokens, _, picks, escalated = binned
    assert acc.mean() == 1.0  # as accurate, for far less: the CoT where it is right, Best-of-4 where not
    # (where the CoT is expected right the cheapest plan is the CoT alone: no check, 30 tokens)
    assert tokens.tolist() == [30.0 if e else 100.0 for e in np.arange(20) % 2 == 0]
    assert {(q["bin"], q["tau"], q["escalate"]) for q in picks} >= {(1, None, STRATS[1]), (2, None, "cot")}


def test_the_artifact_carries_bins_of_the_out_of_fold_predictions_and_the_router_runs_them(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False)
    bins = router.cascade["bins"]
    assert len(bins["edges"]) == 4 and set(bins["budgets"]) == set(router.cascade["budgets"])
    assert all(len(plans) == 5 for plans in bins["budgets"].values())
    easy, hard = "What is 12 + 30?", "What is 21 + 4 * 6?"
    cot = router.keys.index("cot")
    score = {q: next(c.predicted_accuracy for c in router.route(q, Budget(n=8)).candidates if c.strategy == "cot")
             for q in (easy, hard)}
    assert score[easy] != score[hard]
    low, high = sorted((easy, hard), key=score.get)
    # two bins between the two questions: below, escalate without a check; above, check first
    bins["edges"] = [(score[low] + score[high]) / 2]
    bins["budgets"]["8"] = [{"tau": None, "escalate": "majority:n=4"}, {"tau": 0.5, "escalate": "majority:n=4"}]
    sols = dict(zip((low, high), router.solve_many([low, high], Budget(n=8), cascade=True)))  # True: binned
    assert sols[low].trace["cascade"]["mode"] == "binned" and sols[low].trace["cascade"]["bin"] == 0
    assert "first" not in sols[low].trace and sols[low].trace["escalation"]["strategy"] == "majority:n=4"
    assert sols[high].trace["cascade"]["bin"] == 1 and "first" in sols[high].trace
    assert sols[high].trace["cascade"]["predicted_cot_accuracy"] == pytest.approx(score[high])
    assert cot == router.keys.index("cot")
    router.cascade.pop("bins")  # an artifact without bins: True is the fitted plan, "binned" says why not
    assert router.solve(easy, Budget(n=8), cascade=True).trace["cascade"]["mode"] == "fitted"
    with pytest.raises(RouterError, match="no bins"):
        router.solve(easy, Budget(n=8), cascade="binned")


def _two_levels_pair() -> _Pair:
    """20 problems in 2 folds, levels "1" and "2" alternating: on level 1 the CoT and Best-of-4 are
    both right, on level 2 only Best-of-4; the check passes everywhere (it cannot tell them apart)."""
    level = np.where(np.arange(20) % 2 == 0, "1", "2")
    label = np.stack([(level == "1").astype(float), np.ones(20)], axis=1)
    tokens = np.array([[30.0, 100.0]] * 20)
    flops = 2 * PARAMS * np.array([[25.0, 90.0]] * 20)
    fold = (np.arange(20) // 2) % 2
    return _Pair("x+calc", STRATS, np.array([1, 4]), label, np.zeros_like(label), tokens, flops, fold=fold,
                 bins=np.array(["a"] * 20), levels=level, policy_params=PARAMS)


def test_the_level_cascade_chooses_per_level_on_training_problems_and_applies_the_predicted_level():
    from ttsopt.train.evaluation.cascade import _by_level

    p = _two_levels_pair()
    c = _matrices(p, np.full(20, 0.5), np.full(20, 3.0), np.zeros(20), np.full(20, 20.0))
    p.extra["level_pred"] = p.levels.copy()
    acc, tokens, _, picks, escalated = _by_level(c, p, c.n <= 8)
    assert acc.mean() == 1.0  # the CoT alone on level 1 (30 tokens), Best-of-4 alone on level 2
    assert tokens.tolist() == [30.0 if lv == "1" else 100.0 for lv in p.levels]
    assert {(q["level"], q["tau"], q["escalate"]) for q in picks} == {("1", None, "cot"), ("2", None, STRATS[1])}
    # a test problem goes by its *predicted* level: level-2 problems predicted as level 1 get the CoT
    p.extra["level_pred"] = np.full(20, "1")
    acc, tokens, _, _, _ = _by_level(c, p, c.n <= 8)
    assert acc.tolist() == (p.levels == "1").astype(float).tolist() and set(tokens) == {30.0}
    # a predicted level no training problem has takes the choice made on all of them (Best-of-4)
    p.extra["level_pred"] = np.full(20, "9")
    acc, tokens, _, picks, _ = _by_level(c, p, c.n <= 8)
    assert acc.mean() == 1.0 and set(tokens) == {100.0} and {q["level"] for q in picks} == {"9"}


def test_levels_are_predicted_from_the_text_by_a_model_fitted_on_the_other_folds_only():
    from ttsopt.train.evaluation.cascade import cross_fitted_levels

    p = _two_levels_pair()
    x = np.stack([(p.levels == "2").astype(float), np.arange(20) % 5], axis=1)  # column 0 tells the level
    p.extra["features"] = [x, x]
    assert cross_fitted_levels(p).tolist() == p.levels.tolist()
    # a level present only in the test fold cannot be predicted: no model saw it
    p.levels = np.where((p.fold == 1) & (p.levels == "2"), "3", p.levels)
    pred = cross_fitted_levels(p)
    assert "3" not in pred[p.fold == 1] and set(pred[p.fold == 1]) <= {"1", "2"}
    p.extra.pop("features")
    assert cross_fitted_levels(p) is None  # no features, no prediction (and no level variant)


def test_the_artifact_carries_a_level_model_and_the_router_runs_the_plan_of_the_predicted_level(tmp_path):
    import shutil

    from ttsopt.selector.artifact import ArtifactError, load_artifact

    router = rf.tiny_router(tmp_path, probe=False, levels=True, name="lv")
    assert router.artifact.levels is not None and router.default_cascade_mode == "level"
    plans = router.cascade["levels"]["budgets"]
    assert set(plans) == set(router.cascade["budgets"]) and all(set(v) == {"1", "2"} for v in plans.values())
    qs = ["What is 12 + 30?", "What is 7 * 8?", "What is 21 + 4 * 6?"]
    plans["8"] = {"1": {"tau": 0.5, "escalate": "majority:n=4"}, "2": {"tau": None, "escalate": "majority:n=2"}}
    sols = router.solve_many(qs, Budget(n=8), cascade=True)  # True: the level plan
    assert [s.trace["cascade"]["mode"] for s in sols] == ["level"] * 3
    assert [s.trace["cascade"]["level"] for s in sols] == [rf.question_level(q) for q in qs] == ["1", "1", "2"]
    assert "first" in sols[0].trace and "first" in sols[1].trace  # level 1 checks the CoT first
    assert "first" not in sols[2].trace and sols[2].trace["escalation"]["strategy"] == "majority:n=2"
    assert all(0.0 < s.trace["cascade"]["level_probability"] <= 1.0 for s in sols)
    # a level without a plan runs the budget's plan, and says so
    del plans["8"]["2"]
    assert router.solve(qs[2], Budget(n=8), cascade="level").trace["cascade"]["level_plan"] is False
    # a tampered level model is refused at load time
    copy = tmp_path / "tampered"
    shutil.copytree(router.path, copy)
    (copy / "levels.txt").write_text((copy / "levels.txt").read_text() + "\n")
    with pytest.raises(ArtifactError, match="level model"):
        load_artifact(copy)
    # without the level model, True falls back to the bins; "level" says why it cannot
    router.artifact.levels = None
    assert router.default_cascade_mode == "binned"
    with pytest.raises(RouterError, match="no level plans"):
        router.solve(qs[0], Budget(n=8), cascade="level")


def test_the_level_plan_is_the_default_only_where_every_level_has_enough_problems():
    from ttsopt.train.evaluation.cascade import default_variant_name
    from ttsopt.train.fit.cascade import MIN_LEVEL, level_plan_is_default

    assert level_plan_is_default(np.array(["1"] * MIN_LEVEL + ["2"] * MIN_LEVEL))
    assert not level_plan_is_default(np.array(["1"] * MIN_LEVEL + ["2"] * (MIN_LEVEL - 1)))
    assert not level_plan_is_default(np.array(["1"] * 50))  # one level: nothing to choose by
    report = {"plain": {}, "binned": {}, "level": {}, "levels": {"default": True}}
    assert default_variant_name(report) == "level"
    report["levels"]["default"] = False  # e.g. 8 problems per level: the binned plan runs
    assert default_variant_name(report) == "binned"
    assert default_variant_name({"plain": {}}) == "plain" and default_variant_name(None) is None
    # the artifact records the same choice: 40 synthetic questions leave 13 of level 2, too few; 60, 20
    for count, mode in ((40, "binned"), (60, "level")):
        table = rf.synthetic_table(probe=False, count=count, levels=True)
        entry = fit_cascade(table, rf.synthetic_gates(count), pred=np.zeros(len(table)))["scripted+calc"]
        assert "levels" in entry and entry["default_mode"] == mode


def test_an_artifact_trained_without_levels_has_no_level_model(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False)
    assert router.artifact.levels is None and "levels" not in router.cascade
    assert router.artifact.manifest["level_model"] is None and router.default_cascade_mode == "binned"


def test_a_saved_level_plan_on_unseen_data_runs_by_the_levels_given():
    from ttsopt.train.evaluation.cascade import cascade_as_is

    p = tiny_pair()
    entry = {"budgets": {"8": {"tau": None, "escalate": STRATS[1]}},
             "levels": {"budgets": {"8": {"1": {"tau": 0.5, "escalate": STRATS[1]},
                                          "2": {"tau": None, "escalate": "cot"}}}}}
    out = cascade_as_is(p, entry, GATE, PRM_TOKENS, np.zeros(4), PROMPT, budget=8,
                        levels=np.array(["1", "2", "1", "7"]))
    acc, tokens, _, escalated = out["level"]
    # problem 0 (level 1): CoT kept (33); 1 (level 2): the CoT alone (30); 2: kept; 3 (level 7: no plan):
    # the budget's plan, Best-of-4 alone (100)
    assert tokens.tolist() == [33.0, 30.0, 33.0, 100.0] and acc.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert "level" not in cascade_as_is(p, entry, GATE, PRM_TOKENS, np.zeros(4), PROMPT, budget=8)


def test_a_router_trained_with_probes_runs_its_level_plan_without_drawing_a_probe(tmp_path):
    router = rf.tiny_router(tmp_path, probe=True, levels=True, name="lv-probe")
    assert router.default_cascade_mode == "level"  # level plans need no out-of-fold predictions
    plans = router.cascade["levels"]["budgets"]["8"]
    for level in plans:
        plans[level] = {"tau": 0.5, "escalate": "majority:n=4"}
    router.policy.calls.clear()
    sol = router.solve("What is 21 + 4 * 6?", Budget(n=8), cascade=True)
    assert sol.trace["cascade"]["mode"] == "level" and sol.trace["cascade"]["level"] == "2"
    # the greedy CoT only (and the escalation where its check fails): no k-sample probe was drawn
    assert all(params.n != rf.PROBE_K for _, params in router.policy.calls)
