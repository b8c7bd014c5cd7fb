"""The verify-first cascade run online: the greedy CoT, checked by the PRM, kept or escalated.

Training fits the plan (``train/fit/cascade.py``; the record is :mod:`ttsopt.selector.plan`). For a
question under a budget of N generations the router takes the stage fitted for the largest fitted
N <= the budget, or in ``"binned"`` mode the one fitted for the question's bin of the router's
predicted CoT accuracy, or in ``"level"`` mode the one fitted for the level the artifact's level
model predicts from its text. It runs the greedy CoT where the stage has a τ, has the PRM score it,
keeps it when its lowest step score reaches τ, and otherwise escalates: to the stage's strategy, or
(``"router"`` mode) to the router's own choice within the N - 1 generations left, run only if its
predicted accuracy beats keeping the CoT.

Everything here runs through the router it is given (:class:`Host`: what this module uses of a
:class:`~ttsopt.selector.router.Router`: its models, their lock, its routing and its searches), so that
a cascade's CoT and escalation are the very searches ``solve`` runs, batched the same way. The router
is named by that protocol, not imported: the router imports this module.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from . import decide
from .choice import empty_decision
from .features import TEXT_COLUMNS
from .inputs import text_block
from .plan import CascadePlan, StagePlan
from .records import Budget, RouterError, Solution
from .solving import Run, compute_dict, compute_of


class Host(Protocol):
    """What the cascade uses of the :class:`~ttsopt.selector.router.Router` that runs it."""

    path: Any
    pair: str
    artifact: Any
    pipeline: Any
    keys: list[str]
    strategies: list[Any]
    columns: list[str]
    n_emb: int
    _model_lock: Any

    @property
    def prm(self) -> Any: ...
    @property
    def plan(self) -> CascadePlan | None: ...
    def predict(self, block: np.ndarray) -> np.ndarray: ...
    def _search_settings(self) -> Any: ...
    def _features(self, questions: Sequence[str]) -> tuple[np.ndarray, Any]: ...
    def _raw_embeddings(self, questions: Sequence[str]) -> np.ndarray: ...
    def _route(self, questions: Sequence[str], budget: Budget, exclude: Sequence[str] = ()) -> tuple[list, Any]: ...
    def _run_search(self, questions: Sequence[str], strategy: Any, s: Any) -> list[Run]: ...
    def _solve_decided(self, questions: Any, decisions: Any, probes: Any, start: float) -> list[Solution]: ...


@dataclass(frozen=True)
class QuestionPlan:
    """One question's stage: the fitted budget N it came from, the stage, and what the trace says of how
    it was picked (``bin`` and ``predicted_cot_accuracy``; ``level``, ``level_probability`` and
    ``level_plan``)."""

    n: int
    stage: StagePlan
    trace: dict[str, Any] = field(default_factory=dict)

    def gate_tau(self, mode: str) -> float | None:
        """The τ the CoT's check must reach (None: no CoT first): the router mode's own where it escalates."""
        if mode == "router":
            return self.stage.router.tau if self.stage.router is not None else None
        return self.stage.tau


def fitted_stage(plan: CascadePlan | None, budget: Budget, *, path: Any, pair: str) -> tuple[int, StagePlan]:
    """(N, stage) fitted for ``budget``: that of the largest fitted N <= ``budget.n``."""
    if plan is None:
        raise RouterError(f"{path}: no cascade for {pair} (it needs the PRM's scores of the stored "
                          "CoTs at training time: free for a PRM without parameters, such as calc)")
    if budget.kind != "n":
        raise RouterError(f"the cascade is fitted per budget N (generations); got a budget of {budget.kind}")
    n = plan.fitted_budget(budget.n)
    if n is None:
        raise RouterError(f"no cascade fitted for a budget of {budget.n} generations "
                          f"(fitted: {', '.join(map(str, sorted(plan.budgets)))})")
    return n, plan.budgets[n]


def binned_plans(router: Host, plan: CascadePlan, questions: list[str],
                 fitted: Sequence[tuple[int, StagePlan]]) -> list[QuestionPlan]:
    """Each question's stage for its bin of the router's predicted CoT accuracy (computed from its text
    before anything runs)."""
    if plan.bins is None:
        raise RouterError(f"{router.path}: this router's cascade has no bins (trained with probes, or by an "
                          "older ttsopt): use cascade='fitted' or 'router', or retrain")
    block, _ = router._features(questions)
    score = router.predict(block)[:, router.keys.index("cot")]
    which = decide.bin_of(score, plan.bins.edges)
    return [QuestionPlan(n, plan.bins.budgets[n][int(b)], {"bin": int(b), "predicted_cot_accuracy": float(sc)})
            for (n, _), b, sc in zip(fitted, which, score)]


def predict_levels(router: Host, questions: list[str]) -> tuple[Any, Any]:
    """Each question's level and its probability, as the artifact's level model reads them from the
    text statistics and the embedding (a router trained with probes runs no probe for this)."""
    model = router.artifact.levels
    if model is None:
        raise RouterError(f"{router.path}: this router has no level model (its training data had no levels)")
    block = text_block(router.pipeline, questions, router._raw_embeddings(questions) if router.n_emb else None)
    names = router.columns[:len(TEXT_COLUMNS) + router.n_emb]
    missing = [c for c in model.columns if c not in names]
    if missing:
        raise RouterError(f"{router.path}: the level model reads {missing}, which the feature pipeline lacks")
    return model.predict(block[:, [names.index(c) for c in model.columns]])


def level_plans(router: Host, plan: CascadePlan, questions: list[str],
                fitted: Sequence[tuple[int, StagePlan]]) -> list[QuestionPlan]:
    """Each question's stage for the level the artifact's level model predicts from its text; a level
    without a stage takes the budget's."""
    if plan.levels is None or router.artifact.levels is None:
        raise RouterError(f"{router.path}: this router has no level plans (its training data had no levels, "
                          "or an older ttsopt trained it): use cascade='binned' or 'fitted', or retrain")
    level, prob = predict_levels(router, questions)
    out = []
    for (n, stage), lv, pr in zip(fitted, level, prob):
        own = plan.levels.budgets[n].get(str(lv))
        out.append(QuestionPlan(n, own if own is not None else stage,
                                {"level": str(lv), "level_probability": float(pr), "level_plan": own is not None}))
    return out


