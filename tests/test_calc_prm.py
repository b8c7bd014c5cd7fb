"""The calculator PRM: finds stated arithmetic, recomputes it exactly, stays bounded on hostile text."""

from __future__ import annotations

import json
import time

import pytest

from ttsopt.search import PRM, StepScores, load_prm
from ttsopt.search.prm.calc import CalculatorPRM, check_step

WRONG, RIGHT, NEUTRAL = 0.05, 0.95, 0.5


@pytest.fixture(scope="module")
def prm() -> CalculatorPRM:
    return CalculatorPRM()


def verdict(text: str) -> str:
    return check_step(text).verdict


# --- right, wrong and nothing to check ----------------------------------------------------


def test_right_arithmetic_scores_high_and_wrong_arithmetic_scores_low(prm):
    [scores] = prm.score([("q", ["3 + 4 = 7", "3 + 4 = 8", "Tom has some apples."])])
    assert scores.scores == [RIGHT, WRONG, NEUTRAL]


def test_one_wrong_equation_makes_the_whole_step_wrong():
    check = check_step("12 * 5 = 60, and then 60 - 15 = 40, so 40 / 2 = 20.")
    assert (check.right, check.wrong) == (2, 1)
    assert check.verdict == "wrong"


@pytest.mark.parametrize(
    "text",
    [
        "6 × 7 = 42", "6 x 7 = 42", "6x7 = 42", "6 · 7 = 42", "6 * 7 = 42", "42 / 6 = 7", "42 ÷ 6 = 7",
        "2^10 = 1024", "2**10 = 1024", "2 ** 10 = 1024", "2^3^2 = 512", "(2 + 3) * 4 = 20", "2 + 3 * 4 = 14",
        "2(3 + 4) = 14", "-3 + 5 = 2", "5 - -3 = 8", "3 − 5 = -2", "[2 + 3] * 2 = 10", "2^-1 = 0.5",
        "6 times 7 = 42", "6 plus 7 = 13", "10 minus 4 = 6", "10 divided by 4 = 2.5", "6 multiplied by 7 = 42",
    ],
)
def test_operators_and_precedence(text):
    assert verdict(text) == "right"


@pytest.mark.parametrize(
    "text",
    [
        "1,234 + 1 = 1,235", "1,000,000 / 4 = 250,000", "0.1 + 0.2 = 0.3", "2.5 * 4 = 10", ".5 + .5 = 1",
        "20% of 50 = 10", "50 * 20% = 10", "10/50 = 20%", "(10/50) * 100 = 20%", "3/4 of 20 = 15",
        "1/3 * 18 = 6", "$5 + $3 = $8", "$1,200 - $200 = $1,000", "$0.50 * 4 = $2",
    ],
)
def test_commas_decimals_percent_fractions_currency(text):
    assert verdict(text) == "right"


@pytest.mark.parametrize(
    "text",
    [
        r"\(2 \times 3 = 6\)", r"\[ 12 \div 4 = 3 \]", r"$4 \cdot 5 = 20$", r"\frac{3}{4} \times 8 = 6",
        r"\dfrac{10}{4} = 2.5", r"\frac{1}{2} + \frac{1}{3} = \frac{5}{6}", r"2\frac{1}{2} + 1 = 3.5",
        r"\left(2 + 3\right)^{2} = 25", r"\[ \text{Total} = \$10 + \$5 = \$15 \]",
        r"\(2 \text{ books} \times 2 \text{ pounds/book} = 4 \text{ pounds}\)", r"\boxed{3 + 4 = 7}",
        r"\begin{aligned} 3 + 4 &= 7 \end{aligned}", "The total is <<4*5=20>>20 cookies.", "**3 + 4 = 7**",
        r"Since $90^3=729,\!000$, AB > 90.", r"$\frac{3}{2}\cdot10{,}000/12=\boxed{1250}$",
    ],
)
def test_latex_and_markup(text):
    assert verdict(text) == "right"


