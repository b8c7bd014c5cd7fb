"""The quickstart: its summary table, when a stage counts as done, and (slow) the whole loop resuming."""

from __future__ import annotations

import json

import pytest

from ttsopt.train.quickstart import EVAL_FORMAT, QuickstartSettings, _eval_is_current, run_quickstart, summary


def _report(router=0.5, fixed=0.4, oracle=0.6):
    budget = {"router": {"accuracy": router, "ci95": [-0.05, 0.25]}, "best_fixed": {"accuracy": fixed, "flops": 3e11},
              "oracle": {"accuracy": oracle}, "gap_recovered": (router - fixed) / (oracle - fixed)}
    return {"mode": "cross-fitted", "folds": 5, "gap_recovered": 0.5, "brier": 0.1,
            "pairs": {"p+calc": {"budgets": {"4": budget},
                                 "curve": {"aiq": {"router": 0.41, "per_level_rule": 0.4, "fixed": 0.39,
                                                   "oracle": 0.5}},
                                 "cascade": {"binned": {"budgets": {"4": {"accuracy": 0.45, "ci95": [0.01, 0.09],
                                                                          "flops": 1e11, "escalated": 0.4}},
                                                        "curve": {"aiq": 0.42}}}}}}


def test_the_summary_has_one_row_per_pair_and_budget_with_the_router_its_ci_and_the_baselines():
    text = summary(_report())
    row = next(line for line in text.splitlines() if line.startswith("| p+calc | 4 |"))
    assert row == "| p+calc | 4 | 0.500 | [-0.050, +0.250] | 0.400 | 0.600 | +0.50 |"
    assert "router 0.410, per-level rule 0.400, fixed strategies 0.390, oracle 0.500, verify-first cascade 0.420" in text
    cascade = [line for line in text.splitlines() if line.startswith("| p+calc | 4 |")][1]
    assert cascade == "| p+calc | 4 | 0.450 | [+0.010, +0.090] | 300 → 100 | 40% |"


def test_an_evaluation_counts_as_done_only_for_the_same_data_and_trials(tmp_path):
    path = tmp_path / "eval.json"
    assert not _eval_is_current(path, "h", 10)
    path.write_text("{not json")
    assert not _eval_is_current(path, "h", 10)
    path.write_text(json.dumps({"training_data_hash": "h", "settings": {"trials": 10}}))
    assert not _eval_is_current(path, "h", 10)  # an older evaluation, without the sections added since
    path.write_text(json.dumps({"training_data_hash": "h", "settings": {"trials": 10}, "eval_format": EVAL_FORMAT}))
    assert _eval_is_current(path, "h", 10)
    assert not _eval_is_current(path, "other", 10) and not _eval_is_current(path, "h", 3)


def test_a_limit_that_cuts_a_chunk_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="multiple of the sweep's chunk_size"):
        run_quickstart(QuickstartSettings(out=tmp_path, limit=7))
    assert not (tmp_path / "outcomes.sqlite").exists()


@pytest.mark.slow
def test_the_whole_loop_runs_and_a_rerun_skips_every_stage(tmp_path):
    settings = QuickstartSettings(out=tmp_path / "qs", limit=10, trials=2, workers=2)
    first = run_quickstart(settings)
    assert first.report is not None and first.report.is_file() and first.router.is_dir()
    report = json.loads(first.eval_json.read_text())
    assert set(report["pairs"]) == {"smollm2-135m+calc"}
    again = run_quickstart(settings)
    assert {"sweep", "train", "evaluate"} <= set(again.skipped)