def question_plans(router: Host, plan: CascadePlan | None, questions: list[str], budgets: Sequence[Budget],
                   mode: str) -> list[QuestionPlan]:
    """Every question's stage under ``mode``."""
    fitted = [fitted_stage(plan, b, path=router.path, pair=router.pair) for b in budgets]
    if mode == "binned":
        return binned_plans(router, plan, questions, fitted)
    if mode == "level":
        return level_plans(router, plan, questions, fitted)
    return [QuestionPlan(n, stage) for n, stage in fitted]


def _check_first(router: Host, questions: list[str], gated: list[int],
                 settings: Any) -> dict[int, tuple[Run, float, Any]]:
    """The greedy CoT of each gated question and the PRM's check of it: (run, gate score, the check's compute)."""
    from ttsopt.search.compute import Compute
    from ttsopt.search.types import split_steps

    cot = router.strategies[router.keys.index("cot")]
    results = router._run_search([questions[i] for i in gated], cot, settings)
    prm = router.prm
    with router._model_lock:
        scored = prm.score([(questions[i], split_steps(r.trace["candidates"][0]["text"]))
                            for i, r in zip(gated, results)])
    prm_params = int(getattr(prm, "num_parameters", 0))
    first = {}
    for i, r, sc in zip(gated, results, scored):
        check = Compute()
        check.add_prm(int(sc.tokens), prm_params)
        first[i] = (r, float(min(sc.scores)) if len(sc.scores) else 0.0, check)
    return first


