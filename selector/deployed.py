"""The deployed default: what the router runs when the caller names no mode.

``ttsopt train`` chooses it per pair and budget N by a nested cross-fitted comparison among the
LightGBM argmax (``router``), the best fixed strategy, the per-level rule and the verify-first
cascades (``manifest["deployed"]``, written by :mod:`ttsopt.train.evaluation.deploy`), because which
one wins differs by pair and budget and the plain argmax loses at small N on the data we measured.
This module reads that record and turns a mode into what :class:`~ttsopt.selector.router.Router` runs:
the argmax, a cascade mode, or a stage with no CoT first (one strategy for the budget, or one per
level the artifact's level model predicts from the question's text).

A record is kept per N and per compute budget (tokens, FLOPs per problem; the cascades are fitted
per N, so compute budgets choose among the argmax, the best fixed strategy and the per-level rule);
target-accuracy budgets, and routers trained before the record existed, run the argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from .records import Budget, RouterError

#: The deployed modes, and the cascade mode each runs online (None: not a cascade).
MODES = {"router": None, "best_fixed": None, "per_level": None, "cascade": "fitted", "level_cascade": "level"}


@dataclass(frozen=True)
class Deployed:
    """The mode for one budget, the N it was chosen at, and what the fixed modes run."""

    mode: str
    n: int | None = None
    strategy: str | None = None
    levels: Mapping[str, str] | None = None
    evidence: Mapping[str, Any] | None = None


def deployed_for(manifest: Mapping[str, Any], pair: str, budget: Budget) -> Deployed:
    """The record's mode at the largest budget <= ``budget`` it was chosen for, of the same kind (N, or
    tokens / FLOPs per problem: ``entry["compute"]``); ``router`` where it has none (a target accuracy,
    a budget below every recorded one, a router trained before the record)."""
    entry = (manifest.get("deployed") or {}).get(pair)
    if not entry:
        return Deployed("router")
    for kind in ("tokens", "flops"):
        limit = getattr(budget, kind)
        if limit is None:
            continue
        recorded = {float(k): v for k, v in (entry.get("compute") or {}).get(kind, {}).items()}
        fitted = [b for b in recorded if b <= limit * (1 + 1e-9)]
        if not fitted:
            return Deployed("router")
        b = recorded[max(fitted)]
        mode = b.get("mode", "router")
        if mode not in MODES or MODES[mode] is not None:  # the cascades are fitted per N only
            raise RouterError(f"manifest.json: deployed[{pair!r}].compute.{kind}[{max(fitted):g}].mode is {mode!r}; "
                              "at a compute budget this ttsopt runs router, best_fixed or per_level")
        return Deployed(mode, None, b.get("strategy"), b.get("levels"), b.get("evidence"))
    if budget.n is None:
        return Deployed("router")
    budgets = {int(k): v for k, v in entry.get("budgets", {}).items()}
    fitted = [n for n in budgets if n <= budget.n]
    if not fitted:
        return Deployed("router")
    n = max(fitted)
    b = budgets[n]
    mode = b.get("mode", "router")
    if mode not in MODES:
        raise RouterError(f"manifest.json: deployed[{pair!r}].budgets[{n}].mode is {mode!r}; "
                          f"this ttsopt knows {', '.join(MODES)}")
    return Deployed(mode, n, b.get("strategy"), b.get("levels"), b.get("evidence"))


__all__ = ["Deployed", "MODES", "deployed_for"]
