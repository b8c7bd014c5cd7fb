"""The evaluation's baselines on a table small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ttsopt.selector.decide")
from ttsopt.train.evaluation.evaluate import _Pair, evaluate_pair  # noqa: E402


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


def test_the_oracle_reports_the_compute_of_its_picks():
    report = evaluate_pair(tiny_pair())["budgets"]
    assert report["1"]["oracle"]["flops"] == 1.0  # only A fits
    assert report["2"]["oracle"]["flops"] == 1.5  # A on the first two problems, B on the last two


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


# --------------------------------------------------------------------------- rules beyond argmax, by hand

from ttsopt.train.evaluation.evaluate import (_allocation, _apply_rule, _Rule, _rule_scores, _target_mode,  # noqa: E402
                                   lopo_split)


def two_cost_pair() -> _Pair:
    # 4 problems, 2 folds (0-1, 2-3); A costs 10 tokens, B 30. A solves the even problems, B all of them.
    label = np.array([[1.0, 1.0], [0.0, 1.0], [1.0, 1.0], [0.0, 1.0]])
    return _Pair(name="toy2", strategies=["A", "B"], n=np.array([1, 2]), label=label, pred=label.copy(),
                 tokens=np.array([[10.0, 30.0]] * 4), flops=np.array([[1.0, 3.0]] * 4), fold=np.array([0, 0, 1, 1]),
                 bins=np.array(["easy", "hard", "easy", "hard"]), levels=np.array(["1", "2", "1", "2"]),
                 policy_params=1e8)


def test_batch_allocation_beats_the_same_total_spent_uniformly_by_hand():
    p = two_cost_pair()
    (row,) = _allocation(p, "labels", lambda f, tr, te: p.label[te], seed=0, per_problem_budgets=[20.0])
    # per fold: 2 problems x 20 tokens = 40: both start on A (20), the only upgrade worth anything is the odd
    # problem's A -> B (+1 for 20 tokens): it fits exactly. B on an even problem gains nothing (off the hull).
    assert row["allocated"]["accuracy"] == pytest.approx(1.0)
    assert row["allocated"]["tokens"] == pytest.approx(20.0) and row["allocated"]["tokens_expected"] == pytest.approx(20.0)
    # uniform: only A (10 tokens) fits 20 tokens per problem -> solves half
    assert row["uniform"]["accuracy"] == pytest.approx(0.5) and row["uniform"]["tokens"] == pytest.approx(10.0)
    assert row["uniform"]["strategies"] == ["A"]
    assert row["diff"] == pytest.approx(0.5)
    # with 30 per problem the uniform B solves everything too; the allocation spends less
    (row30,) = _allocation(p, "labels", lambda f, tr, te: p.label[te], seed=0, per_problem_budgets=[30.0])
    assert row30["uniform"]["accuracy"] == row30["allocated"]["accuracy"] == pytest.approx(1.0)
    assert row30["allocated"]["tokens"] == pytest.approx(20.0)
    assert row30["uniform"]["tokens"] == pytest.approx(30.0)


def test_target_mode_picks_the_cheapest_strategy_predicted_to_reach_the_target_by_hand():
    p = two_cost_pair()
    pred = np.array([[0.9, 0.95], [0.2, 0.6], [0.45, 0.5], [0.1, 0.3]])
    rows = {r["target"]: r for r in _target_mode(p, "toy", lambda f, tr, te: pred[te])}
    r = rows[0.5]
    # 0.5: A (0.9) on p0, B (0.6) on p1, B (0.5, reaches) on p2, nothing reaches on p3 -> its best, B, flagged
    assert r["accuracy"] == pytest.approx((1 + 1 + 1 + 1) / 4)
    assert r["tokens"] == pytest.approx((10 + 30 + 30 + 30) / 4)
    assert r["unreachable"] == pytest.approx(0.25)
    assert r["accuracy_where_reachable"] == pytest.approx(1.0)
    r = rows[0.9]  # only p0 reaches (A at 0.9, the cheaper of the two reaching)
    assert r["unreachable"] == pytest.approx(0.75) and r["tokens"] == pytest.approx((10 + 30 + 30 + 30) / 4)
    r = rows[0.3]  # p0: A; p1: B (0.6); p2: A (0.45); p3: B (0.3)
    assert r["accuracy"] == pytest.approx((1 + 1 + 1 + 1) / 4) and r["tokens"] == pytest.approx((10 + 30 + 10 + 30) / 4)
    assert r["unreachable"] == 0.0


def test_shrinkage_topk_and_margin_scores_by_hand():
    p = two_cost_pair()
    tr = np.array([0, 1])  # training means: A 0.5, B 1.0
    preds = np.array([[0.9, 0.1]])
    shrink = _Rule("s", "shrink")
    assert _rule_scores(shrink, p, preds, tr, np.array([2]), None, 0.5, None, 0.0) == pytest.approx(
        np.array([[0.7, 0.55]]))
    assert _rule_scores(shrink, p, preds, tr, np.array([2]), None, 0.0, None, 0.0) == pytest.approx(
        np.array([[0.5, 1.0]]))  # alpha 0: the training means, i.e. the best fixed strategy
    topk = _rule_scores(_Rule("k", "topk"), p, preds, tr, np.array([2]), None, 1, np.array([True, True]), None)
    assert topk[0, 0] == -np.inf and topk[0, 1] == pytest.approx(0.1)  # only B, the best on training, remains
    # margin: B is the best fixed strategy on training; the model prefers A by 0.8
    margin = _rule_scores(_Rule("m", "margin"), p, preds, tr, np.array([2]), None, 0.5, np.array([True, True]), None)
    assert margin == pytest.approx(np.array([[0.9, 0.6]]))  # 0.8 > 0.5: A is taken
    margin = _rule_scores(_Rule("m", "margin"), p, preds, tr, np.array([2]), None, 0.9, np.array([True, True]), None)
    assert margin == pytest.approx(np.array([[0.9, 1.0]]))  # 0.8 < 0.9: the best fixed strategy B stays


def test_a_probe_counts_against_the_budget_and_its_compute_is_charged():
    p = two_cost_pair()
    probe_pred = np.array([[0.1, 0.9]] * 4)  # the probed router prefers B
    probe_tokens, probe_flops = np.full(4, 5.0), np.full(4, 0.5)
    base = _Rule("router", "pred", pred=np.array([[0.9, 0.1]] * 4))
    rule = _Rule("router_probe1", "pred", pred=probe_pred, probe_k=1, probe_tokens=probe_tokens,
                 probe_flops=probe_flops, fallback=base)
    params = {0: 0.0, 1: 0.0}
    # N = 1: the probe's sample alone uses the budget; nothing fits n + 1 <= 1: the unprobed router decides (A)
    assert _apply_rule(rule, p, params, budget=1).tolist() == [0, 0, 0, 0]
    # N = 2: only n = 1 strategies fit after the probe (n + k <= N): A, although the probe prefers B
    assert _apply_rule(rule, p, params, budget=2).tolist() == [0, 0, 0, 0]
    # on the compute axis the probe's tokens are added to every strategy's cost (both: no change in order here)
    assert _apply_rule(rule, p, params, lam=0.0).tolist() == [1, 1, 1, 1]
    from ttsopt.train.evaluation.evaluate import _rule_record
    rec = _rule_record(rule, p, np.array([1, 1, 1, 1]), np.zeros(4), 1.0, True, 0)
    assert rec["flops"] == pytest.approx(3.5) and rec["tokens"] == pytest.approx(35.0) and rec["probed"]
    rep = evaluate_pair(_with_probe(p))
    assert rep["budgets"]["1"]["router_probe1"]["probed"] is False
    assert rep["budgets"]["2"]["router_probe1"]["probed"] is True
    assert rep["budgets"]["2"]["router_probe1"]["flops"] == pytest.approx(1.0 + 0.5)  # A + the probe


def _with_probe(p: _Pair) -> _Pair:
    p.extra.update({"pred_probe1": np.array([[0.1, 0.9]] * 4), "probe_cost_k1_tokens": np.full(4, 5.0),
                    "probe_cost_k1_flops": np.full(4, 0.5)})
    return p


def lopo_table() -> "pd.DataFrame":
    import pandas as pd

    rows = []
    pairs = [("a", "calc"), ("b", "calc"), ("c", "calc"), ("d", "calc")]
    for policy, prm in pairs:
        for q in range(8):
            for s in ("cot", "majority:n=2"):
                rows.append({"policy": policy, "prm": prm, "problem_id": f"p{q}", "question_key": f"q{q}", "strategy": s})
        # the same question text under another id (same key) for pair a
        if policy == "a":
            for s in ("cot", "majority:n=2"):
                rows.append({"policy": policy, "prm": prm, "problem_id": "dup", "question_key": "q0", "strategy": s})
    return pd.DataFrame(rows)


def test_leave_one_pair_out_never_trains_on_a_question_it_evaluates():
    t = lopo_table()
    for policy in "abcd":
        train, test, calib = lopo_split(t, policy, "calc", calibration=3, seed=1)
        tr, te = t.iloc[train], t.iloc[test]
        assert len(calib) == 3 and set(te["policy"]) == {policy}
        # no evaluated question in training, under any pair (a duplicated text under another id included)
        assert not set(tr["question_key"]) & set(te["question_key"])
        # the held-out pair's rows in training are exactly its calibration questions
        assert set(tr.loc[tr["policy"] == policy, "question_key"]) == set(calib)
        # every other pair keeps its rows on the calibration questions, and only those
        assert set(tr.loc[tr["policy"] != policy, "question_key"]) == set(calib)
        assert set(te["question_key"]) == {f"q{i}" for i in range(8)} - set(calib)
    with pytest.raises(ValueError, match="complete problems"):
        lopo_split(t, "b", "calc", calibration=8)


def test_out_of_fold_predictions_come_from_boosters_that_never_saw_the_question():
    import pandas as pd

    from ttsopt.selector.features import TEXT_COLUMNS
    from ttsopt.selector.pipeline import CATEGORICAL, PAIR_FEATURES, STRATEGY_FEATURES
    from ttsopt.train.fit.table import fold_lists
    from ttsopt.train.fit.tuning import TrainSettings, tune_and_fit

    rng = np.random.default_rng(0)
    rows = []
    for q in range(40):
        hard = q % 2
        for n in (1, 4):
            row = {c: float(rng.integers(0, 5)) for c in TEXT_COLUMNS}
            row.update({"txt_numbers": float(hard), "question_key": f"q{q}", "label": float(0.8 - 0.6 * hard + 0.05 * n / 4)})
            row.update({c: 0.0 for c in (*PAIR_FEATURES, *STRATEGY_FEATURES)})
            row.update({c: "x" for c in CATEGORICAL})
            row["strategy_n"] = float(n)
            rows.append(row)
    table = pd.DataFrame(rows)
    settings = TrainSettings(trials=2, folds=4, n_components=0)
    fit = tune_and_fit(table, settings, oof=True)
    assert fit.oof is not None and not np.isnan(fit.oof).any()
    folds = fold_lists(table, 4, seed=0)
    for f, (_, test) in enumerate(folds):
        assert (fit.oof_fold[test] == f).all()  # each row predicted by its own held-out fold's booster
    # it learned the hard/easy split out of fold
    assert fit.oof[table["txt_numbers"] == 1].mean() < fit.oof[table["txt_numbers"] == 0].mean()


def test_with_gate_scores_and_levels_the_evaluation_adds_the_cascades_and_says_how_well_levels_were_predicted():
    import router_fixtures as rf

    from ttsopt.train.evaluation.evaluate import evaluate, markdown
    from ttsopt.train.fit.tuning import TrainSettings

    table = rf.synthetic_table(probe=False, levels=True).assign(difficulty="medium", pass_at_1=0.5)
    report = evaluate(table, TrainSettings(trials=1, folds=3, n_components=2), gates=rf.synthetic_gates(),
                      lopo=False, min_problems=10)
    cascade = report["pairs"]["scripted+calc"]["cascade"]
    assert {"plain", "router", "binned", "level"} <= set(cascade)
    # every level choice names a level the training folds had, and every problem was routed by one
    picks = [q for b in cascade["level"]["budgets"].values() for q in b["choices"]]
    assert {q["level"] for q in picks} <= {"1", "2"}
    assert cascade["levels"]["held_out_accuracy"] == 1.0  # the text counts the operators
    assert cascade["levels"]["problems"] == {"1": 27, "2": 13} and cascade["levels"]["default"] is False
    assert "cascade per level predicted from the text" in markdown(report)
    # without levels (a problem set that has none) there is no level variant, the others stay
    plain = evaluate(table.assign(level=""), TrainSettings(trials=1, folds=3, n_components=2),
                     gates=rf.synthetic_gates(), lopo=False, min_problems=10)["pairs"]["scripted+calc"]["cascade"]
    assert "level" not in plain and "binned" in plain
