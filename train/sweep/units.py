"""Sweep units: what one committable piece of work is, and the loop that computes them.

Work is cut into *units* that are computed, then committed in one transaction each
(``OutcomeStore.commit_unit``), in this order per chunk of problems:

1. ``pool``: N_max = max(budgets) samples per problem from the policy, shared by every
   PRM of that policy. Its Pass@1 is the problem's difficulty for that policy.
2. ``score``: one PRM scores the pool; every pooled budget (majority, Best-of-N rules)
   is estimated on subsets of it (``train/sweep/pooled.py``).
3. ``cot``: one greedy solution per problem (no PRM; recorded for every pair).
4. ``probe`` (when the config has ``probe``): k samples per problem with the probe's own
   seed, shared by every PRM; ``probe_score``: one PRM scores them (``selector/probe.py``).
5. ``tree``: beam search and DVTS, at each budget, ``tree_seeds`` replicas each. DVTS with
   one subtree (N <= M) is beam search with N = M, same seed and same calls, so its rows
   come from the beam unit's run (the trace says so) instead of a second identical run.

Chunk boundaries depend only on the problem list and ``chunk_size``, and every seed is
derived from (seed, unit), so a sweep killed at any point and restarted redoes the
missing units and ends with exactly the rows of an uninterrupted run. Both executors
(local, in ``sweep.py``, and Ray) get their work from :func:`chunk_jobs` and compute it
with a :class:`ChunkWorker`; only the driver writes the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ttsopt.data import Problem, is_equivalent
from ttsopt.search.aggregate import extract
from ttsopt.search.compute import Compute
from ttsopt.search.methods import Ledger, derive_seed
from ttsopt.search.result import Candidate
from ttsopt.search.run import run_search
from ttsopt.search.strategy import Strategy
from ttsopt.search.types import PRM, Policy, SamplingParams, split_steps
from ttsopt.selector.probe import Probe, probe_seed, sample_probe, score_probe

from .config import SweepConfig
from .difficulty import difficulty_bin, pass_at_1
from .pooled import PoolItem, estimate_budgets
from .store import OutcomeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One committable piece of work; ``key`` is its identity in the store."""

    kind: str  # pool | score | cot | probe | probe_score | tree
    policy: str
    prm: str  # "" for pool, cot and probe
    strategy: str  # "" unless kind == "tree"
    seed: int
    chunk: int
    replica: int = 0  # tree units: which of the config's tree_seeds

    @property
    def key(self) -> str:
        return "|".join([self.kind, self.policy, self.prm, self.strategy, str(self.seed), str(self.chunk),
                         str(self.replica)])


def order_problems(problems: Sequence[Problem], order: str) -> list[Problem]:
    """``interleave_levels``: round-robin over levels (first problem of each level, then the
    second, ...), keeping each level's own order; problems without a level form one group.
    ``interleave_kinds``: the same, with each level first put in round-robin order over its
    kinds (``metadata["kind"]``), so every prefix of the sweep covers every level *and* kind."""
    if order == "as_loaded":
        return list(problems)
    if order not in ("interleave_levels", "interleave_kinds"):
        raise ValueError(f"unknown problem order {order!r}")
    groups: dict[object, list[Problem]] = {}
    for p in problems:
        groups.setdefault(p.level, []).append(p)
    if order == "interleave_kinds":
        groups = {level: _round_robin(g, lambda p: p.metadata.get("kind")) for level, g in groups.items()}
    return _round_robin([p for g in groups.values() for p in g], lambda p: p.level)


def _round_robin(items: Sequence[Problem], group_of: Callable[[Problem], object]) -> list[Problem]:
    groups: dict[object, list[Problem]] = {}
    for p in items:
        groups.setdefault(group_of(p), []).append(p)
    out: list[Problem] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out


def chunks(problems: Sequence[Problem], size: int) -> list[list[Problem]]:
    return [list(problems[i:i + size]) for i in range(0, len(problems), size)]


