"""Sweep units: what one committable piece of work is, and the loop that computes them.

Work is cut into *units* that are computed, then committed in one transaction each
(``OutcomeStore.commit_unit``), in this order per chunk of problems:

1. ``pool``: N_max = max(budgets) samples per problem from the policy, shared by every
   PRM of that policy. Its Pass@1 is the problem's difficulty for that policy.
2. ``score``: one PRM scores the pool; every pooled budget (majority, Best-of-N rules)
   is estimated on subsets of it (``train/pooled.py``).
3. ``cot``: one greedy solution per problem (no PRM; recorded for every pair).
4. ``tree``: beam search and DVTS, run at each budget.

Chunk boundaries depend only on the problem list and ``chunk_size``, and every seed is
derived from (seed, unit), so a sweep killed at any point and restarted redoes the
missing units and ends with exactly the rows of an uninterrupted run. Both executors
(local, in ``sweep.py``, and Ray) get their work from :func:`chunk_jobs` and compute it
with a :class:`ChunkWorker`; only the driver writes the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ttsopt.data import Problem, is_equivalent
from ttsopt.search.aggregate import extract
from ttsopt.search.compute import Compute
from ttsopt.search.methods import Ledger, derive_seed
from ttsopt.search.result import Candidate
from ttsopt.search.run import run_search
from ttsopt.search.strategy import Strategy
from ttsopt.search.types import PRM, Policy, SamplingParams, split_steps

from .config import SweepConfig
from .difficulty import difficulty_bin, pass_at_1
from .pooled import PoolItem, estimate_budgets
from .store import OutcomeStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Unit:
    """One committable piece of work; ``key`` is its identity in the store."""

    kind: str  # pool | score | cot | tree
    policy: str
    prm: str  # "" for pool and cot
    strategy: str  # "" unless kind == "tree"
    seed: int
    chunk: int

    @property
    def key(self) -> str:
        return "|".join([self.kind, self.policy, self.prm, self.strategy, str(self.seed), str(self.chunk)])


def order_problems(problems: Sequence[Problem], order: str) -> list[Problem]:
    """``interleave_levels``: round-robin over levels (first problem of each level, then the
    second, ...), keeping each level's own order; problems without a level form one group."""
    if order == "as_loaded":
        return list(problems)
    if order != "interleave_levels":
        raise ValueError(f"unknown problem order {order!r}")
    groups: dict[object, list[Problem]] = {}
    for p in problems:
        groups.setdefault(p.level, []).append(p)
    out: list[Problem] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out


def chunks(problems: Sequence[Problem], size: int) -> list[list[Problem]]:
    return [list(problems[i:i + size]) for i in range(0, len(problems), size)]


def plan_units(cfg: SweepConfig, policy: str, prms: Sequence[str], n_chunks: int) -> list[Unit]:
    """Every unit of one policy's share of the sweep, chunk-major so results arrive for all methods early."""
    units: list[Unit] = []
    rules = cfg.pooled_rules()
    trees = cfg.tree_strategies()
    for seed in cfg.seeds:
        for c in range(n_chunks):
            units.append(Unit("pool", policy, "", "", seed, c))
            if rules:
                units += [Unit("score", policy, prm, "", seed, c) for prm in prms]
            if "cot" in cfg.methods:
                units.append(Unit("cot", policy, "", "", seed, c))
            units += [Unit("tree", policy, prm, s.key, seed, c) for prm in prms for s in trees]
    return units


def _grade(problem: Problem) -> Callable[[str | None], bool]:
    return lambda answer: answer is not None and bool(is_equivalent(answer, problem.answer))


def _compute_row(c: Compute) -> dict[str, float]:
    return {"policy_prompt_tokens": c.policy_prompt_tokens, "policy_generated_tokens": c.policy_generated_tokens,
            "prm_tokens": c.prm_tokens, "policy_flops": c.policy_flops, "prm_flops": c.prm_flops,
            "flops": c.flops, "wall_time_s": c.wall_time_s}


