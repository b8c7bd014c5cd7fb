"""The continuous-difficulty rule (train/evaluation/difficulty_rule.py) on tables small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")
from ttsopt.train.evaluation.difficulty_rule import fit_difficulty_rule, predicted_difficulty, strategy_curves  # noqa: E402
from ttsopt.train.evaluation.evaluate import _Pair, _apply_rule, _Rule, evaluate_pair  # noqa: E402


@pytest.fixture(autouse=True)
def few_trees(monkeypatch):
    """Small forests keep each test within seconds; the rule's logic does not depend on the count."""
    import ttsopt.train.evaluation.difficulty_rule as dr

    monkeypatch.setattr(dr, "N_TREES", 25)


def test_binned_and_isotonic_curves_by_hand():
    d = np.array([0.0, 0.1, 0.5, 0.9])  # predicted Pass@1 of four training problems
    label = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    tokens = np.array([[1.0, 2.0], [1.0, 4.0], [3.0, 2.0], [3.0, 4.0]])
    rows = np.array([0.05, 0.95])
    acc, tok = strategy_curves(d, label, tokens, rows, "bins:2")
    # median 0.3: {0, 0.1} and {0.5, 0.9}; strategy 0 is 0 then 1, strategy 1 averages 0.5 in both halves
    assert acc == pytest.approx(np.array([[0.0, 0.5], [1.0, 0.5]]))
    assert tok == pytest.approx(np.array([[1.0, 3.0], [3.0, 3.0]]))
    acc, _ = strategy_curves(d, label, tokens, rows, "isotonic")
    # strategy 1: 0, 1, 0, 1 pooled into 0, 0.5, 0.5, 1 (non-decreasing); 0.05 lies halfway between 0 and 0.5
    assert acc == pytest.approx(np.array([[0.0, 0.25], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="unknown curve method"):
        strategy_curves(d, label, tokens, rows, "spline")


def easy_hard_pair() -> tuple[_Pair, list[np.ndarray], np.ndarray]:
    # 16 problems, 2 folds by parity of the index; problem i is easy when i % 4 < 2 (each fold: 4 easy, 4 hard).
    # A (n=1, 10 tokens) solves easy problems only; B (n=2, 30 tokens) solves easy ones and 60% of hard ones.
    easy = np.arange(16) % 4 < 2
    label = np.stack([np.where(easy, 1.0, 0.0), np.where(easy, 1.0, 0.6)], axis=1)
    x = np.stack([easy.astype(float), np.arange(16) % 3], axis=1)  # the first column reveals the difficulty
    pass_at_1 = np.where(easy, 0.9, 0.1)
    p = _Pair(name="toy", strategies=["A", "B"], n=np.array([1, 2]), label=label, pred=np.full((16, 2), 0.5),
              tokens=np.array([[10.0, 30.0]] * 16), flops=np.array([[1.0, 3.0]] * 16), fold=np.arange(16) % 2,
              bins=np.where(easy, "easy", "hard"), levels=np.where(easy, "1", "2"), policy_params=1e8)
    return p, [x, x], pass_at_1


def test_the_rule_sends_easy_problems_to_the_cheap_strategy_and_hard_ones_to_the_search_by_hand():
    p, feats, target = easy_hard_pair()
    fit = fit_difficulty_rule(p, feats, target, methods=("bins:2",))
    easy = p.bins == "easy"
    # training curves: easy half A 1.0, B 1.0 (a tie: the cheaper A); hard half A 0.0, B 0.6
    assert fit.scores[easy] == pytest.approx(np.array([[1.0, 1.0]] * 8))
    assert fit.scores[~easy] == pytest.approx(np.array([[0.0, 0.6]] * 8))
    rule = _Rule("difficulty_curve", "pred", pred=fit.scores, cost=fit.cost)
    picks = _apply_rule(rule, p, {0: 0.0, 1: 0.0}, budget=2)
    assert picks.tolist() == np.where(easy, 0, 1).tolist()
    # accuracy 1 on easy and 0.6 on hard = the best fixed B's (0.8), at (8·10 + 8·30) / 16 = 20 tokens instead of 30
    assert p.label[np.arange(16), picks].mean() == pytest.approx(0.8)
    assert p.tokens[np.arange(16), picks].mean() == pytest.approx(20.0)
    assert fit.knobs[0]["method"] == "bins:2" and fit.knobs[0]["alpha"] == 0.0


def test_a_test_problems_pass_at_1_is_never_read():
    p, feats, target = easy_hard_pair()
    tr, te = np.flatnonzero(p.fold == 0), np.flatnonzero(p.fold == 1)
    groups = np.arange(len(tr)) % 2
    oof, d_te = predicted_difficulty(feats[0], target, tr, te, groups)
    garbled = target.copy()
    garbled[te] = 1.0 - garbled[te]  # the oracle column of the held-out problems, turned upside down
    oof2, d_te2 = predicted_difficulty(feats[0], garbled, tr, te, groups)
    assert np.array_equal(oof, oof2) and np.array_equal(d_te, d_te2)
    assert (d_te[p.bins[te] == "easy"] > 0.5).all() and (d_te[p.bins[te] == "hard"] < 0.5).all()
    # and in the whole rule: fold 1's scores do not move when fold 1's Pass@1 is garbled
    a = fit_difficulty_rule(p, feats, target, methods=("bins:2",)).scores
    b = fit_difficulty_rule(p, feats, garbled, methods=("bins:2",)).scores
    assert np.array_equal(a[te], b[te])


def test_a_per_problem_cost_is_what_the_compute_axis_charges():
    p, _, _ = easy_hard_pair()
    scores = np.array([[0.5, 0.5]] * 16)
    cost = np.array([[10.0, 30.0]] * 8 + [[30.0, 10.0]] * 8)  # B is the cheaper one for the last eight
    rule = _Rule("r", "pred", pred=scores, cost=cost)
    picks = _apply_rule(rule, p, {0: 0.0, 1: 0.0}, lam=1e-3)
    assert picks.tolist() == [0] * 8 + [1] * 8
    without = _apply_rule(_Rule("r", "pred", pred=scores), p, {0: 0.0, 1: 0.0}, lam=1e-3)
    assert without.tolist() == [0] * 16  # the training mean tokens: A everywhere


def test_the_evaluation_adds_the_rules_only_where_pass_at_1_and_features_are_there():
    p, feats, target = easy_hard_pair()
    rep = evaluate_pair(p)
    assert "difficulty_curve" not in rep["summary"] and "difficulty_rule" not in rep
    p, feats, target = easy_hard_pair()
    p.extra.update({"features": feats, "pass_at_1": target})
    rep = evaluate_pair(p)
    for name in ("difficulty_curve", "difficulty_curve_blend"):
        assert name in rep["summary"] and name in rep["curve"]["rules"] and name in rep["allocation"]
        assert rep["budgets"]["2"][name]["accuracy"] == pytest.approx(0.8)
    assert rep["difficulty_rule"]["difficulty_curve"]["corr"] > 0.9
