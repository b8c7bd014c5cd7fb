"""benchmarks/throughput.py without a model: its CLI, its counting proxy and its report writer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Sequence

import pytest

from ttsopt.search.types import Completion, Generation, SamplingParams

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "throughput.py"


def _load_bench() -> ModuleType:
    # benchmarks/ is not a package: load the script by path.
    spec = importlib.util.spec_from_file_location("throughput_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


class ScriptedPolicy:
    """Returns fixed token counts: prompt i has 10 + i tokens, every completion 3 tokens.

    ``report_prefill=False`` mimics a backend that cannot say what it prefilled.
    """

    name = "scripted"
    num_parameters = 1234

    def __init__(self, report_prefill: bool = True) -> None:
        self.report_prefill = report_prefill
        self.batch_size = 7

    def format_prompt(self, question: str) -> str:
        return f"Q: {question}\nA:"

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        return [
            Generation(
                prompt_tokens=10 + i,
                completions=[Completion(text="x", tokens=3, finish_reason="eos") for _ in range(params.n)],
                prefill_tokens=params.n * (10 + i) if self.report_prefill else None,
            )
            for i, _ in enumerate(prompts)
        ]


def test_help_exits_zero():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--workloads" in proc.stdout and "--engines" in proc.stdout


def test_counting_policy_sums_every_call():
    counting = bench.CountingPolicy(ScriptedPolicy())
    assert counting.name == "scripted" and counting.num_parameters == 1234
    assert counting.format_prompt("hi") == "Q: hi\nA:"
    assert counting.batch_size == 7  # anything else is forwarded to the wrapped policy
    counting.generate(["a", "b"], SamplingParams(n=4))  # prompts of 10 and 11 tokens
    counting.generate(["c"], SamplingParams(n=2))  # one prompt of 10 tokens
    counts = counting.counts()
    assert counts["calls"] == 2
    assert counts["prompts"] == 3
    assert counts["completions"] == 10
    assert counts["prompt_tokens"] == 10 + 11 + 10
    assert counts["prefill_tokens"] == 4 * 10 + 4 * 11 + 2 * 10
    assert counts["generated_tokens"] == 3 * 10


def test_counting_policy_prefill_is_none_when_unreported():
    counting = bench.CountingPolicy(ScriptedPolicy(report_prefill=False))
    counting.generate(["a"], SamplingParams(n=2))
    assert counting.counts()["prefill_tokens"] is None
    assert counting.counts()["prompt_tokens"] == 10


@pytest.mark.parametrize("workload, key", [
    ("sample:16", "majority:n=16"),
    ("beam:16", "beam:n=16,m=4,agg=last,vote=prm_vote,depth=6"),
    ("dvts:8", "dvts:n=8,m=4,agg=last,vote=prm_vote,depth=6"),
])
def test_workloads_map_to_strategies(workload, key):
    assert bench.parse_workload(workload, max_depth=6).key == key


@pytest.mark.parametrize("workload", ["sample", "beam:6", "greedy:4"])
def test_bad_workloads_are_refused(workload):
    with pytest.raises(ValueError):
        bench.parse_workload(workload, max_depth=6)


def test_report_has_every_key_including_error_rows(tmp_path):
    ok = {
        "engine": "transformers", "policy": "smollm2-135m", "workload": "sample:2", "status": "ok",
        "wall_s": 1.5, "generated_tokens": 40, "gen_tok_per_s": 26.67, "prefill_tokens": 120,
        "prefill_per_gen": 3.0, "peak_rss_mib": 812.4,
    }
    config = bench.Config(engine="llamacpp", policy="smollm2-135m", workload="beam:16", problems="builtin:arith",
                          max_tokens=8, step_max_tokens=8, prm="calc", max_depth=6)
    err = bench.error_row(config, "ModuleNotFoundError: No module named 'llama_cpp'")
    report = bench.build_report(
        [ok, err], machine=bench.machine_info(), command=["python", "benchmarks/throughput.py", "--out", "x.json"],
        settings={"max_tokens": 8}, loadavg_before=[1.0, 1.0, 1.0], loadavg_after=None,
    )
    out = tmp_path / "tp.json"
    bench.write_report(report, out)
    data = json.loads(out.read_text())

    assert {"machine", "command", "settings", "loadavg_before", "loadavg_after", "results"} <= set(data)
    assert data["command"] == "python benchmarks/throughput.py --out x.json"
    assert {"platform", "cpu_count", "python", "versions", "date"} <= set(data["machine"])
    assert {"torch", "transformers", "llama_cpp"} <= set(data["machine"]["versions"])
    rows = data["results"]
    assert [list(r)[:len(bench.RESULT_KEYS)] for r in rows] == [list(bench.RESULT_KEYS)] * 2
    assert rows[0]["status"] == "ok" and rows[0]["error"] is None
    assert rows[1]["status"] == "error" and "llama_cpp" in rows[1]["error"] and rows[1]["wall_s"] is None
    assert rows[1]["engine"] == "llamacpp" and rows[1]["workload"] == "beam:16"

    assert bench.table_cells(ok) == ["transformers", "smollm2-135m", "sample:2", "1.50", "40", "26.7", "120",
                                     "3.00", "812"]
    cells = bench.table_cells(err)
    assert len(cells) == len(bench.TABLE_COLUMNS) and cells[:4] == ["llamacpp", "smollm2-135m", "beam:16", "ERROR"]
    table = bench.render_table(rows)
    assert [c.header for c in table.columns] == list(bench.TABLE_COLUMNS) and table.row_count == 2


def test_config_round_trips_through_json():
    config = bench.Config(engine="transformers", policy="gemma3-270m", workload="dvts:16", problems="builtin:arith",
                          max_tokens=160, step_max_tokens=64, prm="calc", max_depth=6, warmup=False)
    assert bench.Config.from_json(config.to_json()) == config
