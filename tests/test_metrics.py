"""Evaluation metrics on numbers small enough to check by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ttsopt.train.evaluation.metrics import (bootstrap_mean_ci, brier, calibration_table, compute_multiplier, gap_recovered,
                                  hull_area, nondecreasing_hull, paired_bootstrap)

# --------------------------------------------------------------------------- gap recovered


def test_gap_recovered_by_hand():
    assert gap_recovered(0.7, 0.5, 0.9) == pytest.approx(0.5)  # (0.7 - 0.5) / (0.9 - 0.5)
    assert gap_recovered(0.9, 0.5, 0.9) == pytest.approx(1.0)  # the oracle
    assert gap_recovered(0.4, 0.5, 0.9) == pytest.approx(-0.25)  # worse than the best fixed strategy
    assert math.isnan(gap_recovered(0.6, 0.5, 0.5))  # no gap to recover
    assert math.isnan(gap_recovered(0.6, 0.5, 0.5 + 1e-13))


# --------------------------------------------------------------------------- hull


def test_the_hull_drops_dominated_points_and_points_under_a_chord():
    # (2, 0.4) is beaten by the cheaper (1, 0.5)
    costs, accs = nondecreasing_hull([4, 2, 1], [0.8, 0.4, 0.5])
    assert costs.tolist() == [1, 4] and accs.tolist() == [0.5, 0.8]
    # (2, 0.3) is under the chord (1, 0.2)-(3, 0.6), which mixing the two reaches: 0.4 at cost 2
    costs, accs = nondecreasing_hull([1, 2, 3], [0.2, 0.3, 0.6])
    assert costs.tolist() == [1, 3] and accs.tolist() == [0.2, 0.6]
    # a concave frontier is kept whole (slopes 0.3, 0.1)
    assert nondecreasing_hull([1, 2, 3], [0.2, 0.5, 0.6])[0].tolist() == [1, 2, 3]


# Three strategies at 10, 100, 1000 FLOPs; the one at 100 (0.3) is worse than the one at 10 (0.4).
# The hull is (10, 0.4) -> (1000, 0.8); on log10 cost that is x = 1 -> 3, linear from 0.4 to 0.8.
COSTS, ACCS = [10.0, 100.0, 1000.0], [0.4, 0.3, 0.8]


def test_hull_area_on_log_cost_by_hand():
    # x in [1, 3]: mean of 0.4 and 0.8 = 0.6
    assert hull_area(COSTS, ACCS, lo=10, hi=1000) == pytest.approx(0.6)
    # x in [0, 4]: 0 on [0, 1] (nothing that cheap), 0.6 * 2 on [1, 3], 0.8 on [3, 4]: (0 + 1.2 + 0.8) / 4
    assert hull_area(COSTS, ACCS, lo=1, hi=10_000) == pytest.approx(0.5)
    # a zero-width range: the value there, x = 2 -> 0.6
    assert hull_area(COSTS, ACCS, lo=100, hi=100) == pytest.approx(0.6)


def test_hull_area_on_linear_cost_by_hand():
    # hull (1, 0.5) -> (3, 0.9), (2, 0.4) dropped; over [0, 4]: 0 on [0, 1], 0.7 * 2 on [1, 3], 0.9 on [3, 4]
    assert hull_area([1, 2, 3], [0.5, 0.4, 0.9], lo=0, hi=4, log=False) == pytest.approx((1.4 + 0.9) / 4)


def test_hull_area_refuses_a_reversed_range_and_zero_costs_on_the_log_axis():
    with pytest.raises(ValueError, match="lo <= hi"):
        hull_area(COSTS, ACCS, lo=100, hi=10)
    with pytest.raises(ValueError, match="positive"):
        hull_area([0.0, 1.0], [0.1, 0.2], lo=1, hi=10)


# --------------------------------------------------------------------------- compute multiplier


def test_compute_multiplier_interpolates_along_the_hull():
    # 0.6 is halfway from 0.4 to 0.8: x = 1 + 0.5 * 2 = 2 -> 100 FLOPs; the target spends 50 -> 2x
    assert compute_multiplier(0.6, 50.0, COSTS, ACCS) == pytest.approx(2.0)
    # on linear cost: 10 + 0.5 * 990 = 505 -> 10.1x
    assert compute_multiplier(0.6, 50.0, COSTS, ACCS, log=False) == pytest.approx(10.1)
    # exactly the last hull point: 1000 / 50
    assert compute_multiplier(0.8, 50.0, COSTS, ACCS) == pytest.approx(20.0)
    # already reached by the cheapest point: 10 / 50 (< 1: the baseline is cheaper)
    assert compute_multiplier(0.3, 50.0, COSTS, ACCS) == pytest.approx(0.2)


def test_compute_multiplier_is_infinite_when_the_baseline_never_gets_there():
    assert compute_multiplier(0.85, 50.0, COSTS, ACCS) == math.inf


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_of_two_values_by_hand():
    # resampled means of [0, 1] are 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 2.5% and 97.5%
    # percentiles of 2000 draws (about 500 of each end) are 0 and 1
    ci = bootstrap_mean_ci([0.0, 1.0])
    assert ci == {"mean": 0.5, "lo": 0.0, "hi": 1.0}


def test_a_constant_difference_has_a_zero_width_interval():
    b = np.linspace(0, 0.9, 10)
    ci = paired_bootstrap(b + 0.25, b)
    assert ci["mean"] == pytest.approx(0.25) and ci["lo"] == pytest.approx(0.25) and ci["hi"] == pytest.approx(0.25)


def test_paired_bootstrap_contains_the_true_difference():
    # differences 0.1 +- 0.3, +- 0.2, +- 0.1, 0 repeated: their mean is exactly 0.1
    d = 0.1 + np.tile([-0.3, 0.3, -0.2, 0.2, -0.1, 0.1, 0.0], 20)
    difficulty = np.random.default_rng(3).uniform(size=len(d))  # shared by both methods
    ci = paired_bootstrap(difficulty + d, difficulty)
    assert ci["mean"] == pytest.approx(0.1)
    assert ci["lo"] < 0.1 < ci["hi"]
    assert ci["hi"] - ci["lo"] < 0.1  # sd 0.18 / sqrt(140) ~ 0.016: a width of about 4 * 0.016


def test_pairing_cancels_the_shared_difficulty():
    rng = np.random.default_rng(4)
    difficulty = rng.uniform(size=300)
    a, b = difficulty + 0.05 + rng.normal(0, 0.01, 300), difficulty
    paired = paired_bootstrap(a, b)
    alone = bootstrap_mean_ci(a)
    assert paired["hi"] - paired["lo"] < (alone["hi"] - alone["lo"]) / 5


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(5)
    a, b = rng.uniform(size=50), rng.uniform(size=50)
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    assert paired_bootstrap(a, b, seed=7) != paired_bootstrap(a, b, seed=8)


def test_many_problems_are_resampled_in_blocks():
    # 3000 problems x 2000 resamples is over one block: the means still sit around the sample mean
    a = np.tile([0.0, 1.0], 1500)
    ci = bootstrap_mean_ci(a)
    assert ci["mean"] == 0.5 and 0.47 < ci["lo"] < 0.5 < ci["hi"] < 0.53  # sd 0.5 / sqrt(3000) ~ 0.009


def test_the_bootstrap_refuses_unpaired_or_empty_inputs():
    with pytest.raises(ValueError, match="paired"):
        paired_bootstrap([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_mean_ci([])


# --------------------------------------------------------------------------- calibration


def test_brier_by_hand():
    # (0.1^2 + 0.2^2 + 0.5^2) / 3 = (0.01 + 0.04 + 0.25) / 3
    assert brier([0.9, 0.2, 0.5], [1.0, 0.0, 1.0]) == pytest.approx(0.1)


def test_calibration_table_by_hand():
    table = calibration_table([0.1, 0.4, 0.5, 0.9, 1.0], [0.0, 1.0, 1.0, 1.0, 0.0], bins=2)
    assert list(table.columns) == ["bin_lo", "bin_hi", "count", "mean_pred", "mean_label"]
    # [0, 0.5): 0.1, 0.4 -> mean 0.25, labels 0, 1 -> 0.5; [0.5, 1]: 0.5, 0.9, 1.0 -> 0.8, labels 1, 1, 0 -> 2/3
    assert table["bin_lo"].tolist() == [0.0, 0.5] and table["bin_hi"].tolist() == [0.5, 1.0]
    assert table["count"].tolist() == [2, 3]
    assert table["mean_pred"].tolist() == pytest.approx([0.25, 0.8])
    assert table["mean_label"].tolist() == pytest.approx([0.5, 2 / 3])


def test_calibration_table_keeps_empty_bins_and_clips_out_of_range_predictions():
    table = calibration_table([-0.05, 0.3, 1.02], [0.0, 1.0, 1.0], bins=10)
    assert len(table) == 10
    # -0.05 -> first bin; 0.3 -> [0.3, 0.4) (its own edge, not the bin below); 1.02 -> last bin
    assert table["count"].tolist() == [1, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert table["mean_label"].tolist()[3] == 1.0
    assert np.isnan(table["mean_pred"][1]) and np.isnan(table["mean_label"][1])


def test_aiq_difference_is_the_area_between_the_hulls_with_a_paired_ci():
    from ttsopt.train.evaluation.metrics import aiq_difference

    # two single-point curves on 4 problems at 10 and 100 FLOPs (log axis, range [10, 100])
    a = (np.array([[1.0, 1.0, 0.0, 0.0]]), np.full((1, 4), 10.0))  # accuracy 0.5 from the start
    b = (np.array([[1.0, 0.0, 1.0, 0.0]]), np.full((1, 4), 100.0))  # 0.5, but only at the far end
    d = aiq_difference(a, b, lo=10.0, hi=100.0, n_boot=200)
    assert d["mean"] == pytest.approx(0.5)  # a: 0.5 over the whole decade; b: 0 until 100, its area 0
    assert d["lo"] <= d["mean"] <= d["hi"]
    same = aiq_difference(a, a, lo=10.0, hi=100.0, n_boot=50)
    assert same == {"mean": 0.0, "lo": 0.0, "hi": 0.0}  # paired: a curve against itself has no spread
    with pytest.raises(ValueError, match="same problems"):
        aiq_difference(a, (np.zeros((1, 3)), np.ones((1, 3))), lo=1.0, hi=10.0)
