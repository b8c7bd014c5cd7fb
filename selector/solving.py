"""Running the chosen search online, and the shape of what it reports spending.

Three ways to answer once a strategy is chosen: run it from scratch (:func:`run_fresh`, the same
``run_search`` the sweep runs), run a pooled strategy with a probe's samples as part of its N
(:func:`run_reusing`: only the missing samples are drawn and scored; the pool is decided by
``search/methods/sampling.py``'s :func:`~ttsopt.search.methods.sampling.decide_pools`, the one copy
of that rule), or, where nothing fits the budget, answer with the probe's majority (:func:`fallback`).

Compute is reported in one shape, :meth:`ttsopt.search.compute.Compute.to_dict`'s keys
(:func:`compute_dict`), for a search, a probe and their sum alike (:func:`solution_compute`). The
names the router reported before (``prompt_tokens``, ``generated_tokens``, ``context_tokens``) ride
along as copies (:data:`LEGACY_COMPUTE_KEYS`): the service's OpenAI ``usage`` and its metrics read
them (``serve/app.py``, ``serve/metrics.py``), and so may its clients.
"""

from __future__ import annotations

import time
from dataclasses import fields
from typing import Any, Mapping, NamedTuple, Sequence

from ttsopt.data.problem import question_key
from ttsopt.search.compute import Compute

from .inputs import LiveProbe

#: Old name -> Compute.to_dict name, kept as copies in every compute dict until their readers move.
LEGACY_COMPUTE_KEYS = {"prompt_tokens": "policy_prompt_tokens", "generated_tokens": "policy_generated_tokens",
                       "context_tokens": "policy_context_tokens"}


class Run(NamedTuple):
    """One question's search online: its answer, its trace, and what the search spent (:func:`compute_dict`)."""

    answer: str | None
    trace: dict[str, Any]
    compute: dict[str, Any]


# --------------------------------------------------------------------------- compute


def compute_dict(c: Compute) -> dict[str, Any]:
    """``c.to_dict()`` with JSON-plain numbers (tokens int, FLOPs and seconds float), plus the legacy
    copies of :data:`LEGACY_COMPUTE_KEYS`."""
    out = {k: (int(v) if k.endswith("tokens") else float(v)) for k, v in c.to_dict().items()}
    out.update({old: out[new] for old, new in LEGACY_COMPUTE_KEYS.items()})
    return out


def compute_of(d: Mapping[str, Any]) -> Compute:
    """The :class:`Compute` a :func:`compute_dict` describes (so that spends add up as Computes)."""
    return Compute(**{f.name: d.get(f.name, 0) for f in fields(Compute)})


def probe_compute(probe: LiveProbe) -> Compute:
    """What the probe spent, charged like any call: its prompt once, its samples, their PRM scoring.
    (What a later search re-sent stays that search's own figure: no context tokens here.)"""
    p = probe.samples
    spent = Compute()
    spent.add_policy(p.prompt_tokens, sum(x.tokens for x in p.samples), p.policy_parameters, context_tokens=0)
    spent.add_prm(sum(p.prm_tokens) if p.prm_tokens is not None else 0, p.prm_parameters)
    return spent


def solution_compute(search: Mapping[str, Any], probe: LiveProbe | None) -> dict[str, Any]:
    """A solution's compute: the search's plus the probe's at the top, each on its own under
    ``search`` and ``probe`` (None without a probe)."""
    if probe is None:
        return {**search, "search": dict(search), "probe": None}
    spent = probe_compute(probe)
    return {**compute_dict(compute_of(search) + spent), "search": dict(search), "probe": compute_dict(spent)}


# --------------------------------------------------------------------------- runs


def candidate_dict(c: Any) -> dict[str, Any]:
    return {"text": c.text, "answer": c.answer, "score": c.score, "step_scores": c.step_scores,
            "finish_reason": c.finish_reason}


def search_seed(seed: int, key: str, questions: Sequence[str]) -> int:
    """One seeded call per batch and strategy (the sweep seeds per chunk likewise)."""
    from ttsopt.search.methods import derive_seed

    return derive_seed(seed, "solve", key, *map(question_key, questions))


