"""load_problems: real benchmark files, common schemas, and errors that say where the problem is."""

from __future__ import annotations

import json
import sys
import types

import pytest

from ttsopt.data import Problem, ProblemFileError, load_problems


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- real files ----------------------------------------------------------------------------

def test_math500_maps_problem_answer_level_subject_and_id(shared_data):
    problems = load_problems(str(shared_data / "math500.jsonl"))
    assert len(problems) == 500
    first = problems[0]
    assert isinstance(first, Problem)
    assert first.id == "test/precalculus/807.json"
    assert first.question.startswith("Convert the point $(0,3)$")
    assert first.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert first.level == 2
    assert first.metadata["subject"] == "Precalculus"
    assert {p.level for p in problems} == {1, 2, 3, 4, 5}
    assert len({p.id for p in problems}) == 500


def test_aime24_reads_extracted_groundtruth_and_numbers_rows_without_ids(shared_data):
    problems = load_problems(shared_data / "aime24.jsonl")
    assert len(problems) == 30
    assert [p.answer for p in problems[:3]] == ["204", "025", "809"]
    assert problems[0].id == "aime24-0000"
    assert problems[0].metadata["url"].endswith("Problem_1")


def test_extracted_groundtruth_wins_over_answer(tmp_path):
    path = _write_jsonl(tmp_path / "aime.jsonl", [
        {"problem": "Find n.", "answer": "The value is 25", "extracted_groundtruth": "025", "id": 7},
    ])
    [p] = load_problems(path)
    assert (p.id, p.answer) == ("7", "025")
    assert p.metadata["answer"] == "The value is 25"


# --- other schemas -------------------------------------------------------------------------

def test_gsm8k_answers_keep_only_what_follows_the_hashes(tmp_path):
    path = _write_jsonl(tmp_path / "gsm8k.jsonl", [
        {"question": "Tom has 40 apples and buys 2 more. How many?", "answer": "40 + 2 = <<40+2=42>>42\n#### 42"},
    ])
    [p] = load_problems(path)
    assert p.question.startswith("Tom has 40 apples")
    assert p.answer == "42"
    assert p.source == str(path)


def test_numeric_answers_become_strings(tmp_path):
    path = _write_jsonl(tmp_path / "nums.jsonl", [
        {"question": "a", "answer": 42}, {"question": "b", "answer": 2.5}, {"question": "c", "answer": 3.0},
    ])
    assert [p.answer for p in load_problems(path)] == ["42", "2.5", "3"]


def test_explicit_field_mapping(tmp_path):
    path = _write_jsonl(tmp_path / "custom.jsonl", [{"prompt_text": "What is 2+2?", "gt": "4", "key": "q1"}])
    [p] = load_problems(path, question_field="prompt_text", answer_field="gt", id_field="key")
    assert (p.id, p.question, p.answer) == ("q1", "What is 2+2?", "4")


def test_math_rows_without_answer_column_take_the_last_boxed_of_the_solution(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Compute 1/2 + 1/2.", "solution": "We get \\boxed{\\frac{2}{2}} = \\boxed{1}.", "level": "Level 1"},
    ])
    [p] = load_problems(path)
    assert p.answer == "1"
    assert p.metadata["answer_from"] == "solution"
    assert p.level == 1


def test_json_list_file(tmp_path):
    path = tmp_path / "set.json"
    path.write_text(json.dumps([{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}]))
    problems = load_problems(path)
    assert [(p.id, p.answer) for p in problems] == [("set-0000", "2"), ("set-0001", "4")]


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_text('{"question": "a", "answer": "1"}\n\n   \n{"question": "b", "answer": "2"}\n')
    assert [p.answer for p in load_problems(path)] == ["1", "2"]


# --- limit ---------------------------------------------------------------------------------

def test_limit_takes_the_first_k_problems(shared_data):
    path = shared_data / "math500.jsonl"
    every = [p.id for p in load_problems(path)]
    assert [p.id for p in load_problems(path, limit=20)] == every[:20]
    assert len(load_problems(path, limit=1000)) == 500


# --- errors --------------------------------------------------------------------------------

def test_invalid_json_names_file_and_line(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": "2"},
                                                 '{"problem": "c", "answer": '])
    with pytest.raises(ProblemFileError, match=r"math\.jsonl:3: invalid JSON"):
        load_problems(path)


def test_row_without_answer_is_refused_not_dropped(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [{"problem": "a", "answer": "1"}, {"problem": "b", "answer": ""}])
    with pytest.raises(ProblemFileError, match=r"math\.jsonl:2: no answer"):
        load_problems(path)


