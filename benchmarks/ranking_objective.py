"""Pointwise or per-problem ranking: which LightGBM objective picks better strategies within a budget.

The issue asked to try a per-problem ranking objective beside the pointwise ``cross_entropy`` on
the fractional labels and keep what measures better. A ranking objective only orders a problem's
strategies, so it can serve the argmax within a budget N, not the target-accuracy mode, the
compute price or the batch allocation, which need calibrated accuracies; it is worth keeping only
if its argmax is clearly better. Here both objectives get the same fixed LightGBM settings (no
Optuna, so that the comparison is of objectives, not of tuning luck), the same features
(selector/pipeline.py, the PCA fitted on each fold's training problems) and the same 5 folds by
question key; each query of the ranking objectives is one (pair, problem), graded by its label
rounded to tenths. Decisions as in the evaluation: among strategies with n <= N, the highest
score, ties to the cheaper; the best fixed strategy is chosen on the training folds.

    python3 benchmarks/ranking_objective.py --data benchmarks/results/arith-router \
        --json benchmarks/results/selector/ranking-objective.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/machine.py: this folder is no package
from machine import cpu_model  # noqa: E402

#: One fixed setting for every objective (near the tuned routers' typical choice on arith-router).
PARAMS = {"learning_rate": 0.05, "num_leaves": 15, "min_data_in_leaf": 20, "lambda_l2": 1.0,
          "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1}
ROUNDS = 300
OBJECTIVES = {
    "cross_entropy (pointwise, the router's)": {"objective": "cross_entropy"},
    "lambdarank (per problem)": {"objective": "lambdarank", "metric": "ndcg", "eval_at": [1]},
    "rank_xendcg (per problem)": {"objective": "rank_xendcg", "metric": "ndcg", "eval_at": [1]},
}
GRADES = 10  # ranking labels: round(label * GRADES), integer relevance as LightGBM's rankers require


def _fit_predict(x_tr, y_tr, q_tr, x_te, objective: dict) -> np.ndarray:
    import lightgbm as lgb

    from ttsopt.train.fit.tuning import FIXED_PARAMS

    params = {**FIXED_PARAMS, **PARAMS, **objective}
    ranking = objective["objective"] != "cross_entropy"
    order = np.argsort(q_tr, kind="stable") if ranking else np.arange(len(y_tr))  # a ranker needs queries contiguous
    label = np.rint(y_tr * GRADES).astype(int) if ranking else y_tr
    data = lgb.Dataset(x_tr.iloc[order], label=label[order],
                       categorical_feature=[c for c in x_tr.columns if str(x_tr[c].dtype) == "category"])
    if ranking:
        data.set_group(np.unique(q_tr[order], return_counts=True)[1])  # sorted queries, sizes in that order
    return lgb.train(params, data, num_boost_round=ROUNDS).predict(x_te)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", nargs="+", default=["benchmarks/results/arith-router"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-problems", type=int, default=30)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    from ttsopt.selector.pipeline import FeaturePipeline
    from ttsopt.train.fit.pairs import BUDGETS, _argmax_cheapest, _pairs
    from ttsopt.train.evaluation.metrics import gap_recovered, paired_bootstrap
    from ttsopt.train.evaluation.rules import _allowed, _best_fixed_vector
    from ttsopt.train.fit.table import fold_lists, load_training_table

    table = load_training_table(args.data).reset_index(drop=True)
    folds = fold_lists(table, args.folds, seed=args.seed)
    query = (table["policy"] + "|" + table["prm"] + "|" + table["problem_id"]).to_numpy()
    y = table["label"].to_numpy(dtype=float)
    start = time.perf_counter()
    preds = {name: np.full(len(table), np.nan) for name in OBJECTIVES}
    fold = np.full(len(table), -1)
    for f, (tr, te) in enumerate(folds):
        pipe = FeaturePipeline.fit(table.iloc[tr])
        x_tr, x_te = pipe.transform(table.iloc[tr]), pipe.transform(table.iloc[te])
        for name, objective in OBJECTIVES.items():
            preds[name][te] = _fit_predict(x_tr, y[tr], query[tr], x_te, objective)
        fold[te] = f
        print(f"fold {f + 1}/{len(folds)} ({time.perf_counter() - start:.0f} s)", flush=True)
    out: dict = {"rows": len(table), "folds": args.folds, "seed": args.seed, "params": PARAMS, "rounds": ROUNDS,
                 "cpu": cpu_model(), "seconds": None, "pairs": {}}
    for name in OBJECTIVES:
        t = table.assign(pred=preds[name], fold=fold, **{c: "" for c in ("difficulty", "level") if c not in table})
        for p in _pairs(t, args.min_problems):
            rec = out["pairs"].setdefault(p.name, {"problems": len(p.fold), "objectives": {}})
            idx = np.arange(len(p.fold))
            per, gaps = {}, []
            for budget in BUDGETS:
                allowed = _allowed(p, budget, 0)
                cost = np.broadcast_to(np.where(allowed, p.tokens.mean(axis=0), np.inf), p.pred.shape)
                pick = _argmax_cheapest(np.where(allowed, p.pred, -np.inf), cost)
                acc, fixed = p.label[idx, pick], _best_fixed_vector(p, allowed)
                oracle = np.where(allowed, p.label, -np.inf).max(axis=1)
                ci = paired_bootstrap(acc, fixed, seed=args.seed)
                gap = gap_recovered(float(acc.mean()), float(fixed.mean()), float(oracle.mean()))
                per[str(budget)] = {"accuracy": float(acc.mean()), "best_fixed": float(fixed.mean()),
                                    "oracle": float(oracle.mean()), "ci95": [ci["lo"], ci["hi"]], "gap_recovered": gap}
                if gap == gap:
                    gaps.append(gap)
            rec["objectives"][name] = {"budgets": per, "mean_gap_recovered": float(np.mean(gaps)) if gaps else None}
    out["seconds"] = time.perf_counter() - start
    print(f"\n{out['rows']} rows, {args.folds} folds by question key, {ROUNDS} rounds, {out['cpu']}, "
          f"{out['seconds']:.0f} s\n")
    print("| pair | objective | mean gap recovered (N = 1–16) | " + " | ".join(f"N={b}" for b in BUDGETS) + " |")
    print("|---|---|---|" + "---|" * len(BUDGETS))
    for pair, rec in out["pairs"].items():
        for name, r in rec["objectives"].items():
            cells = [f"{r['budgets'][str(b)]['accuracy']:.3f} [{r['budgets'][str(b)]['ci95'][0]:+.3f}, "
                     f"{r['budgets'][str(b)]['ci95'][1]:+.3f}]" for b in BUDGETS if str(b) in r["budgets"]]
            print(f"| {pair} ({rec['problems']}) | {name} | {r['mean_gap_recovered']:+.2f} | " + " | ".join(cells) + " |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
