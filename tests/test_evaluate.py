"""The evaluation's baselines on a table small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ttsopt.selector.decide")
from ttsopt.train.evaluate import _Pair, evaluate_pair  # noqa: E402


def tiny_pair() -> _Pair:
    # 4 problems, 2 folds (problems 0-1 in fold 0, 2-3 in fold 1); strategies A (n=1) and B (n=2).
    label = np.array([[1.0, 0.0],   # A solves the first two, B the last two
                      [1.0, 0.0],
                      [0.0, 1.0],
                      [0.5, 1.0]])
    pred = np.array([[0.9, 0.1],    # the router ranks right on every problem but the last
                     [0.8, 0.2],
                     [0.2, 0.7],
                     [0.6, 0.4]])
    return _Pair(name="toy", strategies=["A", "B"], n=np.array([1, 2]), label=label, pred=pred,
                 tokens=np.array([[10.0, 20.0]] * 4), flops=np.array([[1.0, 2.0]] * 4), fold=np.array([0, 0, 1, 1]),
                 bins=np.array(["easy", "easy", "hard", "hard"]), levels=np.array(["1", "1", "2", "2"]),
                 policy_params=1e8)


def test_baselines_and_gap_recovered_by_hand():
    report = evaluate_pair(tiny_pair())["budgets"]
    # N = 1: only A fits; every rule picks it: mean label (1 + 1 + 0 + 0.5) / 4
    assert report["1"]["router"]["accuracy"] == report["1"]["oracle"]["accuracy"] == pytest.approx(0.625)
    n2 = report["2"]
    # router: A, A, B, A -> 1 + 1 + 1 + 0.5
    assert n2["router"]["accuracy"] == pytest.approx(3.5 / 4)
    # best fixed chosen on the other fold: fold 0's problems are scored with fold 1's best (B: 1.0 vs A: 0.25)
    # -> B on problems 0, 1 (0, 0); fold 1 scored with fold 0's best (A) -> 0, 0.5
    assert n2["best_fixed"]["accuracy"] == pytest.approx(0.5 / 4)
    assert n2["best_fixed_test"]["accuracy"] == pytest.approx(0.625)  # A or B on all four: A 2.5, B 2.0
    assert n2["oracle"]["accuracy"] == pytest.approx(4 / 4)
    assert n2["per_bin_oracle_bins"]["accuracy"] == pytest.approx(0.5 / 4)  # bins never seen on the other side
    assert n2["random"]["accuracy"] == pytest.approx((2.5 + 2.0) / 8)
    assert n2["gap_recovered"] == pytest.approx((3.5 - 0.5) / (4 - 0.5))
    assert n2["shares"] == {"A": 0.75, "B": 0.25}


def test_the_router_never_chooses_a_strategy_over_the_budget():
    report = evaluate_pair(tiny_pair())["budgets"]
    assert report["1"]["shares"] == {"A": 1.0}
