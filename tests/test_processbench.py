"""ProcessBench loading and metrics: first-error rule, the two accuracies, F1, AUC, sweeps."""

from __future__ import annotations

import json
import math

import pytest

from ttsopt.search.prm.processbench import (
    ProcessBenchExample,
    ProcessBenchFormatError,
    best_threshold,
    evaluate_prm,
    first_error,
    first_error_auc,
    load_processbench,
    processbench_metrics,
    score_quantiles,
    threshold_sweep,
)
from ttsopt.search.types import StepScores


class ScriptedPRM:
    """Returns fixed scores per problem and records how it was called."""

    name = "scripted"
    num_parameters = 0

    def __init__(self, scores: dict[str, list[float]]):
        self.table = scores
        self.calls: list[int] = []

    def score(self, items):
        self.calls.append(len(items))
        return [StepScores(list(self.table[q]), tokens=10 * len(steps)) for q, steps in items]


def example(id_: str, label: int, n_steps: int) -> ProcessBenchExample:
    return ProcessBenchExample(id_, f"problem {id_}", tuple(f"step {i}" for i in range(n_steps)), label)


EXAMPLES = [
    example("e1", 1, 3), example("e2", 0, 2), example("e3", 2, 4), example("c1", -1, 2), example("c2", -1, 3),
]
SCORES = {
    "problem e1": [0.9, 0.2, 0.8],        # first below 0.5 at 1 == label: right
    "problem e2": [0.7, 0.4],             # flags 1, label 0: wrong
    "problem e3": [0.9, 0.6, 0.1, 0.3],   # flags 2 == label: right
    "problem c1": [0.8, 0.9],             # nothing flagged: right
    "problem c2": [0.6, 0.45, 0.9],       # flags 1 on a correct solution: wrong
}


def test_first_error_is_the_first_step_strictly_below_the_threshold():
    assert first_error([0.9, 0.5, 0.49, 0.1], 0.5) == 2
    assert first_error([0.9, 0.8], 0.5) == -1
    assert first_error([], 0.5) == -1
    assert first_error([0.3], 0.2) == -1


def test_metrics_on_a_scripted_prm_match_the_hand_computation():
    prm = ScriptedPRM(SCORES)
    result = evaluate_prm(prm, EXAMPLES, threshold=0.5)
    assert [p.predicted for p in result.predictions] == [1, 1, 2, -1, 1]
    assert result.accuracy_erroneous == pytest.approx(2 / 3)
    assert result.accuracy_correct == pytest.approx(1 / 2)
    assert result.f1 == pytest.approx(4 / 7)  # 2 * (2/3) * (1/2) / (2/3 + 1/2)
    assert (result.n_erroneous, result.n_correct) == (3, 2)
    # positives (before the first error): 0.9 | - | 0.9 0.6 | 0.8 0.9 | 0.6 0.45 0.9; negatives: 0.2 0.7 0.1
    # pairs won: 8 + 5 + 8 of 24
    assert result.auc == pytest.approx(21 / 24)
    assert result.prm_tokens == 10 * (3 + 2 + 4 + 2 + 3)
    assert result.prm == "scripted" and result.threshold == 0.5
    assert "predictions" not in result.summary() and result.summary()["f1"] == pytest.approx(4 / 7)


def test_threshold_sweep_rereads_the_kept_scores():
    prm = ScriptedPRM(SCORES)
    result = evaluate_prm(prm, EXAMPLES, threshold=0.5)
    calls = len(prm.calls)
    points = threshold_sweep(result, thresholds=(0.0, 0.5, 0.65))
    assert len(prm.calls) == calls  # no rescoring
    zero, half, high = points
    assert (zero.accuracy_erroneous, zero.accuracy_correct, zero.f1) == (0.0, 1.0, 0.0)  # flags nothing
    assert half.f1 == pytest.approx(result.f1)
    # at 0.65: e1 -> 1 (right), e2 -> 1, e3 -> 1, c1 -> -1 (right), c2 -> 0
    assert high.accuracy_erroneous == pytest.approx(1 / 3)
    assert high.accuracy_correct == pytest.approx(1 / 2)
    assert high.f1 == pytest.approx(2 / 5)
    assert best_threshold(points) is half


def test_quantile_thresholds_follow_the_observed_scores():
    result = evaluate_prm(ScriptedPRM(SCORES), EXAMPLES)
    # 14 scores sorted: .1 .2 .3 .4 .45 .6 .6 .7 .8 .8 .9 .9 .9 .9; quartiles at ranks 3, 6, 10 (0-based)
    assert score_quantiles(result, n=3) == [0.4, 0.6, 0.9]
    assert score_quantiles(evaluate_prm(ScriptedPRM(SCORES), [])) == []


def test_examples_go_to_the_prm_in_batches_with_progress():
    prm = ScriptedPRM(SCORES)
    seen = []
    evaluate_prm(prm, EXAMPLES, batch_size=2, progress=lambda done, total: seen.append((done, total)))
    assert prm.calls == [2, 2, 1]
    assert seen == [(2, 5), (4, 5), (5, 5)]


