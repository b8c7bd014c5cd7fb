"""Why the router chooses what it chooses: feature importance grouped into the paper's factors.

The paper (arXiv 2502.06703) finds that the compute-optimal strategy depends on the policy, the
PRM, the problem's difficulty and the budget. This module asks the trained selector the same
question, with LightGBM's own attributions (no ``shap`` package):

- ``gain``: the loss reduction of every split on a feature (``booster.feature_importance("gain")``);
- SHAP values from ``booster.predict(X, pred_contrib=True)`` (TreeSHAP, in the raw score's unit:
  log-odds for the ``cross_entropy`` objective). Each row's contributions plus the expected value
  (the last column) add up to its raw score.

Two SHAP summaries are reported, because they answer different questions:

- ``shap_prediction``: mean |contribution| per factor — what moves a predicted accuracy.
  Difficulty features dominate it, but a feature that lifts every strategy of a problem alike
  changes no decision.
- ``shap_choice``: the same after subtracting, per (pair, problem), the mean contribution over
  that problem's strategies — what makes strategies differ on one problem, i.e. what drives the
  choice. A problem feature (text, embedding, probe) or a pair descriptor is constant within a
  problem, so everything it scores here is its interaction with the strategy: the paper's claim
  that the best strategy depends on difficulty and on the pair, measured.

Factors sum a group's contributions per row before the absolute value (SHAP is additive, so a
group's joint contribution is the sum of its members').
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

#: The paper's factors, in display order.
FACTORS = ("policy", "PRM", "difficulty", "budget", "strategy")
_BUDGET = ("strategy_n", "strategy_log2_n")
#: Rows of the SHAP computation at most (a seeded sample of whole problems beyond it).
MAX_ROWS = 40_000


def factor_of(column: str) -> str:
    """The factor a model input belongs to (``other`` for a column no factor claims)."""
    if column.startswith("policy_"):
        return "policy"
    if column.startswith("prm_"):
        return "PRM"
    if column.startswith(("probe_", "txt_", "emb_")):
        return "difficulty"
    if column in _BUDGET:
        return "budget"
    if column.startswith("strategy_"):
        return "strategy"
    return "other"


def _factors(columns: Sequence[str]) -> list[str]:
    found = {factor_of(c) for c in columns}
    return [f for f in (*FACTORS, "other") if f in found or f in FACTORS]


def contributions(booster: Any, x: pd.DataFrame) -> np.ndarray:
    """TreeSHAP contributions ``(rows, features + 1)``; the last column is the expected value.

    Each row sums to ``booster.predict(x, raw_score=True)``.
    """
    contrib = np.asarray(booster.predict(x, pred_contrib=True), dtype=float)
    if contrib.shape != (len(x), x.shape[1] + 1):
        raise ValueError(f"pred_contrib returned shape {contrib.shape} for {x.shape}: a multi-class model?")
    return contrib


def group_sums(values: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Per factor, the sum of its columns of ``values`` (``rows × columns``): a group's joint contribution."""
    factors = [factor_of(c) for c in columns]
    return {f: values[:, [i for i, g in enumerate(factors) if g == f]].sum(axis=1) for f in _factors(columns)}


def gain_importance(booster: Any) -> dict[str, Any]:
    """Total split gain per feature and per factor; the factors' gains add up to the total."""
    names = list(booster.feature_name())
    gain = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
    by_factor = {f: float(sum(g for n, g in zip(names, gain) if factor_of(n) == f)) for f in _factors(names)}
    total = float(gain.sum())
    return {"total": total, "by_factor": by_factor,
            "share": {f: (v / total if total > 0 else 0.0) for f, v in by_factor.items()},
            "by_feature": dict(zip(names, map(float, gain)))}