@pytest.mark.parametrize(
    "text",
    [
        "5 apples + 3 apples = 8 apples", "2 hours * 60 minutes/hour = 120 minutes",
        "$15/hour * 8 hours = $120", "After 3 days she has 17 - 3 = 14 lollipops.",
        "Erin gets 6 (from her brother) + 1 (from Doxa) = 7 slices.", "2 x $0.10 = $0.20 (20 cents).",
        "20 sacks x 65 pounds per sack = 1300 pounds.", "(5 cm)(3 cm) = 15 cm^2",
        r"Wolves killed: \(10\) (last night) + \(45\) (today) = \(55\).",
        r"two numbers that multiply to \( 3 \cdot 1 = 3 \) and add up to \( -4 \)",
    ],
)
def test_units_and_words_around_numbers(text):
    assert verdict(text) == "right"


def test_units_do_not_hide_a_wrong_sum():
    assert verdict("5 apples + 3 apples = 9 apples") == "wrong"


def test_list_bullets_are_not_minus_signs():
    assert verdict("Powers:\n- 2^9 = 512\n- 3^2 = 9") == "right"
    assert verdict("Powers:\n- \\(2^9 = 512\\)\n- \\(3^2 = 6\\)") == "wrong"


def test_chains_check_every_adjacent_pair():
    assert verdict("3 + 4 = 7 = 14 / 2") == "right"
    check = check_step("7 * 70 - 40 = 470 - 40 = 430")
    assert [e.correct for e in check.equations] == [False, True]
    # a variable at the head of a chain: only the arithmetic pairs are checked
    check = check_step(r"\[ \text{Total} = O_s + O_c + J_c = 20 + 22 + 66 = 108 \]")
    assert [(e.left, e.right, e.correct) for e in check.equations] == [("20 + 22 + 66", "108", True)]
    assert check.unchecked == 2


def test_rounded_results_match_to_the_stated_decimals():
    assert verdict("10/3 = 3.33") == "right"
    assert verdict("10/3 = 3.3333") == "right"
    assert verdict("2/3 = 0.67") == "right"
    assert verdict("1547 / 3 = 515.66 (not a whole number)") == "right"  # truncated
    assert verdict("10/3 = 3.34") == "wrong"
    assert verdict("10/3 = 3.4") == "wrong"
    assert verdict("7/2 = 3") == "wrong"  # an integer gets no rounding slack
    assert verdict("1/3 = 33%") == "right"
    assert verdict("(2.8284)^2 = 8") == "right"  # computing with a rounded irrational


def test_each_supported_notation_catches_a_wrong_result():
    for text in ["6 × 7 = 43", "1,234 + 1 = 1,236", "20% of 50 = 12", r"\frac{3}{4} \cdot 8 = 5",
                 "$5 + $3 = $9", "2^10 = 1000", "(5 cm)^2 = 24 cm^2", r"\(2 \times 3 = 7\)", "6 times 7 = 41", "3/4 of 20 = 16"]:
        assert verdict(text) == "wrong", text


@pytest.mark.parametrize(
    "text",
    [
        "4x = 100", "x - 3 = 14", "2x + 3 = 7", r"\sqrt{16} = 4", "sqrt(16) = 4", "f(2) = 5",
        "the sum of 2 and 3 = 5",  # "2 and 3" is not arithmetic we can read
        "Cost of 3 apples = 5",  # a label, not a computation
        "60 minutes = 1 hour", "1 dozen = 12 cookies", "5 pairs = 5 * 2", "$0.054 = 5.4 cents",  # changes of units
        r"\frac{2}{3} = 0.\overline{6}", "5 / 0 = 0", "7! = 5040", "3 + 4 \\approx 8", "1st - 5 = 6th",
        "x = 5 more than 3 = 8",  # a cut between linked numbers is refused
        "The time is 3:45 = 225 minutes", "The ratio is 3:4 = 0.75",
        r"so \(a+1 = 148\) and \(a-5 = 142\)",  # "a" next to an operator is a variable
    ],
)
def test_uncheckable_text_is_neutral_never_wrong(text):
    assert verdict(text) == "neutral", check_step(text)


def test_joining_words_between_two_equations_may_be_cut():
    check = check_step("We get 2 * 3 = 6 and 6 + 1 = 8.")
    assert [(e.left, e.right, e.correct) for e in check.equations] == [("2 * 3", "6", True), ("6 + 1", "8", False)]
    check = check_step("5 + 3 = 8 and 2 = 3")  # "2" after words is a label, not a computation
    assert (check.right, check.wrong, check.unchecked) == (1, 0, 1)


