"""The logic the `ttsopt` command used to carry, now held once in the library: the seen/unseen
evaluation choice, the --pairs check, and `ttsopt run`'s JSONL batches (append, fsync, resume)."""

from __future__ import annotations

import json

import pytest
from fakes import LevelPolicy

from ttsopt.data import load_problems
from ttsopt.data.files import append_jsonl, read_jsonl
from ttsopt.search import Strategy
from ttsopt.search.run_file import pending, results, run_to_jsonl
from ttsopt.train.evaluation.mode import (
    AS_IS,
    CROSS_FITTED,
    EvaluationModeError,
    evaluation_mode,
    router_settings,
)
from ttsopt.train.sweep.config import check_pairs, config_from_dict, pair_names

MANIFEST = {"training_data": {"question_keys": ["a", "b", "c"]},
            "settings": {"trials": 30, "folds": 5, "seed": 0, "n_components": 8, "probe_k": None,
                         "timeout_s": None, "tune_metric": "cross_entropy"}}


def test_the_evaluation_mode_is_cross_fitted_on_training_questions_and_as_is_on_new_ones():
    assert evaluation_mode(MANIFEST, ["a", "b", "a"]) == CROSS_FITTED
    assert evaluation_mode(MANIFEST, ["x", "y"]) == AS_IS
    with pytest.raises(EvaluationModeError, match="1 of these 2 questions .* separately"):
        evaluation_mode(MANIFEST, ["a", "x"])
    with pytest.raises(ValueError, match="pass --eval"):
        evaluation_mode(MANIFEST, ["a", "x"], hint="evaluate them separately and pass --eval")


def test_a_router_that_does_not_list_its_questions_is_refused_unless_told_what_to_assume():
    old = {"training_data": {}, "settings": MANIFEST["settings"]}
    with pytest.raises(EvaluationModeError, match="r1 does not list its training questions"):
        evaluation_mode(old, ["a"], name="r1")
    assert evaluation_mode(old, ["a"], unlisted=CROSS_FITTED) == CROSS_FITTED
    assert evaluation_mode({}, ["a"], unlisted=CROSS_FITTED) == CROSS_FITTED


def test_router_settings_are_the_routers_with_what_is_given_and_checked():
    s = router_settings(MANIFEST, trials=2, folds=None, seed=7)
    assert (s.trials, s.folds, s.seed, s.n_components) == (2, 5, 7, 8)
    with pytest.raises(ValueError, match="tune_metric"):
        router_settings(MANIFEST, tune_metric="accuracy")


def test_pairs_are_checked_against_the_config_in_the_order_given():
    cfg = config_from_dict({"name": "t", "problems": "builtin:arith",
                            "pairs": [{"policy": "coin", "prm": "hash"}, {"policy": "coin", "prm": "hash2"}],
                            "methods": {"majority": {}}, "budgets": [1, 2]})
    assert pair_names(" coin+hash2, ,coin+hash ") == ["coin+hash2", "coin+hash"]
    assert check_pairs(cfg, ["coin+hash2"]) == ["coin+hash2"]
    with pytest.raises(ValueError, match=r"^--pairs z\+z, a\+a not in t; its pairs: coin\+hash, coin\+hash2$"):
        check_pairs(cfg, ["z+z", "coin+hash", "a+a", "z+z"], label="--pairs")


def test_jsonl_appends_survive_a_torn_last_line(tmp_path):
    out = tmp_path / "sub" / "r.jsonl"
    append_jsonl(out, [{"i": 0}, {"i": 1}])
    with out.open("a") as fh:
        fh.write('{"i": 2, "tor')  # a writer killed mid-line
    append_jsonl(out, [{"i": 3}])
    assert read_jsonl(out) == [{"i": 0}, {"i": 1}, {"i": 3}]


def test_a_run_writes_batch_by_batch_and_resumes_where_it_stopped(tmp_path):
    problems = load_problems("builtin:arith", limit=5, seed=0)
    policy, out = LevelPolicy(problems), tmp_path / "run.jsonl"
    strategy = Strategy("majority", n=2)
    batches = []
    run_to_jsonl(problems[:3], strategy, policy, None, out, policy_spec="levels", prm_spec="calc", seed=0, batch=2,
                 progress=batches.append)
    assert batches == [2, 1]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == [p.id for p in problems[:3]]
    assert all(r["policy"] == "levels" and r["prm"] is None and r["gold"] for r in rows)  # majority uses no PRM
    todo, done = pending(problems, out, strategy, resume=True)
    assert done == 3 and [p.id for p in todo] == [p.id for p in problems[3:]]
    assert len(pending(problems, out, strategy, resume=False)[0]) == 5
    assert pending(problems, out, Strategy("majority", n=4), resume=True) == (problems, 0)
    run_to_jsonl(todo, strategy, policy, None, out, policy_spec="levels", prm_spec=None, seed=0, batch=2)
    assert [r["problem_id"] for r in results(out, strategy, problems)] == [p.id for p in problems]
    assert results(tmp_path / "none.jsonl", strategy) == []
    # each batch draws from its own seed stream: the same batches redo the same draws
    again = tmp_path / "again.jsonl"
    run_to_jsonl(problems[:3], strategy, policy, None, again, policy_spec="levels", prm_spec=None, seed=0, batch=2)
    assert [r["answer"] for r in read_jsonl(again)] == [r["answer"] for r in read_jsonl(out)[:3]]
