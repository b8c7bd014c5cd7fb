"""The level model: fitted on training questions, predicted from the same columns, kept as text."""

from __future__ import annotations

import numpy as np
import pytest

from ttsopt.selector.levels import LevelModel, fit_levels


def _data(n: int = 60):
    rng = np.random.default_rng(0)
    levels = np.array(["1", "2", "10"])[np.arange(n) % 3]
    x = np.stack([np.arange(n) % 3 + rng.normal(0, 0.05, n), rng.normal(0, 1, n)], axis=1)
    return x, levels


def test_it_predicts_the_level_the_text_tells_and_round_trips_through_its_text():
    x, levels = _data()
    model = fit_levels(x, levels, ["txt_a", "txt_b"])
    assert model.classes == ["1", "2", "10"]  # numeric levels in numeric order
    pred, prob = model.predict(x)
    assert (pred == levels).mean() == 1.0 and ((prob > 1 / 3) & (prob <= 1)).all()
    again = LevelModel.from_text(model.to_text(), model.classes, model.columns)
    assert again.predict(x)[0].tolist() == pred.tolist()
    assert again.predict(x)[1] == pytest.approx(prob)
    with pytest.raises(ValueError, match="expected 2 columns"):
        model.predict(x[:, :1])


def test_one_level_needs_no_model():
    x, _ = _data(10)
    model = fit_levels(x, ["3"] * 10, ["a", "b"])
    assert model.booster is None and model.to_text() is None
    assert model.predict(x)[0].tolist() == ["3"] * 10
