"""The built-in graded arithmetic set: problems a 135M-parameter model can partly solve.

MATH-500 is out of reach for the embedded CPU models, so the default problem set is
arithmetic in five levels whose difficulty rises with the level number for SmolLM2-135M
(Pass@1 measured on an earlier draft, 8 samples at T=0.7: one-digit + 0.52, one-digit ×
0.63, two-digit + 0.14, two-step word problem 0.01, three-step word problem with
three-digit numbers 0.01). Levels 1-3 and 4-5 spread over the paper's easy / medium /
hard bins, which is what a strategy selector needs to learn from.

Every problem stores its operands and the formula over them in ``metadata`` so that
anyone (a test, a calculator PRM) can recompute the answer without trusting the text.
Generation is deterministic in ``(seed, level)``, and asking for more problems per level
only appends: the first k problems of a level do not depend on ``per_level``.

Ids carry the seed (``arith-s{seed}-L{level}-{index:04d}``), so two seeds never share an
id; the same question text can still recur across seeds (level 1 has 81 sums), which is
why splits group by :attr:`Problem.key`, not by id. A level whose kinds have no fresh
question left draws from its *extra* kinds (the same arithmetic, worded differently), so a
large set has distinct texts; draws that found a fresh question before never reach them,
so the problems of every earlier set are unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .problem import Problem, question_key

SOURCE = "builtin:arith"
DEFAULT_PER_LEVEL = 20

NAMES = ("Tom", "Anna", "Sam", "Lily", "Ben", "Mia", "Jack", "Emma", "Leo", "Zoe")
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "shells")


@dataclass(frozen=True)
class _Drawn:
    """One generated problem before it gets its id."""

    question: str
    answer: int
    kind: str
    operands: tuple[int, ...]
    formula: str  # arithmetic over the operands named a, b, c, d in order: "a + b * c"


def _fill(formula: str, operands: tuple[int, ...]) -> str:
    """``"a + b * c"`` with the operands put in: ``"12 + 3 * 4"``."""
    for name, value in zip("abcd", operands):
        formula = formula.replace(name, str(value))
    return formula


def _level1(rng: random.Random) -> _Drawn:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    return _Drawn(f"What is {a} + {b}?", a + b, "add-1digit", (a, b), "a + b")


def _level2(rng: random.Random) -> _Drawn:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    return _Drawn(f"What is {a} * {b}?", a * b, "mul-1digit", (a, b), "a * b")


def _level3(rng: random.Random) -> _Drawn:
    if rng.random() < 0.5:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return _Drawn(f"What is {a} + {b}?", a + b, "add-2digit", (a, b), "a + b")
    a = rng.randint(11, 99)
    b = rng.randint(10, a - 1)
    return _Drawn(f"What is {a} - {b}?", a - b, "sub-2digit", (a, b), "a - b")


def _level4(rng: random.Random) -> _Drawn:
    """Two operations in a short story; small numbers, so the setup is the hard part."""
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    template = rng.randrange(4)
    if template == 0:
        a, b, c = rng.randint(2, 20), rng.randint(2, 6), rng.randint(2, 9)
        q = (f"{name} has {a} {item}. {name} buys {b} bags with {c} {item} in each bag. "
             f"How many {item} does {name} have now?")
        expr, value = "a + b * c", a + b * c
    elif template == 1:
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        c = rng.randint(1, a * b - 1)
        q = (f"{name} buys {a} packs of {item} with {b} {item} in each pack. {name} gives away {c} {item}. "
             f"How many {item} does {name} have left?")
        expr, value = "a * b - c", a * b - c
    elif template == 2:
        a, b, c = rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 7)
        q = (f"{name} reads {a} pages in the morning and {b} pages in the evening every day. "
             f"How many pages does {name} read in {c} days?")
        expr, value = "(a + b) * c", (a + b) * c
    else:
        a = rng.randint(10, 40)
        b = rng.randint(1, a - 1)
        c = rng.randint(2, 20)
        q = (f"{name} has {a} {item}. {name} gives {b} {item} to a friend and then finds {c} more. "
             f"How many {item} does {name} have now?")
        expr, value = "a - b + c", a - b + c
    return _Drawn(q, value, f"word-2step-{template}", (a, b, c), expr)


def _level5(rng: random.Random) -> _Drawn:
    """Three operations, three-digit numbers: the arithmetic itself is now hard for the model."""
    name = rng.choice(NAMES)
    template = rng.randrange(3)
    if template == 0:
        a, b = rng.randint(100, 499), rng.randint(2, 9)
        c = rng.randint(100, a * b - 1)
        d = rng.randint(10, 999)
        q = (f"A farmer packs {a} eggs into each of {b} crates. The farmer sells {c} eggs "
             f"and then collects {d} more eggs. How many eggs does the farmer have now?")
        expr, value = "a * b - c + d", a * b - c + d
    elif template == 1:
        a, b, c = rng.randint(100, 999), rng.randint(2, 9), rng.randint(100, 300)
        d = rng.randint(100, a + b * c - 1)
        q = (f"A library has {a} books. It receives {b} boxes with {c} books in each box. "
             f"Then it lends out {d} books. How many books are in the library now?")
        expr, value = "a + b * c - d", a + b * c - d
    else:
        a, b = rng.randint(100, 500), rng.randint(3, 9)
        c = rng.randint(100, a * b // 2)
        d = rng.randint(100, a * b - c - 1)
        q = (f"{name} earns {a} dollars every week for {b} weeks. {name} spends {c} dollars on a bike "
             f"and {d} dollars on books. How many dollars does {name} have left?")
        expr, value = "a * b - c - d", a * b - c - d
    return _Drawn(q, value, f"word-3step-{template}", (a, b, c, d), expr)


def _level1_words(rng: random.Random) -> _Drawn:
    a, b = rng.randint(1, 9), rng.randint(1, 9)
    text = rng.choice(("What is the sum of {a} and {b}?", "Add {a} and {b}. What do you get?",
                       "What is {a} plus {b}?"))
    return _Drawn(text.format(a=a, b=b), a + b, "add-1digit-words", (a, b), "a + b")


def _level2_words(rng: random.Random) -> _Drawn:
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    text = rng.choice(("What is {a} times {b}?", "What is the product of {a} and {b}?",
                       "Multiply {a} by {b}. What do you get?"))
    return _Drawn(text.format(a=a, b=b), a * b, "mul-1digit-words", (a, b), "a * b")


#: Kinds a level draws from once its own kinds have no fresh question left.
EXTRA_KINDS: dict[int, Callable[[random.Random], _Drawn]] = {1: _level1_words, 2: _level2_words}

#: Tries at a fresh question before a level falls back to its extra kinds (or repeats).
FRESH_TRIES = 50

LEVELS: dict[int, tuple[str, Callable[[random.Random], _Drawn]]] = {
    1: ("one-digit addition", _level1),
    2: ("one-digit multiplication", _level2),
    3: ("two-digit addition or subtraction", _level3),
    4: ("two-step word problem", _level4),
    5: ("three-step word problem with three-digit numbers", _level5),
}


def arith_problems(per_level: int = DEFAULT_PER_LEVEL, seed: int = 0, levels: tuple[int, ...] | None = None,
                   exclude: frozenset[str] | set[str] = frozenset()) -> list[Problem]:
    """``per_level`` problems for each level, ids ``arith-s{seed}-L{level}-{index:04d}``, deterministic in ``seed``.

    Questions are distinct within a level while the level and its extra kinds have fresh
    ones. ``exclude``: question keys (:func:`~ttsopt.data.problem.question_key`) never to draw,
    e.g. those of another set, so that a training set shares no question with it.
    """
    if per_level < 0:
        raise ValueError(f"per_level must be >= 0, got {per_level}")
    chosen = tuple(LEVELS) if levels is None else tuple(levels)
    unknown = [lv for lv in chosen if lv not in LEVELS]
    if unknown:
        raise ValueError(f"unknown arithmetic level(s) {unknown}; levels are {sorted(LEVELS)}")
    problems: list[Problem] = []
    for level in chosen:
        description, draw = LEVELS[level]
        rng = random.Random(f"ttsopt-arith:{seed}:{level}")  # str seeds hash the same in every process
        extra_rng = random.Random(f"ttsopt-arith-extra:{seed}:{level}")
        seen: set[str] = set(exclude)
        for index in range(per_level):
            drawn = _fresh(draw, rng, seen)
            if drawn is None and level in EXTRA_KINDS:
                drawn = _fresh(EXTRA_KINDS[level], extra_rng, seen)
            if drawn is None:  # nothing fresh anywhere: a repeat, as the level allows
                drawn = draw(rng)
            seen.add(question_key(drawn.question))
            problems.append(
                Problem(
                    id=f"arith-s{seed}-L{level}-{index:04d}",
                    question=drawn.question,
                    answer=str(drawn.answer),
                    source=SOURCE,
                    metadata={
                        "level": level,
                        "kind": drawn.kind,
                        "description": description,
                        "operands": list(drawn.operands),
                        "formula": drawn.formula,
                        "expression": _fill(drawn.formula, drawn.operands),
                        "seed": seed,
                    },
                )
            )
    return problems


def _fresh(draw: Callable[[random.Random], _Drawn], rng: random.Random, seen: set[str]) -> _Drawn | None:
    """A draw whose question key is not in ``seen``, within ``FRESH_TRIES`` tries; else None."""
    for _ in range(FRESH_TRIES):
        drawn = draw(rng)
        if question_key(drawn.question) not in seen:
            return drawn
    return None
