"""How the adaptive options stop, recorded at training and shown by explain and the report."""

import pandas as pd

from ttsopt.train.fit.adaptive import stop_profile
from ttsopt.train.report.explain import adaptive_stops
from ttsopt.train.report.html import _stops_html


def options() -> pd.DataFrame:
    rows = []
    for pid, level, drawn, agree in (("a", "1", 2.0, 1.0), ("b", "1", 4.0, 0.5), ("c", "3", 8.0, 0.0)):
        rows.append({"policy": "smollm2-135m", "prm": "calc", "problem_id": pid, "strategy": "majority_stop:n=8,k=2",
                     "n": 8, "label": 1.0 if level == "1" else 0.0, "tokens": 10 * drawn, "flops": 1e9 * drawn,
                     "drawn": drawn, "stop_agree": agree, "stop_give_up": 0.0, "stop_verified": 0.0,
                     "stop_budget": 1 - agree})
    rows.append({"policy": "smollm2-135m", "prm": "calc", "problem_id": "a", "strategy": "majority:n=7", "n": 7,
                 "label": 1.0, "tokens": 70.0, "flops": 7e9})  # a rest-of-budget option: it never stops early
    return pd.DataFrame(rows)


def test_the_profile_says_how_many_samples_each_level_drew_and_why_it_stopped():
    prof = stop_profile(options(), {"a": "1", "b": "1", "c": "3"})
    entry = prof["smollm2-135m+calc"]["majority_stop:n=8,k=2"]
    assert list(prof["smollm2-135m+calc"]) == ["majority_stop:n=8,k=2"]  # only the options that stop
    assert entry["n"] == 8 and entry["all"]["problems"] == 3
    assert entry["levels"]["1"]["drawn"] == 3.0 and entry["levels"]["3"]["drawn"] == 8.0
    assert entry["levels"]["1"]["stops"] == {"agree": 0.75, "budget": 0.25}
    assert entry["levels"]["3"]["stops"] == {"budget": 1.0}


def test_explain_and_the_report_read_it_from_the_manifest_within_the_budget():
    manifest = {"deployed": {"smollm2-135m+calc": {"budgets": {}, "adaptive_stops": stop_profile(options())["smollm2-135m+calc"]}}}
    assert "majority_stop:n=8,k=2" in adaptive_stops(manifest)["smollm2-135m+calc"]
    assert adaptive_stops(manifest, budget=4) == {}  # no adaptive option fits N = 4
    page = _stops_html(adaptive_stops(manifest))
    assert "How the adaptive strategies stop" in page and "majority_stop:n=8,k=2" in page and "agree 50%" in page


def test_without_adaptive_options_there_is_nothing_to_show():
    assert stop_profile(options().drop(columns=["drawn"])) == {}
    assert adaptive_stops({"deployed": {"x": {"budgets": {}}}}) == {} and _stops_html({}) == ""


def test_train_and_the_quickstart_record_the_stops_beside_the_deployed_modes():
    from ttsopt.train.evaluation.training import deployed_record

    report = {"pairs": {"smollm2-135m+calc": {"deployed": {"4": {
        "mode": "best_fixed", "strategy": "cot", "accuracy": 0.5, "flops": 1.0, "tokens": 1.0, "ci95": [0, 0],
        "best_fixed_accuracy": 0.5, "fold_choices": ["best_fixed"]}}}}}
    table = pd.DataFrame({"problem_id": ["a", "b", "c"], "level": [1, 1, 3]})
    rec = deployed_record(report, table, options())
    entry = rec["smollm2-135m+calc"]
    assert entry["budgets"]["4"]["mode"] == "best_fixed"
    assert entry["adaptive_stops"]["majority_stop:n=8,k=2"]["levels"]["3"]["drawn"] == 8.0