def _sample_rows(table: pd.DataFrame, max_rows: int, seed: int) -> pd.DataFrame:
    """The whole table, or whole problems drawn at random until about ``max_rows`` rows (seeded)."""
    if len(table) <= max_rows:
        return table
    keys = table[["policy", "prm", "problem_id"]].drop_duplicates()
    per = len(table) / len(keys)
    pick = keys.sample(n=max(1, int(max_rows / per)), random_state=seed)
    return table.merge(pick, on=["policy", "prm", "problem_id"], how="inner")


def global_importance(booster: Any, pipeline: Any, table: pd.DataFrame, *, max_rows: int = MAX_ROWS,
                      seed: int = 0) -> dict[str, Any]:
    """Gain and SHAP importance, per feature and per factor, on the rows of ``table``.

    ``shap_choice`` centres contributions per (pair, problem) over its strategies (see the module
    docstring). Shares are each factor's part of the sum over factors.
    """
    rows = _sample_rows(table, max_rows, seed).reset_index(drop=True)
    x = pipeline.transform(rows)
    columns = list(x.columns)
    contrib = contributions(booster, x)
    phi = contrib[:, :-1]
    group = rows.groupby(["policy", "prm", "problem_id"], sort=False).ngroup().to_numpy()
    centred = phi - _group_mean(phi, group)
    pred_groups = group_sums(phi, columns)
    choice_groups = group_sums(centred, columns)

    def summary(groups: dict[str, np.ndarray]) -> dict[str, Any]:
        mean_abs = {f: float(np.abs(v).mean()) for f, v in groups.items()}
        total = sum(mean_abs.values())
        return {"mean_abs": mean_abs, "share": {f: (v / total if total > 0 else 0.0) for f, v in mean_abs.items()}}

    features = []
    gain = gain_importance(booster)
    for i, c in enumerate(columns):
        features.append({"feature": c, "factor": factor_of(c), "gain": gain["by_feature"].get(c, 0.0),
                         "shap_prediction": float(np.abs(phi[:, i]).mean()),
                         "shap_choice": float(np.abs(centred[:, i]).mean())})
    features.sort(key=lambda f: -f["shap_choice"])
    return {"rows": len(rows), "problems": int(group.max() + 1) if len(group) else 0,
            "unit": "raw score (log-odds of accuracy)", "expected_value": float(contrib[0, -1]) if len(rows) else None,
            "gain": {k: gain[k] for k in ("total", "by_factor", "share")},
            "shap_prediction": summary(pred_groups), "shap_choice": summary(choice_groups), "features": features,
            "by_pair": _by_pair(rows, centred, columns)}