def _base_row(policy: str, prm: str, problem: Problem, strategy: Strategy, seed: int, difficulty: dict) -> dict:
    p1, label = difficulty.get(problem.id, (None, None))
    return {
        "policy": policy, "prm": prm, "problem_id": problem.id, "strategy": strategy.key, "seed": seed,
        "method": strategy.method, "n": strategy.n, "m": strategy.m, "agg": strategy.agg, "vote": strategy.vote,
        "max_depth": strategy.max_depth, "level": problem.level, "source": problem.source,
        "pass_at_1": p1, "difficulty": label,
    }


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
                self.prms[spec] = (load_prm(spec) if spec == "calc"
                                   else load_prm(on_engine(spec, engine), device=cfg.device))

    def run_units(self, problems: Sequence[Problem], units: Sequence[Unit],
                  pool_rows: dict[int, dict] | None = None) -> Iterator[tuple[Unit, list[dict], list[dict]]]:
        """Compute ``units`` (all of one chunk, in plan order); yields (unit, outcome rows, pool rows).

        ``pool_rows`` maps a chunk's problems to a pool committed earlier (a resumed sweep).
        """
        pools: dict[str, dict] = dict(pool_rows or {})
        difficulty: dict[str, tuple[float, str]] = {
            pid: (row["pass_at_1"], row["difficulty"]) for pid, row in pools.items() if "pass_at_1" in row
        }
        for unit, outcomes, pool_rows_ in self._run_units(problems, units, pools, difficulty):
            for row in outcomes:
                row["engine"] = self.engine
            yield unit, outcomes, pool_rows_

    def _run_units(self, problems, units, pools, difficulty):
        for unit in units:
            self._reset_caches()
            if unit.kind == "pool":
                rows = self._pool(problems, unit)
                for r in rows:
                    pools[r["problem_id"]] = r
                    difficulty[r["problem_id"]] = (r["pass_at_1"], r["difficulty"])
                yield unit, [], rows
            elif unit.kind == "score":
                out, prows = self._score(problems, unit, pools, difficulty)
                yield unit, out, prows
            elif unit.kind == "cot":
                yield unit, self._cot(problems, unit, difficulty), []
            elif unit.kind == "tree":
                yield unit, self._tree(problems, unit, difficulty), []
            else:  # pragma: no cover
                raise AssertionError(unit.kind)

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
                c.add_prm(0, prm.num_parameters)
                c.prm_tokens = est.prm_tokens
                c.prm_flops = 2.0 * prm.num_parameters * est.prm_tokens
                c.wall_time_s = share * (pool_wall + (prm_wall if est.vote != "majority" else 0.0))
                row = _base_row(unit.policy, unit.prm, problem, strategy, unit.seed, difficulty)
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
        for prm in self.prms:  # CoT uses no PRM; one row per pair keeps every pair's table complete
            rows += self._rows(problems, results, unit, prm, Strategy("cot"), difficulty)
        return rows

    def _tree(self, problems, unit: Unit, difficulty) -> list[dict]:
        strategy = Strategy.from_key(unit.strategy)
        results = run_search(problems, strategy, self.policy, self.prms[unit.prm],
                             seed=derive_seed(unit.seed, "tree", unit.chunk), temperature=self.cfg.temperature,
                             max_tokens=self.cfg.max_tokens, step_max_tokens=self.cfg.step_max_tokens,
                             problem_batch_size=len(problems))
        return self._rows(problems, results, unit, unit.prm, strategy, difficulty)

    def _rows(self, problems, results, unit: Unit, prm: str, strategy: Strategy, difficulty) -> list[dict]:
        rows = []
        for problem, res in zip(problems, results):
            row = _base_row(unit.policy, prm, problem, strategy, unit.seed, difficulty)
            row.update(_compute_row(res.compute), answer=res.answer, correct=float(bool(res.correct)), n_subsets=1,
                       pooled=0, candidates=[{"text": c.text, "answer": c.answer, "step_scores": c.step_scores,
                                              "score": c.score} for c in res.candidates],
                       trace=res.trace)
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


def progress_group(unit: Unit) -> str:
    what = {"pool": "sample pool", "score": f"{unit.prm} pooled", "cot": "cot"}.get(unit.kind)
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


def chunk_jobs(cfg: SweepConfig, store: OutcomeStore, policy: str, units: Sequence[Unit],
               parts: Sequence[Sequence[Problem]], done: set[str]) -> Iterator[ChunkJob]:
    """The work left of one policy's ``units``, one job per (chunk, seed), in plan order.

    A job whose pool unit is already done carries the committed pools (a resumed sweep).
    """
    todo = [u for u in units if u.key not in done]
    for c, part in enumerate(parts):
        for seed in cfg.seeds:
            job_units = [u for u in todo if u.chunk == c and u.seed == seed]
            if not job_units:
                continue
            pools = stored_pools(store, policy, part, seed) if job_units[0].kind != "pool" else None
            yield ChunkJob(policy, c, list(part), job_units, pools)
