"""A question's level predicted from its text: one small LightGBM multiclass model, kept as text.

Why: the level a problem set gives its questions (MATH's 1–5, ``builtin:arith``'s generator level)
is the strongest single cue of how much search pays, and the per-level rule (docs/results.md, "The
per-level rule on arith-embedded") spends by it. The level is an oracle column — never an input —
but it may be a training *target*: a classifier fitted on the training questions' levels predicts
it online from the same text statistics and embedding the router reads, so the level-binned
cascade (train/fit/cascade.py) runs online from nothing the router could not see. Fitting and
prediction live here, in one module, so the offline evaluation and
:class:`~ttsopt.selector.router.Router` use the same model the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

#: Small and fixed: a handful of levels, hundreds of questions, and the text separates them
#: (held-out accuracy 0.99–1.00 on arith-router, each fold's model fitted on the others); tuning it
#: would buy nothing measurable.
LEVEL_PARAMS = {"objective": "multiclass", "num_leaves": 7, "min_data_in_leaf": 5, "learning_rate": 0.1,
                "lambda_l2": 1.0, "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1,
                "num_threads": 1, "verbosity": -1, "deterministic": True, "force_row_wise": True}
LEVEL_ROUNDS = 60


@dataclass
class LevelModel:
    """``booster`` (None when the training questions have one level: then it is the answer),
    the level of each class index and the input columns, in order."""

    booster: Any
    classes: list[str]
    columns: list[str]

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(level, probability)`` per row of ``x`` (the :attr:`columns`, in order)."""
        x = np.asarray(x, dtype=float)
        if x.ndim != 2 or x.shape[1] != len(self.columns):
            raise ValueError(f"level model: expected {len(self.columns)} columns, got shape {x.shape}")
        if self.booster is None:
            return np.full(len(x), self.classes[0], dtype=object), np.ones(len(x))
        prob = np.asarray(self.booster.predict(x)).reshape(len(x), len(self.classes))
        best = prob.argmax(axis=1)
        return np.asarray(self.classes, dtype=object)[best], prob[np.arange(len(x)), best]

    def to_text(self) -> str | None:
        return None if self.booster is None else self.booster.model_to_string()

    @classmethod
    def from_text(cls, text: str | None, classes: Sequence[str], columns: Sequence[str]) -> "LevelModel":
        import lightgbm as lgb

        booster = None if text is None else lgb.Booster(model_str=text)
        return cls(booster, [str(c) for c in classes], list(columns))


def fit_levels(x: np.ndarray, levels: Sequence[Any], columns: Sequence[str], seed: int = 0) -> LevelModel:
    """A :class:`LevelModel` fitted on one row per training question."""
    import lightgbm as lgb

    y = np.asarray([str(v) for v in levels], dtype=object)
    classes = sorted(set(y), key=_level_order)
    if len(classes) == 1:
        return LevelModel(None, classes, list(columns))
    index = {c: i for i, c in enumerate(classes)}
    # named features: levels.txt then says which input each split reads (and the artifact check can
    # compare them with the manifest's level_model.columns), not Column_0, Column_1, ...
    data = lgb.Dataset(np.asarray(x, dtype=float), label=np.array([index[v] for v in y]),
                       feature_name=[str(c) for c in columns], free_raw_data=True)
    params = {**LEVEL_PARAMS, "num_class": len(classes), "seed": seed}
    return LevelModel(lgb.train(params, data, num_boost_round=LEVEL_ROUNDS), classes, list(columns))


def _level_order(level: str) -> tuple[int, float | str]:
    """Numeric levels in numeric order ("2" before "10"), anything else after, by name."""
    try:
        return (0, float(level))
    except ValueError:
        return (1, level)


__all__ = ["LEVEL_PARAMS", "LEVEL_ROUNDS", "LevelModel", "fit_levels"]