def _group_mean(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    sums = np.zeros((group.max() + 1, values.shape[1])) if len(group) else np.zeros((0, values.shape[1]))
    np.add.at(sums, group, values)
    counts = np.bincount(group, minlength=len(sums))[:, None]
    return (sums / np.maximum(counts, 1))[group]


def _by_pair(rows: pd.DataFrame, centred: np.ndarray, columns: Sequence[str]) -> dict[str, dict[str, float]]:
    """Choice-SHAP shares per pair: does the same factor drive the choice for every pair?"""
    from ttsopt.search.pairs import Pair

    out = {}
    for (policy, prm), idx in rows.groupby(["policy", "prm"], sort=False).indices.items():
        groups = group_sums(centred[idx], columns)
        mean_abs = {f: float(np.abs(v).mean()) for f, v in groups.items()}
        total = sum(mean_abs.values())
        out[Pair(policy, prm).name] = {f: (v / total if total > 0 else 0.0) for f, v in mean_abs.items()}
    return out


def router_decisions(artifact: Any, table: pd.DataFrame, budgets: Sequence[int] | None = None) -> pd.DataFrame:
    """The saved router's pick for every (pair, problem) of ``table`` at each budget N, with the problem's
    difficulty bin and probe agreement (when present) beside it: what the decision map draws.

    The router predicts on the rows as they are (in-sample when ``table`` is its training data);
    the rule is the router's: the highest predicted accuracy among strategies with ``n <= N``,
    ties to the fewer expected tokens of the catalogue, then to the earlier catalogue entry.
    """
    from ttsopt.selector.decide import within_budget

    pred = np.asarray(artifact.booster.predict(artifact.pipeline.transform(table)), dtype=float)
    t = table.assign(pred=pred)
    budgets = sorted(artifact.manifest.get("budgets") or t["n"].unique()) if budgets is None else list(budgets)
    out = []
    for (policy, prm), g in t.groupby(["policy", "prm"], sort=False):
        name = _pair_name_of(policy, prm)
        known = {s["key"]: s for s in artifact.catalogue.get(name, {}).get("strategies", [])}
        g = g[g["strategy"].isin(known)] if known else g
        piv = g.pivot_table(index="problem_id", columns="strategy", values="pred", aggfunc="first")
        if known:  # catalogue order, as the router holds its strategies (a full tie goes to the first)
            piv = piv[[k for k in known if k in piv.columns]]
        strategies = list(piv.columns)
        n = np.array([known[s]["n"] if s in known else int(g.loc[g["strategy"] == s, "n"].iloc[0]) for s in strategies])
        tokens = np.array([known[s]["tokens"] if s in known else float(g.loc[g["strategy"] == s, "tokens"].mean())
                           for s in strategies])
        values = piv.to_numpy()
        first = g.drop_duplicates("problem_id").set_index("problem_id").loc[piv.index]
        for budget in budgets:
            cost = np.where(n <= budget, tokens, np.inf)
            cost = np.where(np.isnan(values), np.inf, cost)
            pick = within_budget(np.nan_to_num(values, nan=-1.0), cost, math.inf)
            for r, (pid, i) in enumerate(zip(piv.index, pick)):
                if i < 0:
                    continue
                row = {"pair": name, "problem_id": pid, "budget": int(budget), "strategy": strategies[i],
                       "method": strategies[i].split(":", 1)[0], "predicted": float(values[r, i])}
                for c in ("difficulty", "level", "probe_agreement"):
                    if c in first:
                        row[c] = first.at[pid, c]
                out.append(row)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- one problem


@dataclass
class Candidate:
    """One strategy a router could pick for a problem, with what the selector predicts for it."""

    strategy: str
    n: int
    tokens: float
    flops: float
    predicted: float
    raw_score: float
    observed: float | None = None


def _pair_name_of(policy: str, prm: str) -> str:
    from ttsopt.search.pairs import Pair

    return Pair(policy, prm).name


def question_rows(artifact: Any, question: str, pair: str) -> pd.DataFrame:
    """Raw rows (one per catalogue strategy) for a new question, with the columns the offline table has.

    Built by ``selector/rows.py``, the functions the online router and the offline table share
    (text statistics, the raw MiniLM embedding, the pair's and the strategies' descriptors), so
    an explanation sees what the router sees.
    """
    from ttsopt.selector.features import Embedder
    from ttsopt.selector.rows import candidate_frame, question_columns

    if artifact.pipeline.probes:
        raise ValueError("this router uses probe features, which need the policy's probe samples for a new "
                         "question; explain a problem of the data instead (--problem ID), or route it with the probe")
    entry = artifact.catalogue[pair]
    embedder = Embedder.minilm() if artifact.pipeline.pca is not None else None
    cols = question_columns([question], embedder).iloc[0].to_dict()
    keys = [s["key"] for s in entry["strategies"]]
    frame = candidate_frame(cols, entry["descriptors"], keys)
    by_key = {s["key"]: s for s in entry["strategies"]}
    return frame.assign(policy=entry["policy"], prm=entry["prm"], problem_id="question", question_key="question",
                        n=[by_key[k]["n"] for k in keys], tokens=[by_key[k]["tokens"] for k in keys],
                        flops=[by_key[k]["flops"] for k in keys])


def explain_rows(artifact: Any, rows: pd.DataFrame, budget: int | None, *, top: int = 8) -> dict[str, Any]:
    """Candidates of one (pair, problem) at budget N (strategies with ``n <= N``), ranked, and why the winner won.

    The winner is the argmax of predicted accuracy, ties to the fewer expected tokens (the
    catalogue's, as the router charges them), then to the earlier catalogue entry — the router's rule. Returns the candidates, the
    winner's top signed SHAP contributions, the contributions to the winner's lead over the
    runner-up, and both by factor.
    """
    from ttsopt.selector.decide import within_budget

    pair = _pair_name_of(rows["policy"].iloc[0], rows["prm"].iloc[0])
    entry = artifact.catalogue.get(pair)
    if entry is None:
        raise ValueError(f"the router was trained for pairs {', '.join(artifact.catalogue)}; not {pair}")
    known = {s["key"]: s for s in entry["strategies"]}
    position = {k: i for i, k in enumerate(known)}
    # catalogue order, as the router holds its strategies: a full tie (prediction and tokens) goes to the first
    rows = rows[rows["strategy"].isin(known)]
    rows = rows.iloc[np.argsort(rows["strategy"].map(position).to_numpy(), kind="stable")].reset_index(drop=True)
    n_max = max(int(s["n"]) for s in known.values())
    budget = n_max if budget is None else int(budget)
    rows = rows[rows["strategy"].map(lambda k: known[k]["n"] <= budget)].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"no strategy of {pair} fits budget N={budget} (smallest n is "
                         f"{min(s['n'] for s in known.values())})")
    x = artifact.pipeline.transform(rows)
    pred = np.asarray(artifact.booster.predict(x), dtype=float)
    contrib = contributions(artifact.booster, x)
    tokens = np.array([known[k]["tokens"] for k in rows["strategy"]])
    win = int(within_budget(pred[None, :], tokens, math.inf)[0])
    order = sorted(range(len(rows)), key=lambda i: (-pred[i], tokens[i], i))
    order.remove(win)
    order.insert(0, win)  # the rule's winner first, even in a tie
    columns = list(x.columns)
    candidates = [Candidate(rows["strategy"].iloc[i], int(known[rows["strategy"].iloc[i]]["n"]), float(tokens[i]),
                            float(known[rows["strategy"].iloc[i]]["flops"]), float(pred[i]),
                            float(contrib[i].sum()),
                            float(rows["label"].iloc[i]) if "label" in rows and pd.notna(rows["label"].iloc[i])
                            else None)
                  for i in order]

    def top_features(phi: np.ndarray, other: int | None = None) -> list[dict[str, Any]]:
        idx = np.argsort(-np.abs(phi), kind="stable")[:top]
        out = []
        for i in idx:
            f = {"feature": columns[i], "factor": factor_of(columns[i]), "value": _plain(x.iloc[win, i]),
                 "shap": float(phi[i])}
            if other is not None:
                f["runner_up_value"] = _plain(x.iloc[other, i])
            out.append(f)
        return out

    phi_win = contrib[win, :-1]
    out: dict[str, Any] = {
        "pair": pair, "problem_id": str(rows["problem_id"].iloc[0]), "budget": budget,
        "winner": candidates[0].strategy, "candidates": [c.__dict__ for c in candidates],
        "expected_value": float(contrib[win, -1]), "unit": "raw score (log-odds of accuracy)",
        "winner_features": top_features(phi_win),
        "winner_by_factor": {f: float(v[0]) for f, v in group_sums(phi_win[None, :], columns).items()},
    }
    if len(rows) > 1:
        second = order[1]
        diff = phi_win - contrib[second, :-1]
        out["runner_up"] = candidates[1].strategy
        out["lead_features"] = top_features(diff, second)
        out["lead_by_factor"] = {f: float(v[0]) for f, v in group_sums(diff[None, :], columns).items()}
    for extra in ("difficulty", "level", "pass_at_1"):
        if extra in rows and pd.notna(rows[extra].iloc[0]):
            out[extra] = _plain(rows[extra].iloc[0])
    return out


