"""Fit the selector: LightGBM predicts a strategy's accuracy on a problem; Optuna tunes it.

Why plain Optuna (TPE + pruning) over ``optuna_integration.LightGBMTunerCV``: the tuner walks
a fixed stepwise schedule (feature fraction, then num_leaves, ...) whose trial count is set by
the schedule, not by ``--trials``, and it cannot share one persistent TPE study across runs the
way ``ttsopt train`` resumes one; ``lgb.cv`` with our own grouped ``folds=`` and
``LightGBMPruningCallback`` give the same cross-validation with a search we control.

The objective is ``cross_entropy`` on the fractional labels (an expected accuracy in [0, 1]),
so predictions are probabilities; categoricals (policy, PRM family, method, aggregation, vote)
are LightGBM's own. Folds group by question key: a question never sits on both sides.

What Optuna minimises is ``TrainSettings.tune_metric``: the grouped-CV cross-entropy (default), or
``"regret"``, the decision the router will make with the model: per (pair, problem) and budget N
of the evaluation, the best label among the strategies with n <= N minus the label of the one
with the highest out-of-fold prediction (ties to the cheaper). Why offer it: the router acts on
an argmax over ~20 noisy predictions per problem, and the settings with the lowest loss need not
be the ones whose argmax is best. Pruning reads the cross-entropy either way (a trial whose loss
is hopeless is not worth finishing).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pandas as pd

from ttsopt.selector.pipeline import FeaturePipeline

from .table import fold_lists

log = logging.getLogger(__name__)

FIXED_PARAMS = {"objective": "cross_entropy", "metric": "cross_entropy", "verbosity": -1,
                "num_threads": 1, "deterministic": True, "force_col_wise": True, "seed": 0}
MAX_ROUNDS = 600
EARLY_STOPPING = 30
TUNE_METRICS = ("cross_entropy", "regret")
#: The budgets N whose argmax regret ``tune_metric="regret"`` averages (the evaluation's).
REGRET_BUDGETS = (1, 2, 4, 8, 16)


@dataclass
class TrainSettings:
    """One value object for every knob of a fit (stored in the artifact's manifest)."""

    trials: int = 30
    timeout_s: float | None = None
    folds: int = 5
    seed: int = 0
    n_components: int = 8
    probe_k: int | None = None
    #: What Optuna minimises: "cross_entropy" (grouped CV loss) or "regret" (of the argmax within N).
    tune_metric: str = "cross_entropy"

    def __post_init__(self) -> None:
        if self.tune_metric not in TUNE_METRICS:
            raise ValueError(f"tune_metric must be one of {', '.join(TUNE_METRICS)}, got {self.tune_metric!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class FitResult:
    booster: Any  # lightgbm.Booster
    pipeline: FeaturePipeline
    params: dict[str, Any]
    rounds: int
    cv_loss: float
    trials: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    #: Out-of-fold predictions on the training table itself (``tune_and_fit(..., oof=True)``): each row
    #: predicted by the inner CV booster that did not see its question, with the chosen settings.
    #: Decision rules on top of the model (shrinkage, margins) are tuned on these, never on test rows.
    oof: np.ndarray | None = None
    #: The inner fold of each training row (the fold whose booster predicted it in ``oof``).
    oof_fold: np.ndarray | None = None


def _dataset(x: pd.DataFrame, y: np.ndarray):
    import lightgbm as lgb

    return lgb.Dataset(x, label=y, categorical_feature=[c for c in x.columns if str(x[c].dtype) == "category"],
                       free_raw_data=False)


def _search_space(trial) -> dict[str, Any]:
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 4, 64, log=True),
        "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 200, log=True),
        "feature_fraction": trial.suggest_float("feature_fraction", 0.4, 1.0),
        "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
        "bagging_freq": 1,
        "lambda_l2": trial.suggest_float("lambda_l2", 1e-6, 10.0, log=True),
        "cat_smooth": trial.suggest_float("cat_smooth", 1.0, 50.0, log=True),
    }