def test_row_without_question_is_refused(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [{"answer": "1", "text": "what?"}])
    with pytest.raises(ProblemFileError, match=r"math\.jsonl:1: no question"):
        load_problems(path)


def test_non_object_row_is_refused(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [{"problem": "a", "answer": "1"}, [1, 2]])
    with pytest.raises(ProblemFileError, match=r"math\.jsonl:2: expected a JSON object"):
        load_problems(path)


def test_non_scalar_answer_is_refused(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [{"problem": "a", "answer": ["1", "2"]}])
    with pytest.raises(ProblemFileError, match=r"math\.jsonl:1: answer must be a string or a number"):
        load_problems(path)


def test_duplicate_ids_are_an_error_naming_both_lines(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "a", "answer": "1", "id": "x"}, {"problem": "b", "answer": "2", "id": "y"},
        {"problem": "c", "answer": "3", "id": "x"},
    ])
    with pytest.raises(ProblemFileError, match=r"math\.jsonl:3: duplicate id 'x' \(first at .*math\.jsonl:1\)"):
        load_problems(path)


def test_explicit_field_that_is_missing_is_an_error(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [{"problem": "a", "answer": "1"}])
    with pytest.raises(ProblemFileError, match=r"math\.jsonl:1: no answer field 'gold'"):
        load_problems(path, answer_field="gold")


def test_json_file_errors_name_file_and_line_or_item(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"question": "a", "answer": "1"},\n {"question": }\n]')
    with pytest.raises(ProblemFileError, match=r"broken\.json:3: invalid JSON"):
        load_problems(broken)
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps([{"question": "a", "answer": "1"}, {"question": "b"}]))
    with pytest.raises(ProblemFileError, match=r"missing\.json: item 1: no answer"):
        load_problems(missing)
    not_list = tmp_path / "dict.json"
    not_list.write_text(json.dumps({"question": "a", "answer": "1"}))
    with pytest.raises(ProblemFileError, match=r"dict\.json: expected a JSON list"):
        load_problems(not_list)


@pytest.mark.parametrize("source", ["builtin:nope", "problems.csv", "math500"])
def test_unknown_source_lists_accepted_forms(source):
    with pytest.raises(ValueError, match=r"builtin:arith.*hf:NAME"):
        load_problems(source)


def test_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.jsonl"):
        load_problems(tmp_path / "nothere.jsonl")


def test_unknown_keyword_is_refused(tmp_path):
    path = _write_jsonl(tmp_path / "math.jsonl", [{"problem": "a", "answer": "1"}])
    with pytest.raises(TypeError, match="per_level"):
        load_problems(path, per_level=3)


# --- Hugging Face hub ----------------------------------------------------------------------

def test_hub_without_datasets_tells_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match=r"pip install 'ttsopt\[datasets\]'"):
        load_problems("hf:HuggingFaceH4/MATH-500")


def _fake_datasets(calls: list, splits: dict[str, list[dict]]):
    class DatasetDict(dict):
        pass

    def load_dataset(*args, split=None):
        calls.append((args, split))
        return splits[split] if split else DatasetDict(splits)

    return types.SimpleNamespace(load_dataset=load_dataset)


def test_hub_rows_map_like_files_and_test_split_is_the_default(monkeypatch):
    calls: list = []
    rows = [{"problem": "What is 1+1?", "answer": "2", "level": "Level 1", "unique_id": "test/a/1.json"}]
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(calls, {"train": [], "test": rows}))
    [p] = load_problems("hf:HuggingFaceH4/MATH-500")
    assert (p.id, p.answer, p.level, p.source) == ("test/a/1.json", "2", 1, "hf:HuggingFaceH4/MATH-500")
    assert calls == [(("HuggingFaceH4/MATH-500",), None)]


def test_hub_split_and_config_reach_load_dataset_and_bad_rows_name_the_row(monkeypatch):
    calls: list = []
    rows = [{"question": "q", "answer": "x #### 3"}, {"question": "r"}]
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(calls, {"test": rows}))
    with pytest.raises(ProblemFileError, match=r"hf:openai/gsm8k\[test\]: row 1: no answer"):
        load_problems("hf:openai/gsm8k?config=main", split="test")
    assert calls == [(("openai/gsm8k", "main"), "test")]
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(calls, {"test": rows[:1]}))
    [p] = load_problems("hf:openai/gsm8k?config=main&split=test")
    assert (p.id, p.answer, p.source) == ("gsm8k-0000", "3", "hf:openai/gsm8k")


def test_hub_with_several_splits_and_no_test_asks_for_one(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets([], {"train": [], "validation": []}))
    with pytest.raises(ValueError, match=r"splits \['train', 'validation'\]; pick one with split="):
        load_problems("hf:someone/set")
