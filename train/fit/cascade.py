"""Verify first, escalate on doubt: the greedy chain of thought, checked by the pair's PRM, then a
search only where the check fails.

Why this rule: a plain router chooses a method for every problem at the same N, and on the arith
snapshots most of the best-fixed → oracle gap at fixed N is label noise it cannot learn. What can
be learned is *how much to spend on which problem*, and the cheapest honest signal of that is the
pair's own verifier on the cheapest answer: on ``arith-router`` the greedy CoT is wrong on (almost)
every problem where the calculator PRM finds a bad step, and right on most where it finds none.
So the cascade runs CoT, scores it with the PRM, keeps the answer when its lowest step score is at
least τ, and otherwise runs a search S with the rest of the budget.

Everything the cascade chooses (τ and S, per budget or per compute price λ) is chosen on the
training folds' problems, where the gate and the labels are known; it is then applied to the test
fold's problems, whose only input is their own gate score. The option "no gate" (run S alone, no
CoT) is always among the choices, so the cascade family contains every fixed strategy. The binned
variant (:func:`_binned`) makes that choice per bin of the router's predicted CoT accuracy, so it
uses the text's signal (how hard, across levels) and the check's (whether this answer is wrong)
together; the level variant (:func:`_by_level`, what ``cascade=True`` runs online where the data
has levels) makes it per level predicted from the text (:mod:`ttsopt.selector.levels`), so it
contains the per-level rule (docs/results.md; the option "no CoT" in every level) and adds the
check within each level.

Compute is the one measure of docs/architecture.md (tokens a KV-caching engine processes, FLOPs =
2 × parameters × tokens per model): the CoT's tokens, the PRM's tokens on it, and, on escalation,
S's tokens without its prompt, which the engine already holds from the CoT. At budget N
(generations) the cascade keeps S with n <= N - 1: the CoT is one of the N.

Gate scores come from scoring each problem's stored CoT with the pair's PRM
(:func:`cot_gates`); that is free for a PRM without parameters (calc). A PRM with weights would
have to be loaded and run over the snapshot's CoTs, which this module refuses unless asked
(``score_models=True``): pairs without gate scores get no cascade row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ttsopt.selector.decide import bin_of
from ttsopt.selector.plan import CascadePlan, default_mode

from ..sweep.snapshot import read_manifest, read_table
from .pairs import BUDGETS, _Pair, _pair_keys, _pairs

#: Compute prices (per expected token) at which the cascade's choice is traced on the compute axis.
CASCADE_LAMBDAS = (0.0, 1e-5, 3e-5, 1e-4, 2e-4, 3e-4, 5e-4, 7e-4, 1e-3, 2e-3, 5e-3, 1e-2, 1.0)
#: Bins of the router's predicted CoT accuracy (quantiles of the training problems) in which the binned
#: cascade chooses its own (τ, S); a bin with fewer training problems than :data:`MIN_BIN` uses all of them.
CASCADE_BINS = 5
MIN_BIN = 5
#: The fewest problems of any level for the level plan to be the default (``cascade=True``). With fewer,
#: the choice among ~30 (τ, S) options per level is mostly noise (a level's accuracy estimate has a
#: standard error near 0.1 at 20 problems), and the binned plan, whose bins are quantiles of the whole
#: training set, is the default; the level plan is still fitted and evaluated (set after the 40-problem
#: quickstart, 8 per level, measured the level plan below the binned one; arith-router has 50+ per level).
MIN_LEVEL = 20
_NO_GATE = float("inf")  # τ that no score reaches: run S alone, without the CoT
#: How a missing level reads once a table's level column is a string: such data gets no level plan.
NO_LEVEL = frozenset({"", "nan", "None", "<NA>"})


def cot_gates(folder: str | Path, *, score_models: bool = False, device: str = "cpu") -> pd.DataFrame:
    """Per (policy, PRM, problem): the PRM's step scores on the stored greedy CoT, reduced to their
    minimum (``gate``), with the PRM's tokens and FLOPs and the CoT's prompt tokens.

    The CoT of a pair is the policy's greedy answer (it does not depend on the PRM), so each
    pair's PRM scores the same text the router would score online. PRMs with parameters are
    skipped unless ``score_models`` (they are then loaded on ``device`` and run here).
    """
    from ttsopt.search.registry import load_prm
    from ttsopt.search.types import split_steps


    folder = Path(folder)
    manifest = read_manifest(folder)
    params = {k.split(":", 1)[1]: json.loads(v.split(" ", 1)[1]).get("num_parameters")
              for k, v in manifest.get("models", {}).items() if k.startswith("prm:")}
    out = read_table(folder, "outcomes")
    cot = out[(out["method"] == "cot") & out["candidates"].notna()].drop_duplicates(["policy", "prm", "problem_id"])
    questions = dict(pd.read_parquet(folder / "problems.parquet", columns=["problem_id", "question"]).itertuples(
        index=False))
    rows = []
    for prm_name, g in cot.groupby("prm", sort=False):
        n_params = params.get(prm_name)
        if n_params is None:  # not in the manifest: read back from the FLOPs its scoring was charged
            scored = out[(out["prm"] == prm_name) & (out["prm_tokens"] > 0)]
            n_params = round(float((scored["prm_flops"] / scored["prm_tokens"] / 2).median())) if len(scored) else None
        if not prm_name or n_params is None or (n_params > 0 and not score_models):
            continue
        prm = load_prm(prm_name, device=device)
        texts = [json.loads(c)[0]["text"] for c in g["candidates"]]
        scored = prm.score([(questions[pid], split_steps(t)) for pid, t in zip(g["problem_id"], texts)])
        for r, s in zip(g.itertuples(index=False), scored):
            rows.append({"policy": r.policy, "prm": r.prm, "problem_id": r.problem_id,
                         "gate": float(min(s.scores)) if len(s.scores) else 0.0,
                         "gate_prm_tokens": float(s.tokens), "gate_prm_flops": 2.0 * float(n_params) * s.tokens,
                         "prompt_tokens": float(r.policy_prompt_tokens)})
    return pd.DataFrame(rows, columns=["policy", "prm", "problem_id", "gate", "gate_prm_tokens", "gate_prm_flops",
                                       "prompt_tokens"])


def load_gates(folders: Sequence[str | Path], *, score_models: bool = False, device: str = "cpu") -> pd.DataFrame:
    frames = [cot_gates(f, score_models=score_models, device=device) for f in folders]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@dataclass
class _Cascade:
    """A pair's cascade matrices: per problem and option (τ, S), the outcome, tokens and FLOPs."""

    taus: np.ndarray  # (T,) thresholds, the last is _NO_GATE
    acc: np.ndarray  # (P, T, S)
    tokens: np.ndarray
    flops: np.ndarray
    n: np.ndarray  # (T, S) generations per problem at most: S.n, +1 when a CoT runs first
    passed: np.ndarray  # (P, T) the CoT is kept
    first_tokens: np.ndarray  # (P,) the CoT and its check
    first_flops: np.ndarray