def test_integer_division_with_a_remainder_is_not_a_false_alarm():
    assert verdict("17 ÷ 5 = 3 with a remainder of 2.") == "neutral"
    assert verdict("370 / 110 = 4 bags, rounding up.") == "neutral"
    assert verdict("17 ÷ 5 = 3") == "wrong"


def test_a_label_does_not_hide_the_computation_after_it():
    check = check_step("Cost of 3 apples = 3 * 2 = 6 dollars")
    assert [(e.left, e.right, e.correct) for e in check.equations] == [("3 * 2", "6 dollars", True)]


def test_a_wrong_setup_with_right_arithmetic_passes_the_known_blind_spot(prm):
    question = "Tom has 5 apples and buys 3 more. How many does he have?"
    [scores] = prm.score([(question, ["He has 5 - 3 = 2 apples.", "The answer is 2."])])
    assert scores.scores == [RIGHT, NEUTRAL]


# --- bounds and hostile input --------------------------------------------------------------

HOSTILE = {
    "power tower": "9^9^9^9 = 1",
    "huge power": "10^10^10 = 7",
    "python power": "2**99999999 = 3",
    "100k operators": "1+" * 100_000 + "1 = 100001",
    "1 MB step": ("The cost is 3 + 4 = 7 dollars. " * 40_000)[:1_000_000],
    "1 MB number": "1" * 1_000_000 + " = 1",
    "deep parentheses": "(" * 50_000 + "1" + ")" * 50_000 + " = 1",
    "many equals": "1=" * 50_000 + "1",
    "unary minus run": "-" * 5_000 + "1 = 1",
    "huge product": " * ".join(["9" * 150] * 50) + " = 1",
    "tiny fraction power": "(1/2)^100000 = 0",
    "huge exponent": "2^" + "9" * 199 + " = 1",
    "variables": "x - " * 3_000 + "3 = 1",
    "unclosed inline math": ("\\(" * 2_000 + "\n") * 10,
    "long lines of equations": ("1+2*3=7=7=7=7=7\n" * 70_000),
    "deep parentheses per line": ("(" * 3_000 + "1=1\n") * 10,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_steps_finish_fast_with_a_bounded_score(prm, name):
    start = time.perf_counter()
    [scores] = prm.score([("q", [HOSTILE[name]])])
    # ~0.2 s on an idle 2-core machine; the bound leaves room for a loaded CI box
    assert time.perf_counter() - start < 2.0
    assert len(scores.scores) == 1 and 0.0 <= scores.scores[0] <= 1.0


def test_values_beyond_the_bounds_are_uncheckable_not_wrong():
    assert verdict("9^9^9^9 = 1") == "neutral"
    assert verdict("2**99999999 = 3") == "neutral"
    assert verdict("1" * 201 + " = 1") == "neutral"
    assert check_step("1" * 201 + " = 1", max_digits=300).verdict == "wrong"
    assert verdict("1^" + "9" * 199 + " = 1") == "right"  # a huge exponent of 1 is cheap and exact
    assert verdict("2^100 = 1267650600228229401496703205376") == "right"
    many = "+".join(["1"] * 12) + " = 12"
    assert check_step(many).verdict == "right"
    assert check_step(many, max_ops=10).verdict == "neutral"


def test_a_long_step_is_read_up_to_a_sentence_end_inside_the_window():
    text = "2 + 2 = 4. " + "Blah blah. " * 100 + "3 + 3 = 7."
    assert check_step(text).verdict == "wrong"
    assert check_step(text, max_chars=200).verdict == "right"  # the wrong sum lies beyond the window
    assert check_step("12 + 1 = 13", max_chars=10).verdict == "neutral"  # never "12 + 1 = 1"


# --- the PRM protocol -------------------------------------------------------------------------


def test_batch_returns_one_step_scores_per_item_with_one_score_per_step(prm):
    items = [
        ("q1", ["3 + 4 = 7\n\n", "7 * 2 = 15\n\n", "The answer is 15."]),
        ("q2", []),
        ("q3", ("2 + 2 = 4",)),
    ]
    out = prm.score(items)
    assert all(isinstance(s, StepScores) for s in out)
    assert [len(s.scores) for s in out] == [3, 0, 1]
    assert out[0].scores == [RIGHT, WRONG, NEUTRAL]
    assert out[1].tokens == 0
    # tokens: words/numbers and single punctuation marks of the steps, not the question
    assert out[2].tokens == 5
    assert out[0].tokens == 5 + 5 + 5


def test_is_a_zero_parameter_prm_with_configurable_scores():
    prm = CalculatorPRM(wrong_score=0.0, right_score=1.0, neutral_score=0.25, name="calc-strict")
    assert isinstance(prm, PRM)
    assert prm.num_parameters == 0 and prm.name == "calc-strict"
    [s] = prm.score([("q", ["1 + 1 = 2", "1 + 1 = 3", "hello"])])
    assert s.scores == [1.0, 0.0, 0.25]


def test_registry_builds_it_from_the_spec():
    prm = load_prm("calc")
    assert isinstance(prm, CalculatorPRM) and prm.name == "calc"
    assert load_prm("calc", wrong_score=0.1).score([("q", ["2 + 2 = 5"])])[0].scores == [0.1]


def test_bad_input_fails_with_a_clear_message(prm):
    with pytest.raises(TypeError, match="sequence of strings"):
        prm.score([("q", "3 + 4 = 7")])
    with pytest.raises(TypeError, match="pair"):
        prm.score(["3 + 4 = 7"])
    with pytest.raises(TypeError, match="string"):
        prm.score([("q", [7])])
    with pytest.raises(ValueError, match="wrong_score"):
        CalculatorPRM(wrong_score=1.5)
    with pytest.raises(ValueError, match="max_digits"):
        CalculatorPRM(max_digits=0)


# --- real solutions ---------------------------------------------------------------------------


def test_on_processbench_gsm8k_it_rarely_flags_a_correct_step_and_catches_some_errors(shared_data):
    path = shared_data / "processbench_gsm8k.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    rows = json.loads(path.read_text())
    prm = CalculatorPRM()
    correct_steps = flagged = caught = 0
    for row in rows:
        label = row["label"]
        verdicts = [prm.check(s).verdict for s in row["steps"]]
        good = verdicts if label < 0 else verdicts[:label]
        correct_steps += len(good)
        flagged += good.count("wrong")
        caught += label >= 0 and verdicts[label] == "wrong"
    assert correct_steps > 1000
    assert flagged / correct_steps < 0.01
    assert caught >= 10


def test_blind_spot_analysis_sorts_first_wrong_steps(monkeypatch):
    import importlib.util
    from pathlib import Path

    pb = pytest.importorskip("ttsopt.search.prm.processbench")
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "calc_blind_spots.py"
    spec = importlib.util.spec_from_file_location("calc_blind_spots", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(pb, "first_error_auc", lambda labels, scores: None)  # spares importing scikit-learn

    def ex(i, steps, label):
        return pb.ProcessBenchExample(id=str(i), problem="q", steps=tuple(steps), label=label)

    examples = [
        ex(0, ["He has 5 apples.", "5 + 3 = 9"], 1),  # caught
        ex(1, ["He has 5 apples.", "5 - 3 = 2"], 1),  # wrong setup, right arithmetic
        ex(2, ["He misreads the question."], 0),  # nothing to check
        ex(3, ["5 + 3 = 8", "The answer is 8."], -1),
        ex(4, ["2 * 4 = 8"], -1),
    ]
    report = module.analyse(examples, CalculatorPRM())
    counts = {k: v["count"] for k, v in report["first_wrong_step"].items()}
    assert counts == {"caught": 1, "missed_right_arithmetic": 1, "missed_nothing_checkable": 1}
    assert report["accuracy_erroneous"] == pytest.approx(1 / 3)
    assert report["accuracy_correct"] == 1.0
    assert report["correct_solutions_flagged"]["count"] == 0
    assert report["predicted_first_error"]["exact"]["count"] == 1
