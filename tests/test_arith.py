"""builtin:arith: five levels, deterministic by seed, with answers anyone can recompute."""

from __future__ import annotations

import ast
import operator
import re
from collections import Counter

import pytest

from ttsopt.data import is_equivalent, load_problems

# Written from the level descriptions, not from the generator: operands -> answer.
RECOMPUTE = {
    "add-1digit": lambda a, b: a + b,
    "add-1digit-words": lambda a, b: a + b,
    "mul-1digit": lambda a, b: a * b,
    "mul-1digit-words": lambda a, b: a * b,
    "add-2digit": lambda a, b: a + b,
    "sub-2digit": lambda a, b: a - b,
    "word-2step-0": lambda a, b, c: a + b * c,  # has a, buys b bags of c
    "word-2step-1": lambda a, b, c: a * b - c,  # a packs of b, gives away c
    "word-2step-2": lambda a, b, c: (a + b) * c,  # a + b pages a day for c days
    "word-2step-3": lambda a, b, c: a - b + c,  # has a, gives b, finds c
    "word-3step-0": lambda a, b, c, d: a * b - c + d,  # a eggs in b crates, sells c, collects d
    "word-3step-1": lambda a, b, c, d: a + b * c - d,  # a books, b boxes of c, lends d
    "word-3step-2": lambda a, b, c, d: a * b - c - d,  # a dollars for b weeks, spends c and d
}

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}


def _evaluate(expression: str) -> int:
    """Integer + - * and parentheses only: the stored expression, evaluated without eval()."""

    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        raise ValueError(f"unexpected syntax in {expression!r}")

    return walk(ast.parse(expression, mode="eval"))


@pytest.fixture(scope="module")
def arith():
    return load_problems("builtin:arith")


def test_default_is_twenty_problems_on_each_of_five_levels(arith):
    assert Counter(p.level for p in arith) == {1: 20, 2: 20, 3: 20, 4: 20, 5: 20}
    assert all(p.source == "builtin:arith" for p in arith)
    assert arith[0].id == "arith-s0-L1-0000"
    assert all(re.fullmatch(r"arith-s0-L[1-5]-\d{4}", p.id) for p in arith)
    assert len({p.id for p in arith}) == len(arith)
    assert "arith-s0-L3-0007" in {p.id for p in arith}


def test_answers_match_an_independent_recomputation_from_the_operands(arith):
    big = load_problems("builtin:arith", per_level=200, seed=5)
    for p in [*arith, *big]:
        operands = p.metadata["operands"]
        expected = RECOMPUTE[p.metadata["kind"]](*operands)
        assert p.answer == str(expected), p
        assert _evaluate(p.metadata["expression"]) == expected, p
        assert expected > 0, p  # no negative or zero answers for a small model to trip on
        numbers = [int(n) for n in re.findall(r"\d+", p.question)]
        assert numbers == operands, p  # every operand is stated, in order, and nothing else


def test_levels_rise_from_one_digit_sums_to_three_step_word_problems(arith):
    by_level = {lv: [p for p in arith if p.level == lv] for lv in range(1, 6)}
    assert {p.metadata["kind"] for p in by_level[1]} == {"add-1digit"}
    assert {p.metadata["kind"] for p in by_level[2]} == {"mul-1digit"}
    assert {p.metadata["kind"] for p in by_level[3]} <= {"add-2digit", "sub-2digit"}
    assert all(p.metadata["kind"].startswith("word-2step") for p in by_level[4])
    assert all(p.metadata["kind"].startswith("word-3step") for p in by_level[5])
    assert all(max(p.metadata["operands"]) <= 9 for p in by_level[1] + by_level[2])
    assert all(10 <= min(p.metadata["operands"]) <= max(p.metadata["operands"]) <= 99 for p in by_level[3])
    assert all(len(p.metadata["operands"]) == 3 for p in by_level[4])
    assert all(len(p.metadata["operands"]) == 4 and p.metadata["operands"][0] >= 100 for p in by_level[5])
    assert all(p.question.endswith("?") for p in arith)


def test_same_seed_same_problems_other_seed_other_problems():
    first = load_problems("builtin:arith", seed=3)
    again = load_problems("builtin:arith", seed=3)
    other = load_problems("builtin:arith", seed=4)
    assert [(p.id, p.question, p.answer) for p in first] == [(p.id, p.question, p.answer) for p in again]
    assert [p.question for p in first] != [p.question for p in other]