def run_fresh(questions: Sequence[str], strategy: Any, settings: Mapping[str, Any], *, policy: Any, prm: Any,
              seed: int, lock: Any) -> list[Run]:
    """``strategy`` from scratch on ``questions``, one batched ``run_search`` as the sweep ran it
    (``prm`` is used only by a strategy that uses one)."""
    from ttsopt.data.problem import Problem
    from ttsopt.search.run import run_search

    problems = [Problem(question_key(q), q, "") for q in questions]
    run_seed = search_seed(seed, strategy.key, questions)
    with lock:
        results = run_search(problems, strategy, policy, prm if strategy.uses_prm else None, seed=run_seed,
                             temperature=float(settings["temperature"]), max_tokens=int(settings["max_tokens"]),
                             step_max_tokens=int(settings["step_max_tokens"]), problem_batch_size=len(problems))
    return [Run(r.answer, {"strategy": strategy.key, "method": strategy.method, "seed": run_seed,
                           "reused_probe_samples": 0, "candidates": [candidate_dict(c) for c in r.candidates],
                           "search": r.trace}, compute_dict(r.compute))
            for r in results]


def run_reusing(questions: Sequence[str], probes: Sequence[LiveProbe], strategy: Any, settings: Mapping[str, Any],
                *, policy: Any, prm: Any, seed: int, probe_k: int, lock: Any) -> list[Run]:
    """Majority / Best-of-N with the probe's first ``r = min(N, k)`` samples as part of the N (their PRM
    step scores reused for Best-of-N): only ``N - r`` samples are drawn (the prompt was charged with the
    probe: only new tokens here) and scored, then the pool is decided as the sweep decides one."""
    from ttsopt.search.aggregate import extract
    from ttsopt.search.methods import Ledger
    from ttsopt.search.methods.sampling import decide_pools
    from ttsopt.search.result import Candidate as SearchCandidate
    from ttsopt.search.types import SamplingParams, split_steps

    n, k = int(strategy.n), int(probe_k)
    r = min(n, k)
    run_seed = search_seed(seed, strategy.key, questions)
    pools: list[list[Any]] = []
    for p in probes:
        pools.append([SearchCandidate(text=s.text, steps=split_steps(s.text), answer=s.answer,
                                      finish_reason=s.finish_reason,
                                      step_scores=list(p.samples.step_scores[j]) if strategy.uses_prm else None)
                      for j, s in enumerate(p.samples.samples[:r])])
    computes = [Compute() for _ in questions]
    with lock:
        if n > r:
            prompts = [policy.format_prompt(q) for q in questions]
            t0 = time.perf_counter()
            gens = policy.generate(prompts, SamplingParams(n=n - r, temperature=float(settings["temperature"]),
                                                           max_tokens=int(settings["max_tokens"]), seed=run_seed))
            elapsed = time.perf_counter() - t0
            if len(gens) != len(prompts):
                raise RuntimeError(f"policy {policy.name!r} returned {len(gens)} generations for "
                                   f"{len(prompts)} prompts")
            for i, gen in enumerate(gens):
                computes[i].add_policy(0, gen.generated_tokens, policy.num_parameters,
                                       context_tokens=gen.prompt_tokens)
                computes[i].wall_time_s += elapsed / len(gens)
                pools[i].extend(SearchCandidate(text=c.text, steps=split_steps(c.text), answer=extract(c.text),
                                                finish_reason=c.finish_reason) for c in gen.completions)
        ledger = Ledger(policy, prm if strategy.uses_prm else None, len(questions), run_seed)
        outcomes = decide_pools(ledger, questions, pools, strategy)
    return [Run(o.answer, {"strategy": strategy.key, "method": strategy.method, "seed": run_seed,
                           "reused_probe_samples": r,
                           "candidates": [{**candidate_dict(c), "from_probe": j < r}
                                          for j, c in enumerate(o.candidates)],
                           "search": o.trace}, compute_dict(spent + booked))
            for o, spent, booked in zip(outcomes, computes, ledger.compute)]


def fallback(probe: LiveProbe | None, probe_k: int | None) -> Run:
    """Nothing fits the budget: answer with the probe's majority if a probe ran (already paid), else nothing."""
    from ttsopt.search.aggregate import vote
    from ttsopt.search.result import Candidate as SearchCandidate

    if probe is None:
        return Run(None, {"strategy": None, "fallback": "nothing fits the budget; nothing was run"},
                   compute_dict(Compute()))
    cands = [SearchCandidate(text=s.text, steps=[], answer=s.answer, finish_reason=s.finish_reason)
             for s in probe.samples.samples[:int(probe_k)]]
    result = vote(cands, "majority")
    return Run(result.answer, {"strategy": None, "fallback": "nothing fits the budget: the probe's majority answer",
                               "candidates": [candidate_dict(c) for c in cands]}, compute_dict(Compute()))


__all__ = ["LEGACY_COMPUTE_KEYS", "Run", "candidate_dict", "compute_dict", "compute_of", "fallback", "probe_compute",
           "run_fresh", "run_reusing", "search_seed", "solution_compute"]
