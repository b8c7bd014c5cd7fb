"""``ttsopt report``: one self-contained HTML page with every figure, on a tiny sweep and router."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest

pytest.importorskip("lightgbm")
pytest.importorskip("matplotlib")
from test_explain import make_snapshot  # noqa: E402

FIGURES = ("accuracy_by_budget", "accuracy_vs_flops", "decision_map", "router_vs_baselines", "calibration",
           "strategy_shares", "importance")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    from ttsopt.train.fit.build import train_router
    from ttsopt.train.fit.tuning import TrainSettings

    tmp = tmp_path_factory.mktemp("report")
    snap = make_snapshot(tmp)  # the scripted sweep of test_explain.py: one snapshot builder for both
    train_router([snap], tmp / "router", TrainSettings(trials=1, folds=3, n_components=0),
                 storage="sqlite:///:memory:")
    return snap, tmp / "router"


def _images(page: str) -> dict[str, bytes]:
    found = re.findall(r"<figure id='([a-z_]+)'>.*?src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page, re.S)
    return {name: base64.b64decode(data) for name, data in found}


def _assert_self_contained(page: str) -> None:
    assert not re.search(r"<(script|link|iframe)\b", page, re.I)
    srcs = re.findall(r"""\b(?:src|href)\s*=\s*['"]([^'"]*)""", page, re.I)
    assert srcs and all(s.startswith("data:") for s in srcs), srcs
    assert "url(" not in page


@pytest.fixture(scope="module")
def evaluated(tiny, tmp_path_factory) -> Path:
    """A report whose evaluation ran here (the slow part: cross-fitting), for the others to reuse."""
    from ttsopt.train.report.html import build_report

    snap, router = tiny
    return build_report(router, [snap], tmp_path_factory.mktemp("evaluated") / "report", trials=1, folds=2, dpi=40)


def test_without_an_evaluation_one_is_run_and_saved_next_to_the_page(evaluated):
    evaluation = json.loads((evaluated.parent / "eval.json").read_text())
    assert evaluation["mode"] == "cross-fitted" and "levels+calc" in evaluation["pairs"]
    text = evaluated.read_text()
    _assert_self_contained(text)
    assert set(_images(text)) == set(FIGURES)


def test_the_report_builds_in_seconds_as_one_self_contained_page(tiny, evaluated, tmp_path):
    from ttsopt.train.report.html import build_report

    snap, router = tiny
    start = time.perf_counter()
    page = build_report(router, [snap], tmp_path / "report", eval_path=evaluated.parent / "eval.json")
    seconds = time.perf_counter() - start
    assert seconds < 30, f"{seconds:.1f} s"
    assert page == tmp_path / "report" / "index.html"
    assert not (tmp_path / "report" / "eval.json").exists()  # given, not run
    text = page.read_text()
    _assert_self_contained(text)
    images = _images(text)
    assert set(images) == set(FIGURES)
    for name, png in images.items():
        assert png[:8] == b"\x89PNG\r\n\x1a\n", name
        assert (tmp_path / "report" / "figures" / f"{name}.png").read_bytes() == png
    evaluation = json.loads((evaluated.parent / "eval.json").read_text())
    assert "levels+calc" in text and "gap recovered" in text and "What drives the choice" in text
    for n in evaluation["pairs"]["levels+calc"]["budgets"]:  # the evaluation table has one row per budget
        assert f"<td>levels+calc</td><td>{n}</td>" in text


def test_missing_parts_of_an_evaluation_are_left_out(tiny, evaluated, tmp_path):
    from ttsopt.train.report.html import build_report

    snap, router = tiny
    evaluation = json.loads((evaluated.parent / "eval.json").read_text())
    for pair in evaluation["pairs"].values():  # what an as-is evaluation lacks
        pair.pop("curve")
    evaluation.pop("calibration")
    (tmp_path / "eval.json").write_text(json.dumps(evaluation))
    text = build_report(router, [snap], tmp_path / "b", eval_path=tmp_path / "eval.json", dpi=40).read_text()
    _assert_self_contained(text)
    assert set(_images(text)) == set(FIGURES) - {"accuracy_vs_flops", "calibration"}
    (tmp_path / "bad.json").write_text("{\n  nope")
    with pytest.raises(ValueError, match=r"bad.json:2"):
        build_report(router, [snap], tmp_path / "c", eval_path=tmp_path / "bad.json")


