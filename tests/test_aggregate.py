"""Step-score aggregation and the three voting rules, ties included."""

import math

import pytest

from ttsopt.search.aggregate import aggregate_scores, has_final_answer, vote
from ttsopt.search.result import Candidate


def cand(answer, score=None):
    text = f"The answer is {answer}." if answer is not None else "I am not sure."
    return Candidate(text=text, steps=[text], answer=answer, score=score)


@pytest.mark.parametrize(
    "agg, expected", [("min", 0.2), ("last", 0.5), ("avg", (0.9 + 0.2 + 0.5) / 3), ("prod", 0.9 * 0.2 * 0.5)]
)
def test_aggregations_of_step_scores(agg, expected):
    assert aggregate_scores([0.9, 0.2, 0.5], agg) == pytest.approx(expected)


def test_a_solution_without_steps_scores_zero_under_every_rule():
    assert [aggregate_scores([], agg) for agg in ("min", "last", "avg", "prod")] == [0.0] * 4


def test_unknown_aggregation_is_rejected():
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_scores([0.5], "max")


def test_final_answer_is_recognised_in_both_styles():
    assert has_final_answer("So the answer is 12.")
    assert has_final_answer("Thus $\\boxed{12}$")
    assert not has_final_answer("3 + 4 = 7\n\n")


def test_majority_counts_answers_and_ignores_candidates_without_one():
    out = vote([cand("4"), cand(None), cand("7"), cand("7")], "majority")
    assert out.answer == "7"
    assert out.winner == 2
    assert out.tally == {"4": 1, "7": 2}


def test_majority_tie_goes_to_the_answer_that_appeared_first():
    out = vote([cand("4"), cand("7"), cand("7"), cand("4")], "majority")
    assert (out.answer, out.winner) == ("4", 0)


def test_prm_vote_sums_scores_per_answer():
    # "4" has more votes but "7" has more total score: 0.9 + 0.8 > 0.3 * 3
    pool = [cand("4", 0.3), cand("7", 0.9), cand("4", 0.3), cand("7", 0.8), cand("4", 0.3)]
    out = vote(pool, "prm_vote")
    assert out.answer == "7"
    assert out.tally == pytest.approx({"4": 0.9, "7": 1.7})
    assert vote(pool, "majority").answer == "4"


def test_prm_vote_tie_goes_to_the_answer_that_appeared_first():
    out = vote([cand("4", 0.25), cand("7", 0.5), cand("4", 0.25)], "prm_vote")
    assert (out.answer, out.winner) == ("4", 0)


def test_prm_max_takes_the_best_single_candidate_and_the_earlier_on_a_tie():
    pool = [cand("4", 0.6), cand("7", 0.9), cand("4", 0.8), cand("8", 0.9)]
    out = vote(pool, "prm_max")
    assert (out.answer, out.winner) == ("7", 1)
    assert out.tally == {"4": 0.8, "7": 0.9, "8": 0.9}


def test_prm_max_never_picks_a_candidate_without_an_answer():
    out = vote([cand(None, 0.99), cand("5", 0.1)], "prm_max")
    assert (out.answer, out.winner) == ("5", 1)


def test_no_answers_at_all_gives_none():
    for rule in ("majority", "prm_vote", "prm_max"):
        out = vote([cand(None, 0.5), cand(None, 0.7)], rule)
        assert (out.answer, out.winner, out.tally) == (None, None, {})


def test_prm_votes_need_scores():
    with pytest.raises(ValueError, match="needs scored candidates"):
        vote([cand("4", 0.5), cand("7")], "prm_vote")
    with pytest.raises(ValueError, match="unknown vote"):
        vote([cand("4")], "plurality")


def test_tally_is_json_friendly_numbers():
    out = vote([cand("4", 0.5)], "prm_max")
    assert all(isinstance(v, float) and math.isfinite(v) for v in out.tally.values())
