"""Probes: a few cheap samples a router may look at before it chooses a strategy.

The offline sweep and the online router run the *same* functions here: the sweep stores a
probe's samples and PRM scores (``probe`` and ``probe_score`` units), and exports
:func:`probe_row` of them; the router draws a live probe with :func:`sample_probe` and
:func:`score_probe` and computes :func:`probe_row` of it. So a router trained on exported
probe features sees the same columns online for the same samples.

A probe is drawn with its own seed, never the pool's, so no probe sample is also one of the
samples a label was computed from. Its compute is part of the budget: :func:`probe_row`
reports what the first k samples cost (prompt once, generated tokens, PRM tokens, FLOPs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ttsopt.search.aggregate import aggregate_scores, extract
from ttsopt.search.methods import derive_seed
from ttsopt.search.types import PRM, Policy, SamplingParams, split_steps

from .features import probe_features

#: How a probe sample's step scores become its one PRM score: PRM-Min, the aggregation
#: under which a single wrong step condemns a solution.
PROBE_AGGREGATION = "min"
#: The ks exported for every probe (prefixes of one k_max-sample probe).
PROBE_KS = (1, 2, 4)
PROBE_COST_COLUMNS = ("probe_cost_tokens", "probe_cost_flops")


@dataclass(frozen=True)
class ProbeSample:
    text: str
    answer: str | None
    tokens: int
    logprob: float | None
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "answer": self.answer, "tokens": self.tokens, "logprob": self.logprob,
                "finish_reason": self.finish_reason}


@dataclass(frozen=True)
class Probe:
    """k samples of one question, with what they cost, and (once scored) their step scores."""

    samples: list[ProbeSample]
    prompt_tokens: int
    policy_parameters: int
    step_scores: list[list[float]] | None = None
    prm_tokens: list[int] | None = None
    prm_parameters: int = 0


def probe_seed(seed: int, probe_seed_: int, *coordinates: int | str) -> int:
    """The probe's own seed: a stream apart from every pool, tree and CoT call of the sweep."""
    return derive_seed(seed, "probe", probe_seed_, *coordinates)


def sample_probe(policy: Policy, questions: Sequence[str], k: int, *, temperature: float, max_tokens: int,
                 seed: int) -> list[Probe]:
    """k samples per question in one batched call (unscored)."""
    if k < 1:
        raise ValueError(f"a probe needs k >= 1 samples, got {k}")
    prompts = [policy.format_prompt(q) for q in questions]
    gens = policy.generate(prompts, SamplingParams(n=k, temperature=temperature, max_tokens=max_tokens, seed=seed))
    if len(gens) != len(prompts):
        raise RuntimeError(f"policy {policy.name!r} returned {len(gens)} generations for {len(prompts)} prompts")
    return [Probe([ProbeSample(c.text, extract(c.text), int(c.tokens), c.logprob, c.finish_reason)
                   for c in gen.completions], int(gen.prompt_tokens), int(policy.num_parameters)) for gen in gens]


def score_probe(prm: PRM, questions: Sequence[str], probes: Sequence[Probe]) -> list[Probe]:
    """The probes with every sample's step scores (a sample with no steps gets none, scoring 0)."""
    owners, items = [], []
    for i, (q, probe) in enumerate(zip(questions, probes)):
        for j, s in enumerate(probe.samples):
            steps = split_steps(s.text)
            if steps:
                owners.append((i, j))
                items.append((q, steps))
    scored = prm.score(items) if items else []
    if len(scored) != len(items):
        raise RuntimeError(f"PRM {prm.name!r} returned {len(scored)} results for {len(items)} items")
    scores = [[[] for _ in p.samples] for p in probes]
    tokens = [[0 for _ in p.samples] for p in probes]
    for (i, j), result in zip(owners, scored):
        scores[i][j] = [float(x) for x in result.scores]
        tokens[i][j] = int(result.tokens)
    return [Probe(p.samples, p.prompt_tokens, p.policy_parameters, scores[i], tokens[i], int(prm.num_parameters))
            for i, p in enumerate(probes)]


def probe_row(probe: Probe, k: int) -> dict[str, float]:
    """The ``probe_*`` feature columns of the first ``k`` samples, and what they cost."""
    if not 1 <= k <= len(probe.samples):
        raise ValueError(f"probe of {len(probe.samples)} samples has no prefix of {k}")
    samples = probe.samples[:k]
    prm_scores = None
    if probe.step_scores is not None:
        prm_scores = [aggregate_scores(s, PROBE_AGGREGATION) if s else 0.0 for s in probe.step_scores[:k]]
    row = probe_features([s.answer for s in samples], prm_scores,
                         [s.logprob for s in samples], [s.tokens for s in samples])
    generated = sum(s.tokens for s in samples)
    prm_tokens = sum(probe.prm_tokens[:k]) if probe.prm_tokens is not None else 0
    row["probe_cost_tokens"] = float(probe.prompt_tokens + generated + prm_tokens)
    row["probe_cost_flops"] = (2.0 * probe.policy_parameters * (probe.prompt_tokens + generated)
                               + 2.0 * probe.prm_parameters * prm_tokens)
    return row


def probe_from_stored(samples: Sequence[dict], compute: dict, scores: dict | None = None) -> Probe:
    """A :class:`Probe` from the store's rows (a ``probe`` unit and, optionally, its ``probe_score``)."""
    probe = Probe([ProbeSample(s["text"], s["answer"], int(s["tokens"]), s.get("logprob"), s["finish_reason"])
                   for s in samples], int(compute["prompt_tokens"]), int(compute["policy_parameters"]))
    if scores is None:
        return probe
    cands = scores["candidates"]
    return Probe(probe.samples, probe.prompt_tokens, probe.policy_parameters,
                 [list(c["step_scores"]) for c in cands], [int(c["prm_tokens"]) for c in cands],
                 int(scores["compute"]["prm_parameters"]))


__all__ = ["PROBE_AGGREGATION", "PROBE_COST_COLUMNS", "PROBE_KS", "Probe", "ProbeSample", "probe_from_stored",
           "probe_row", "probe_seed", "sample_probe", "score_probe"]
