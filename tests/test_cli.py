"""The `ttsopt` command: help everywhere, a real run on a tiny model, clear errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ttsopt.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", ["run", "sweep", "prm-eval", "models", "version"])
def test_every_subcommand_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_run_writes_one_result_per_problem_and_resumes(tmp_path, tiny_model_dir):
    out = tmp_path / "r.jsonl"
    args = ["run", "--policy", f"hf:{tiny_model_dir}", "--strategy", "majority", "--n", "2", "--limit", "3",
            "--max-tokens", "8", "--batch", "2", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["problem_id"] for r in rows] == ["arith-s0-L1-0000", "arith-s0-L1-0001", "arith-s0-L1-0002"]
    assert all(r["strategy"] == "majority:n=2" and r["compute"]["policy_generated_tokens"] > 0 for r in rows)
    assert "accuracy" in result.output
    again = runner.invoke(app, [*args, "--resume"])
    assert again.exit_code == 0, again.output
    assert len(out.read_text().splitlines()) == 3  # nothing redone


def test_run_refuses_a_prm_strategy_without_a_prm():
    result = runner.invoke(app, ["run", "--strategy", "beam", "--n", "4", "--m", "2"])
    assert result.exit_code == 2
    assert "needs a PRM" in result.output


def test_run_names_unknown_pairs_and_bad_budgets():
    assert "unknown pair" in runner.invoke(app, ["run", "--pair", "nope"]).output
    bad = runner.invoke(app, ["run", "--strategy", "beam", "--n", "6", "--m", "4", "--prm", "calc"])
    assert bad.exit_code == 2 and "multiple" in bad.output


def test_prm_eval_prints_f1_and_its_parts(shared_data):
    result = runner.invoke(app, ["prm-eval", "--prm", "calc", "--data", str(shared_data / "processbench_gsm8k.json"),
                                 "--limit", "40"])
    assert result.exit_code == 0, result.output
    assert "F1" in result.output and "error-acc" in result.output and "correct-acc" in result.output


def test_sweep_names_an_unknown_preset():
    result = runner.invoke(app, ["sweep", "no-such-preset"])
    assert result.exit_code == 2 and "arith-embedded" in result.output


def test_sweep_refuses_pairs_and_engines_the_config_does_not_have(tmp_path):
    result = runner.invoke(app, ["sweep", "arith-smoke", "--pairs", "gemma3-270m+judge", "--store",
                                 str(tmp_path / "s.sqlite"), "--no-embeddings"])
    assert result.exit_code == 2 and "smollm2-135m+calc" in result.output
    result = runner.invoke(app, ["sweep", "arith-smoke", "--engine", "tgi", "--store", str(tmp_path / "s.sqlite")])
    assert result.exit_code == 2 and "engine" in result.output
    for bad in ("x", "3-1", "-2"):
        result = runner.invoke(app, ["sweep", "arith-smoke", "--chunks", bad, "--store", str(tmp_path / "s.sqlite")])
        assert result.exit_code == 2 and "--chunks" in result.output
