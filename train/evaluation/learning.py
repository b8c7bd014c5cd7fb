"""How many sweep problems a pair needs: the deployed default's learning curve.

A user with a new (policy, PRM) pair must decide how many problems to sweep before trusting the
router ``ttsopt train`` deploys. The answer is measured, not guessed: for each size S, a random set
of questions is drawn so that every outer fold trains on about S of them, and the whole nested
comparison that ``ttsopt train`` runs (the deployed mode chosen on inner folds, the router tuned
inside each fold) is run on that set alone and scored on its held-out folds. What is reported per
pair and S is what a user who had swept that many problems would get: the held-out accuracy of
the deployed default averaged over the budgets N, its difference from the best fixed strategy
chosen on the same training problems (the quantity that says whether the choice pays at this
size; the accuracy itself moves with the draw), and the AIQ of its accuracy against log FLOPs
over N. Each size is drawn ``repeats`` times with different seeds; the spread across draws is
reported beside the mean.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from ..fit.tuning import TrainSettings
from .metrics import hull_area

#: Training problems per outer fold at which the curve is measured (``all`` is added: every problem).
SIZES = (25, 50, 100, 200)


def _deployed_summary(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per pair: the deployed default's mean held-out accuracy over N, its mean difference from the
    best fixed strategy, and its AIQ (accuracy against log10 FLOPs over the budgets' points)."""
    out = {}
    for name, pair in report.get("pairs", {}).items():
        dep = pair.get("deployed") or {}
        if not dep:
            continue
        acc = np.array([b["accuracy"] for b in dep.values()])
        fixed = np.array([b["best_fixed_accuracy"] for b in dep.values()])
        flops = np.array([b["flops"] for b in dep.values()])
        out[name] = {"accuracy": float(acc.mean()), "diff_vs_best_fixed": float((acc - fixed).mean()),
                     "best_fixed_accuracy": float(fixed.mean()), "flops": flops.tolist(), "accuracies": acc.tolist(),
                     "budgets": [int(n) for n in dep], "problems": int(pair.get("problems", 0))}
    return out


def _with_aiq(points: dict[str, list[dict[str, Any]]]) -> None:
    """AIQ per point on one FLOPs range per pair (the range every point of that pair spans), so the
    sizes compare with each other."""
    for runs in points.values():
        lo = max(min(r["flops"]) for r in runs)
        hi = min(max(r["flops"]) for r in runs)
        for r in runs:
            r["aiq"] = hull_area(r["flops"], r["accuracies"], lo=lo, hi=max(hi, lo)) if lo > 0 else None


def summarize(runs: Sequence[Mapping[str, Any]], sizes: Sequence[int], folds: int) -> list[dict[str, Any]]:
    """One point per size from the draws' runs: means and SDs across draws. ``pair_train_problems`` is
    what the pair itself had per outer fold: a pair with fewer questions than the draw (the snapshot's
    judge pairs hold 100) trains on fewer than the size says."""
    rows = []
    for size in [*sizes, "all"]:
        got = [r for r in runs if r["train_problems"] == size]
        if not got:
            continue
        acc = np.array([r["accuracy"] for r in got])
        gain = np.array([r["diff_vs_best_fixed"] for r in got])
        aiq = np.array([np.nan if r.get("aiq") is None else r["aiq"] for r in got])
        own = float(np.mean([r["problems"] for r in got]) * (folds - 1) / folds)
        rows.append({"train_problems": size if size != "all" else got[0]["train_problems_per_fold"],
                     "all": size == "all", "draws": len(got), "pair_train_problems": own,
                     "accuracy": float(acc.mean()), "accuracy_sd": float(acc.std(ddof=1)) if len(got) > 1 else None,
                     "diff_vs_best_fixed": float(gain.mean()),
                     "diff_sd": float(gain.std(ddof=1)) if len(got) > 1 else None,
                     "aiq": float(np.nanmean(aiq)) if np.isfinite(aiq).any() else None})
    return rows


def learning_curve(table: pd.DataFrame, settings: TrainSettings, evaluate: Callable[..., dict[str, Any]], *,
                   sizes: Sequence[int] = SIZES, repeats: int = 3, full: Mapping[str, Any] | None = None,
                   progress: Callable[[int, int], None] | None = None, **evaluate_kw: Any) -> dict[str, Any]:
    """The deployed default's held-out accuracy, gain over best fixed and AIQ against the training
    problems per outer fold (``sizes``, and ``all``: every problem, from ``full`` when given, the
    report of the same evaluation on the whole table).

    ``evaluate`` is :func:`~ttsopt.train.evaluation.evaluate.evaluate` (passed in, so this module
    sits beside it rather than above it); ``evaluate_kw`` go to it (gates, rest-of-budget options).
    Sizes larger than the table allows are skipped."""
    keys = np.array(sorted(table["question_key"].unique()))
    k = settings.folds
    plan = [(s, r) for s in sizes for r in range(repeats) if math.ceil(s * k / (k - 1)) < len(keys)]
    points: dict[str, list[dict[str, Any]]] = {}
    for i, (size, r) in enumerate(plan):
        m = math.ceil(size * k / (k - 1))  # each outer fold then trains on ~size questions
        rng = np.random.default_rng([settings.seed, size, r])
        chosen = set(rng.choice(keys, size=m, replace=False))
        sub = table[table["question_key"].isin(chosen)].reset_index(drop=True)
        report = evaluate(sub, replace(settings, seed=settings.seed + r), lopo=False, min_problems=k, **evaluate_kw)
        for name, s in _deployed_summary(report).items():
            points.setdefault(name, []).append({"train_problems": size, "repeat": r, **s})
        if progress is not None:
            progress(i + 1, len(plan))
    if full is None:
        full = evaluate(table, settings, lopo=False, min_problems=k, **evaluate_kw)
    for name, s in _deployed_summary(full).items():
        points.setdefault(name, []).append({"train_problems": "all", "repeat": 0,
                                            "train_problems_per_fold": int(s["problems"] * (k - 1) / k), **s})
    _with_aiq(points)
    curve = {name: {"points": summarize(runs, sizes, k), "runs": runs} for name, runs in points.items()}
    return {"sizes": list(sizes), "repeats": repeats, "folds": k, "pairs": curve,
            "how": "each size: questions drawn so every outer fold trains on about that many, the whole nested "
                   "comparison run on them alone and scored on their held-out folds; mean over N of the deployed "
                   "default; AIQ over one FLOPs range per pair"}


def recommended_size(curve: Mapping[str, Any], *, tolerance: float = 0.01) -> dict[str, int | None]:
    """Per pair: the smallest measured size whose gain over best fixed is within ``tolerance`` of the
    gain with every problem (None when none is): the plateau a new pair's sweep should reach."""
    out: dict[str, int | None] = {}
    for name, c in curve.get("pairs", {}).items():
        pts = c["points"]
        full = next((p for p in pts if p["all"]), None)
        if full is None:
            out[name] = None
            continue
        sized = [p for p in pts if not p["all"]]
        within = [p["diff_vs_best_fixed"] >= full["diff_vs_best_fixed"] - tolerance for p in sized]
        # the smallest size from which every larger one is within tolerance too (a lucky small draw
        # followed by a worse larger one is not a plateau)
        first = next((i for i in range(len(sized)) if all(within[i:])), None)
        at = sized[first] if first is not None else full
        out[name] = int(round(at.get("pair_train_problems", at["train_problems"])))  # the pair's own problems
    return out


__all__ = ["SIZES", "learning_curve", "recommended_size", "summarize"]
