"""Difficulty labels: the paper's absolute Pass@1 bins and the Pass@k estimator."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from ttsopt.train.sweep.difficulty import (
    DIFFICULTY_BINS,
    DIFFICULTY_LEVELS,
    difficulty_bin,
    label_difficulty,
    pass_at_1,
    pass_at_k,
)


@pytest.mark.parametrize(
    "p, expected",
    [
        (0.0, "hard"),
        (0.0999, "hard"),
        (0.1, "medium"),          # one in ten is medium: the lower edge belongs to the bin
        (0.7 - 0.6, "medium"),    # 0.09999999999999998: an edge up to rounding is still the edge
        (0.4999, "medium"),
        (0.5, "easy"),
        (1 / 2, "easy"),
        (0.99, "easy"),
        (1.0, "easy"),
    ],
)
def test_bins_at_their_boundaries(p, expected):
    assert difficulty_bin(p) == expected


def test_bins_cover_zero_to_one_without_gaps_easiest_first():
    assert DIFFICULTY_LEVELS == ("easy", "medium", "hard")
    edges = sorted((b.low, b.high) for b in DIFFICULTY_BINS)
    assert edges[0][0] == 0.0 and edges[-1][1] == 1.0
    assert all(a[1] == b[0] for a, b in zip(edges, edges[1:]))


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan])
def test_a_pass_rate_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match="pass@1"):
        difficulty_bin(bad)


def test_a_non_number_is_refused():
    with pytest.raises(TypeError):
        difficulty_bin("easy")


def test_pass_at_1_is_the_share_correct():
    assert pass_at_1([True, False, True, True]) == 0.75
    assert pass_at_1(np.array([True, False])) == 0.5
    assert pass_at_1([1, 0, 0, 0]) == 0.25
    assert difficulty_bin(pass_at_1([True] + [False] * 9)) == "medium"


@pytest.mark.parametrize("bad", [[], [True, None], [0.5], ["yes"]])
def test_pass_at_1_refuses_ungraded_or_empty_samples(bad):
    with pytest.raises(ValueError):
        pass_at_1(bad)


def _brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of all k-subsets of n samples (the first c correct) that hold a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumerating_every_subset():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_special_cases():
    assert pass_at_k(16, 5, 1) == 5 / 16
    assert pass_at_k(10, 1, 1) == 0.1  # exactly, so its bin is the same as pass_at_1's
    assert pass_at_k(16, 0, 8) == 0.0
    assert pass_at_k(16, 9, 8) == 1.0  # only 7 wrong samples: any 8 include a right one
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001, rel=1e-12)  # exact binomials, no cancellation
    assert pass_at_k(np.int64(4), np.int64(2), np.int64(2)) == pytest.approx(5 / 6)


@pytest.mark.parametrize("args", [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(args):
    with pytest.raises(ValueError):
        pass_at_k(*args)


def test_pass_at_k_refuses_non_integers():
    with pytest.raises(TypeError):
        pass_at_k(4.0, 2, 1)
    with pytest.raises(TypeError):
        pass_at_k(4, True, 1)


def _samples() -> pd.DataFrame:
    rows = []

    def add(policy, problem, flags):
        rows.extend({"policy": policy, "problem_id": problem, "seed": i, "correct": f} for i, f in enumerate(flags))

    add("smollm2", "p1", [True] * 6 + [False] * 4)   # 0.6  easy
    add("smollm2", "p2", [True] + [False] * 9)       # 0.1  medium (edge)
    add("smollm2", "p3", [False] * 10)               # 0.0  hard
    add("gemma3", "p1", [True] + [False] * 19)       # 0.05 hard: difficulty belongs to the pair
    add("gemma3", "p2", [True, True, False, False])  # 0.5  easy (edge)
    add("gemma3", "p3", [True])                      # 1.0  easy, a single sample
    return pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # order must not matter


def test_label_difficulty_per_policy_and_problem():
    out = label_difficulty(_samples())
    assert list(out.columns) == ["policy", "problem_id", "n_samples", "n_correct", "pass_at_1", "difficulty"]
    got = {(r.policy, r.problem_id): (r.n_samples, r.n_correct, r.pass_at_1, r.difficulty) for r in out.itertuples()}
    assert got == {
        ("smollm2", "p1"): (10, 6, 0.6, "easy"),
        ("smollm2", "p2"): (10, 1, 0.1, "medium"),
        ("smollm2", "p3"): (10, 0, 0.0, "hard"),
        ("gemma3", "p1"): (20, 1, 0.05, "hard"),
        ("gemma3", "p2"): (4, 2, 0.5, "easy"),
        ("gemma3", "p3"): (1, 1, 1.0, "easy"),
    }


def test_label_difficulty_adds_pass_at_k_where_there_are_enough_samples():
    out = label_difficulty(_samples(), ks=(1, 4)).set_index(["policy", "problem_id"])
    assert [c for c in out.columns if c.startswith("pass_at")] == ["pass_at_1", "pass_at_4"]
    assert out.loc[("smollm2", "p2"), "pass_at_1"] == 0.1  # k=1 is pass@1 itself, not recomputed
    assert out.loc[("smollm2", "p1"), "pass_at_4"] == pytest.approx(pass_at_k(10, 6, 4))
    assert out.loc[("gemma3", "p2"), "pass_at_4"] == 1.0
    assert math.isnan(out.loc[("gemma3", "p3"), "pass_at_4"])  # one sample cannot estimate any@4


def test_label_difficulty_groups_by_any_columns_and_accepts_zero_one():
    df = pd.DataFrame({"model": ["a", "a", "a", "b"], "qid": [1, 1, 1, 1], "ok": [1, 0, 0, 0]})
    out = label_difficulty(df, by=("model", "qid"), correct_col="ok")
    assert out[["model", "qid", "n_correct", "difficulty"]].values.tolist() == [["a", 1, 1, "medium"],
                                                                               ["b", 1, 0, "hard"]]


def test_label_difficulty_explains_bad_input():
    df = _samples()
    with pytest.raises(KeyError, match="policy"):
        label_difficulty(df.drop(columns="policy"))
    with_missing = df.astype({"correct": object})
    with_missing.iloc[0, with_missing.columns.get_loc("correct")] = None
    with pytest.raises(ValueError, match="grade or drop"):
        label_difficulty(with_missing)
    with pytest.raises(ValueError, match="True/False"):
        label_difficulty(df.assign(correct=0.5))
    with pytest.raises(ValueError, match="ks"):
        label_difficulty(df, ks=(0,))