def _cv(x: pd.DataFrame, y: np.ndarray, folds, params: dict[str, Any], callbacks=(),
        regret: "_Regret | None" = None) -> tuple[float, int]:
    """(the grouped CV's cross-entropy, or with ``regret`` the argmax regret of its out-of-fold
    predictions; the rounds early stopping kept)."""
    import lightgbm as lgb

    result = lgb.cv({**FIXED_PARAMS, **params}, _dataset(x, y), num_boost_round=MAX_ROUNDS, folds=folds,
                    stratified=False, return_cvbooster=regret is not None,
                    callbacks=[lgb.early_stopping(EARLY_STOPPING, verbose=False), *callbacks])
    losses = result["valid cross_entropy-mean"]
    if regret is None:
        return float(losses[-1]), len(losses)
    pred = np.full(len(y), np.nan)
    for (_, test), booster in zip(folds, result["cvbooster"].boosters):
        pred[test] = booster.predict(x.iloc[test], num_iteration=len(losses))
    return regret(pred), len(losses)


@dataclass
class _Regret:
    """The mean over (pair, problem) and :data:`REGRET_BUDGETS` of the best label within N minus the
    label of the highest prediction within N (ties to the cheaper): the router's decision, scored."""

    group: np.ndarray  # (rows,) one code per (pair, problem)
    n: np.ndarray
    label: np.ndarray
    tokens: np.ndarray

    @classmethod
    def of(cls, table: pd.DataFrame) -> "_Regret":
        group = pd.factorize(table["policy"].astype(str) + "|" + table["prm"].astype(str) + "|"
                             + table["problem_id"].astype(str))[0]
        return cls(group, table["n"].to_numpy(), table["label"].to_numpy(dtype=float),
                   table["tokens"].to_numpy(dtype=float))

    def __call__(self, pred: np.ndarray) -> float:
        regrets = []
        for budget in REGRET_BUDGETS:
            ok = self.n <= budget
            if not ok.any():
                continue
            g, lab, p, tok = self.group[ok], self.label[ok], pred[ok], self.tokens[ok]
            best = np.full(self.group.max() + 1, -np.inf)
            np.maximum.at(best, g, lab)
            # the chosen row per group: highest prediction, then fewest tokens (lexsort: last key first)
            order = np.lexsort((tok, -p, g))
            first = np.r_[True, g[order][1:] != g[order][:-1]]
            chosen = order[first]
            regrets.append(best[g[chosen]] - lab[chosen])
        return float(np.concatenate(regrets).mean())