def _matrices(p: _Pair, gate: np.ndarray, prm_tokens: np.ndarray, prm_flops: np.ndarray,
              prompt: np.ndarray) -> _Cascade:
    cot = p.strategies.index("cot")
    taus = np.array([*np.unique(gate), _NO_GATE])  # candidate thresholds: online values, no labels
    passed = gate[:, None] >= taus[None, :]  # (P, T)
    passed[:, -1] = False
    prompt_flops = 2.0 * p.policy_params * prompt
    first_t = p.tokens[:, cot] + prm_tokens
    first_f = p.flops[:, cot] + prm_flops
    gated = np.arange(len(taus)) < len(taus) - 1  # a CoT runs first
    esc_t = p.tokens - prompt[:, None]  # S after the CoT: its prompt is already processed
    esc_f = p.flops - prompt_flops[:, None]
    P, T, S = len(gate), len(taus), len(p.strategies)
    acc = np.where(passed[:, :, None], p.label[:, cot][:, None, None], p.label[:, None, :])
    tokens = np.where(passed[:, :, None], first_t[:, None, None],
                      np.where(gated[None, :, None], first_t[:, None, None] + esc_t[:, None, :], p.tokens[:, None, :]))
    flops = np.where(passed[:, :, None], first_f[:, None, None],
                     np.where(gated[None, :, None], first_f[:, None, None] + esc_f[:, None, :], p.flops[:, None, :]))
    n = np.where(gated[:, None], p.n[None, :] + 1, p.n[None, :])
    assert acc.shape == (P, T, S)
    return _Cascade(taus, acc, tokens, flops, n, passed, first_t, first_f)