def dvts_twin(cfg: SweepConfig, beam: Strategy) -> Strategy | None:
    """The DVTS strategy that is the same run as ``beam`` (one subtree: N = M), if the config has it."""
    if beam.method != "beam" or beam.n != beam.m:
        return None
    twin = Strategy("dvts", n=beam.n, m=beam.m, agg=beam.agg, vote=beam.vote, max_depth=beam.max_depth)
    return twin if twin in cfg.tree_strategies() else None


def _runs_separately(cfg: SweepConfig, s: Strategy) -> bool:
    if s.method != "dvts" or s.n != s.m:
        return True
    beam = Strategy("beam", n=s.n, m=s.m, agg=s.agg, vote=s.vote, max_depth=s.max_depth)
    return beam not in cfg.tree_strategies()


def plan_units(cfg: SweepConfig, policy: str, prms: Sequence[str], n_chunks: int,
               chunk_limits: dict[str, int] | None = None) -> list[Unit]:
    """Every unit of one policy's share of the sweep, chunk-major so results arrive for all methods early.

    ``chunk_limits``: PRM spec -> how many chunks its pair runs (a pair limited to its first
    problems); PRM-free units run on a chunk while any of the policy's pairs does.
    """
    limits = {prm: (chunk_limits or {}).get(prm, n_chunks) for prm in prms}
    units: list[Unit] = []
    rules = cfg.pooled_rules()
    trees = [s for s in cfg.tree_strategies() if _runs_separately(cfg, s)]
    for seed in cfg.seeds:
        for c in range(n_chunks):
            here = [prm for prm in prms if c < limits[prm]]
            if not here:
                continue
            units.append(Unit("pool", policy, "", "", seed, c))
            if rules:
                units += [Unit("score", policy, prm, "", seed, c) for prm in here]
            if "cot" in cfg.methods:
                units.append(Unit("cot", policy, "", "", seed, c))
            if cfg.probe is not None:
                units.append(Unit("probe", policy, "", "", seed, c))
                units += [Unit("probe_score", policy, prm, "", seed, c) for prm in here]
            units += [Unit("tree", policy, prm, s.key, seed, c, r)
                      for r in range(cfg.tree_seeds) for prm in here for s in trees]
    return units


def _grade(problem: Problem) -> Callable[[str | None], bool]:
    return lambda answer: answer is not None and bool(is_equivalent(answer, problem.answer))


def _compute_row(c: Compute) -> dict[str, float]:
    return {"policy_prompt_tokens": c.policy_prompt_tokens, "policy_generated_tokens": c.policy_generated_tokens,
            "prm_tokens": c.prm_tokens, "tokens": c.tokens, "policy_context_tokens": c.policy_context_tokens,
            "policy_flops": c.policy_flops, "prm_flops": c.prm_flops, "flops": c.flops, "wall_time_s": c.wall_time_s}


def _base_row(unit: "Unit", prm: str, problem: Problem, strategy: Strategy, difficulty: dict) -> dict:
    p1, label = difficulty.get(problem.id, (None, None))
    return {
        "policy": unit.policy, "prm": prm, "problem_id": problem.id, "question_key": problem.key,
        "strategy": strategy.key, "seed": unit.seed, "replica": unit.replica,
        "method": strategy.method, "n": strategy.n, "m": strategy.m, "agg": strategy.agg, "vote": strategy.vote,
        "max_depth": strategy.max_depth, "level": problem.level, "source": problem.source,
        "pass_at_1": p1, "difficulty": label, "unit": unit.key,
    }


#: The question a policy's prompt is rendered for in its fingerprint.
FINGERPRINT_QUESTION = "What is 2 + 3?"


