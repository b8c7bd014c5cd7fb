"""``train/report/explain.py``: importance by factor, LightGBM's own SHAP, and one problem's candidates."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lightgbm")
from fakes import HashPRM, LevelPolicy, blake2b32  # noqa: E402
from ttsopt.data import Problem  # noqa: E402
from ttsopt.selector.artifact import load_artifact  # noqa: E402
from ttsopt.train.report.explain import (  # noqa: E402
    FACTORS, contributions, explain, explain_rows, factor_of, gain_importance, global_importance, group_sums, router_decisions)
from ttsopt.train.fit.table import load_training_table  # noqa: E402
from ttsopt.train.fit.tuning import TrainSettings  # noqa: E402


CONFIG = {"name": "explain", "problems": "builtin:arith", "pairs": [{"policy": "levels", "prm": "calc"}],
          "methods": {"cot": {}, "majority": {}, "best_of_n": {"agg": ["min"], "vote": ["prm_vote"]},
                      "beam": {"m": [2]}},
          "budgets": [1, 2, 4], "n_subsets": 8, "chunk_size": 6, "max_depth": 3, "probe": {"k": 4, "seed": 7}}


def make_snapshot(folder: Path, n: int = 36) -> Path:
    from ttsopt.train.sweep.config import config_from_dict
    from ttsopt.train.sweep.snapshot import export_snapshot
    from ttsopt.train.sweep.store import OutcomeStore
    from ttsopt.train.sweep.driver import run_sweep, write_problem_features
    from ttsopt.train.sweep.units import ChunkWorker

    words = ["", "and then twice more ", "of each of the remaining "]
    problems = [Problem(f"p{i}", f"How much is {i} plus {i} {words[i % 3]}?", str(2 * i), "test",
                        {"level": 1 + i % 3}) for i in range(n)]
    cfg = config_from_dict(CONFIG)
    with OutcomeStore(folder / "s.sqlite") as store:
        run_sweep(cfg, store, problems, workers={"levels": ChunkWorker(cfg, "levels", ["calc"],
                                                                       policy=LevelPolicy(problems),
                                                                       prms={"calc": HashPRM(blake2b32)})})
        export_snapshot(store, folder / "snap")
    write_problem_features(problems, folder / "snap", embeddings=False)
    return folder / "snap"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    return make_snapshot(tmp_path_factory.mktemp("explain"))


@pytest.fixture(scope="module")
def router(snapshot, tmp_path_factory) -> Path:
    from ttsopt.train.fit.build import train_router

    out = tmp_path_factory.mktemp("router") / "r"
    # an in-memory study: Optuna's pruning callback commits every boosting round, slow on a busy disk
    train_router([snapshot], out, TrainSettings(trials=2, folds=3, n_components=0), storage="sqlite:///:memory:")
    return out


def test_every_input_column_belongs_to_one_of_the_papers_factors(router):
    columns = load_artifact(router).pipeline.columns
    assert {factor_of(c) for c in columns} <= set(FACTORS)
    assert factor_of("policy_log10_params") == "policy" and factor_of("prm_family") == "PRM"
    assert factor_of("probe_agreement") == factor_of("txt_chars") == factor_of("emb_3") == "difficulty"
    assert factor_of("strategy_n") == factor_of("strategy_log2_n") == "budget"
    assert factor_of("strategy_m") == factor_of("strategy_vote") == factor_of("strategy_method") == "strategy"


def test_gain_by_factor_adds_up_to_the_boosters_total(router):
    art = load_artifact(router)
    gain = gain_importance(art.booster)
    total = float(art.booster.feature_importance("gain").sum())
    assert total > 0
    assert sum(gain["by_factor"].values()) == pytest.approx(total)
    assert gain["total"] == pytest.approx(total)
    assert sum(gain["share"].values()) == pytest.approx(1.0)


def test_shap_rows_add_up_to_the_raw_score_and_groups_to_the_rows(router, snapshot):
    art = load_artifact(router)
    table = load_training_table([snapshot])
    x = art.pipeline.transform(table)
    contrib = contributions(art.booster, x)
    raw = art.booster.predict(x, raw_score=True)
    np.testing.assert_allclose(contrib.sum(axis=1), raw, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(1 / (1 + np.exp(-raw)), art.booster.predict(x), rtol=1e-9)  # cross_entropy: sigmoid
    groups = group_sums(contrib[:, :-1], list(x.columns))
    np.testing.assert_allclose(sum(groups.values()), contrib[:, :-1].sum(axis=1), atol=1e-9)


def test_global_importance_shares_and_the_choice_view(router, snapshot):
    art = load_artifact(router)
    table = load_training_table([snapshot])
    imp = global_importance(art.booster, art.pipeline, table)
    assert imp["rows"] == len(table) and imp["problems"] == table["problem_id"].nunique()
    for key in ("shap_prediction", "shap_choice"):
        assert sum(imp[key]["share"].values()) == pytest.approx(1.0)
    # the only pair makes the pair descriptors constant, and a constant column cannot move anything
    assert imp["shap_prediction"]["mean_abs"]["policy"] == pytest.approx(0.0, abs=1e-12)
    # a strategy column varies within a problem; its centred SHAP is what separates strategies
    by_name = {f["feature"]: f for f in imp["features"]}
    assert set(by_name) == set(art.pipeline.columns)
    assert imp["shap_choice"]["mean_abs"]["budget"] + imp["shap_choice"]["mean_abs"]["strategy"] > 0


def test_a_sample_keeps_whole_problems(router, snapshot):
    art = load_artifact(router)
    table = load_training_table([snapshot])
    imp = global_importance(art.booster, art.pipeline, table, max_rows=100, seed=1)
    per_problem = len(table) / table["problem_id"].nunique()
    assert imp["rows"] == imp["problems"] * per_problem < len(table)


def test_one_problem_ranks_its_candidates_like_the_booster(router, snapshot):
    art = load_artifact(router)
    table = load_training_table([snapshot])
    result = explain(router, [snapshot], problem="p4", budget=2, top=3)
    (p,) = result["problems"]
    rows = table[(table["problem_id"] == "p4") & (table["n"] <= 2)]
    expected = dict(zip(rows["strategy"], art.booster.predict(art.pipeline.transform(rows))))
    got = {c["strategy"]: c["predicted"] for c in p["candidates"]}
    assert got == pytest.approx(expected)
    preds = [c["predicted"] for c in p["candidates"]]
    assert preds[0] == max(preds) and all(c["n"] <= 2 for c in p["candidates"])
    assert p["winner"] == p["candidates"][0]["strategy"]
    ties = [c for c in p["candidates"] if c["predicted"] >= max(preds) - 1e-12]
    assert p["candidates"][0]["tokens"] == min(c["tokens"] for c in ties)  # ties to the cheaper
    observed = dict(zip(rows["strategy"], rows["label"]))
    assert all(c["observed"] == pytest.approx(observed[c["strategy"]]) for c in p["candidates"])
    # the winner's contributions are its raw score, less the expected value
    win = p["candidates"][0]
    assert sum(p["winner_by_factor"].values()) + p["expected_value"] == pytest.approx(win["raw_score"])
    assert win["raw_score"] == pytest.approx(math.log(win["predicted"] / (1 - win["predicted"])))
    assert len(p["winner_features"]) == 3
    assert sorted((abs(f["shap"]) for f in p["winner_features"]), reverse=True) == [abs(f["shap"]) for f in
                                                                                   p["winner_features"]]
    assert p["difficulty"] in ("easy", "medium", "hard")


def test_a_raw_question_gets_the_same_features_as_the_offline_table(router, snapshot):
    import pandas as pd

    question = pd.read_parquet(snapshot / "problems.parquet").set_index("problem_id").loc["p7", "question"]
    by_id = explain(router, [snapshot], problem="p7", budget=4, max_rows=1)["problems"][0]
    by_text = explain(router, question=question, budget=4)["problems"][0]
    assert [c["strategy"] for c in by_text["candidates"]] == [c["strategy"] for c in by_id["candidates"]]
    expected = [c["predicted"] for c in by_id["candidates"]]
    assert [c["predicted"] for c in by_text["candidates"]] == pytest.approx(expected)
    assert all(c["observed"] is None for c in by_text["candidates"])


def test_bad_requests_say_what_is_wrong(router, snapshot, tmp_path):
    from ttsopt.train.fit.build import train_router

    with pytest.raises(ValueError, match="not in the data"):
        explain(router, [snapshot], problem="nope")
    with pytest.raises(ValueError, match="unknown pair"):
        explain(router, [snapshot], problem="p1", pair="other+calc")
    with pytest.raises(ValueError, match="fits budget"):
        explain(router, [snapshot], problem="p1", budget=0)
    probe_router = tmp_path / "probe"
    train_router([snapshot], probe_router, TrainSettings(trials=1, folds=3, n_components=0, probe_k=4),
                 storage="sqlite:///:memory:")
    with pytest.raises(ValueError, match="probe"):
        explain(probe_router, question="How much is 1 plus 1?")


def test_the_decisions_respect_the_budget_and_follow_the_predictions(router, snapshot):
    art = load_artifact(router)
    table = load_training_table([snapshot])
    decisions = router_decisions(art, table, budgets=[1, 2, 4])
    assert len(decisions) == 3 * table["problem_id"].nunique()
    n_of = dict(zip(table["strategy"], table["n"]))
    assert all(n_of[s] <= b for s, b in zip(decisions["strategy"], decisions["budget"]))
    at4 = decisions[decisions["budget"] == 4].set_index("problem_id")["strategy"]
    for pid, rows in table.groupby("problem_id"):  # the same rule as one problem's explanation, ties included
        assert at4[pid] == explain_rows(art, rows, 4, top=1)["winner"], pid


def test_the_command_prints_tables_and_writes_json(router, snapshot, tmp_path):
    from typer.testing import CliRunner

    from ttsopt.cli import app

    out = tmp_path / "explain.json"
    res = CliRunner().invoke(app, ["explain", "--router", str(router), "--data", str(snapshot), "--problem", "p5",
                                   "--budget", "4", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "Importance by factor" in res.output and "wins" in res.output
    data = json.loads(out.read_text())
    assert data["problems"][0]["problem_id"] == "p5" and data["global"]["rows"] > 0
    res = CliRunner().invoke(app, ["explain", "--router", str(router)])
    assert res.exit_code == 2