def _choose(c: _Cascade, rows: np.ndarray, allowed: np.ndarray, lam: float = 0.0) -> tuple[int, int]:
    """The (τ, S) with the best mean accuracy − λ·tokens on ``rows`` among ``allowed`` (T, S); ties to cheaper."""
    score = c.acc[rows].mean(axis=0) - lam * c.tokens[rows].mean(axis=0)
    cost = c.tokens[rows].mean(axis=0)
    score = np.where(allowed, score, -np.inf)
    best = score.max()
    tied = score >= best - 1e-12
    t, s = np.unravel_index(np.where(tied, cost, np.inf).argmin(), score.shape)
    return int(t), int(s)


def _pick(c: _Cascade, p: _Pair, t: int, s: int) -> dict[str, Any]:
    """A (τ, S) choice as the report and the manifest write it (τ None: no CoT first)."""
    return {"tau": None if not np.isfinite(c.taus[t]) else float(c.taus[t]), "escalate": p.strategies[s]}


def bin_edges(scores: np.ndarray, k: int = CASCADE_BINS) -> np.ndarray:
    """Quantile edges that cut ``scores`` (one per training problem) into ``k`` bins."""
    return np.unique(np.quantile(scores, np.linspace(0, 1, k + 1)[1:-1])) if len(scores) else np.array([])


def _choose_per_bin(c: _Cascade, rows: np.ndarray, bins: np.ndarray, k: int, allowed: np.ndarray,
                    lam: float = 0.0) -> list[tuple[np.ndarray, int, int]]:
    """Per bin, the rows it is chosen on and (τ, S) there (``bins`` are ``rows``' bins); a bin with
    fewer than :data:`MIN_BIN` rows takes the choice on all ``rows``."""
    everyone = (rows, *_choose(c, rows, allowed, lam))
    return [(rows[bins == b], *_choose(c, rows[bins == b], allowed, lam)) if (bins == b).sum() >= MIN_BIN
            else everyone for b in range(k)]


def level_plan_is_default(levels: np.ndarray) -> bool:
    """Whether every level of ``levels`` (one per problem) has :data:`MIN_LEVEL` problems."""
    _, counts = np.unique(np.asarray(levels).astype(str), return_counts=True)
    return bool(len(counts) >= 2 and counts.min() >= MIN_LEVEL)


def with_rest(p: _Pair, rest: pd.DataFrame | None, policy: str, prm: str) -> _Pair:
    """``p`` with the rest-of-budget options (:mod:`.rest`: pooled strategies at n = N - 1) as extra
    strategy columns, without predictions (NaN); ``p`` itself when ``rest`` has none for the pair or
    lacks one of its problems."""
    if rest is None or not len(rest):
        return p
    r = rest[(rest["policy"] == policy) & (rest["prm"] == prm) & ~rest["strategy"].isin(p.strategies)]
    if r.empty:
        return p
    keys = sorted(r["strategy"].unique())
    piv = {col: r.pivot(index="problem_id", columns="strategy", values=col).reindex(
        index=p.extra["problem_ids"], columns=keys).to_numpy(dtype=float) for col in ("label", "tokens", "flops")}
    if np.isnan(piv["label"]).any():
        return p
    n = r.drop_duplicates("strategy").set_index("strategy").loc[keys, "n"].to_numpy()
    return replace(p, strategies=[*p.strategies, *keys], n=np.concatenate([p.n, n]),
                   label=np.hstack([p.label, piv["label"]]), pred=np.hstack([p.pred, np.full(piv["label"].shape, np.nan)]),
                   tokens=np.hstack([p.tokens, piv["tokens"]]), flops=np.hstack([p.flops, piv["flops"]]))


def gate_vectors(gates: pd.DataFrame, policy: str, prm: str, problem_ids: Sequence[str]):
    """The pair's gate columns in ``problem_ids`` order, or None when any problem lacks one."""
    g = gates[(gates["policy"] == policy) & (gates["prm"] == prm)].drop_duplicates("problem_id")
    g = g.set_index("problem_id").reindex(list(problem_ids))
    if g.empty or g["gate"].isna().any():
        return None
    return tuple(g[c].to_numpy(dtype=float) for c in ("gate", "gate_prm_tokens", "gate_prm_flops", "prompt_tokens"))


def _router_gate(c: _Cascade, p: _Pair, rows: np.ndarray, budget: int) -> dict[str, Any]:
    """For the router-escalated cascade: τ among the gated options, and what keeping a CoT that
    failed its check is worth (its accuracy there), on ``rows``; τ None where no CoT-then-search fits."""
    gated = c.n <= budget
    gated[-1] = False
    if not gated.any():
        return {"router_tau": None, "keep_value": None}
    t, _ = _choose(c, rows, gated)
    failed = rows[~c.passed[rows, t]]
    keep = float(p.label[failed, p.strategies.index("cot")].mean()) if len(failed) else 0.0
    return {"router_tau": float(c.taus[t]), "keep_value": keep}