def model_fingerprint(model: Any, *, policy: bool) -> str:
    """What identifies a model's outputs: its name, parameter count and (a policy) its rendered prompt."""
    import hashlib
    import json

    fields = {"name": getattr(model, "name", type(model).__name__), "num_parameters": int(model.num_parameters)}
    if policy:
        fields["prompt"] = model.format_prompt(FINGERPRINT_QUESTION)
    text = json.dumps(fields, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest() + " " + text[:300]


class ChunkWorker:
    """Holds one policy and its PRMs and computes units for chunks of problems.

    The local executor uses one in-process; the Ray executor puts one in each actor.
    It never writes the store: it returns rows, and the driver commits them.
    """

    def __init__(self, cfg: SweepConfig, policy_spec: str, prm_specs: Sequence[str],
                 policy: Policy | None = None, prms: dict[str, PRM] | None = None):
        from ttsopt.search.registry import load_policy, load_prm, on_engine

        self.cfg = cfg
        self.policy_spec = policy_spec
        engine = getattr(cfg, "engine", "transformers")
        local = not policy_spec.startswith(("openai:", "vllm:"))
        #: recorded in every outcome row: engines differ in numerics and in tokens/s
        self.engine = engine if local else policy_spec.split(":", 1)[0]
        self.policy = policy or (load_policy(on_engine(policy_spec, engine), device=cfg.device) if local
                                 else load_policy(policy_spec))
        self.prms: dict[str, PRM] = dict(prms or {})
        for spec in prm_specs:
            if spec not in self.prms:
                self.prms[spec] = load_prm(on_engine(spec, engine), device=cfg.device)

    def fingerprints(self) -> dict[str, str]:
        """meta key -> fingerprint of every model this worker runs (the store refuses a change)."""
        out = {f"policy:{self.policy_spec}": model_fingerprint(self.policy, policy=True)}
        out.update({f"prm:{spec}": model_fingerprint(prm, policy=False) for spec, prm in self.prms.items()})
        return out

    def run_units(self, problems: Sequence[Problem], units: Sequence[Unit],
                  pool_rows: dict[str, dict] | None = None,
                  probe_rows: dict[str, Probe] | None = None) -> Iterator[tuple[Unit, dict[str, list[dict]]]]:
        """Compute ``units`` (all of one chunk, in plan order); yields (unit, rows by table).

        ``pool_rows`` / ``probe_rows`` map a chunk's problems to a pool / probe committed
        earlier (a resumed sweep).
        """
        pools: dict[str, dict] = dict(pool_rows or {})
        probes: dict[str, Probe] = dict(probe_rows or {})
        difficulty: dict[str, tuple[float, str]] = {
            pid: (row["pass_at_1"], row["difficulty"]) for pid, row in pools.items() if "pass_at_1" in row
        }
        for unit in units:
            self._reset_caches()
            rows = self._run_unit(problems, unit, pools, probes, difficulty)
            for row in rows.get("outcomes", []):
                row["engine"] = self.engine
            yield unit, rows

    def _run_unit(self, problems, unit: Unit, pools, probes, difficulty) -> dict[str, list[dict]]:
        if unit.kind == "pool":
            rows = self._pool(problems, unit)
            for r in rows:
                pools[r["problem_id"]] = r
                difficulty[r["problem_id"]] = (r["pass_at_1"], r["difficulty"])
            return {"pools": rows}
        if unit.kind == "score":
            out, prows = self._score(problems, unit, pools, difficulty)
            return {"outcomes": out, "pools": prows}
        if unit.kind == "cot":
            return {"outcomes": self._cot(problems, unit, difficulty)}
        if unit.kind == "probe":
            rows = self._probe(problems, unit, probes)
            return {"probes": rows}
        if unit.kind == "probe_score":
            return {"probes": self._probe_score(problems, unit, probes)}
        if unit.kind == "tree":
            return {"outcomes": self._tree(problems, unit, difficulty)}
        raise AssertionError(unit.kind)  # pragma: no cover

    def _reset_caches(self) -> None:
        """Start every unit from an empty prefix cache, so a unit recomputed after a crash
        sees the same engine state (and so the same numerics) as in an uninterrupted run."""
        for model in (self.policy, *self.prms.values()):
            reset = getattr(model, "reset_cache", None)
            if reset is not None:
                reset()

    # -- units ---------------------------------------------------------------------------
    def _pool(self, problems: Sequence[Problem], unit: Unit) -> list[dict]:
        cfg = self.cfg
        ledger = Ledger(self.policy, None, len(problems), derive_seed(unit.seed, "pool", unit.chunk))
        prompts = [self.policy.format_prompt(p.question) for p in problems]
        params = SamplingParams(n=cfg.n_max, temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                seed=ledger.seed_for(0))
        gens = ledger.generate(range(len(problems)), prompts, params)
        rows = []
        for problem, gen, compute in zip(problems, gens, ledger.compute):
            grade = _grade(problem)
            cands = []
            for c in gen.completions:
                answer = extract(c.text)
                cands.append({"text": c.text, "answer": answer, "tokens": c.tokens, "finish_reason": c.finish_reason,
                              "logprob": c.logprob, "correct": grade(answer)})
            p1 = pass_at_1([c["correct"] for c in cands])
            rows.append({
                "policy": unit.policy, "prm": "", "problem_id": problem.id, "seed": unit.seed, "n_max": cfg.n_max,
                "candidates": cands, "pass_at_1": p1, "difficulty": difficulty_bin(p1),
                "compute": {"prompt_tokens": gen.prompt_tokens, "prefill_tokens": gen.prefill_tokens,
                            "generated_tokens": gen.generated_tokens, "wall_time_s": compute.wall_time_s,
                            "pass_at_1": p1, "difficulty": difficulty_bin(p1)},
            })
        return rows

    def _score(self, problems, unit: Unit, pools: dict[str, dict], difficulty) -> tuple[list[dict], list[dict]]:
        cfg = self.cfg
        prm = self.prms[unit.prm]
        ledger = Ledger(self.policy, prm, len(problems), unit.seed)
        owners, items, where = [], [], []
        for i, problem in enumerate(problems):
            for j, c in enumerate(pools[problem.id]["candidates"]):
                steps = split_steps(c["text"])
                if steps:
                    owners.append(i)
                    items.append((problem.question, steps))
                    where.append((i, j))
        scored = ledger.score(owners, items) if items else []
        step_scores: dict[tuple[int, int], tuple[list[float], int]] = {
            w: (list(s.scores), s.tokens) for w, s in zip(where, scored)
        }
        outcomes, prows = [], []
        for i, problem in enumerate(problems):
            pool = pools[problem.id]
            items_i = []
            for j, c in enumerate(pool["candidates"]):
                scores, tokens = step_scores.get((i, j), ([], 0))
                cand = Candidate(c["text"], split_steps(c["text"]), c["answer"], scores, None, c["finish_reason"])
                items_i.append(PoolItem(cand, c["tokens"], tokens))
            estimates = estimate_budgets(items_i, cfg.budgets, cfg.pooled_rules(), _grade(problem),
                                         n_subsets=cfg.n_subsets, seed=derive_seed(unit.seed, problem.id))
            pool_wall = pool["compute"]["wall_time_s"]
            prm_wall = ledger.compute[i].wall_time_s
            for est in estimates:
                strategy = cfg.pooled_strategy(est.n, est.agg, est.vote)
                share = est.n / len(items_i)
                c = Compute()
                c.add_policy(pool["compute"]["prompt_tokens"], 0, self.policy.num_parameters)
                c.policy_generated_tokens = est.generated_tokens
                c.policy_flops += 2.0 * self.policy.num_parameters * est.generated_tokens
                if est.vote != "majority":
                    c.add_prm(0, prm.num_parameters)
                    c.prm_tokens = est.prm_tokens
                    c.prm_flops = 2.0 * prm.num_parameters * est.prm_tokens
                c.wall_time_s = share * (pool_wall + (prm_wall if est.vote != "majority" else 0.0))
                row = _base_row(unit, unit.prm, problem, strategy, difficulty)
                row.update(_compute_row(c), answer=est.answer, correct=est.accuracy, n_subsets=est.n_subsets,
                           pooled=1, candidates=None, trace={"subsets": est.n_subsets, "pool_size": len(items_i)})
                outcomes.append(row)
            prows.append({"policy": unit.policy, "prm": unit.prm, "problem_id": problem.id, "seed": unit.seed,
                          "n_max": len(items_i),
                          "candidates": [{"step_scores": it.candidate.step_scores, "prm_tokens": it.prm_tokens}
                                         for it in items_i],
                          "compute": {"prm_tokens": ledger.compute[i].prm_tokens, "wall_time_s": prm_wall}})
        return outcomes, prows

    def _cot(self, problems, unit: Unit, difficulty) -> list[dict]:
        results = run_search(problems, Strategy("cot"), self.policy, None, seed=derive_seed(unit.seed, "cot", unit.chunk),
                             max_tokens=self.cfg.max_tokens, problem_batch_size=len(problems))
        rows = []
        # CoT uses no PRM; one row per pair of the config keeps every pair's table complete, also
        # those this driver does not run (`--pairs`), whose drivers find this unit done
        for prm in self.cfg.pair_prms(unit.policy, unit.chunk) or list(self.prms):
            rows += self._rows(problems, results, unit, prm, Strategy("cot"), difficulty)
        return rows

    def _probe(self, problems, unit: Unit, probes: dict[str, Probe]) -> list[dict]:
        cfg = self.cfg
        assert cfg.probe is not None
        drawn = sample_probe(self.policy, [p.question for p in problems], cfg.probe.k, temperature=cfg.temperature,
                             max_tokens=cfg.max_tokens, seed=probe_seed(unit.seed, cfg.probe.seed, unit.chunk))
        rows = []
        for problem, probe in zip(problems, drawn):
            probes[problem.id] = probe
            rows.append({"policy": unit.policy, "prm": "", "problem_id": problem.id, "seed": unit.seed,
                         "k": len(probe.samples), "candidates": [s.to_dict() for s in probe.samples],
                         "compute": {"prompt_tokens": probe.prompt_tokens,
                                     "generated_tokens": sum(s.tokens for s in probe.samples),
                                     "policy_parameters": probe.policy_parameters}})
        return rows

    def _probe_score(self, problems, unit: Unit, probes: dict[str, Probe]) -> list[dict]:
        prm = self.prms[unit.prm]
        scored = score_probe(prm, [p.question for p in problems], [probes[p.id] for p in problems])
        return [{"policy": unit.policy, "prm": unit.prm, "problem_id": problem.id, "seed": unit.seed,
                 "k": len(probe.samples),
                 "candidates": [{"step_scores": s, "prm_tokens": t} for s, t in zip(probe.step_scores, probe.prm_tokens)],
                 "compute": {"prm_tokens": sum(probe.prm_tokens), "prm_parameters": probe.prm_parameters}}
                for problem, probe in zip(problems, scored)]

    def _tree(self, problems, unit: Unit, difficulty) -> list[dict]:
        strategy = Strategy.from_key(unit.strategy)
        results = run_search(problems, strategy, self.policy, self.prms[unit.prm],
                             seed=derive_seed(unit.seed, "tree", unit.chunk, unit.replica),
                             temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens,
                             step_max_tokens=self.cfg.step_max_tokens, problem_batch_size=len(problems))
        rows = self._rows(problems, results, unit, unit.prm, strategy, difficulty)
        twin = dvts_twin(self.cfg, strategy)
        if twin is not None:  # the same run, recorded under the DVTS key as well
            for row in self._rows(problems, results, unit, unit.prm, twin, difficulty):
                row["trace"] = {**row["trace"], "same_run_as": strategy.key}
                rows.append(row)
        return rows

    def _rows(self, problems, results, unit: Unit, prm: str, strategy: Strategy, difficulty) -> list[dict]:
        rows = []
        for problem, res in zip(problems, results):
            row = _base_row(unit, prm, problem, strategy, difficulty)
            row.update(_compute_row(res.compute), answer=res.answer, correct=float(bool(res.correct)), n_subsets=1,
                       pooled=0, candidates=[{"text": c.text, "answer": c.answer, "step_scores": c.step_scores,
                                              "score": c.score} for c in res.candidates],
                       trace=dict(res.trace))
            rows.append(row)
        return rows


def check_chunks(only_chunks: Sequence[int], n_chunks: int) -> set[int]:
    """The chunk indices as a set; ValueError naming those outside 0..n_chunks-1."""
    outside = sorted(c for c in set(only_chunks) if not 0 <= c < n_chunks)
    if outside:
        raise ValueError(f"chunks {outside} out of range: this sweep has chunks 0..{n_chunks - 1}")
    return set(only_chunks)


def stored_pools(store: OutcomeStore, policy: str, part: Sequence[Problem], seed: int) -> dict[str, dict]:
    out = {}
    for p in part:
        pool = store.pool(policy, "", p.id, seed)
        if pool is None:
            raise RuntimeError(f"store has no pool for {policy} / {p.id} / seed {seed} although later units are done")
        out[p.id] = {"candidates": pool["candidates"], "compute": pool["compute"],
                     "pass_at_1": pool["compute"]["pass_at_1"], "difficulty": pool["compute"]["difficulty"]}
    return out


def stored_probes(store: OutcomeStore, policy: str, part: Sequence[Problem], seed: int) -> dict[str, Probe]:
    from ttsopt.selector.probe import probe_from_stored

    out = {}
    for p in part:
        probe = store.pool(policy, "", p.id, seed, table="probes")
        if probe is None:
            raise RuntimeError(f"store has no probe for {policy} / {p.id} / seed {seed} although it is scored")
        out[p.id] = probe_from_stored(probe["candidates"], probe["compute"])
    return out


def progress_group(unit: Unit) -> str:
    what = {"pool": "sample pool", "score": f"{unit.prm} pooled", "cot": "cot", "probe": "probe",
            "probe_score": f"{unit.prm} probe"}.get(unit.kind)
    if what is None:
        what = f"{unit.prm} {unit.strategy.split(':')[0]}"
    return f"{unit.policy}: {what}"


def progress_groups(units: Sequence[Unit]) -> dict[str, int]:
    groups: dict[str, int] = {}
    for u in units:
        groups[progress_group(u)] = groups.get(progress_group(u), 0) + 1
    return groups


@dataclass(frozen=True)
class ChunkJob:
    """The units of one policy, chunk and seed still to compute, with the pools they build on."""

    policy: str
    chunk: int
    problems: list[Problem]
    units: list[Unit]
    pools: dict[str, dict] | None  # None when the job starts with its own pool unit
    probes: dict[str, Probe] | None = None  # the stored probe, when the job scores one it does not draw


def chunk_jobs(cfg: SweepConfig, store: OutcomeStore, policy: str, units: Sequence[Unit],
               parts: Sequence[Sequence[Problem]], done: set[str]) -> Iterator[ChunkJob]:
    """The work left of one policy's ``units``, one job per (chunk, seed), in plan order.

    A job whose pool unit is already done carries the committed pools (a resumed sweep).
    """
    todo = [u for u in units if u.key not in done]
    for c, part in enumerate(parts):
        for seed in cfg.seeds:
            job_units = [u for u in todo if u.chunk == c and u.seed == seed]
            if job_units:
                yield _job(store, policy, c, part, seed, job_units)


def take_job(store: OutcomeStore, job: ChunkJob, owner: str) -> tuple[ChunkJob | None, int]:
    """Lease what is left of ``job`` for ``owner``; returns the job to run now (None: nothing)
    and how many of its units wait.

    Units that are done, or leased by another live driver, are someone else's. Units whose
    chunk pool (or probe, for ``probe_score``) another driver is still computing wait: their
    leases are handed back, and the caller offers the whole job again later (by then the pool
    has landed, or its driver died and this one takes the pool over).
    """
    taken = set(store.take([u.key for u in job.units], owner))
    seed = job.units[0].seed

    def ready(kind: str) -> bool:
        dep = Unit(kind, job.policy, "", "", seed, job.chunk).key
        return dep in taken or store.has_unit(dep)

    run, wait = [], []
    for u in job.units:
        if u.key in taken:
            needs = [] if u.kind == "pool" else ["pool", "probe"] if u.kind == "probe_score" else ["pool"]
            (run if all(ready(k) for k in needs) else wait).append(u)
    store.release(owner, [u.key for u in wait])
    return (_job(store, job.policy, job.chunk, job.problems, seed, run) if run else None), len(wait)


def _job(store: OutcomeStore, policy: str, c: int, part: Sequence[Problem], seed: int, units: list[Unit]) -> ChunkJob:
    kinds = {u.kind for u in units}
    pools = stored_pools(store, policy, part, seed) if "pool" not in kinds else None
    probes = stored_probes(store, policy, part, seed) if "probe_score" in kinds and "probe" not in kinds else None
    return ChunkJob(policy, c, list(part), units, pools, probes)
