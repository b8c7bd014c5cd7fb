"""The selector: its training table, grouped folds, the leak guard, training and the artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import router_fixtures as rf
from fakes import HashPRM, LevelPolicy

from ttsopt.data import Problem
from ttsopt.selector.artifact import ArtifactError, load_artifact
from ttsopt.selector.pipeline import FeaturePipeline, LeakError, check_inputs
from ttsopt.train.sweep.config import config_from_dict
from ttsopt.train.sweep.snapshot import export_snapshot
from ttsopt.train.sweep.store import OutcomeStore
from ttsopt.train.sweep.driver import run_sweep, write_problem_features
from ttsopt.train.fit.table import fold_lists, load_training_table
from ttsopt.train.fit.tuning import TrainSettings, predict, tune_and_fit


CONFIG = {"name": "sel", "problems": "builtin:arith", "pairs": [{"policy": "levels", "prm": "calc"}],
          "methods": {"cot": {}, "majority": {}, "best_of_n": {"agg": ["min"], "vote": ["prm_vote"]},
                      "beam": {"m": [2]}},
          "budgets": [1, 2, 4], "n_subsets": 8, "chunk_size": 6, "max_depth": 3, "probe": {"k": 4, "seed": 7}}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    from ttsopt.train.sweep.units import ChunkWorker

    tmp = tmp_path_factory.mktemp("sel")
    problems = [Problem(f"p{i}", f"How much is {i} plus {i} {'and more ' * (i % 3)}?", str(2 * i), "test",
                        {"level": 1 + i % 3}) for i in range(36)]
    problems.append(Problem("dup", problems[0].question, problems[0].answer, "other", {"level": 1}))
    policy = LevelPolicy(problems)
    cfg = config_from_dict(CONFIG)
    with OutcomeStore(tmp / "s.sqlite") as store:
        run_sweep(cfg, store, problems, workers={"levels": ChunkWorker(cfg, "levels", ["calc"], policy=policy,
                                                                       prms={"calc": HashPRM()})})
        export_snapshot(store, tmp / "snap")
    write_problem_features(problems, tmp / "snap", embeddings=False)
    return tmp / "snap"


def test_the_training_table_has_one_row_per_pair_problem_and_strategy(snapshot):
    table = load_training_table([snapshot])
    assert not table.duplicated(["policy", "prm", "problem_id", "strategy"]).any()
    assert table["label"].between(0, 1).all()
    assert {"level", "difficulty", "pass_at_1"} <= set(table.columns)  # kept for evaluation only
    x = FeaturePipeline.fit(table).transform(table)
    assert not {"level", "difficulty", "pass_at_1", "kind", "label"} & set(x.columns)


def test_an_oracle_column_as_input_is_refused():
    with pytest.raises(LeakError, match="difficulty"):
        check_inputs(["txt_chars", "difficulty"])
    with pytest.raises(LeakError, match="pass_at_1"):
        check_inputs(["pass_at_1"])


def test_no_question_is_ever_on_both_sides_of_a_split(snapshot):
    table = load_training_table([snapshot])
    assert table.loc[table["problem_id"] == "dup", "question_key"].iloc[0] == \
        table.loc[table["problem_id"] == "p0", "question_key"].iloc[0]
    for train, test in fold_lists(table, 5, seed=3):
        assert not set(table["question_key"].iloc[train]) & set(table["question_key"].iloc[test])
        held_out = set(table["problem_id"].iloc[test])
        assert ("dup" in held_out) == ("p0" in held_out)  # the same text under two ids: one side only


def test_a_small_training_run_is_deterministic_and_learns_the_levels(snapshot):
    table = load_training_table([snapshot], probe_k=4)
    settings = TrainSettings(trials=3, folds=3, n_components=0, probe_k=4)
    a, b = tune_and_fit(table, settings), tune_and_fit(table, settings)
    assert np.array_equal(predict(a, table), predict(b, table))
    pred = pd.Series(predict(a, table), index=table.index)
    majority4 = table["strategy"] == "majority:n=4"
    by_level = pred[majority4].groupby(table.loc[majority4, "level"].astype(int)).mean()
    assert by_level[1] > by_level[2] > by_level[3]  # the probe's agreement tells the levels apart


def test_the_artifact_round_trips_and_a_tampered_one_is_refused(snapshot, tmp_path):
    from ttsopt.train.fit.build import train_router

    out = tmp_path / "router"
    manifest = train_router([snapshot], out, TrainSettings(trials=2, folds=3, n_components=0))
    art = load_artifact(out)
    assert set(art.catalogue) == {"levels+calc"} and manifest["training_data"]["questions"] == 36
    table = load_training_table([snapshot])
    assert np.allclose(art.booster.predict(art.pipeline.transform(table)),
                       art.booster.predict(art.pipeline.transform(table)))
    # a second `ttsopt train` resumes the study
    again = train_router([snapshot], out, TrainSettings(trials=2, folds=3, n_components=0))
    assert again["metrics"]["trials_in_study"] == 4
    model = out / "model.txt"
    model.write_text(model.read_text().replace("num_leaves=", "num_leaves=1", 1))
    with pytest.raises(ArtifactError, match="SHA-256"):
        load_artifact(out)
    manifest_path = out / "manifest.json"
    m = json.loads(manifest_path.read_text())
    m["schema_version"] = 99
    manifest_path.write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="schema"):
        load_artifact(out)
    assert not list(out.glob("*.pkl")) and not list(out.glob("*.pickle"))


def test_gate_scores_are_the_prm_on_each_stored_cot_and_fit_a_cascade_plan(snapshot):
    from ttsopt.train.fit.cascade import cot_gates, fit_cascade

    # this sweep's "calc" was a 10-parameter stand-in: a PRM with weights is not run unless asked
    assert cot_gates(snapshot).empty
    gates = cot_gates(snapshot, score_models=True)
    table = load_training_table([snapshot])
    assert sorted(gates["problem_id"]) == sorted(table["problem_id"].unique())
    assert gates["gate"].between(0, 1).all() and (gates["prompt_tokens"] > 0).all()
    assert (gates["gate_prm_flops"] == 2 * 10 * gates["gate_prm_tokens"]).all()  # charged by its parameters
    plan = fit_cascade(table, gates)["levels+calc"]["budgets"]
    assert plan["1"]["tau"] is None  # at N = 1 a CoT and a search do not fit: one strategy alone
    assert all(0.0 <= b["train_accuracy"] <= 1.0 for b in plan.values())


def test_training_does_not_depend_on_the_order_a_sweep_wrote_its_rows(snapshot):
    from ttsopt.train.fit.table import canonical_order

    table = load_training_table([snapshot])
    shuffled = table.sample(frac=1.0, random_state=3).reset_index(drop=True)
    pd.testing.assert_frame_equal(canonical_order(shuffled), table)
    settings = TrainSettings(trials=2, folds=3)
    a = tune_and_fit(table, settings)
    b = tune_and_fit(canonical_order(shuffled), settings)
    assert a.cv_loss == b.cv_loss
    np.testing.assert_array_equal(predict(a, table), predict(b, table))


def test_the_regret_the_tuning_can_minimise_is_the_argmax_decision_scored_by_hand():
    import pandas as pd

    from ttsopt.train.fit.tuning import _Regret

    # one problem, three strategies: A (n=1) label 0.2, B (n=2) 0.9, C (n=2) 0.9 but more tokens
    table = pd.DataFrame({"policy": "p", "prm": "calc", "problem_id": "q", "n": [1, 2, 2],
                          "label": [0.2, 0.9, 0.9], "tokens": [10.0, 20.0, 30.0]})
    regret = _Regret.of(table)
    # N = 1: only A fits (regret 0); N >= 2: the oracle is 0.9
    assert regret(np.array([0.5, 0.8, 0.1])) == pytest.approx(0.0)  # B chosen at N >= 2
    assert regret(np.array([0.9, 0.1, 0.2])) == pytest.approx(4 * 0.7 / 5)  # A chosen at every N
    assert regret(np.array([0.1, 0.5, 0.5])) == pytest.approx(0.0)  # a tie goes to the cheaper B


def test_tuning_for_regret_keeps_its_own_study_and_says_what_it_minimised(tmp_path):
    from ttsopt.train.fit.tuning import TrainSettings, tune_and_fit

    with pytest.raises(ValueError, match="tune_metric"):
        TrainSettings(tune_metric="accuracy")
    table = rf.synthetic_table(probe=False)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    loss = tune_and_fit(table, TrainSettings(trials=2, folds=3, n_components=2), storage=storage)
    regret = tune_and_fit(table, TrainSettings(trials=2, folds=3, n_components=2, tune_metric="regret"),
                          storage=storage)
    assert loss.trials == 2 and regret.trials == 2  # its own study: not resumed from the cross-entropy one
    again = tune_and_fit(table, TrainSettings(trials=1, folds=3, n_components=2, tune_metric="regret"),
                         storage=storage)
    assert again.trials == 3  # ... which a second call with the same metric resumes
    assert 0.0 <= regret.cv_loss <= 1.0  # a regret of labels in [0, 1]