def test_a_prm_that_loses_steps_is_an_error():
    prm = ScriptedPRM({**SCORES, "problem e1": [0.9]})
    with pytest.raises(RuntimeError, match="1 scores for the 3 steps of e1"):
        evaluate_prm(prm, EXAMPLES)


def test_one_sided_subsets_have_undefined_accuracy_and_f1():
    err, cor, f1 = processbench_metrics([1, 0], [1, -1])
    assert err == 0.5 and math.isnan(cor) and math.isnan(f1)
    assert first_error_auc([-1], [[0.3, 0.9]]) is None  # no first-error steps at all
    result = evaluate_prm(ScriptedPRM(SCORES), EXAMPLES[:3])
    assert math.isnan(result.f1) and result.n_correct == 0
    with pytest.raises(ValueError, match="no threshold"):
        best_threshold(threshold_sweep(result))


# ---- files ------------------------------------------------------------------------------------


def test_the_real_files_load_with_valid_labels(shared_data):
    gsm = load_processbench(shared_data / "processbench_gsm8k.json")
    math_ = load_processbench(shared_data / "processbench_math.json")
    assert len(gsm) == 400 and len(math_) == 1000
    assert sum(ex.erroneous for ex in gsm) == 207
    for ex in gsm + math_:
        assert -1 <= ex.label < len(ex.steps) and ex.problem and all(isinstance(s, str) for s in ex.steps)
    assert gsm[0].id == "gsm8k-0" and gsm[0].generator


def test_limit_takes_a_balanced_seeded_sample_in_file_order(shared_data):
    path = shared_data / "processbench_gsm8k.json"
    sample = load_processbench(path, limit=20)
    assert sum(ex.erroneous for ex in sample) == 10 and len(sample) == 20
    order = [int(ex.id.split("-")[1]) for ex in sample]
    assert order == sorted(order)
    assert [ex.id for ex in load_processbench(path, limit=20)] == [ex.id for ex in sample]
    assert [ex.id for ex in load_processbench(path, limit=20, seed=1)] != [ex.id for ex in sample]
    first = load_processbench(path, limit=20, balanced=False)
    assert [ex.id for ex in first] == [f"gsm8k-{i}" for i in range(20)]
    assert all(ex.erroneous for ex in first)  # why the default is balanced: the file is sorted by class


def write(tmp_path, content, name="pb.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_malformed_files_are_named_in_the_error(tmp_path):
    good = {"id": "x-0", "problem": "p", "steps": ["a", "b"], "label": 1}
    cases = [
        ([good, {"id": "x-1", "problem": "p", "label": -1}], r"record 1 \(id 'x-1'\): missing field 'steps'"),
        ([{**good, "label": 2}], "'label' must be -1 or a step index below 2"),
        ([{**good, "steps": []}], "non-empty list of strings"),
        ([{**good, "label": True}], "'label'"),
        (["not an object"], "expected an object"),
        ("{not json", "neither a JSON list nor JSON lines"),
    ]
    for content, message in cases:
        path = write(tmp_path, content)
        with pytest.raises(ProcessBenchFormatError, match=message) as err:
            load_processbench(path)
        assert str(path) in str(err.value)
    with pytest.raises(ProcessBenchFormatError, match="cannot read"):
        load_processbench(tmp_path / "missing.json")


def test_json_lines_are_accepted(tmp_path):
    rows = [{"problem": "p", "steps": ["a"], "label": -1}, {"problem": "q", "steps": ["a", "b"], "label": 0}]
    path = write(tmp_path, "\n".join(json.dumps(r) for r in rows) + "\n", "pb.jsonl")
    loaded = load_processbench(path)
    assert [ex.label for ex in loaded] == [-1, 0] and loaded[1].id == "1"


# ---- with a judge -----------------------------------------------------------------------------


def test_a_judge_prm_runs_through_the_evaluation(tiny_model_dir, shared_data):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ttsopt.search.prm.judge import JudgePRM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    judge = JudgePRM.from_model(model, AutoTokenizer.from_pretrained(tiny_model_dir), max_length=512)
    examples = load_processbench(shared_data / "processbench_gsm8k.json", limit=2)
    result = evaluate_prm(judge, examples)
    assert [len(p.scores) for p in result.predictions] == [len(ex.steps) for ex in examples]
    assert all(0 < s < 1 for p in result.predictions for s in p.scores)
    assert result.prm_tokens > 0 and (result.n_erroneous, result.n_correct) == (1, 1)


@pytest.mark.slow
def test_real_smollm2_judge_on_processbench(shared_data):
    from ttsopt.search.registry import load_prm

    judge = load_prm("judge:smollm2-135m")
    examples = load_processbench(shared_data / "processbench_gsm8k.json", limit=4)
    result = evaluate_prm(judge, examples, batch_size=2)
    assert (result.n_erroneous, result.n_correct) == (2, 2)
    assert all(0 <= s <= 1 for p in result.predictions for s in p.scores)
    assert [len(p.scores) for p in result.predictions] == [len(ex.steps) for ex in examples]
    assert 0 <= result.f1 <= 1 and result.prm_tokens > 1000
    assert judge.num_parameters > 100_000_000