def _plan(c: _Cascade, p: _Pair, rows: np.ndarray, ti: int, si: int) -> dict[str, Any]:
    return {**_pick(c, p, ti, si), "train_accuracy": float(c.acc[rows, ti, si].mean()), "tokens": float(c.tokens[rows, ti, si].mean()),
            "flops": float(c.flops[rows, ti, si].mean()), "escalated": float((~c.passed[rows, ti]).mean()),
            "problems": len(rows)}


def fit_cascade(table: pd.DataFrame, gates: pd.DataFrame | None, rest: pd.DataFrame | None = None,
                pred: np.ndarray | None = None) -> dict[str, Any]:
    """Per pair with gate scores, the cascade fitted on every training problem: for each budget N,
    the threshold τ (None: no CoT first) and the escalation strategy, with their training accuracy
    and mean compute (``manifest["cascade"]``; the Router runs it online, :meth:`Router.solve_many`).
    With ``pred`` (the router's out-of-fold predictions of ``table``'s rows) also the binned plan
    (``bins``): the edges of the predicted CoT accuracy and, per budget, one (τ, S) per bin; where
    every problem has a level (two or more of them), the level plan (``levels``): per budget, one
    (τ, S) per level, chosen on that level's problems (a level with fewer than :data:`MIN_BIN` on
    all of them)."""
    if gates is None or not len(gates):
        return {}
    t = table.assign(pred=0.0 if pred is None else pred, fold=0,
                     **{c: "" for c in ("difficulty", "level") if c not in table})
    out: dict[str, Any] = {}
    for p in _pairs(t):
        if "cot" not in p.strategies:
            continue
        policy, prm = _pair_keys(t, p.name)
        vec = gate_vectors(gates, policy, prm, p.extra["problem_ids"])
        if vec is None:
            continue
        p = with_rest(p, rest, policy, prm)
        c = _matrices(p, *vec)
        rows = np.arange(len(p.fold))
        budgets = {}
        for budget in sorted({int(x) for x in p.n} | set(BUDGETS)):
            allowed = c.n <= budget
            if not allowed.any():
                continue
            ti, si = _choose(c, rows, allowed)
            budgets[str(budget)] = {**_plan(c, p, rows, ti, si), **_router_gate(c, p, rows, budget)}
        out[p.name] = {"gate": "min step score of the greedy CoT", "problems": len(rows), "budgets": budgets}
        if pred is not None:
            score = p.pred[:, p.strategies.index("cot")]
            edges = bin_edges(score)
            bins = bin_of(score, edges)
            out[p.name]["bins"] = {
                "score": "the router's predicted accuracy of the greedy CoT (out of fold)", "edges": edges.tolist(),
                "budgets": {str(b): [_plan(c, p, on, ti, si)
                                     for on, ti, si in _choose_per_bin(c, rows, bins, len(edges) + 1, c.n <= b)]
                            for b in map(int, budgets)}}
        levels = sorted(set(p.levels))
        if len(levels) >= 2 and not set(levels) & NO_LEVEL:
            which = np.array([levels.index(v) for v in p.levels])
            out[p.name]["default_mode"] = default_mode(levels=True, bins="bins" in out[p.name],
                                                       level_preferred=level_plan_is_default(p.levels))
            out[p.name]["levels"] = {
                "by": "the question's level, predicted online from its text (the artifact's level model)",
                "budgets": {str(b): {lv: _plan(c, p, on, ti, si) for lv, (on, ti, si)
                                     in zip(levels, _choose_per_bin(c, rows, which, len(levels), c.n <= b))}
                            for b in map(int, budgets)}}
    # written through the one typed, versioned record the router reads (selector/plan.py), so the two
    # sides cannot drift: a field the record does not know fails here, at training, not online
    return {name: CascadePlan.from_dict(entry).to_dict() for name, entry in out.items()}


__all__ = ["CASCADE_BINS", "CASCADE_LAMBDAS", "MIN_LEVEL", "NO_LEVEL", "bin_edges", "cot_gates", "fit_cascade",
           "gate_vectors", "level_plan_is_default", "load_gates", "with_rest"]