def test_query_string_and_keywords_agree():
    from_query = load_problems("builtin:arith?n=7&seed=3")
    from_kwargs = load_problems("builtin:arith", per_level=7, seed=3)
    assert [p.question for p in from_query] == [p.question for p in from_kwargs]
    assert len(from_query) == 35
    only = load_problems("builtin:arith?n=4&levels=1,5")
    assert {p.level for p in only} == {1, 5} and len(only) == 8


def test_more_problems_per_level_only_appends():
    small = load_problems("builtin:arith", per_level=5, seed=1)
    large = {p.id: p.question for p in load_problems("builtin:arith", per_level=30, seed=1)}
    assert all(large[p.id] == p.question for p in small)


def test_questions_do_not_repeat_within_a_level(arith):
    for level in range(1, 6):
        questions = [p.question for p in arith if p.level == level]
        assert len(set(questions)) == len(questions)


def test_limit_takes_a_seeded_subset():
    assert len(load_problems("builtin:arith", limit=7)) == 7
    assert [p.id for p in load_problems("builtin:arith", limit=7, seed=2)] == \
        [p.id for p in load_problems("builtin:arith", limit=7, seed=2)]


@pytest.mark.parametrize("source", ["builtin:arith?n=abc", "builtin:arith?size=3"])
def test_bad_options_are_refused(source):
    with pytest.raises(ValueError, match="builtin:arith"):
        load_problems(source)


def test_a_worked_answer_in_the_prompt_format_grades_correct(arith):
    for p in arith[::10]:
        assert is_equivalent(f"{p.metadata['expression']} = {p.answer}\n\nThe answer is {p.answer}.", p.answer)
        assert not is_equivalent(f"The answer is {int(p.answer) + 1}.", p.answer)


def _digest(problems) -> str:
    import hashlib

    return hashlib.sha256(repr([(p.question, p.answer) for p in problems]).encode()).hexdigest()[:16]


def test_questions_of_earlier_sets_never_change():
    # digests of (question, answer) lists made by the generator before ids carried the seed and
    # before the extra kinds existed: sets that never ran out of fresh questions are unchanged.
    from ttsopt.data.arith import arith_problems

    assert _digest(arith_problems(20, 0)) == "dd16aca4423e5bad"  # arith-embedded's problems
    assert _digest(arith_problems(30, 1)) == "c61af77ebe949cdc"
    assert _digest(arith_problems(60, 7)) == "55a4380e4dfd13b1"


def test_ids_are_unique_across_seeds_while_the_question_key_follows_the_text():
    from ttsopt.data.arith import arith_problems

    a, b = arith_problems(81, 0, levels=(1,)), arith_problems(81, 1, levels=(1,))
    assert not {p.id for p in a} & {p.id for p in b}
    shared = {p.key for p in a} & {p.key for p in b}
    assert shared  # 81 sums: two seeds cover the same questions under other ids
    by_key = {p.key: p.question for p in a}
    assert all(by_key[p.key] == p.question for p in b if p.key in shared)


def test_a_large_level_draws_fresh_questions_from_its_extra_kinds():
    from ttsopt.data.arith import arith_problems

    level1 = arith_problems(150, 2, levels=(1,))
    assert len({p.key for p in level1}) == 150  # one-digit sums alone have 81
    kinds = [p.metadata["kind"] for p in level1]
    first_extra = kinds.index("add-1digit-words")
    assert set(kinds[:first_extra]) == {"add-1digit"} and first_extra > 60  # only once sums run out
    assert set(kinds) == {"add-1digit", "add-1digit-words"}


def test_exclude_keeps_another_sets_questions_out():
    from ttsopt.data import question_key

    held_out = load_problems("builtin:arith", per_level=20, seed=0)
    train = load_problems("builtin:arith", per_level=100, seed=1, exclude="builtin:arith?per_level=20&seed=0")
    assert len(train) == 500 and len({p.key for p in train}) == 500
    assert not {p.key for p in train} & {p.key for p in held_out}
    assert question_key("What is  1 + 4?\n") == question_key("What is 1 + 4?")