def run_cascade(router: Host, questions: list[str], budgets: list[Budget], start: float,
                mode: str, plans: Sequence[QuestionPlan] | None = None) -> list[Solution]:
    """The cascade under ``mode`` (one of :data:`~ttsopt.selector.plan.CASCADE_MODES`) for every question;
    questions whose CoT, escalation or routed budget coincide run as one batched call. ``plans``, each
    question's stage given by the caller (the deployed default's fixed and per-level modes: no CoT first),
    replace the fitted ones."""
    from ttsopt.search.compute import Compute
    from ttsopt.search.strategy import Strategy

    settings = router._search_settings()
    plans = list(plans) if plans is not None else question_plans(router, router.plan, questions, budgets, mode)
    taus = [p.gate_tau(mode) for p in plans]
    gated = [i for i, t in enumerate(taus) if t is not None]
    first = _check_first(router, questions, gated, settings) if gated else {}
    doubted = [i for i in range(len(questions)) if i not in first or first[i][1] < taus[i]]
    # the escalation: the fitted strategy, or the router's choice within what is left of N
    second: dict[int, tuple] = {}
    declined: dict[int, dict] = {}
    if mode != "router":
        by_key: dict[str, list[int]] = {}
        for i in doubted:
            by_key.setdefault(plans[i].stage.escalate, []).append(i)
        for key, members in by_key.items():
            # a rest-of-budget escalation (pooled, n = N - 1: train/fit/rest.py) is not in the catalogue
            strategy = router.strategies[router.keys.index(key)] if key in router.keys else Strategy.from_key(key)
            results = router._run_search([questions[i] for i in members], strategy, settings)
            second.update((i, (r.answer, r.trace, r.compute, None)) for i, r in zip(members, results))
    else:
        by_left: dict[tuple[Budget, bool], list[int]] = {}
        for i in doubted:
            by_left.setdefault((Budget(n=budgets[i].n - (1 if i in first else 0)), i in first), []).append(i)
        for (left, after_cot), members in by_left.items():
            # after the greedy CoT, never the greedy CoT again: the same answer (as train/fit/cascade.py's _routed)
            ds, ps = router._route([questions[i] for i in members], left, exclude=("cot",) if after_cot else ())
            run = []
            for j, i in enumerate(members):
                keep = plans[i].stage.router.keep_value if i in first else -math.inf
                if ds[j].strategy is not None and ds[j].predicted_accuracy > keep:
                    run.append(j)
                else:
                    declined[i] = {"predicted_accuracy": ds[j].predicted_accuracy, "keep_value": keep,
                                   "strategy": ds[j].strategy}
            sols = router._solve_decided([questions[members[j]] for j in run], [ds[j] for j in run],
                                         [ps[j] if ps else None for j in run], start)
            second.update((members[j], (x.answer, x.trace, x.compute, x.decision)) for j, x in zip(run, sols))
    out: list[Solution] = []
    for i, (q, b, plan) in enumerate(zip(questions, budgets, plans)):
        spent = Compute()
        trace: dict[str, Any] = {"cascade": {"mode": mode, "fitted_n": plan.n, "tau": taus[i],
                                             "escalate_to": plan.stage.escalate if mode != "router" else "router",
                                             **plan.trace}}
        answer, decision = None, None
        if i in first:
            cot_run, gate, check = first[i]
            answer = cot_run.answer
            spent = spent + compute_of(cot_run.compute) + check
            trace["cascade"].update({"gate": gate, "kept_first_answer": i not in second})
            trace["first"] = cot_run.trace
        if i in declined:
            trace["cascade"]["router_declined"] = declined[i]
        probe = None
        if i in second:
            answer, esc_trace, esc_compute, decision = second[i]
            esc = compute_of(esc_compute)
            spent = spent + (_after_first(esc, compute_of(first[i][0].compute)) if i in first else esc)
            probe = esc_compute.get("probe")
            trace["escalation"] = esc_trace
        if decision is None:
            strategy = plan.stage.escalate if i in second else ("cot" if i in first else None)
            decision = empty_decision(q, router.pair, b, strategy)
        out.append(Solution(answer, decision, trace, {**compute_dict(spent), "probe": probe},
                            (time.perf_counter() - start) / len(questions)))
    return out


def _after_first(esc: Any, cot: Any) -> Any:
    """The escalation's compute once the CoT of the same question ran: its prompt is that problem's
    prompt, charged already. The measure charges a problem's prompt once (``Compute``; the offline
    cascade, train/fit/cascade.py, charges the escalation without it), so the re-sent copy moves
    to ``policy_context_tokens`` only. Without this the online cascade charged a problem's prompt
    twice: on fresh level-3 questions 1.48x the offline estimate's tokens (benchmarks/results/fresh)."""
    from dataclasses import replace

    shared = min(esc.policy_prompt_tokens, cot.policy_prompt_tokens)
    if shared <= 0 or esc.policy_tokens <= 0:
        return esc
    per_token = esc.policy_flops / esc.policy_tokens  # 2 x the policy's parameters
    return replace(esc, policy_prompt_tokens=esc.policy_prompt_tokens - shared,
                   policy_flops=esc.policy_flops - per_token * shared)


__all__ = ["QuestionPlan", "binned_plans", "fitted_stage", "level_plans", "predict_levels", "question_plans",
           "run_cascade"]
