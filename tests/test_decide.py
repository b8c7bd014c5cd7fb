"""The decision rules on tables small enough to check by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ttsopt.selector.decide import NONE, allocate, fits, for_target, frontier, penalized, within_budget

# One problem, three strategies: cheap and weak, middling, dear and strong.
PRED = np.array([[0.5, 0.7, 0.9]])
COST = np.array([1.0, 4.0, 10.0])


# --------------------------------------------------------------------------- within_budget


def test_within_budget_takes_the_best_strategy_that_fits():
    assert within_budget(PRED, COST, 5.0).tolist() == [1]  # 0.9 costs 10 > 5; 0.7 costs 4 <= 5
    assert within_budget(PRED, COST, 10.0).tolist() == [2]  # a cost equal to the budget fits
    assert within_budget(PRED, COST, 9.999).tolist() == [1]


def test_the_probe_already_spent_is_charged_to_the_budget():
    # 10 + 1 > 10, so the probe pushes the strongest strategy out
    assert within_budget(PRED, COST, 10.0, extra_cost=1.0).tolist() == [1]
    # per problem: problem 0 spent nothing (all fit), problem 1 spent 7 (1 + 7 = 8 fits, 4 + 7 = 11 does not)
    pred = np.vstack([PRED, PRED])
    assert within_budget(pred, COST, 10.0, extra_cost=[0.0, 7.0]).tolist() == [2, 0]
    assert fits(pred, COST, 10.0, extra_cost=[0.0, 7.0]).tolist() == [[True, True, True], [True, False, False]]


def test_the_budget_is_respected_on_random_tables():
    rng = np.random.default_rng(0)
    pred = rng.uniform(size=(200, 12))
    cost = rng.uniform(0, 100, size=(200, 12))
    budget = rng.uniform(0, 120, size=200)
    extra = rng.uniform(0, 30, size=200)
    idx = within_budget(pred, cost, budget, extra_cost=extra)
    rows = np.flatnonzero(idx >= 0)
    assert (cost[rows, idx[rows]] + extra[rows] <= budget[rows]).all()
    # and it is the best that fits: nothing that fits predicts more
    ok = cost + extra[:, None] <= budget[:, None]
    assert np.allclose(pred[rows, idx[rows]], np.where(ok, pred, -1).max(axis=1)[rows])
    assert (idx[~ok.any(axis=1)] == NONE).all()


def test_nothing_fits_gives_minus_one():
    assert within_budget(PRED, COST, 0.5).tolist() == [NONE] == [-1]
    assert not fits(PRED, COST, 0.5).any()


def test_ties_go_to_the_cheaper_strategy_then_the_lower_index():
    # 0.8, 0.8 and 0.8 + 1e-13 are tied (within 1e-12): the cheapest (cost 2, index 1) wins
    assert within_budget([[0.8, 0.8, 0.8 + 1e-13]], [5.0, 2.0, 9.0], 100).tolist() == [1]
    # same prediction and same cost: the lower index
    assert within_budget([[0.6, 0.6]], [3.0, 3.0], 100).tolist() == [0]
    # 1e-9 is a real difference, worth paying for
    assert within_budget([[0.8, 0.8 + 1e-9]], [1.0, 9.0], 100).tolist() == [1]


def test_per_problem_costs_and_unavailable_strategies():
    pred = [[0.5, 0.9], [0.5, 0.9]]
    cost = [[1.0, 2.0], [1.0, np.inf]]  # strategy 1 unavailable for problem 1
    assert within_budget(pred, cost, np.inf).tolist() == [1, 0]  # inf cost never fits, even an inf budget


@pytest.mark.parametrize("pred, cost, budget, match", [
    ([0.5, 0.7], [1, 2], 5, "n_problems, n_strategies"),
    ([[0.5, 0.7]], [1, 2, 3], 5, "cost must be"),
    ([[np.nan, 0.7]], [1, 2], 5, "pred has NaN"),
    ([[0.5, 0.7]], [1, np.nan], 5, "cost has NaN"),
    ([[0.5, 0.7]], [1, -2], 5, "non-negative"),
    ([[0.5, 0.7]], [1, 2], np.nan, "budget has NaN"),
    ([[0.5, 0.7]], [1, 2], [5, 6], r"budget must be a scalar or \(1,\)"),
])
def test_bad_inputs_are_refused_with_a_reason(pred, cost, budget, match):
    with pytest.raises(ValueError, match=match):
        within_budget(pred, cost, budget)


def test_a_negative_probe_cost_is_refused():
    with pytest.raises(ValueError, match="extra_cost"):
        within_budget(PRED, COST, 5, extra_cost=-1)


# --------------------------------------------------------------------------- for_target


def test_for_target_returns_the_cheapest_strategy_reaching_the_target():
    pred = np.array([[0.3, 0.6, 0.8, 0.85]])
    cost = np.array([1.0, 2.0, 8.0, 4.0])
    idx, reached = for_target(pred, cost, 0.6)
    assert idx.tolist() == [1] and reached.tolist() == [True]  # 0.6 >= 0.6 at cost 2
    # 0.8 (cost 8) and 0.85 (cost 4) reach 0.7: the cheaper, 0.85, even though it is not the first
    idx, reached = for_target(pred, cost, 0.7)
    assert idx.tolist() == [3] and reached.tolist() == [True]


def test_for_target_flags_the_best_strategy_when_nothing_reaches():
    pred = np.array([[0.3, 0.6, 0.8, 0.85]])
    idx, reached = for_target(pred, [1.0, 2.0, 8.0, 4.0], 0.9)
    assert idx.tolist() == [3] and reached.tolist() == [False]


def test_for_target_per_problem_targets_and_equal_costs():
    pred = np.array([[0.7, 0.9], [0.7, 0.9]])
    cost = np.array([3.0, 3.0])
    # problem 0: both reach 0.6 at the same cost -> the higher prediction; problem 1: 0.95 not reached -> best
    idx, reached = for_target(pred, cost, [0.6, 0.95])
    assert idx.tolist() == [1, 1] and reached.tolist() == [True, False]


# --------------------------------------------------------------------------- penalized


def test_penalized_trades_accuracy_for_compute_as_lambda_grows():
    pred = np.array([[0.5, 0.8, 0.9]])
    cost = np.array([0.0, 10.0, 100.0])
    assert penalized(pred, cost, 0.0).tolist() == [2]  # free compute: the best
    assert penalized(pred, cost, 0.01).tolist() == [1]  # 0.5, 0.8 - 0.1 = 0.7, 0.9 - 1 = -0.1
    assert penalized(pred, cost, 0.05).tolist() == [0]  # 0.5, 0.3, -4.1
    # lam = 0.03: 0.8 - 0.3 = 0.5 ties 0.5 -> the cheaper
    assert penalized(pred, cost, 0.03).tolist() == [0]


def test_penalized_with_per_problem_costs_and_unavailable_strategies():
    pred = np.array([[0.5, 0.9], [0.5, 0.9]])
    cost = np.array([[1.0, 2.0], [1.0, np.inf]])
    assert penalized(pred, cost, 0.0).tolist() == [1, 0]  # 0 * inf does not turn into a NaN score
    with pytest.raises(ValueError, match="lam"):
        penalized(pred, cost, -0.1)


# --------------------------------------------------------------------------- frontier


def test_frontier_drops_dominated_points_and_points_under_a_chord():
    # (2, 0.1) is worse than the cheaper (1, 0.2); the rest is concave (slopes 0.2, 0.1)
    assert frontier([1, 2, 3, 4], [0.2, 0.1, 0.6, 0.7]).tolist() == [0, 2, 3]
    # (2, 0.3) is under the chord from (1, 0.2) to (3, 0.6) (0.4 there): mixing beats it
    assert frontier([1, 2, 3], [0.2, 0.3, 0.6]).tolist() == [0, 2]
    # collinear up to rounding: the middle point adds nothing
    assert frontier([1, 2, 3], [0.2, 0.4, 0.6]).tolist() == [0, 2]
    # order of the input does not matter; at equal cost the higher value is the candidate
    assert frontier([3, 1, 1], [0.6, 0.1, 0.2]).tolist() == [2, 0]


# --------------------------------------------------------------------------- allocate

# Three problems, strategies at costs 1, 3, 6; total budget 10.
#   A (0.2, 0.8, 0.9): the middle strategy buys most;  B (0.1, 0.3, 0.9): only the dearest helps;
#   C (0.9, 0.95, 1.0): easy, compute buys little.
BATCH_PRED = np.array([[0.2, 0.8, 0.9], [0.1, 0.3, 0.9], [0.9, 0.95, 1.0]])
BATCH_COST = np.array([1.0, 3.0, 6.0])


def test_greedy_allocation_by_hand():
    # all start at cost 1 (sum 3, 7 left). Upgrades along the hulls, gain per unit cost:
    #   A 1->3: 0.6/2 = 0.3;  B 1->6: 0.8/5 = 0.16 (B's middle point is under the chord, dropped);
    #   A 3->6: 0.1/3 = 0.033;  C 1->3: 0.05/2 = 0.025;  C 3->6: 0.05/3 = 0.017.
    # Take A (7 -> 5 left), then B (5 -> 0 left); nothing else fits. Total cost 3 + 6 + 1 = 10, value 2.6.
    idx = allocate(BATCH_PRED, BATCH_COST, 10.0)
    assert idx.tolist() == [1, 2, 0]
    assert BATCH_COST[idx].sum() == 10.0
    assert BATCH_PRED[np.arange(3), idx].sum() == pytest.approx(2.6)


def test_greedy_equals_the_exact_dynamic_program_on_the_hand_example():
    # enumerating the 27 choices: the best within cost 10 is (3, 6, 1) -> 0.8 + 0.9 + 0.9 = 2.6,
    # next (6, 3, 1) -> 2.1, (1, 6, 3) and (3, 3, 3) -> 2.05
    exact = allocate(BATCH_PRED, BATCH_COST, 10.0, method="exact", resolution=10)
    assert exact.tolist() == allocate(BATCH_PRED, BATCH_COST, 10.0).tolist() == [1, 2, 0]


def test_allocation_beats_spending_the_same_total_uniformly():
    # uniform: 10 / 3 = 3.33 per problem -> the cost-3 strategy everywhere: 0.8 + 0.3 + 0.95 = 2.05
    uniform = within_budget(BATCH_PRED, BATCH_COST, 10.0 / 3)
    assert uniform.tolist() == [1, 1, 1]
    rows = np.arange(3)
    assert BATCH_PRED[rows, uniform].sum() == pytest.approx(2.05)
    # shared: C's compute moves to B -> 2.6
    assert BATCH_PRED[rows, allocate(BATCH_PRED, BATCH_COST, 10.0)].sum() == pytest.approx(2.6)


def test_the_dynamic_program_can_beat_greedy_by_at_most_one_upgrade():
    # P1: cost 0 -> 1 gains 0.3 (0.3 per unit); P2: cost 0 -> 10 gains 1.0 (0.1 per unit); budget 10.
    # Greedy takes P1's upgrade first and then cannot afford P2's: 0.3. The optimum skips P1: 1.0.
    pred = np.array([[0.0, 0.3], [0.0, 1.0]])
    cost = np.array([[0.0, 1.0], [0.0, 10.0]])
    assert allocate(pred, cost, 10.0).tolist() == [1, 0]
    assert allocate(pred, cost, 10.0, method="exact", resolution=10).tolist() == [0, 1]


def _brute_force(pred: np.ndarray, cost: np.ndarray, budget: float) -> float:
    rows = np.arange(len(pred))
    return max(pred[rows, list(c)].sum() for c in itertools.product(range(pred.shape[1]), repeat=len(pred))
               if cost[rows, list(c)].sum() <= budget)


def test_allocation_never_exceeds_the_budget_and_greedy_is_near_optimal():
    rng = np.random.default_rng(1)
    rows = np.arange(4)
    for _ in range(40):
        pred = rng.uniform(size=(4, 4))
        cost = rng.integers(0, 11, size=(4, 4)).astype(float)  # integer costs: the grid below is exact
        budget = float(rng.integers(cost.min(axis=1).sum(), cost.max(axis=1).sum() + 1))
        greedy = allocate(pred, cost, budget)
        exact = allocate(pred, cost, budget, method="exact", resolution=max(int(budget), 1))
        assert cost[rows, greedy].sum() <= budget and cost[rows, exact].sum() <= budget
        best = _brute_force(pred, cost, budget)
        assert pred[rows, exact].sum() == pytest.approx(best)
        # LP-greedy bound: within the largest single gain of the optimum
        assert best - pred[rows, greedy].sum() <= (pred.max(axis=1) - pred.min(axis=1)).max() + 1e-12


def test_exact_rounds_costs_up_to_its_grid_so_the_answer_always_fits():
    # grid unit 1.0 / 10 = 0.1: 0.95 -> 9.5 units, rounded up to 10, still fits the 10-unit budget
    assert allocate([[0.0, 1.0]], [0.0, 0.95], 1.0, method="exact", resolution=10).tolist() == [1]
    # 0.45 / 0.09 is 5 up to rounding: snapped to 5, so both upgrades (5 + 5 units) fit 0.9
    pred, cost = np.array([[0.0, 1.0], [0.0, 1.0]]), np.array([0.0, 0.45])
    assert allocate(pred, cost, 0.9, method="exact", resolution=10).tolist() == [1, 1]


def test_an_infinite_budget_buys_every_problem_its_best():
    assert allocate(BATCH_PRED, BATCH_COST, np.inf).tolist() == [2, 2, 2]


def test_allocation_below_the_minimum_names_it():
    with pytest.raises(ValueError, match="minimum needed, 3"):
        allocate(BATCH_PRED, BATCH_COST, 2.0)  # three problems at cost 1 at least
    with pytest.raises(ValueError, match="method"):
        allocate(BATCH_PRED, BATCH_COST, 10.0, method="lp")
    with pytest.raises(ValueError, match="no available strategy"):
        allocate([[0.5, 0.6]], [[np.inf, np.inf]], 10.0)
