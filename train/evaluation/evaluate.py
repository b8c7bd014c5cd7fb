"""Cross-fitted evaluation of the selector against every fixed strategy and the oracle: the entry points.

Every problem's prediction comes from a model that never saw its question (:mod:`.crossfit`:
folds by question key, the feature pipeline and the Optuna tuning on the training folds only).
On the held-out predictions, for each pair and budget N (strategies with n <= N; CoT at every N):

- ``router``: the strategy with the highest predicted accuracy (ties to the cheaper);
- ``best_fixed``: the strategy with the best mean label on the training folds (the baseline a
  router must beat), and ``best_fixed_test``, chosen on the test problems (optimistic);
- ``per_bin``: the best strategy per difficulty bin learned on the training folds, applied by
  each test problem's bin: oracle bins (the sweep's Pass@1, Snell et al.'s upper bound);
- ``paper_rule``: search for small policies (beam search at N), Best-of-N for large ones;
- ``random``: a uniformly random strategy within the budget (its expected accuracy);
- ``oracle``: each problem's best label within the budget.

The parts live in their own modules: :mod:`ttsopt.train.fit.pairs` (the per-pair matrices and shared
choices), :mod:`.curves` (accuracy against compute, AIQ, compute multiplier), :mod:`.rules`
(rules beyond the argmax), :mod:`.allocation` (batch allocation, target mode), :mod:`.lopo`
(leave one pair out), :mod:`.markdown` (the tables). This module composes them
(:func:`evaluate_pair`, :func:`evaluate`, :func:`evaluate_as_is`) and re-exports the names
other modules and tests import from ``ttsopt.train.evaluation.evaluate``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ttsopt.search.pairs import Pair
from ttsopt.selector.pipeline import ORACLE_COLUMNS, PROBE_FEATURES

from ..fit.cascade import gate_vectors, load_gates, with_rest
from ..fit.pairs import (  # noqa: F401
    BUDGETS,
    MIN_PROBLEMS,
    _argmax_cheapest,
    _fixed_choice,
    _Pair,
    _pair_keys,
    _pairs,
    _paper_rule,
    _shares,
)
from ..fit.folds import outer_folds
from ..fit.options import load_options
from ..fit.rest import load_rest  # noqa: F401  (re-exported)
from ..fit.table import fold_lists
from ..fit.tuning import TrainSettings
from .allocation import ALLOCATION_POINTS, TARGETS, _allocation, _target_mode  # noqa: F401
from .cascade import cross_fitted_levels, evaluate_cascade
from .deploy import compute_summary, deployed_compute, deployed_default
from .crossfit import (  # noqa: F401
    CrossFit,
    _folds_like,
    _problem_features,
    _with_probe_columns,
    cross_fit,
    cross_fit_nested,
    load_probe_tables,
)
from .curves import LAMBDAS, _curve_summary, _curves, _hull_range  # noqa: F401
from .lopo import LOPO_CALIBRATION, leave_one_pair_out, lopo_candidates, lopo_split  # noqa: F401
from .markdown import markdown  # noqa: F401
from .metrics import brier, calibration_table, gap_recovered, paired_bootstrap
from .rules import (  # noqa: F401
    ALPHAS,
    MARGINS,
    TOPKS,
    _allowed,
    _apply_rule,
    _best_fixed_vector,
    _fallback_params,
    _probe_charge,
    _Rule,
    _rule_record,
    _rule_scores,
    _rules,
)


def evaluate_pair(p: _Pair, *, seed: int = 0) -> dict[str, Any]:
    idx = np.arange(len(p.fold))
    budgets: dict[str, Any] = {}
    for budget in BUDGETS:
        allowed = p.n <= budget
        if not allowed.any():
            continue
        mask_cost = np.where(allowed, p.tokens.mean(axis=0), np.inf)
        router_pick = _argmax_cheapest(np.where(allowed, p.pred, -np.inf), np.broadcast_to(mask_cost, p.pred.shape))
        router = p.label[idx, router_pick]
        fixed, per_bin = np.zeros(len(idx)), np.zeros(len(idx))
        fixed_flops = np.zeros(len(idx))
        fixed_names = []
        for f, train, test in outer_folds(p.fold):
            s = _fixed_choice(p.label, p.tokens, train, allowed)
            fixed_names.append(p.strategies[s])
            fixed[test], fixed_flops[test] = p.label[test, s], p.flops[test, s]
            for b in np.unique(p.bins[test]):
                tr_b, te_b = train[p.bins[train] == b], test[p.bins[test] == b]
                sb = _fixed_choice(p.label, p.tokens, tr_b if len(tr_b) else train, allowed)
                per_bin[te_b] = p.label[te_b, sb]
        test_best = _fixed_choice(p.label, p.tokens, idx, allowed)
        oracle_pick = _argmax_cheapest(np.where(allowed, p.label, -np.inf), np.broadcast_to(mask_cost, p.label.shape))
        oracle = p.label[idx, oracle_pick]  # the best label within N, ties to the cheaper
        rule_key = _paper_rule(p, budget)
        ci = paired_bootstrap(router, fixed, seed=seed)
        budgets[str(budget)] = {
            "router": {"accuracy": float(router.mean()), "flops": float(p.flops[idx, router_pick].mean()),
                       "tokens": float(p.tokens[idx, router_pick].mean()),
                       "ci95": [ci["lo"], ci["hi"]], "diff_vs_best_fixed": ci["mean"]},
            "best_fixed": {"accuracy": float(fixed.mean()), "flops": float(fixed_flops.mean()),
                           "strategies": sorted(set(fixed_names))},
            "best_fixed_test": {"accuracy": float(p.label[:, test_best].mean()), "strategy": p.strategies[test_best]},
            "per_bin_oracle_bins": {"accuracy": float(per_bin.mean())},
            "paper_rule": {"accuracy": float(p.label[:, p.strategies.index(rule_key)].mean()) if rule_key else None,
                           "strategy": rule_key},
            "random": {"accuracy": float(np.where(allowed, p.label, np.nan)[:, allowed].mean())},
            "oracle": {"accuracy": float(oracle.mean()), "flops": float(p.flops[idx, oracle_pick].mean())},
            "gap_recovered": gap_recovered(float(router.mean()), float(fixed.mean()), float(oracle.mean())),
            "shares": _shares(p, router_pick),
        }
    report = {"budgets": budgets, "curve": _curves(p), "brier": brier(p.pred.ravel(), p.label.ravel())}
    report.update(_extended(p, report, seed))
    if p.extra.get("gate") is not None and "cot" in p.strategies:
        report["cascade"] = evaluate_cascade(p, *p.extra["gate"], base=report, seed=seed,
                                             options=p.extra.get("cascade_options"))
    report["deployed"] = deployed_default(p, p.extra.get("gate") if "cot" in p.strategies else None, seed=seed,
                                          options=p.extra.get("cascade_options"))
    report["deployed_compute"] = deployed_compute(p, seed=seed, options=p.extra.get("cascade_options"))
    report["deployed_compute_summary"] = compute_summary(report)
    return report


def _extended(p: _Pair, base: dict[str, Any], seed: int) -> dict[str, Any]:
    """The rules beyond plain argmax, batch allocation and target mode (added to a pair's report)."""
    rules, info = _rules(p, seed)
    params = {r.name: _fallback_params(p, r) for r in rules}
    summary: dict[str, Any] = {}
    for r in [None, *rules]:
        name = "router" if r is None else r.name
        gaps, worst_hi = [], np.inf
        for budget in BUDGETS:
            b = base["budgets"].get(str(budget))
            if b is None:
                continue
            if r is not None:
                allowed = _allowed(p, budget, 0)
                fixed = _best_fixed_vector(p, allowed)
                picks = _apply_rule(r, p, params[r.name], budget=budget)
                if picks is None:
                    continue
                rec = _rule_record(r, p, picks, fixed, b["oracle"]["accuracy"], bool(_allowed(p, budget, r.probe_k).any()),
                                   seed)
                rec["params"] = [params[r.name][int(f)] for f in sorted(params[r.name])]
                b[name] = rec
            rec = b[name]
            gap = b["gap_recovered"] if r is None else rec["gap_recovered"]
            if gap == gap:
                gaps.append(gap)
            worst_hi = min(worst_hi, rec["ci95"][1])
        mean_gap = float(np.mean(gaps)) if gaps else None
        summary[name] = {"gap_recovered_mean": mean_gap, "never_significantly_below_best_fixed": bool(worst_hi >= 0),
                         "meets_issue_target": bool(mean_gap is not None and mean_gap >= 0.3 and worst_hi >= 0)}
    curve = base["curve"]
    lo, hi = _hull_range(curve)
    curve_rules = {}
    for r in rules:
        pts = []
        for lam in LAMBDAS:
            picks = _apply_rule(r, p, params[r.name], lam=lam)
            idx = np.arange(len(p.fold))
            extra_t, extra_f = _probe_charge(r, p, True)
            pts.append({"lambda": lam, "accuracy": float(p.label[idx, picks].mean()),
                        "flops": float((p.flops[idx, picks] + extra_f).mean()),
                        "tokens": float((p.tokens[idx, picks] + extra_t).mean())})
        curve_rules[r.name] = _curve_summary(pts, curve["fixed"], lo, hi)
    curve["rules"] = curve_rules
    by_name = {r.name: r for r in rules}

    def scores_for(rule: _Rule | None) -> Callable[[int, np.ndarray, np.ndarray], np.ndarray]:
        def fn(f: int, tr: np.ndarray, te: np.ndarray) -> np.ndarray:
            if rule is None:
                return p.pred[te]
            return _rule_scores(rule, p, None if rule.pred is None else rule.pred[te], tr, te,
                                None if rule.bins_pred is None else rule.bins_pred[te], params[rule.name][f], None, 0.0)
        return fn

    choices = [("router", None)]
    for name in ("router_shrunk", "level_rule_predicted", "level_blend", "difficulty_curve", "difficulty_curve_blend"):
        if name in by_name:
            choices.append((name, by_name[name]))
    allocation = {name: _allocation(p, name, scores_for(r), seed) for name, r in choices}
    allocation["oracle_labels"] = _allocation(p, "oracle_labels", lambda f, tr, te: p.label[te], seed)
    target = {name: _target_mode(p, name, scores_for(r)) for name, r in choices}
    out = {"summary": summary, "classifiers": info, "allocation": allocation, "target_mode": target}
    if "difficulty_rule" in p.extra:
        out["difficulty_rule"] = p.extra["difficulty_rule"]
    return out


def evaluate(table: pd.DataFrame, settings: TrainSettings, *, progress=None,
             probe_tables: Mapping[int, pd.DataFrame] | None = None, min_problems: int = MIN_PROBLEMS,
             lopo: bool = True, lopo_calibration: int = LOPO_CALIBRATION,
             gates: pd.DataFrame | None = None, rest: pd.DataFrame | None = None) -> dict[str, Any]:
    """The whole cross-fitted evaluation as one JSON-able dict (``eval.json``).

    ``probe_tables`` (probe k -> the training table loaded with ``probe_k=k``) adds a router
    with probe features per k, cross-fitted on the same question folds, its probe charged to
    every budget (see :func:`_rules`). Pairs with fewer than ``min_problems`` complete problems
    train the models but are not evaluated (listed under ``skipped_pairs``). ``lopo`` adds
    the leave-one-pair-out evaluation (:func:`leave_one_pair_out`). ``gates`` (per problem, the PRM's
    score of the stored CoT: :func:`~ttsopt.train.fit.cascade.load_gates`) adds the verify-first cascade
    (:mod:`.cascade`) to every pair it covers; ``rest`` (:func:`~ttsopt.train.fit.rest.load_rest`: pooled
    strategies at n = N - 1 from the pools) widens the cascade's escalation to the rest of the budget.
    """
    start = time.perf_counter()
    leaks = [c for c in ORACLE_COLUMNS if c in settings.to_dict()]
    assert not leaks
    probe_tables = dict(probe_tables or {})
    folds = fold_lists(table, settings.folds, seed=settings.seed)
    fold_of_key = {}
    for f, (_, test) in enumerate(folds):
        fold_of_key.update({k: f for k in table["question_key"].iloc[test].unique()})
    lopo_pairs = lopo_candidates(table, min_problems) if lopo else []
    total = settings.folds * (1 + len(probe_tables)) + len(lopo_pairs)
    done = [0]

    def tick(*_):
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    base = cross_fit_nested(table, settings, tick, folds=folds)
    pred, fold, fits = base.pred, base.fold, base.fits
    t = table.assign(pred=pred, fold=fold, **{f"inner_pred_{f}": base.inner_pred[f] for f in range(len(folds))},
                     **{f"inner_fold_{f}": base.inner_fold[f] for f in range(len(folds))})
    probe_fits = {}
    for k, pt in sorted(probe_tables.items()):
        pt = pt.reset_index(drop=True)
        cf = cross_fit_nested(pt, replace(settings, probe_k=k), tick,
                              folds=_folds_like(pt, fold_of_key, len(folds)))
        probe_fits[str(k)] = cf.fits
        t = _with_probe_columns(t, pt, cf, k)
    pairs_data = _pairs(t, min_problems)
    for p in pairs_data:
        p.extra["features"] = _problem_features(p, t, base)
        policy, prm = _pair_keys(t, p.name)
        if gates is not None and len(gates):
            p.extra["gate"] = gate_vectors(gates, policy, prm, p.extra["problem_ids"])
            p.extra["level_pred"] = cross_fitted_levels(p, settings.seed)
            p.extra["cascade_options"] = with_rest(p, rest, policy, prm)
        for k, pt in probe_tables.items():
            per = pt[(pt["policy"] == policy) & (pt["prm"] == prm)].drop_duplicates("problem_id").set_index("problem_id")
            p.extra[f"probe_features_k{k}"] = per.reindex(p.extra["problem_ids"])[list(PROBE_FEATURES)].to_numpy(
                dtype=float)
    pairs = {p.name: {"problems": len(p.fold), **evaluate_pair(p, seed=settings.seed)} for p in pairs_data}
    skipped = sorted({Pair(a, b).name for a, b in t[["policy", "prm"]].drop_duplicates().itertuples(index=False)}
                     - set(pairs))
    gaps = [b["gap_recovered"] for p in pairs.values() for b in p["budgets"].values()
            if b["gap_recovered"] == b["gap_recovered"]]
    mults = [p["curve"]["compute_multiplier"] for p in pairs.values()
             if p["curve"]["compute_multiplier"] not in (None, float("inf"))]
    calib = calibration_table(t["pred"].to_numpy(), t["label"].to_numpy(), bins=10)
    report = {
        "mode": "cross-fitted", "folds": settings.folds, "settings": settings.to_dict(), "fits": fits,
        "gap_recovered": float(np.mean(gaps)) if gaps else None,
        "compute_multiplier": float(np.median(mults)) if mults else None,
        "brier": brier(t["pred"].to_numpy(), t["label"].to_numpy()),
        "calibration": calib.to_dict("records"), "pairs": pairs, "rows": len(t),
        "probe_ks": sorted(probe_tables), "probe_fits": probe_fits, "skipped_pairs": skipped,
        "min_problems": min_problems,
    }
    for k in sorted(probe_tables):
        col = t[f"pred_probe{k}"].to_numpy()
        ok = ~np.isnan(col)
        report[f"brier_probe{k}"] = brier(col[ok], t["label"].to_numpy()[ok]) if ok.any() else None
    if lopo:
        report["lopo"] = leave_one_pair_out(table, settings, calibration=lopo_calibration, min_problems=min_problems,
                                            progress=tick)
    report["seconds"] = time.perf_counter() - start
    return report


def evaluate_as_is(artifact, table: pd.DataFrame, *, seed: int = 0,
                   gates: pd.DataFrame | None = None, rest: pd.DataFrame | None = None) -> dict[str, Any]:
    """The saved router on data it never saw (another snapshot, a new pair), as it is.

    The best fixed strategy is the one with the best accuracy on the router's training data
    (its catalogue); nothing is refitted. With ``gates`` (the PRM's scores of the new data's CoTs),
    the artifact's fitted cascade is evaluated too, in both modes (``cascade_fitted``,
    ``cascade_router`` per budget).
    """
    from .cascade import cascade_as_is

    pred = artifact.booster.predict(artifact.pipeline.transform(table))
    t = table.assign(pred=pred, fold=0)
    pairs = {}
    for p in _pairs(t):
        known = artifact.catalogue.get(p.name)
        if known is None:
            raise ValueError(f"the router was trained for pairs {', '.join(artifact.catalogue)}; not {p.name} "
                             "(train one that includes it, or evaluate by cross-fitting)")
        train_acc = {s["key"]: s["train_accuracy"] for s in known["strategies"]}
        budgets = {}
        idx = np.arange(len(p.fold))
        # the saved cascade's inputs for this pair, once (not per budget)
        entry = (artifact.manifest.get("cascade") or {}).get(p.name)
        vec = None if gates is None or entry is None or not len(gates) else gate_vectors(
            gates, *_pair_keys(t, p.name), p.extra["problem_ids"])
        wide = with_rest(p, rest, *_pair_keys(t, p.name)) if vec is not None else None
        levels = _artifact_levels(artifact, t, p) if vec is not None and entry.get("levels") else None
        for budget in BUDGETS:
            allowed = p.n <= budget
            if not allowed.any():
                continue
            cost = np.broadcast_to(np.where(allowed, p.tokens.mean(axis=0), np.inf), p.pred.shape)
            pick = _argmax_cheapest(np.where(allowed, p.pred, -np.inf), cost)
            router = p.label[idx, pick]
            fixed_key = max((k for k, a in zip(p.strategies, allowed) if a and k in train_acc),
                            key=lambda k: train_acc[k])
            fixed = p.label[:, p.strategies.index(fixed_key)]
            oracle_pick = _argmax_cheapest(np.where(allowed, p.label, -np.inf), cost)
            oracle = p.label[idx, oracle_pick]
            ci = paired_bootstrap(router, fixed, seed=seed)
            budgets[str(budget)] = {
                "router": {"accuracy": float(router.mean()), "flops": float(p.flops[idx, pick].mean()),
                           "ci95": [ci["lo"], ci["hi"]], "diff_vs_best_fixed": ci["mean"]},
                "best_fixed": {"accuracy": float(fixed.mean()), "strategies": [fixed_key]},
                "oracle": {"accuracy": float(oracle.mean()), "flops": float(p.flops[idx, oracle_pick].mean())},
                "random": {"accuracy": float(np.where(allowed, p.label, np.nan)[:, allowed].mean())},
                "gap_recovered": gap_recovered(float(router.mean()), float(fixed.mean()), float(oracle.mean())),
                "shares": _shares(p, pick),
            }
            cascade = cascade_as_is(wide, entry, *vec, budget, levels=levels) if vec is not None else None
            for mode, (acc, tok, fl, esc) in (cascade or {}).items():
                ci = paired_bootstrap(acc, fixed, seed=seed)
                budgets[str(budget)][f"cascade_{mode}"] = {
                    "accuracy": float(acc.mean()), "tokens": float(tok.mean()), "flops": float(fl.mean()),
                    "escalated": float(esc.mean()), "ci95": [ci["lo"], ci["hi"]], "diff_vs_best_fixed": ci["mean"],
                    "gap_recovered": gap_recovered(float(acc.mean()), float(fixed.mean()), float(oracle.mean()))}
        pairs[p.name] = {"budgets": budgets, "brier": brier(p.pred.ravel(), p.label.ravel())}
    gaps = [b["gap_recovered"] for q in pairs.values() for b in q["budgets"].values()
            if b["gap_recovered"] == b["gap_recovered"]]
    return {"mode": "as-is (data the router never saw)", "folds": 0, "rows": len(t),
            "gap_recovered": float(np.mean(gaps)) if gaps else None, "compute_multiplier": None,
            "brier": brier(t["pred"].to_numpy(), t["label"].to_numpy()), "pairs": pairs}


def _artifact_levels(artifact: Any, t: pd.DataFrame, p: Any) -> np.ndarray | None:
    """The pair's problems' levels as the artifact's level model predicts them from their text."""
    if artifact.levels is None:
        return None
    policy, prm = _pair_keys(t, p.name)
    rows = t[(t["policy"] == policy) & (t["prm"] == prm)].drop_duplicates("problem_id").set_index("problem_id")
    x = artifact.pipeline.transform(rows.loc[p.extra["problem_ids"]].reset_index())
    return artifact.levels.predict(x[artifact.levels.columns].to_numpy(dtype=float))[0].astype(str)


__all__ = ["BUDGETS", "CrossFit", "LAMBDAS", "cross_fit", "cross_fit_nested", "evaluate", "evaluate_as_is",
           "evaluate_pair", "evaluate_snapshots", "leave_one_pair_out", "machine_info", "load_probe_tables", "lopo_candidates", "lopo_split", "markdown"]


def machine_info() -> dict[str, Any]:
    """The CPU, core count and load at the end of a run: every figure is recorded with the machine it came from."""
    import os
    import platform

    cpu = platform.processor()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_end": os.getloadavg()}


def evaluate_snapshots(folders: Sequence[str | Path], settings: TrainSettings, *, probe_k: Sequence[int] = (1, 2, 4),
                       min_problems: int = MIN_PROBLEMS, lopo: bool = True,
                       progress: Callable[[int, int], None] | None = None,
                       learning_repeats: int = 0) -> dict[str, Any]:
    """The cross-fitted evaluation straight from snapshot folders (no router artifact needed), with the
    probes, gates and rest-of-budget options those folders hold, the machine it ran on and the data.
    ``learning_repeats`` > 0 adds the deployed default's learning curve (:mod:`.learning`), that many
    draws per size."""
    from ..fit.table import load_training_table

    table = load_training_table(folders)
    probes, missing = load_probe_tables(folders, probe_k)
    gates, rest = load_gates(folders), load_options(folders)
    report = evaluate(table, settings, probe_tables=probes, min_problems=min_problems, lopo=lopo,
                      gates=gates, rest=rest, progress=progress)
    if learning_repeats > 0:
        from .learning import learning_curve, recommended_size

        curve = learning_curve(table, settings, evaluate, repeats=learning_repeats, full=report, gates=gates, rest=rest)
        curve["recommended"] = recommended_size(curve)
        report["learning_curve"] = curve
    report["probe_missing"] = {str(k): v for k, v in missing.items()}
    report["machine"] = machine_info()
    report["data"] = [str(d) for d in folders]
    return report
