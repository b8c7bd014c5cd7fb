"""The comparison table that the calculator-PRM and sweep reports quote (benchmarks/sweep_table.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "sweep_table.py"


def _module():
    spec = importlib.util.spec_from_file_location("sweep_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _row(prm, method, n, level, correct, agg="last", vote="prm_vote", pid="p"):
    return {"policy": "pol", "prm": prm, "method": method, "n": n, "agg": agg, "vote": vote, "level": level,
            "correct": correct, "problem_id": f"{pid}{level}"}


def test_compare_marks_the_best_method_per_level_and_leaves_ties_plain():
    rows = [
        _row("calc", "majority", 4, "1", 0.5), _row("calc", "beam", 4, "1", 1.0),
        _row("calc", "majority", 4, "2", 0.2), _row("calc", "beam", 4, "2", 0.2),
        _row("calc", "best_of_n", 4, "1", 0.9, vote="prm_max"),  # not a compared method
        _row("calc", "majority", 16, "1", 0.7), _row("calc", "beam", 2, "1", 0.0),  # other budgets
        _row("calc", "cot", 1, "1", 0.0),  # CoT: a reference row at every N
    ]
    table = _module().compare(pd.DataFrame(rows), [4], "level")
    lines = table.splitlines()
    assert lines[0] == "| pair | N | method | level 1 | level 2 | all | problems |"
    body = {line.split(" | ")[2]: line for line in lines[2:]}
    assert set(body) == {"majority", "beam", "CoT"}
    assert "| **1.000** | 0.200 | **0.600** |" in body["beam"]
    assert "| 0.500 | 0.200 | 0.350 |" in body["majority"]
