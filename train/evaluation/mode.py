"""How a saved router is evaluated on some questions: cross-fitted on its own, as it is on new ones.

A router's manifest lists the question keys it was trained on. On those questions the only honest
evaluation refits (and re-tunes) the router per fold, so that no prediction comes from a model that
saw its question (:func:`~.evaluate.evaluate`); on questions it never saw, the saved router is
evaluated as it is (:func:`~.evaluate.evaluate_as_is`). A mix of both is refused: it would be
neither. ``ttsopt evaluate`` (through :func:`evaluate_router`) and the report
(``train/report/html.py``'s ``run_evaluation``) both ask :func:`evaluation_mode`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

#: the router's own training questions: refit and re-tuned per fold, grouped by question
CROSS_FITTED = "cross-fitted"
#: questions the router never saw: the saved model, nothing refitted
AS_IS = "as-is"

#: what to do about seen and unseen data mixed, in the refusal's message
SEPARATELY = "evaluate seen data (cross-fitted) and unseen data (as is) separately"


class EvaluationModeError(ValueError):
    """The questions are neither all the router's training questions nor all new to it, or the
    router does not say which questions it was trained on."""


def trained_keys(manifest: Mapping[str, Any]) -> set[str] | None:
    """The question keys the router was trained on; None where its manifest does not list them
    (an artifact older than the list)."""
    keys = (manifest.get("training_data") or {}).get("question_keys")
    return None if keys is None else set(keys)


def evaluation_mode(manifest: Mapping[str, Any], question_keys: Iterable[str], *, unlisted: str | None = None,
                    hint: str = SEPARATELY, name: str = "the router") -> str:
    """:data:`CROSS_FITTED` where ``question_keys`` are the router's training questions, :data:`AS_IS`
    where it saw none of them.

    A mix raises :class:`EvaluationModeError` (its message ends with ``hint``). A manifest that lists
    no training questions gives ``unlisted`` (:data:`CROSS_FITTED`: take the data to be its training
    data), or raises where ``unlisted`` is None (seen and unseen cannot be told apart; ``name`` is the
    router as the message calls it).
    """
    trained = trained_keys(manifest)
    if not trained:  # not listed (or, never in practice, listed empty)
        if unlisted is None:
            raise EvaluationModeError(f"{name} does not list its training questions, so seen and unseen data "
                                      "cannot be told apart: retrain it with `ttsopt train`")
        return unlisted
    keys = set(question_keys)
    overlap = keys & trained
    if overlap and overlap != keys:
        raise EvaluationModeError(f"{len(overlap)} of these {len(keys)} questions were in the router's training "
                                  f"data and the rest were not: {hint}")
    return CROSS_FITTED if overlap else AS_IS


def router_settings(manifest: Mapping[str, Any], *, trials: int | None = None, folds: int | None = None,
                    seed: int | None = None, tune_metric: str | None = None):
    """The router's own :class:`~ttsopt.train.fit.tuning.TrainSettings`, with what is given overridden:
    what a cross-fitted evaluation of it refits with."""
    from dataclasses import replace

    from ..fit.tuning import TrainSettings

    given = {"trials": trials, "folds": folds, "seed": seed, "tune_metric": tune_metric}
    return replace(TrainSettings(**manifest["settings"]), **{k: v for k, v in given.items() if v is not None})


def evaluate_router(artifact: Any, folders: Sequence[str | Path], *, settings: Any = None,
                    probe_k: Sequence[int] = (), min_problems: int | None = None, lopo: bool = True,
                    progress: Callable[[int, int], None] | None = None, say: Callable[[str], None] | None = None,
                    name: str = "the router") -> dict[str, Any]:
    """A saved router evaluated on snapshot folders (``ttsopt evaluate --router``), in the mode
    :func:`evaluation_mode` chooses (``say(mode)`` hears it before the work starts).

    Cross-fitted: refit and re-tuned per fold with ``settings`` (default: the router's own), with
    the folders' gates and rest-of-budget options, and a router with probe features per k of
    ``probe_k``; ``min_problems`` and ``lopo`` as :func:`~.evaluate.evaluate` takes them. As is: the
    saved model (and its fitted cascade, where the folders hold gates); nothing is refitted.
    Raises ValueError (:class:`EvaluationModeError` where the mode cannot be chosen).
    """
    from ..fit.cascade import load_gates
    from ..fit.rest import load_rest
    from ..fit.table import load_training_table
    from .evaluate import evaluate, evaluate_as_is, load_probe_tables

    settings = settings if settings is not None else router_settings(artifact.manifest)
    folders = list(folders)
    table = load_training_table(folders, probe_k=settings.probe_k)
    mode = evaluation_mode(artifact.manifest, table["question_key"], name=name)
    if say is not None:
        say(mode)
    gates, rest = load_gates(folders), load_rest(folders)
    if mode == AS_IS:
        return evaluate_as_is(artifact, table, gates=gates, rest=rest)
    probes, _missing = load_probe_tables(folders, probe_k)
    extra = {} if min_problems is None else {"min_problems": min_problems}
    return evaluate(table, settings, probe_tables=probes, gates=gates, rest=rest, lopo=lopo, progress=progress,
                    **extra)


__all__ = ["AS_IS", "CROSS_FITTED", "EvaluationModeError", "SEPARATELY", "evaluate_router", "evaluation_mode", "router_settings",
           "trained_keys"]
