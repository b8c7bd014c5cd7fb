"""From predicted accuracies to a decision: what each candidate is expected to cost, and the choice.

The rules themselves are :mod:`ttsopt.selector.decide` (plain numpy, shared with the offline
evaluation); this module applies them to a router's catalogue and a :class:`Budget`, with the
probe's cost on every candidate and the samples a reusing strategy takes from the probe deducted,
and writes the :class:`Decision` records a client reads.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ttsopt.data.problem import question_key

from . import decide
from .inputs import Catalogue, LiveProbe
from .records import Budget, Candidate, Decision, RouterError


def check_budget(budget: Any) -> Budget:
    if not isinstance(budget, Budget):
        raise RouterError(f"budget must be a Budget, got {type(budget).__name__}")
    return budget


def expected_costs(cat: Catalogue, probes: Sequence[LiveProbe] | None, q: int,
                   probe_k: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per question and strategy: expected total tokens and FLOPs (probe included, reuse deducted), and
    how many probe samples each strategy reuses.

    A reusing strategy (``cat.reusable``) pays the probe and only its ``N - min(N, k)`` new samples,
    not the catalogue's whole cost on top of the probe's."""
    s = len(cat.keys)
    tokens = np.broadcast_to(cat.tokens, (q, s)).copy()
    flops = np.broadcast_to(cat.flops, (q, s)).copy()
    reuse = np.zeros((q, s), dtype=np.int64)
    if probes:
        pt = np.array([p.row["probe_cost_tokens"] for p in probes])[:, None]
        pf = np.array([p.row["probe_cost_flops"] for p in probes])[:, None]
        r = np.where(cat.reusable, np.minimum(cat.n, int(probe_k)), 0)
        new = cat.n - r
        tokens = np.where(cat.reusable, pt + new * cat.per_sample_tokens, tokens + pt)
        flops = np.where(cat.reusable, pf + new * cat.per_sample_flops, flops + pf)
        reuse = np.broadcast_to(r, (q, s)).copy()
    return tokens, flops, reuse


def choose(cat: Catalogue, pred: np.ndarray, tokens: np.ndarray, flops: np.ndarray, budget: Budget,
           blocked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(chosen index per question, -1 where nothing fits; fits mask; reached or None). ``blocked``
    strategies are never chosen (the cascade's "not the greedy CoT again")."""
    if blocked is not None and blocked.any():
        tokens, flops = np.where(blocked, np.inf, tokens), np.where(blocked, np.inf, flops)
    kind = budget.kind
    if kind == "n":
        allowed = np.broadcast_to(cat.n <= budget.n, pred.shape) & np.isfinite(tokens)
        idx = decide.within_budget(pred, np.where(allowed, tokens, np.inf), np.inf)
        return idx, allowed, None
    if kind in ("tokens", "flops"):
        cost = tokens if kind == "tokens" else flops
        fits = decide.fits(pred, cost, float(budget.value))
        return decide.within_budget(pred, cost, float(budget.value)), fits, None
    idx, reached = decide.for_target(pred, tokens, float(budget.target_accuracy))
    return idx, pred >= budget.target_accuracy - decide.TIE, reached


def make_decision(cat: Catalogue, *, pair: str, question: str, block_row: np.ndarray, pred: np.ndarray,
                  tokens: np.ndarray, flops: np.ndarray, reuse: np.ndarray, fits: np.ndarray, idx: int,
                  reached: bool | None, budget: Budget, probe: LiveProbe | None, probe_k: int | None,
                  seconds: float) -> Decision:
    """One question's :class:`Decision`: every candidate with its prediction and costs, the features."""
    candidates = [Candidate(k, st.method, int(st.n), float(pred[j]), float(cat.tokens[j]), float(cat.flops[j]),
                            bool(fits[j]), float(tokens[j]), float(flops[j]), int(reuse[j]))
                  for j, (k, st) in enumerate(zip(cat.keys, cat.strategies))]
    chosen = idx if idx >= 0 else None
    return Decision(question=question, question_key=question_key(question), pair=pair, budget=budget,
                    strategy=cat.keys[chosen] if chosen is not None else None,
                    predicted_accuracy=float(pred[chosen]) if chosen is not None else None,
                    reached=reached, candidates=candidates,
                    features={n: float(v) for n, v in zip(cat.question_columns, block_row)},
                    probe=probe.to_dict(int(probe_k)) if probe is not None else None, seconds=seconds)


def empty_decision(question: str, pair: str, budget: Budget, strategy: str | None) -> Decision:
    """A decision the model did not make (the cascade's fitted plan chose ``strategy``)."""
    return Decision(question, question_key(question), pair, budget, strategy, None, None, [], {}, None, 0.0)


__all__ = ["check_budget", "choose", "empty_decision", "expected_costs", "make_decision"]