def tune_and_fit(table: pd.DataFrame, settings: TrainSettings, *, storage: str | None = None,
                 study_name: str = "ttsopt-selector", progress: Callable[[int, int], None] | None = None,
                 oof: bool = False) -> FitResult:
    """Tune on ``table`` with grouped CV (TPE, pruning), then fit on all of it with the best settings.

    ``storage`` (an Optuna URL such as ``sqlite:///study.db``) makes the study persistent: a
    second call resumes it, adding ``settings.trials`` trials. ``oof=True`` also returns the
    out-of-fold predictions of the training rows (one more grouped CV with the chosen settings),
    in ``FitResult.oof`` / ``oof_fold``.
    """
    import lightgbm as lgb
    import optuna
    from optuna_integration.lightgbm import LightGBMPruningCallback

    start = time.perf_counter()
    pipeline = FeaturePipeline.fit(table, n_components=settings.n_components, probes=settings.probe_k is not None)
    x = pipeline.transform(table)
    y = table["label"].to_numpy(dtype=float)
    folds = fold_lists(table, settings.folds, seed=settings.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if settings.tune_metric != "cross_entropy":  # one study, one metric: a resumed study never mixes two
        study_name = f"{study_name}-{settings.tune_metric}"
    study = optuna.create_study(direction="minimize", storage=storage, study_name=study_name, load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=settings.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20))

    regret = _Regret.of(table) if settings.tune_metric == "regret" else None

    def objective(trial) -> float:
        params = _search_space(trial)
        loss, rounds = _cv(x, y, folds, params, [LightGBMPruningCallback(trial, "cross_entropy")], regret=regret)
        trial.set_user_attr("rounds", rounds)
        return loss

    done = {"n": 0}

    def tick(study_, trial_) -> None:
        done["n"] += 1
        if progress is not None:
            progress(done["n"], settings.trials)

    study.optimize(objective, n_trials=settings.trials, timeout=settings.timeout_s, callbacks=[tick],
                   gc_after_trial=False)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        raise RuntimeError("no Optuna trial completed (all pruned or failed); raise --trials or --timeout")
    best = study.best_trial
    params = {**_search_space(optuna.trial.FixedTrial(best.params)), "bagging_freq": 1}
    rounds = int(best.user_attrs["rounds"])
    booster = lgb.train({**FIXED_PARAMS, **params}, _dataset(x, y), num_boost_round=rounds)
    history = [{"number": t.number, "value": t.value, "state": t.state.name, **t.params} for t in study.trials]
    oof_pred = oof_fold = None
    if oof:
        oof_pred, oof_fold = _out_of_fold(x, y, folds, params, rounds)
    return FitResult(booster, pipeline, params, rounds, float(best.value), len(study.trials),
                     time.perf_counter() - start, history, oof_pred, oof_fold)


def _out_of_fold(x: pd.DataFrame, y: np.ndarray, folds, params: dict[str, Any],
                 rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row predicted by the CV booster of the fold that held it out (fixed ``rounds``, no early stop)."""
    import lightgbm as lgb

    result = lgb.cv({**FIXED_PARAMS, **params}, _dataset(x, y), num_boost_round=rounds, folds=folds,
                    stratified=False, return_cvbooster=True)
    pred = np.full(len(y), np.nan)
    fold_of = np.full(len(y), -1)
    for f, ((_, test), booster) in enumerate(zip(folds, result["cvbooster"].boosters)):
        pred[test] = booster.predict(x.iloc[test])
        fold_of[test] = f
    return pred, fold_of


def out_of_fold_predictions(fit: FitResult, table: pd.DataFrame, settings: TrainSettings) -> np.ndarray:
    """Each row of the training ``table`` predicted by a booster with ``fit``'s settings that did not see
    its question (folds by question key): ``fit.oof`` when the fit kept it, else one grouped CV now."""
    if fit.oof is not None and len(fit.oof) == len(table):
        return fit.oof
    folds = fold_lists(table, settings.folds, seed=settings.seed)
    return _out_of_fold(fit.pipeline.transform(table), table["label"].to_numpy(dtype=float), folds, fit.params,
                        fit.rounds)[0]


def fit_fixed(table: pd.DataFrame, pipeline_settings: TrainSettings, params: dict[str, Any], rounds: int) -> FitResult:
    """Refit with given settings (no tuning): what a router's evaluation does per fold when asked not to tune."""
    import lightgbm as lgb

    start = time.perf_counter()
    pipeline = FeaturePipeline.fit(table, n_components=pipeline_settings.n_components,
                                   probes=pipeline_settings.probe_k is not None)
    x = pipeline.transform(table)
    booster = lgb.train({**FIXED_PARAMS, **params}, _dataset(x, table["label"].to_numpy(dtype=float)),
                        num_boost_round=rounds)
    return FitResult(booster, pipeline, params, rounds, float("nan"), 0, time.perf_counter() - start)


def predict(fit: FitResult, table: pd.DataFrame) -> np.ndarray:
    return fit.booster.predict(fit.pipeline.transform(table))


__all__ = ["FIXED_PARAMS", "FitResult", "TrainSettings", "fit_fixed", "out_of_fold_predictions", "predict",
           "tune_and_fit"]
