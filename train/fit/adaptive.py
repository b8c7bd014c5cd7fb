"""Adaptive strategies estimated offline from a snapshot's stored pools, with no new generations (issue #26).

``majority_stop`` and ``bon_verified`` (``ttsopt.search.methods.adaptive``) draw samples one round
at a time and stop on what they see. Run on a policy that hands out a stored pool of N_max
candidates in a uniformly random order, a strategy of budget N <= N_max draws a uniformly random
ordered N-prefix of the pool; its expected accuracy on the problem (the label) is the mean of its
outcome over those prefixes, and so are its expected samples drawn and compute. That is what
:func:`estimate_adaptive` computes, with the online stop rules re-implemented over arrays of orders
(the tie rules of ``ttsopt.search.aggregate.vote`` included; the tests check it against the
online runs over every order of a pool):

* **exact** where the ordered N-prefixes are few (at most ``exact_limit``; 16 x 15 x 14 x 13 =
  43 680 for N = 4 of a 16-pool): every one is enumerated, ``label_se`` is 0;
* otherwise **Monte Carlo** over random permutations of the pool (seeded per problem, the same
  orders for every strategy of a pool), as many as bring the label's standard error below
  ``max_se`` (0.005; at most 0.25 / 0.0045^2 ~ 12 300 orders, for a label near 0.5); the
  standard error is reported as ``label_se``.

Compute is charged as online (docs/architecture.md): the prompt once, the generated tokens of the
samples drawn (as the pool recorded each), and for ``bon_verified`` the PRM tokens of every sample
drawn (all are scored); FLOPs = 2 x parameters x tokens per model, the parameters read back from
the sweep's own charges like :mod:`.rest`. Like :mod:`.rest`, these rows are not catalogue
strategies: the router's catalogue keeps the sweep's own.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ttsopt.search.aggregate import vote_key
from ttsopt.search.pairs import Pair
from ttsopt.search.strategy import Strategy

#: The label's standard error a Monte Carlo estimate must get below.
MAX_SE = 0.005
#: Enumerate every ordered N-prefix of the pool when there are at most this many.
EXACT_LIMIT = 50_000
#: Random orders a Monte Carlo estimate starts with, and the most it may grow to.
FIRST_ORDERS = 2048
MAX_ORDERS = 1 << 16
#: The evaluation's budgets.
BUDGETS = (4, 8, 16)
STOPS = ("agree", "give_up", "verified", "budget")

_COLUMNS = ("policy", "prm", "problem_id", "strategy", "n", "label", "tokens", "flops", "label_se", "drawn",
            "generated_tokens", "prm_tokens", *(f"stop_{s}" for s in STOPS), "orders", "exact", "seed")


def default_grid(budgets: Sequence[int] = BUDGETS) -> tuple[str, ...]:
    """``majority_stop`` with k in {2, 3}, s = 1, give-up after j = 6 without 2 votes alike or never,
    and ``bon_verified`` at tau = 0.95 (the calc PRM's "every equation checks"), rounds of one sample,
    at each budget (spellings that coincide, j = 6 > N = 4, are kept once)."""
    keys: list[str] = []
    for n in budgets:
        for k in (2, 3):
            for j in (6, 0):
                keys.append(Strategy("majority_stop", n=n, stop_votes=k, stop_share=1.0, give_up_after=j,
                                     give_up_votes=2).key)
        keys.append(Strategy("bon_verified", n=n, tau=0.95).key)
    return tuple(dict.fromkeys(keys))


DEFAULT_GRID = default_grid()


@dataclass
class AdaptiveEstimate:
    """One adaptive strategy on one pool: expected accuracy and spend over the pool's sample orders."""

    strategy: str
    n: int
    label: float             # expected correctness
    label_se: float          # its standard error (0 when exact)
    drawn: float             # expected samples drawn
    generated_tokens: float  # expected generated tokens of the samples drawn
    prm_tokens: float        # expected PRM tokens (bon_verified: every sample drawn is scored)
    stops: dict[str, float] = field(default_factory=dict)  # share of orders by stop reason
    orders: int = 0          # orders evaluated
    exact: bool = False


class _Pool:
    """A pool as arrays: vote class (-1: no answer), correctness, tokens, PRM tokens, min step score."""

    def __init__(self, answers: Sequence[str | None], correct: Sequence[bool], tokens: Sequence[float],
                 prm_tokens: Sequence[float], step_scores: Sequence[Sequence[float] | None]):
        if not len(answers) == len(correct) == len(tokens) == len(prm_tokens) == len(step_scores):
            raise ValueError("a pool's answers, correctness, tokens and scores must have one entry per candidate")
        classes: dict[str, int] = {}
        cls = []
        for a in answers:
            key = vote_key(a)
            cls.append(-1 if key is None else classes.setdefault(key, len(classes)))
        self.size = len(answers)
        self.d = len(classes)
        self.cls = np.array(cls, dtype=np.int64)
        self.correct = np.array([bool(c) for c in correct], dtype=bool)
        self.tokens = np.array(tokens, dtype=np.float64)
        self.prm_tokens = np.array(prm_tokens, dtype=np.float64)
        self.has_steps = np.array([bool(s) for s in step_scores], dtype=bool)
        # aggregate_scores(scores, "min"): 0.0 without steps
        self.min_score = np.array([float(min(s)) if s else 0.0 for s in step_scores], dtype=np.float64)
        self.scored = all(s is not None for s in step_scores)

    def verified(self, tau: float) -> np.ndarray:
        return (self.cls >= 0) & self.has_steps & (self.min_score >= tau)


class _Orders:
    """Orders of a pool (rows of candidate indices, each a prefix of one sample order) and what every
    stop rule needs of them: vote counts after each sample, each class's first position, running costs."""

    def __init__(self, pool: _Pool, orders: np.ndarray):
        self.pool = pool
        self.orders = orders
        self.rows = np.arange(len(orders))
        self.length = orders.shape[1]
        self.cls = pool.cls[orders]
        onehot = self.cls[:, :, None] == np.arange(pool.d)[None, None, :]
        self.counts = np.cumsum(onehot, axis=1, dtype=np.int32)  # (orders, position, class)
        seen = onehot.any(axis=1)
        self.first = np.where(seen, onehot.argmax(axis=1), self.length)  # first position of each class
        self.gen_cum = np.cumsum(pool.tokens[orders], axis=1)
        self.prm_cum = np.cumsum(pool.prm_tokens[orders], axis=1)

    def _winner_correct(self, best: np.ndarray, any_vote: np.ndarray) -> np.ndarray:
        """Correctness of the answer of ``best`` (classes tied on top), the earliest first seen winning."""
        if not self.pool.d:  # no candidate states an answer: the vote has none
            return np.zeros(len(self.orders), dtype=bool)
        pos = np.where(best, self.first, self.length).min(axis=1)
        idx = self.orders[self.rows, np.minimum(pos, self.length - 1)]
        return any_vote & self.pool.correct[idx]

    def majority_stop(self, s: Strategy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per order: correct, samples drawn, stop reason (index into STOPS)."""
        checks = np.array(sorted(set(range(s.round_size, s.n, s.round_size)) | {s.n}))
        if self.pool.d:
            top = self.counts[:, checks - 1, :].max(axis=2)
        else:
            top = np.zeros((len(self.orders), len(checks)), dtype=np.int32)
        agree = (top >= s.stop_votes) & (top / checks[None, :] >= s.stop_share)
        give_up = (checks[None, :] >= s.give_up_after) & (top < s.give_up_votes) if s.give_up_after else \
            np.zeros_like(agree)
        stop = agree | give_up
        stop[:, -1] = True  # the budget
        at = stop.argmax(axis=1)
        drawn = checks[at]
        reason = np.where(agree[self.rows, at], 0, np.where(give_up[self.rows, at], 1, 3))
        counts = self.counts[self.rows, drawn - 1, :]
        top_now = counts.max(axis=1) if self.pool.d else np.zeros(len(self.orders), dtype=np.int32)
        best = (counts == top_now[:, None]) & (counts > 0)
        return self._winner_correct(best, top_now > 0), drawn, reason

    def bon_verified(self, s: Strategy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = s.n
        ver = self.pool.verified(s.tau)[self.orders[:, :n]]
        hit = ver.any(axis=1)
        first_hit = ver.argmax(axis=1)
        checks = np.array(sorted(set(range(s.round_size, n, s.round_size)) | {n}))
        drawn = np.where(hit, checks[np.searchsorted(checks, first_hit + 1)], n)
        # PRM-vote over everything drawn (all n when none verified), summed in draw order as online
        tally = np.zeros((len(self.orders), self.pool.d))
        present = np.zeros((len(self.orders), self.pool.d), dtype=bool)
        for p in range(n):
            c = self.cls[:, p]
            ok = c >= 0
            rr, cc = self.rows[ok], c[ok]
            tally[rr, cc] += self.pool.min_score[self.orders[rr, p]]
            present[rr, cc] = True
        masked = np.where(present, tally, -np.inf)
        top = masked.max(axis=1) if self.pool.d else np.full(len(self.orders), -np.inf)
        best = present & (masked == top[:, None])
        voted = self._winner_correct(best, present.any(axis=1))
        verified_correct = self.pool.correct[self.orders[self.rows, first_hit]]
        correct = np.where(hit, verified_correct, voted)
        return correct, drawn, np.where(hit, 2, 3)

    def evaluate(self, s: Strategy) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        correct, drawn, reason = (self.majority_stop if s.method == "majority_stop" else self.bon_verified)(s)
        gen = self.gen_cum[self.rows, drawn - 1]
        prm = self.prm_cum[self.rows, drawn - 1] if s.uses_prm else np.zeros(len(drawn))
        return correct, drawn, reason, gen, prm


@functools.lru_cache(maxsize=16)
def _prefixes(size: int, n: int) -> np.ndarray:
    """Every ordered n-prefix of range(size), one per row (each equally likely under a random order)."""
    return np.array(list(itertools.permutations(range(size), n)), dtype=np.int64).reshape(-1, n)


def _estimate(s: Strategy, view: _Orders, exact: bool) -> AdaptiveEstimate:
    correct, drawn, reason, gen, prm = view.evaluate(s)
    r = len(correct)
    p = float(correct.mean())
    se = 0.0 if exact or r < 2 else math.sqrt(max(p * (1.0 - p), 0.0) / (r - 1))
    stops = {name: float((reason == i).mean()) for i, name in enumerate(STOPS)}
    return AdaptiveEstimate(s.key, s.n, p, se, float(drawn.mean()), float(gen.mean()), float(prm.mean()),
                            stops, r, exact)


def estimate_adaptive(
    answers: Sequence[str | None], correct: Sequence[bool], tokens: Sequence[float],
    strategies: Sequence[Strategy | str], *, prm_tokens: Sequence[float] | None = None,
    step_scores: Sequence[Sequence[float] | None] | None = None, seed: int = 0, max_se: float = MAX_SE,
    exact_limit: int = EXACT_LIMIT, max_orders: int = MAX_ORDERS,
) -> list[AdaptiveEstimate]:
    """Each adaptive strategy's expected accuracy, samples drawn and compute on one stored pool.

    The pool is its candidates' ``answers`` (None: none), ``correct`` (graded), generated ``tokens``,
    and, for ``bon_verified``, ``step_scores`` and ``prm_tokens``. A strategy whose budget exceeds the
    pool is skipped. Exact where the ordered prefixes are at most ``exact_limit``, else Monte Carlo
    until the standard error is below ``max_se`` (or ``max_orders`` orders; see ``label_se``).
    """
    size = len(answers)
    prm_tokens = [0.0] * size if prm_tokens is None else prm_tokens
    pool = _Pool(answers, correct, tokens, prm_tokens, [None] * size if step_scores is None else step_scores)
    chosen = []
    for s in strategies:
        s = Strategy.from_key(s) if isinstance(s, str) else s
        if not s.adaptive:
            raise ValueError(f"{s.key}: not an adaptive strategy")
        if s.uses_prm and not pool.scored:
            raise ValueError(f"{s.key} needs step scores on every pooled candidate")
        if s.n <= size:
            chosen.append(s)
    out: dict[str, AdaptiveEstimate] = {}
    sampled = []
    for s in chosen:
        if math.perm(size, s.n) <= exact_limit:
            out[s.key] = _estimate(s, _Orders(pool, _prefixes(size, s.n)), exact=True)
        else:
            sampled.append(s)
    if sampled:
        rng = np.random.default_rng(seed)
        length = max(s.n for s in sampled)
        orders = np.argsort(rng.random((FIRST_ORDERS, size)), axis=1)[:, :length]
        pending = sampled
        while pending:
            view = _Orders(pool, orders)
            for s in pending:
                out[s.key] = _estimate(s, view, exact=False)
            pending = [s for s in pending if out[s.key].label_se >= max_se]
            if not pending or len(orders) >= max_orders:
                break
            # a pending label has a variance > 0 (its se is); grow to what the worst of them needs
            worst = max(out[s.key].label * (1.0 - out[s.key].label) for s in pending)
            need = min(max_orders, max(2 * len(orders), math.ceil(worst / (0.9 * max_se) ** 2) + 1))
            more = np.argsort(rng.random((need - len(orders), size)), axis=1)[:, :length]
            orders = np.concatenate([orders, more])
    return [out[s.key] for s in chosen]


def adaptive_labels(folder: str | Path, grid: Sequence[Strategy | str] = DEFAULT_GRID, *, max_se: float = MAX_SE,
                    exact_limit: int = EXACT_LIMIT) -> pd.DataFrame:
    """Per (pair, problem, adaptive strategy in ``grid``): ``label`` (expected accuracy over the orders of
    the stored pool) with ``label_se``, ``drawn`` (expected samples), ``tokens`` and ``flops`` (the
    docs/architecture.md measure), the shares of orders by stop reason (``stop_*``), from the snapshot's
    pools (one row per stored pool: a pool seed of its own gets rows of its own)."""
    from ttsopt.search.methods.calls import derive_seed

    from ..sweep.snapshot import read_manifest
    from .rest import scored_pools

    folder = Path(folder)
    read_manifest(folder)
    grid = [Strategy.from_key(s) if isinstance(s, str) else s for s in grid]
    rows = []
    for r, cands, scores, prompt, (p_params, prm_params) in scored_pools(folder):
        estimates = estimate_adaptive(
            [c["answer"] for c in cands], [bool(c["correct"]) for c in cands], [c["tokens"] for c in cands], grid,
            prm_tokens=[s["prm_tokens"] for s in scores], step_scores=[s["step_scores"] for s in scores],
            seed=derive_seed(int(r.seed), r.problem_id, "adaptive"), max_se=max_se, exact_limit=exact_limit)
        for est in estimates:
            rows.append({"policy": r.policy, "prm": r.prm, "problem_id": r.problem_id, "strategy": est.strategy,
                         "n": est.n, "label": est.label,
                         "tokens": prompt + est.generated_tokens + est.prm_tokens,
                         "flops": 2.0 * p_params * (prompt + est.generated_tokens) + 2.0 * prm_params * est.prm_tokens,
                         "label_se": est.label_se, "drawn": est.drawn, "generated_tokens": est.generated_tokens,
                         "prm_tokens": est.prm_tokens, **{f"stop_{k}": v for k, v in est.stops.items()},
                         "orders": est.orders, "exact": est.exact, "seed": int(r.seed)})
    return pd.DataFrame(rows, columns=list(_COLUMNS))


#: The per-problem columns that say how an adaptive option stopped (expected samples drawn, shares by reason).
STOP_COLUMNS = ("drawn", *(f"stop_{s}" for s in STOPS))


def stop_profile(options: pd.DataFrame, levels: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Per pair and adaptive option: how many samples it drew on average and why it stopped (share of
    sample orders per reason), over every problem and per level (``levels``: problem id -> level).

    What a person asks of an adaptive strategy before trusting it ("does it stop early, and on
    which problems?"); ``ttsopt train`` keeps it in the manifest so that ``explain`` and the report
    show it without re-estimating the pools."""
    if options is None or "drawn" not in options or not options["drawn"].notna().any():
        return {}
    a = options[options["drawn"].notna()].copy()
    a["level"] = a["problem_id"].map(levels or {}).fillna("?").astype(str) if levels else "?"
    out: dict[str, dict[str, Any]] = {}

    def summary(g: pd.DataFrame) -> dict[str, Any]:
        return {"problems": int(g["problem_id"].nunique()), "accuracy": float(g["label"].mean()),
                "drawn": float(g["drawn"].mean()), "tokens": float(g["tokens"].mean()),
                "stops": {s: float(g[f"stop_{s}"].mean()) for s in STOPS if f"stop_{s}" in g and g[f"stop_{s}"].mean() > 0}}

    for (policy, prm, strategy), g in a.groupby(["policy", "prm", "strategy"], sort=True):
        entry = {"n": int(g["n"].iloc[0]), "all": summary(g)}
        if levels:
            entry["levels"] = {str(lv): summary(gl) for lv, gl in g.groupby("level", sort=True)}
        out.setdefault(Pair(policy, prm).name, {})[strategy] = entry
    return out


def load_adaptive(folders: Sequence[str | Path], grid: Sequence[Strategy | str] = DEFAULT_GRID,
                  **kw) -> pd.DataFrame:
    frames = [adaptive_labels(f, grid, **kw) for f in folders]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(_COLUMNS))


__all__ = ["AdaptiveEstimate", "BUDGETS", "DEFAULT_GRID", "EXACT_LIMIT", "MAX_SE", "STOPS", "STOP_COLUMNS",
           "adaptive_labels", "default_grid", "estimate_adaptive", "load_adaptive", "stop_profile"]