def test_the_command_writes_the_page(tiny, evaluated, tmp_path):
    from typer.testing import CliRunner

    from ttsopt.cli import app

    snap, router = tiny
    out = tmp_path / "r"
    res = CliRunner().invoke(app, ["report", "--router", str(router), "--data", str(snap), "--out", str(out),
                                   "--eval", str(evaluated.parent / "eval.json")])
    assert res.exit_code == 0, res.output
    assert (out / "index.html").is_file() and len(list((out / "figures").glob("*.png"))) == len(FIGURES)
    res = CliRunner().invoke(app, ["report", "--router", str(tmp_path / "none"), "--data", str(snap),
                                   "--out", str(out)])
    assert res.exit_code == 2


def test_evaluate_writes_its_json_tables_and_figure(tiny, tmp_path):
    from typer.testing import CliRunner

    from ttsopt.cli import app

    snap, router = tiny
    paths = {k: tmp_path / f"eval.{k}" for k in ("json", "md", "png")}
    res = CliRunner().invoke(app, ["evaluate", "--router", str(router), "--data", str(snap), "--trials", "1",
                                   "--json", str(paths["json"]), "--markdown", str(paths["md"]),
                                   "--plot", str(paths["png"])])
    assert res.exit_code == 0, res.output
    assert "cross-fitting" in res.output
    report = json.loads(paths["json"].read_text())
    assert report["mode"] == "cross-fitted" and all(p["problems"] > 0 for p in report["pairs"].values())
    assert "Evaluation (cross-fitted" in paths["md"].read_text()  # after the deployed default's table
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_without_a_router_runs_straight_from_the_snapshot_folders(tiny, tmp_path):
    """What `python -m ttsopt.train.evaluate` did: cross-fitted, tuned as the flags say, no artifact needed."""
    from typer.testing import CliRunner

    from ttsopt.cli import app

    snap, _router = tiny
    paths = {k: tmp_path / f"eval.{k}" for k in ("json", "md", "png")}
    res = CliRunner().invoke(app, ["evaluate", "--data", str(snap), "--trials", "1", "--folds", "2", "--seed", "3",
                                   "--min-problems", "10", "--no-lopo", "--tune-metric", "cross_entropy",
                                   "--json", str(paths["json"]), "--markdown", str(paths["md"]),
                                   "--plot", str(paths["png"])])
    assert res.exit_code == 0, res.output
    report = json.loads(paths["json"].read_text())
    assert report["mode"] == "cross-fitted" and report["folds"] == 2 and "router" not in report
    assert report["settings"]["trials"] == 1 and report["settings"]["seed"] == 3
    assert report["min_problems"] == 10 and "lopo" not in report
    assert report["data"] == [str(snap)] and "machine" in report
    assert all(p["problems"] > 0 for p in report["pairs"].values())
    assert "Evaluation (cross-fitted" in paths["md"].read_text() and "Evaluation (cross-fitted" in res.output
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(app, ["evaluate", "--data", str(snap), "--tune-metric", "accuracy"])
    assert bad.exit_code == 2 and "tune_metric" in bad.output
    missing = CliRunner().invoke(app, ["evaluate", "--data", str(tmp_path)])
    assert missing.exit_code == 2 and "snapshot.json" in missing.output


def test_the_cascade_is_drawn_where_the_evaluation_has_it():
    import json
    from pathlib import Path

    from ttsopt.train.report import plots

    path = Path(__file__).resolve().parents[1] / "benchmarks/results/selector/arith-router-eval.json"
    evaluation = json.loads(path.read_text())
    label = "verify-first cascade (solve --cascade true, λ sweep)"
    fig = plots.accuracy_vs_flops(evaluation)
    assert label in [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    for p in evaluation["pairs"].values():
        p.pop("cascade")
    fig = plots.accuracy_vs_flops(evaluation)
    assert label not in [t.get_text() for legend in fig.legends for t in legend.get_texts()]
