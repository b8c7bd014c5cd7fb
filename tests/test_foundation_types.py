import pytest

from ttsopt.search import Compute, SamplingParams, Strategy, split_steps


def test_split_steps_round_trips_and_keeps_delimiters():
    text = "3 + 4 = 7\n\n7 * 2 = 14\n\n\n\nThe answer is 14."
    steps = split_steps(text)
    assert "".join(steps) == text
    assert steps == ["3 + 4 = 7\n\n", "7 * 2 = 14\n\n\n\n", "The answer is 14."]


def test_split_steps_of_empty_text_is_empty():
    assert split_steps("") == []


def test_strategy_keys_are_stable_and_round_trip():
    s = Strategy("beam", n=16, m=4, agg="min", vote="prm_vote")
    assert s.key == "beam:n=16,m=4,agg=min,vote=prm_vote,depth=10"
    assert Strategy.from_key(s.key) == s
    # fields that do not apply are normalised away
    assert Strategy("majority", n=8, agg="min").key == "majority:n=8"
    assert Strategy("cot", n=32).key == "cot"


def test_strategy_rejects_bad_hyper_parameters():
    with pytest.raises(ValueError, match="multiple"):
        Strategy("beam", n=10, m=4)
    with pytest.raises(ValueError, match="unknown method"):
        Strategy("mcts")


def test_compute_counts_flops_as_two_params_per_token():
    c = Compute()
    c.add_policy(prompt_tokens=10, generated_tokens=5, num_parameters=100)
    c.add_prm(tokens=20, num_parameters=50)
    assert c.policy_flops == 2 * 100 * 15
    assert c.prm_flops == 2 * 50 * 20
    assert (c + c).flops == 2 * c.flops


def test_sampling_params_accepts_a_single_stop_string():
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)
    with pytest.raises(ValueError):
        SamplingParams(n=0)
