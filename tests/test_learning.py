"""The learning curve runs the whole nested comparison on draws of each size (train/evaluation/learning.py)."""

import math

import numpy as np
import pandas as pd

from ttsopt.train.evaluation.learning import learning_curve, recommended_size
from ttsopt.train.fit.tuning import TrainSettings


def table(questions: int = 300) -> pd.DataFrame:
    return pd.DataFrame({"question_key": [f"q{i:04d}" for i in range(questions) for _ in range(2)],
                         "strategy": ["a", "b"] * questions})


def fake_evaluate(sub, settings, **kw):
    """A comparison whose gain over best fixed grows with the problems it saw, flat from 100 on."""
    m = sub["question_key"].nunique()
    train = m * (settings.folds - 1) / settings.folds
    gain = min(train, 100) / 1000
    fake_evaluate.seen.append((m, frozenset(sub["question_key"]), kw))
    dep = {str(n): {"accuracy": 0.4 + gain + 0.01 * i, "best_fixed_accuracy": 0.4 + 0.01 * i, "flops": 1e9 * n}
           for i, n in enumerate((1, 4, 16))}
    return {"pairs": {"x+calc": {"problems": m, "deployed": dep}}}


def test_each_draw_trains_every_fold_on_about_the_size_and_draws_differ():
    fake_evaluate.seen = []
    settings = TrainSettings(trials=1, folds=5, seed=0)
    curve = learning_curve(table(), settings, fake_evaluate, sizes=(25, 100), repeats=2, gates="G")
    sizes = [m for m, _, _ in fake_evaluate.seen]
    assert sizes == [math.ceil(25 * 5 / 4)] * 2 + [125] * 2 + [300]  # the last: every problem
    assert fake_evaluate.seen[0][1] != fake_evaluate.seen[1][1]  # two draws of one size are different questions
    assert all(kw["gates"] == "G" and kw["lopo"] is False for _, _, kw in fake_evaluate.seen)
    pts = curve["pairs"]["x+calc"]["points"]
    assert [p["train_problems"] for p in pts] == [25, 100, 240] and pts[-1]["all"]
    assert np.isclose(pts[0]["diff_vs_best_fixed"], 32 * 0.8 / 1000) and np.isclose(pts[1]["diff_vs_best_fixed"], 0.1)
    assert pts[0]["draws"] == 2 and pts[0]["aiq"] is not None


def test_a_size_the_table_cannot_fill_is_skipped():
    fake_evaluate.seen = []
    curve = learning_curve(table(40), TrainSettings(trials=1, folds=5), fake_evaluate, sizes=(25, 200), repeats=1)
    assert [p["train_problems"] for p in curve["pairs"]["x+calc"]["points"]] == [25, 32]


def test_the_recommended_size_is_where_the_gain_stays_on_its_plateau():
    def pts(gains):
        return {"pairs": {"p": {"points": [{"train_problems": s, "all": s == 400, "diff_vs_best_fixed": g}
                                           for s, g in zip((25, 50, 100, 200, 400), gains)]}}}
    assert recommended_size(pts([0.0, 0.02, 0.05, 0.05, 0.05])) == {"p": 100}
    # a lucky small draw followed by a worse one is not a plateau
    assert recommended_size(pts([0.05, 0.0, 0.05, 0.05, 0.05])) == {"p": 100}


def test_the_report_draws_one_panel_per_pair_with_every_draw():
    from ttsopt.train.report.plots import learning_curve as figure

    fake_evaluate.seen = []
    curve = learning_curve(table(), TrainSettings(trials=1, folds=5), fake_evaluate, sizes=(25, 100), repeats=2)
    fig = figure(curve)
    main = [ax for ax in fig.axes if ax.get_ylabel() == "accuracy gain over best fixed"]
    assert len(main) == 1 and main[0].get_title() == "x+calc"
    assert len(main[0].lines) == 1 + 5 + 1  # the zero line, five draws (2 + 2 + all), their means