def _plain(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if isinstance(v, (int, float, str, bool)) or v is None else str(v)


def explain(router: str | Path | Any, data: Sequence[str | Path] = (), *, table: pd.DataFrame | None = None,
            problem: str | None = None, question: str | None = None, budget: int | None = None,
            pair: str | None = None, top: int = 8, max_rows: int = MAX_ROWS, seed: int = 0) -> dict[str, Any]:
    """Global importance on the data, and (with ``problem`` or ``question``) why one problem's strategy won.

    ``router`` is a router directory or a loaded artifact; ``data`` snapshot folders (or pass
    ``table``, a training table, directly). ``pair`` limits the per-problem part to one pair
    (default: every pair the problem has). Returns a JSON-able dict with ``global`` (None without
    data) and ``problems`` (one entry per pair).
    """
    from ttsopt.selector.artifact import load_artifact

    artifact = load_artifact(router) if isinstance(router, (str, Path)) else router
    if problem is not None and question is not None:
        raise ValueError("give a problem id or a question, not both")
    if table is None and data:
        from ..fit.table import load_training_table

        table = load_training_table(list(data), probe_k=artifact.manifest["settings"].get("probe_k"))
    out: dict[str, Any] = {"router": str(router) if isinstance(router, (str, Path)) else None,
                           "global": None, "problems": []}
    if table is not None:
        out["global"] = global_importance(artifact.booster, artifact.pipeline, table, max_rows=max_rows, seed=seed)
    pairs = [pair] if pair is not None else None
    if pair is not None and pair not in artifact.catalogue:
        raise ValueError(f"unknown pair {pair!r}; the router knows {', '.join(artifact.catalogue)}")
    if problem is not None:
        if table is None:
            raise ValueError("--problem needs --data (the snapshot that holds the problem)")
        mine = table[table["problem_id"] == problem]
        if mine.empty:
            sample = ", ".join(table["problem_id"].drop_duplicates().head(3))
            raise ValueError(f"problem {problem!r} is not in the data (ids look like {sample})")
        for (policy, prm), rows in mine.groupby(["policy", "prm"], sort=False):
            if pairs is None or _pair_name_of(policy, prm) in pairs:
                out["problems"].append(explain_rows(artifact, rows, budget, top=top))
    elif question is not None:
        for name in pairs or list(artifact.catalogue):
            out["problems"].append(explain_rows(artifact, question_rows(artifact, question, name), budget, top=top))
        out["question"] = question
    out["adaptive_stops"] = adaptive_stops(artifact.manifest, pairs, budget)
    return out


def stop_reasons(summary: Mapping[str, Any]) -> str:
    """``{"stops": {"agree": 0.5, ...}}`` -> ``"agree 50%, budget 50%"``, the commonest first."""
    return ", ".join(f"{r} {share:.0%}" for r, share in sorted(summary["stops"].items(), key=lambda x: -x[1]))


def adaptive_stops(manifest: Mapping[str, Any], pairs: Sequence[str] | None = None,
                   budget: int | None = None) -> dict[str, dict[str, Any]]:
    """How each adaptive option stops, per pair, as ``ttsopt train`` recorded it from the sweep's pools
    (``manifest["deployed"][pair]["adaptive_stops"]``: mean samples drawn and the share of orders per
    stop reason, over all problems and per level); options with n <= ``budget`` only. Empty for a
    router trained without the nested comparison or on pools with no adaptive estimate."""
    out = {}
    for name, entry in (manifest.get("deployed") or {}).items():
        if pairs is not None and name not in pairs:
            continue
        profile = {k: v for k, v in (entry.get("adaptive_stops") or {}).items() if budget is None or v["n"] <= budget}
        if profile:
            out[name] = profile
    return out


__all__ = ["FACTORS", "Candidate", "adaptive_stops", "stop_reasons", "contributions", "explain", "explain_rows", "factor_of", "gain_importance",
           "global_importance", "group_sums", "question_rows", "router_decisions"]
