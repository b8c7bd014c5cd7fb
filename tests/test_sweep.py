"""The offline sweep: pooled budgets, the crash-safe store, kill-and-resume."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes import HashPRM

from ttsopt.data import Problem
from ttsopt.search import Completion, Generation, SamplingParams, Strategy
from ttsopt.search.run import run_search
from ttsopt.train.sweep.config import SweepConfigError, config_from_dict, load_config
from ttsopt.train.sweep.pooled import PoolItem, estimate_budgets, subsets
from ttsopt.train.sweep.store import OutcomeStore
from ttsopt.train.sweep.driver import run_sweep
from ttsopt.train.sweep.units import ChunkWorker


class CoinPolicy:
    """Each full sample is right with a per-problem probability, else one of three wrong answers.

    Step mode (a stop string given) writes "Step k: 1 + 1 = 2" steps, then the answer.
    """

    name = "coin"
    num_parameters = 1000

    def __init__(self, p_right: dict[str, float], gold: dict[str, str]):
        self.p_right, self.gold = p_right, gold

    def format_prompt(self, question: str) -> str:
        return f"Q: {question}\nA: "

    def _answer(self, question: str, rng: random.Random) -> str:
        gold = self.gold[question]
        return gold if rng.random() < self.p_right[question] else str(int(gold) + rng.choice([1, 2, 3]))

    def generate(self, prompts, params: SamplingParams) -> list[Generation]:
        out = []
        for i, prompt in enumerate(prompts):
            question = prompt.split("\n")[0][3:]
            rng = random.Random(f"{params.seed}:{i}:{prompt}")
            comps = []
            for _ in range(params.n):
                if params.stop:  # one step at a time
                    depth = prompt.count("Step ")
                    if depth < 2:
                        text = f"Step {depth + 1}: 1 + 1 = 2\n\n"
                        comps.append(Completion(text, 6, "stop"))
                    else:
                        comps.append(Completion(f"The answer is {self._answer(question, rng)}.", 5, "eos"))
                else:
                    text = f"Step 1: 1 + 1 = 2\n\nThe answer is {self._answer(question, rng)}."
                    comps.append(Completion(text, 11, "eos"))
            out.append(Generation(prompt_tokens=len(prompt.split()), completions=comps))
        return out


def _problems(k: int) -> tuple[list[Problem], CoinPolicy]:
    rng = random.Random(0)
    probs = [Problem(f"p{i}", f"What is {i} + {i}?", str(2 * i), "test", {"level": 1 + i % 3}) for i in range(k)]
    policy = CoinPolicy({p.question: rng.choice([0.1, 0.35, 0.6, 0.9]) for p in probs},
                        {p.question: p.answer for p in probs})
    return probs, policy


def test_subsets_are_seeded_and_the_full_budget_is_the_whole_pool():
    a = subsets(16, 4, 8, random.Random(1))
    assert a == subsets(16, 4, 8, random.Random(1))
    assert all(len(s) == 4 and s == sorted(s) for s in a)
    assert subsets(16, 16, 8, random.Random(1)) == [list(range(16))]
    with pytest.raises(ValueError):
        subsets(4, 5, 1, random.Random(0))


def test_pooled_majority_estimate_agrees_with_direct_runs():
    """Expected majority@4 from one pool of 16 ~ the mean over many direct 4-sample runs."""
    probs, policy = _problems(30)
    from ttsopt.search.result import Candidate

    pooled, direct = [], []
    for p in probs:
        gen = policy.generate([policy.format_prompt(p.question)], SamplingParams(n=16, seed=7))[0]
        pool = [PoolItem(Candidate(c.text, [c.text], c.text.rsplit(" ", 1)[1].rstrip(".")), c.tokens) for c in gen.completions]
        est = estimate_budgets(pool, [4], [("last", "majority")], lambda a, p=p: a == p.answer, n_subsets=64, seed=0)
        pooled.append(est[0].accuracy)
    for seed in range(40):
        results = run_search(probs, Strategy("majority", n=4), policy, seed=seed)
        direct.append(sum(r.correct for r in results) / len(results))
    pooled_mean, direct_mean = sum(pooled) / len(pooled), sum(direct) / len(direct)
    assert abs(pooled_mean - direct_mean) < 0.06, (pooled_mean, direct_mean)


def test_pooled_cost_is_the_mean_over_subsets_of_the_candidates_cost():
    from ttsopt.search.result import Candidate

    pool = [PoolItem(Candidate("x", ["x"], "1", [0.5]), tokens=t, prm_tokens=2 * t) for t in (10, 20, 30, 40)]
    full = estimate_budgets(pool, [4], [("last", "prm_vote")], lambda a: True)[0]
    assert full.generated_tokens == 100 and full.prm_tokens == 200 and full.n_subsets == 1


CONFIG = {
    "name": "t", "problems": "builtin:arith", "pairs": [{"policy": "coin", "prm": "hash"}],
    "methods": {"cot": {}, "majority": {}, "best_of_n": {"vote": ["prm_vote", "prm_max"]},
                "beam": {"m": [2]}, "dvts": {"m": [2]}},
    "budgets": [1, 2, 4], "n_subsets": 4, "chunk_size": 4, "max_depth": 4,
}


def _run(tmp_path: Path, name: str, probs, policy, stop_after: int | None = None) -> OutcomeStore:
    cfg = config_from_dict(CONFIG)
    store = OutcomeStore(tmp_path / f"{name}.sqlite")
    worker = ChunkWorker(cfg, "coin", ["hash"], policy=policy, prms={"hash": HashPRM()})
    if stop_after is not None:
        original, calls = store.commit_unit, {"n": 0}

        def dying(*a, **kw):
            if calls["n"] == stop_after:
                raise KeyboardInterrupt("simulated crash")
            calls["n"] += 1
            return original(*a, **kw)

        store.commit_unit = dying
        with pytest.raises(KeyboardInterrupt):
            run_sweep(cfg, store, probs, workers={"coin": worker})
        store.commit_unit = original
    run_sweep(cfg, store, probs, workers={"coin": worker})
    return store


def _rows(store: OutcomeStore) -> list[tuple]:
    df = store.outcomes(with_candidates=True).drop(columns=["created_at", "wall_time_s"])
    return sorted(map(tuple, df.astype(str).values.tolist()))


def test_sweep_records_every_strategy_budget_and_pair(tmp_path):
    probs, policy = _problems(6)
    store = _run(tmp_path, "full", probs, policy)
    df = store.outcomes()
    keys = set(df["strategy"])
    assert "cot" in keys and {"majority:n=1", "majority:n=4"} <= keys
    assert "best_of_n:n=4,agg=last,vote=prm_max" in keys
    assert "beam:n=4,m=2,agg=last,vote=prm_vote,depth=4" in keys and "dvts:n=2,m=2,agg=last,vote=prm_vote,depth=4" in keys
    # one row per (problem, strategy): 1 cot + 3 majority + 6 BoN + 3 beam + 3 dvts
    assert len(df) == 6 * (1 + 3 + 6 + 3 + 3)
    assert df["difficulty"].isin(["easy", "medium", "hard"]).all()
    pooled = df[df["pooled"] == 1]
    assert ((pooled["correct"] >= 0) & (pooled["correct"] <= 1)).all()
    # compute grows with the budget for pooled methods
    maj = df[df["method"] == "majority"].groupby("n")["policy_generated_tokens"].mean()
    assert maj[1] < maj[2] < maj[4]


def test_a_crashed_sweep_resumes_to_exactly_the_rows_of_an_uninterrupted_one(tmp_path):
    probs, policy = _problems(6)
    clean = _rows(_run(tmp_path, "clean", probs, policy))
    for stop_after in (0, 3, 7):
        resumed = _rows(_run(tmp_path, f"crash{stop_after}", probs, policy, stop_after=stop_after))
        assert resumed == clean


def test_drivers_given_disjoint_chunks_write_the_rows_of_one_undivided_sweep(tmp_path):
    probs, policy = _problems(9)  # chunks of 4: 0, 1 and a last one of 1 problem
    clean = _rows(_run(tmp_path, "clean", probs, policy))
    cfg = config_from_dict(CONFIG)
    store = OutcomeStore(tmp_path / "split.sqlite")
    for part in ([2, 0], [1]):
        worker = ChunkWorker(cfg, "coin", ["hash"], policy=policy, prms={"hash": HashPRM()})
        run_sweep(cfg, store, probs, workers={"coin": worker}, only_chunks=part)
    assert _rows(store) == clean
    with pytest.raises(ValueError, match="out of range"):
        run_sweep(cfg, store, probs, workers={"coin": worker}, only_chunks=[3])


_ROW = {"policy": "a", "prm": "", "problem_id": "p", "strategy": "cot", "seed": 0, "method": "cot", "n": 1, "m": 1,
        "correct": 1.0, "n_subsets": 1, "pooled": 0, "policy_prompt_tokens": 10, "policy_generated_tokens": 5,
        "prm_tokens": 0, "tokens": 15, "policy_context_tokens": 10, "policy_flops": 1.0, "prm_flops": 0.0, "flops": 1.0, "wall_time_s": 0.1,
        "candidates": [], "trace": {}, "created_at": 0.0}


def test_rows_name_the_engine_and_a_store_of_an_older_schema_is_refused(tmp_path):
    from ttsopt.train.sweep.store import StoreMismatchError

    probs, policy = _problems(4)
    assert set(_run(tmp_path, "s", probs, policy).outcomes()["engine"]) == {"transformers"}
    old = tmp_path / "v2.sqlite"
    with OutcomeStore(old) as db:
        db.commit_unit("u", [{**_ROW, "engine": "llamacpp"}])
    con = sqlite3.connect(old)  # what ttsopt wrote before tree replicas and one compute measure
    con.executescript("UPDATE meta SET value='2' WHERE key='schema_version';")
    con.close()
    with pytest.raises(StoreMismatchError, match="schema 2"):
        OutcomeStore(old)


def test_rerunning_a_finished_sweep_does_nothing(tmp_path):
    probs, policy = _problems(4)
    store = _run(tmp_path, "s", probs, policy)
    n = store.count()
    cfg = config_from_dict(CONFIG)
    counts = run_sweep(cfg, store, probs, workers={"coin": ChunkWorker(cfg, "coin", ["hash"], policy=policy,
                                                                       prms={"hash": HashPRM()})})
    assert counts["done"] == 0 and counts["skipped"] > 0 and store.count() == n


def test_store_refuses_a_unit_twice_and_keeps_nothing_of_it(tmp_path):
    store = OutcomeStore(tmp_path / "x.sqlite")
    store.commit_unit("u1", pools=[{"policy": "a", "prm": "", "problem_id": "p", "seed": 0, "n_max": 1,
                                    "candidates": [], "compute": {}}])
    with pytest.raises(sqlite3.IntegrityError):
        store.commit_unit("u1", pools=[{"policy": "a", "prm": "", "problem_id": "q", "seed": 0, "n_max": 1,
                                        "candidates": [], "compute": {}}])
    assert store.count("pools") == 1
    assert store.commit_unit("u1", pools=[{"policy": "a", "prm": "", "problem_id": "q", "seed": 0, "n_max": 1,
                                           "candidates": [], "compute": {}}], exist_ok=True) is False
    assert store.count("pools") == 1


def test_config_errors_name_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("problems: builtin:arith\npairs: [smollm2-135m+calc\nbudgets: [1]\n")
    with pytest.raises(SweepConfigError, match=r"bad.yaml:\d+"):
        load_config(bad)
    unknown = tmp_path / "u.yaml"
    unknown.write_text("problems: builtin:arith\npairs: [nope]\nmethods: [cot]\nbudgets: [1]\n")
    with pytest.raises(SweepConfigError, match="unknown pair 'nope'"):
        load_config(unknown)
    toml = tmp_path / "c.toml"
    toml.write_text('problems = "builtin:arith"\npairs = ["smollm2-135m+calc"]\nbudgets = [1, 4]\n[methods.majority]\n')
    assert load_config(toml).budgets == [1, 4]


SWEEP_YAML = """
name: killtest
problems: builtin:arith
problem_options: {{per_level: 2, seed: 0}}
pairs: [{{policy: "hf:{model}", prm: calc}}]
methods:
  cot: {{}}
  majority: {{}}
  best_of_n: {{vote: [prm_vote]}}
  beam: {{m: [2]}}
budgets: [1, 2, 4]
n_subsets: 4
chunk_size: 2
max_depth: 3
sampling: {{temperature: 0.8, max_tokens: 24, step_max_tokens: 8}}
"""


def _units(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM units").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.timeout(900)
def test_kill_9_and_resume_a_real_sweep(tmp_path, tiny_model_dir):
    """A real `ttsopt sweep` process (tiny random model, calculator PRM) killed with SIGKILL mid-run."""
    cfg = tmp_path / "kill.yaml"
    cfg.write_text(SWEEP_YAML.format(model=tiny_model_dir))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TTSOPT_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "ttsopt.cli", "sweep", str(cfg), "--no-embeddings"]
    clean_store, killed_store = tmp_path / "clean.sqlite", tmp_path / "killed.sqlite"
    subprocess.run([*cmd, "--store", str(clean_store)], env=env, check=True, capture_output=True, timeout=600)
    total = _units(clean_store)
    assert total > 4

    proc = subprocess.Popen([*cmd, "--store", str(killed_store)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while _units(killed_store) < total // 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < _units(killed_store) < total, "the kill should land mid-sweep"
    subprocess.run([*cmd, "--store", str(killed_store)], env=env, check=True, capture_output=True, timeout=600)

    with OutcomeStore(clean_store) as a, OutcomeStore(killed_store) as b:
        assert _rows(a) == _rows(b)
        assert a.count("pools") == b.count("pools")


def test_problem_features_land_next_to_the_store(tmp_path):
    import pandas as pd

    from ttsopt.train.sweep.driver import write_problem_features

    probs, _ = _problems(3)
    path = write_problem_features(probs, tmp_path, embeddings=False)
    frame = pd.read_parquet(path)
    assert list(frame["problem_id"]) == ["p0", "p1", "p2"]
    assert any(c.startswith("txt_") for c in frame.columns)


def test_interleaved_order_puts_every_level_in_each_chunk():
    from ttsopt.data import load_problems
    from ttsopt.train.sweep.units import chunks, order_problems

    problems = load_problems("builtin:arith", per_level=4, seed=0)
    ordered = order_problems(problems, "interleave_levels")
    assert sorted(p.id for p in ordered) == sorted(p.id for p in problems)
    for part in chunks(ordered, 5):
        assert sorted(p.level for p in part) == [1, 2, 3, 4, 5]
    # each level keeps its own order
    assert [p.id for p in ordered if p.level == 3] == [p.id for p in problems if p.level == 3]
    assert order_problems(problems, "as_loaded") == problems
    with pytest.raises(ValueError, match="order"):
        order_problems(problems, "random")


def test_config_takes_an_engine_and_an_order_and_refuses_unknown_ones():
    base = {"problems": "builtin:arith", "pairs": ["smollm2-135m+calc"], "methods": ["majority"], "budgets": [1]}
    cfg = config_from_dict({**base, "engine": "llamacpp", "order": "interleave_levels"})
    assert (cfg.engine, cfg.order) == ("llamacpp", "interleave_levels")
    assert (config_from_dict(base).engine, config_from_dict(base).order) == ("transformers", "as_loaded")
    with pytest.raises(SweepConfigError, match="engine"):
        config_from_dict({**base, "engine": "tgi"})
    with pytest.raises(SweepConfigError, match="order"):
        config_from_dict({**base, "order": "shuffled"})


def _open_and_commit(args):
    path, key = args
    with OutcomeStore(path) as db:
        db.commit_unit(key, [], [])
    return key


def test_drivers_of_disjoint_pairs_can_create_and_share_one_store(tmp_path):
    import multiprocessing as mp

    path = str(tmp_path / "shared.sqlite")
    with mp.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_open_and_commit, [(path, f"pool|p{i}|||0|0") for i in range(8)])
    with OutcomeStore(path) as db:
        assert set(keys) <= db.done_units() and len(db.done_units()) == 8


# -- learning data: keys, fingerprints, labels, compute, probes, snapshots ------------------------

DATA_CONFIG = {**CONFIG, "tree_seeds": 2, "probe": {"k": 4, "seed": 99}}


def _sweep(tmp_path: Path, name: str, raw: dict, probs, policy, store: OutcomeStore | None = None, **kw):
    cfg = config_from_dict(raw)
    store = store or OutcomeStore(tmp_path / f"{name}.sqlite")
    worker = ChunkWorker(cfg, "coin", ["hash"], policy=policy, prms={"hash": HashPRM()})
    counts = run_sweep(cfg, store, probs, workers={"coin": worker}, **kw)
    return store, counts


def test_a_store_refuses_to_resume_under_another_config_or_a_corrected_gold_answer(tmp_path):
    from ttsopt.train.sweep.store import StoreMismatchError

    probs, policy = _problems(4)
    store, _ = _sweep(tmp_path, "s", CONFIG, probs, policy)
    with pytest.raises(StoreMismatchError, match="configuration"):
        _sweep(tmp_path, "s", {**CONFIG, "sampling": {"temperature": 0.9}}, probs, policy, store=store)
    with pytest.raises(StoreMismatchError, match="gold answer"):
        fixed = [Problem(p.id, p.question, "999" if i == 0 else p.answer, p.source, p.metadata)
                 for i, p in enumerate(probs)]
        _sweep(tmp_path, "s", CONFIG, fixed, policy, store=store)
    # adding a pair or a tree method only adds units: the same store takes it
    _sweep(tmp_path, "s", {**CONFIG, "methods": {**CONFIG["methods"], "dvts": {"m": [1]}}}, probs, policy, store=store)


def test_a_changed_prompt_is_refused_as_a_changed_model(tmp_path):
    from ttsopt.train.sweep.store import StoreMismatchError

    probs, policy = _problems(8)
    store, _ = _sweep(tmp_path, "s", CONFIG, probs, policy, only_chunks=[0])
    policy.format_prompt = lambda q: f"Question: {q}\nA: "
    with pytest.raises(StoreMismatchError, match="policy:coin"):
        _sweep(tmp_path, "s", CONFIG, probs, policy, store=store)  # chunk 1 would be made with another prompt


def test_pooled_budget_one_enumerates_every_sample_so_it_is_exactly_pass_at_1(tmp_path):
    probs, policy = _problems(8)
    store, _ = _sweep(tmp_path, "s", {**CONFIG, "budgets": [1, 2, 16], "n_subsets": 16}, probs, policy)
    df = store.outcomes()
    maj1 = df[df["strategy"] == "majority:n=1"].set_index("problem_id")
    assert (maj1["correct"] == maj1["pass_at_1"]).all()
    assert (maj1["n_subsets"] == 16).all()  # the 16 singletons, not 16 random draws
    assert set(df.loc[df["n"] == 16, "n_subsets"]) == {1}


def test_a_pooled_rows_answer_is_the_most_common_over_its_subsets():
    from ttsopt.search.result import Candidate

    answers = ["1", "2", "2", "2"]
    pool = [PoolItem(Candidate(a, [a], a), tokens=1) for a in answers]
    est = estimate_budgets(pool, [1], [("last", "majority")], lambda a: a == "1", n_subsets=4)[0]
    assert est.n_subsets == 4 and est.accuracy == 0.25 and est.answer == "2"


def test_every_methods_compute_matches_a_hand_count(tmp_path):
    probs, policy = _problems(4)
    store, _ = _sweep(tmp_path, "s", {**CONFIG, "methods": {**CONFIG["methods"], "beam": {"m": [2]}}}, probs, policy)
    df = store.outcomes().set_index(["problem_id", "strategy"])
    prompt = 7  # "Q: What is 1 + 1?\nA: " is seven words; the scripted policy counts words
    power, prm_power = 2 * CoinPolicy.num_parameters, 2 * HashPRM.num_parameters

    def check(strategy, generated, prm_tokens):
        row = df.loc[("p1", strategy)]
        assert (row["policy_prompt_tokens"], row["policy_generated_tokens"], row["prm_tokens"]) == \
            (prompt, generated, prm_tokens), strategy
        assert row["tokens"] == prompt + generated + prm_tokens
        assert row["flops"] == power * (prompt + generated) + prm_power * prm_tokens

    check("cot", 11, 0)  # one 11-token solution
    check("majority:n=4", 4 * 11, 0)
    check("best_of_n:n=4,agg=last,vote=prm_vote", 4 * 11, 4 * 2 * 3)  # 2 steps read, 3 tokens each
    # beam N=2, M=2: depth 1 samples 2 first steps (6 tokens each) and the PRM reads 1 step each;
    # depth 2 expands the one kept path 2 ways (6 each, 2 steps read); depth 3 writes the answers
    # (5 each, 3 steps read); the prompt is charged once, its re-sends only as context.
    beam = "beam:n=2,m=2,agg=last,vote=prm_vote,depth=4"
    check(beam, 2 * 6 + 2 * 6 + 2 * 5, 3 * (2 * 1 + 2 * 2 + 2 * 3))
    assert df.loc[("p1", beam), "policy_context_tokens"] > prompt


class SeedRecordingPolicy(CoinPolicy):
    def __init__(self, *a):
        super().__init__(*a)
        self.calls: list[tuple[int, int, bool]] = []  # (seed, n, step mode)

    def generate(self, prompts, params):
        self.calls.append((params.seed, params.n, bool(params.stop)))
        return super().generate(prompts, params)


def test_probe_samples_come_from_their_own_stream_never_the_pools(tmp_path):
    probs, coin = _problems(4)
    policy = SeedRecordingPolicy(coin.p_right, coin.gold)
    store, _ = _sweep(tmp_path, "s", {**DATA_CONFIG, "budgets": [1, 2, 8]}, probs, policy)  # pool n=8, probe n=4
    probe_seeds = {seed for seed, n, step in policy.calls if n == 4 and not step}
    other_seeds = {seed for seed, n, step in policy.calls if not (n == 4 and not step)}
    assert len(probe_seeds) == 1 and not probe_seeds & other_seeds
    assert store.count("probes") == 2 * len(probs)  # the samples, and the PRM's scores of them


def test_tree_runs_have_replicas_and_dvts_with_one_subtree_is_the_beam_run(tmp_path):
    probs, policy = _problems(4)
    store, _ = _sweep(tmp_path, "s", DATA_CONFIG, probs, policy)
    df = store.outcomes(with_candidates=True)
    tree = df[df["method"].isin(["beam", "dvts"])]
    assert set(tree["replica"]) == {0, 1}
    assert set(df.loc[df["pooled"] == 1, "replica"]) == {0}
    beam = tree[tree["strategy"] == "beam:n=2,m=2,agg=last,vote=prm_vote,depth=4"].set_index(["problem_id", "replica"])
    dvts = tree[tree["strategy"] == "dvts:n=2,m=2,agg=last,vote=prm_vote,depth=4"].set_index(["problem_id", "replica"])
    assert (beam["answer"] == dvts["answer"]).all() and (beam["tokens"] == dvts["tokens"]).all()
    assert dvts["trace"].str.contains("same_run_as").all()
    assert not any(u.startswith("tree|coin|hash|dvts:n=2,") for u in store.done_units())


def test_a_pair_limited_to_its_first_problems_runs_only_those(tmp_path):
    from ttsopt.search.pairs import PAIRS

    cfg = config_from_dict({**CONFIG, "pairs": ["smollm2-135m+calc", {"pair": "smollm2-135m+judge", "max_problems": 4}]})
    assert cfg.problem_limit(PAIRS["smollm2-135m+judge"]) == 4 and cfg.problem_limit(PAIRS["smollm2-135m+calc"]) is None
    from ttsopt.train.sweep.units import plan_units

    units = plan_units(cfg, "smollm2-135m", ["calc", "judge:smollm2-135m"], 3, {"judge:smollm2-135m": 1})
    assert {u.chunk for u in units if u.prm == "judge:smollm2-135m"} == {0}
    assert {u.chunk for u in units if u.prm == "calc"} == {0, 1, 2}
    with pytest.raises(SweepConfigError, match="multiple of chunk_size"):
        config_from_dict({**CONFIG, "pairs": [{"pair": "smollm2-135m+judge", "max_problems": 3}]})


def test_a_sweep_resumes_from_its_snapshot_on_another_machine_without_redoing_a_unit(tmp_path):
    from ttsopt.train.sweep.snapshot import export_snapshot, import_snapshot, read_manifest, read_table

    probs, policy = _problems(8)
    clean, _ = _sweep(tmp_path, "clean", DATA_CONFIG, probs, policy)
    cfg = config_from_dict(DATA_CONFIG)
    first = OutcomeStore(tmp_path / "machine1.sqlite")
    _sweep(tmp_path, "m1", DATA_CONFIG, probs, policy, store=first, only_chunks=[0])
    snap = tmp_path / "snapshot"
    export_snapshot(first, snap)
    assert export_snapshot(first, snap)["shards"] == ["00000"]  # nothing new: no new shard
    second = OutcomeStore(tmp_path / "machine2.sqlite")
    assert import_snapshot(snap, second, fingerprint=cfg.fingerprint()) == len(first.done_units())
    assert import_snapshot(snap, second) == 0  # importing twice adds nothing
    racing = OutcomeStore(second.path)  # a driver that read the done units before the import landed
    racing.done_units = lambda: set()
    assert import_snapshot(snap, racing) == 0
    _, counts = _sweep(tmp_path, "m2", DATA_CONFIG, probs, policy, store=second)
    assert counts["skipped"] == len(first.done_units())
    assert _rows(second) == _rows(clean)
    features = tmp_path / "features.parquet"
    features.write_bytes(b"problem features, whatever the sweep wrote")
    export_snapshot(second, snap, features=features)
    assert (snap / "features.parquet").read_bytes() == features.read_bytes()  # travels with the snapshot
    manifest = read_manifest(snap)
    assert len(manifest["shards"]) == 2 and manifest["column_roles"]["oracle"] == ["pass_at_1", "difficulty",
                                                                                  "level", "kind"]
    assert len(read_table(snap, "outcomes")) == clean.count()
    with pytest.raises(Exception, match="fingerprint"):
        import_snapshot(snap, OutcomeStore(tmp_path / "m3.sqlite"), fingerprint="another")


def test_offline_probe_features_equal_the_online_probe_of_the_same_samples(tmp_path):
    import pandas as pd

    from ttsopt.selector.probe import probe_row, probe_seed, sample_probe, score_probe
    from ttsopt.train.sweep.snapshot import export_snapshot

    probs, policy = _problems(4)  # one chunk
    store, _ = _sweep(tmp_path, "s", DATA_CONFIG, probs, policy)
    offline = pd.read_parquet(export_snapshot(store, tmp_path / "snap") and tmp_path / "snap" / "probe_features.parquet")
    live = score_probe(HashPRM(), [p.question for p in probs],
                       sample_probe(policy, [p.question for p in probs], 4, temperature=0.7, max_tokens=256,
                                    seed=probe_seed(0, 99, 0)))
    for problem, probe in zip(probs, live):
        for k in (1, 2, 4):
            row = offline[(offline["problem_id"] == problem.id) & (offline["prm"] == "hash") & (offline["k"] == k)]
            assert len(row) == 1
            expected = probe_row(probe, k)
            for col, value in expected.items():
                got = row.iloc[0][col]
                assert (got == value) or (pd.isna(got) and pd.isna(value)), (problem.id, k, col)


def test_the_rest_of_the_budget_is_estimated_from_the_pools_as_the_sweep_estimates_its_own_budgets(tmp_path):
    """train/fit/rest.py: at a budget the sweep ran, the derived pooled rows are the sweep's rows exactly
    (label, tokens, FLOPs); at n = N - 1 it ran none, every pooled rule gets a row per problem."""
    import numpy as np

    from ttsopt.train.fit.labels import strategy_labels
    from ttsopt.train.fit.rest import rest_of_budget
    from ttsopt.train.sweep.snapshot import export_snapshot, read_table

    probs, policy = _problems(8)
    store, _ = _sweep(tmp_path, "s", DATA_CONFIG, probs, policy)
    snap = tmp_path / "snap"
    export_snapshot(store, snap)
    swept = strategy_labels(read_table(snap, "outcomes"))
    again = rest_of_budget(snap, ns=(2, 4)).merge(swept, on=["policy", "prm", "problem_id", "strategy"],
                                                  suffixes=("", "_sweep"))
    assert len(again) == len(probs) * 2 * 3  # 2 budgets x (majority + 2 Best-of-N votes)
    for col in ("label", "tokens", "flops"):
        assert np.allclose(again[col], again[f"{col}_sweep"], rtol=1e-12, atol=0), col
    rest = rest_of_budget(snap, ns=(3,))
    assert sorted(rest["strategy"].unique()) == ["best_of_n:n=3,agg=last,vote=prm_max",
                                                 "best_of_n:n=3,agg=last,vote=prm_vote", "majority:n=3"]
    assert len(rest) == len(probs) * 3 and rest["label"].between(0, 1).all()
    assert not rest["strategy"].isin(swept["strategy"]).any()


# -- drivers sharing a store: pairs, CoT rows, leases -------------------------------------------

TWO_PRMS = {**CONFIG, "pairs": [{"policy": "coin", "prm": "hash"}, {"policy": "coin", "prm": "hash2"}]}


def _two_prm_worker(cfg, prms, policy):
    from fakes import blake2b32

    every = {"hash": HashPRM(), "hash2": HashPRM(blake2b32)}
    return ChunkWorker(cfg, "coin", prms, policy=policy, prms={p: every[p] for p in prms})


def _two_prm_sweep(store, probs, policy, pairs=None, **kw):
    cfg = config_from_dict(TWO_PRMS)
    prms = [p.split("+")[1] for p in pairs] if pairs else ["hash", "hash2"]
    return run_sweep(cfg, store, probs, workers={"coin": _two_prm_worker(cfg, prms, policy)}, only_pairs=pairs, **kw)


def test_a_pair_limit_ends_at_its_last_chunk_for_prm_free_units_too():
    cfg = config_from_dict({**CONFIG, "chunk_size": 5, "pairs": [
        "smollm2-135m+calc", {"pair": "smollm2-135m+judge", "max_problems": 10}, "gemma3-270m+calc"]})
    assert cfg.pair_prms("smollm2-135m", 1) == ["calc", "judge:smollm2-135m"]
    assert cfg.pair_prms("smollm2-135m", 2) == ["calc"]
    assert cfg.pair_prms("gemma3-270m", 0) == ["calc"]


def test_drivers_given_one_pair_each_of_a_policy_write_every_pairs_cot_rows(tmp_path):
    """The CoT unit is the policy's, shared by its pairs: the first driver to reach it writes
    the CoT rows of both pairs, so the second, which finds it done, loses nothing."""
    probs, policy = _problems(6)
    clean = OutcomeStore(tmp_path / "clean.sqlite")
    _two_prm_sweep(clean, probs, policy)
    split = OutcomeStore(tmp_path / "split.sqlite")
    _two_prm_sweep(split, probs, policy, pairs=["coin+hash"])
    _two_prm_sweep(split, probs, policy, pairs=["coin+hash2"])
    assert _rows(split) == _rows(clean)
    cot = split.outcomes().query("method == 'cot'")
    assert sorted(cot.groupby("prm").size().items()) == [("hash", 6), ("hash2", 6)]
    cfg = config_from_dict(TWO_PRMS)
    with pytest.raises(ValueError, match="coin\\+nope not in t"):
        run_sweep(cfg, split, probs, workers={"coin": _two_prm_worker(cfg, ["hash"], policy)}, only_pairs=["coin+nope"])


def test_a_store_whose_cot_rows_lack_a_pair_gets_them_copied_in_a_unit_of_their_own(tmp_path):
    """What an older ttsopt left after drivers split by pair: the CoT unit done with one
    pair's rows. The next sweep copies them to the other pair (same answer, same compute)."""
    probs, policy = _problems(6)
    clean = OutcomeStore(tmp_path / "clean.sqlite")
    _two_prm_sweep(clean, probs, policy)
    old = OutcomeStore(tmp_path / "old.sqlite")
    _two_prm_sweep(old, probs, policy)
    old._db.execute("DELETE FROM outcomes WHERE method='cot' AND prm='hash2'")
    counts = _two_prm_sweep(old, probs, policy)
    assert counts["cot_rows"] == 2 and counts["done"] == 0  # two chunks (4 and 2 problems), nothing rerun
    assert {u for u in old.done_units() if u.startswith("cot_rows|")} == {
        "cot_rows|coin|hash2||0|0|0", "cot_rows|coin|hash2||0|1|0"}
    without_unit = lambda s: sorted(tuple(r) for r in s.outcomes(with_candidates=True).drop(
        columns=["created_at", "wall_time_s", "unit"]).astype(str).values.tolist())
    assert without_unit(old) == without_unit(clean)
    assert _two_prm_sweep(old, probs, policy)["cot_rows"] == 0  # once


def test_two_drivers_on_the_same_work_split_it_and_compute_no_unit_twice(tmp_path):
    import threading

    probs, policy = _problems(12)
    clean = OutcomeStore(tmp_path / "clean.sqlite")
    _two_prm_sweep(clean, probs, policy)
    path = tmp_path / "shared.sqlite"
    results = {}

    class Slow(CoinPolicy):  # a chunk takes long enough for the second driver to start on it
        def generate(self, prompts, params):
            time.sleep(0.01)
            return super().generate(prompts, params)

    slow = Slow(policy.p_right, policy.gold)

    def drive(name):
        with OutcomeStore(path) as db:
            results[name] = _two_prm_sweep(db, probs, slow, wait_s=0.01)

    threads = [threading.Thread(target=drive, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared = OutcomeStore(path)
    assert _rows(shared) == _rows(clean)
    assert results["a"]["dropped"] == results["b"]["dropped"] == 0
    assert results["a"]["done"] + results["b"]["done"] == len(shared.done_units())
    assert results["a"]["done"] > 0 and results["b"]["done"] > 0
    assert shared.leases() == {}  # every lease ended with its unit or its driver


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_lease_of_a_dead_driver_is_taken_over_and_one_from_another_host_waits_until_stale(tmp_path):
    import socket

    store = OutcomeStore(tmp_path / "l.sqlite")
    here = socket.gethostname()
    assert store.take(["u1", "u2"], f"{here}:{_dead_pid()}:x") == ["u1", "u2"]
    assert store.take(["u1"], "me") == ["u1"]  # its holder's process is gone
    assert store.take(["u2"], f"{here}:{os.getpid()}:y") == ["u2"]
    assert store.take(["u2"], "me") == []  # held by a live process on this host
    assert store.take(["u3"], "elsewhere:1:z") == ["u3"]
    assert store.take(["u3"], "me") == []
    assert store.take(["u3"], "me", stale_after_s=0.0) == ["u3"]  # no commit from it for too long
    store.commit_unit("u3")
    assert store.take(["u3"], "other") == [] and "u3" not in store.leases()  # done ends the lease


def test_units_that_need_a_pool_another_driver_is_drawing_wait_for_it(tmp_path):
    from ttsopt.train.sweep.units import chunk_jobs, chunks, take_job
    from ttsopt.train.sweep.driver import plan_sweep

    probs, policy = _problems(4)
    cfg = config_from_dict(CONFIG)
    store = OutcomeStore(tmp_path / "w.sqlite")
    store.add_problems(probs)
    units = plan_sweep(cfg, len(probs))["coin"]
    job = next(chunk_jobs(cfg, store, "coin", units, chunks(probs, 4), set()))
    pool = job.units[0]
    assert pool.kind == "pool" and store.take([pool.key], f"{socket_host()}:{os.getpid()}:other") == [pool.key]
    run, waiting = take_job(store, job, "me")
    assert run is None and waiting == len(job.units) - 1
    assert set(store.leases()) == {pool.key}  # the waiting units' leases were handed back
    worker = ChunkWorker(cfg, "coin", ["hash"], policy=policy, prms={"hash": HashPRM()})
    unit, rows = next(worker.run_units(job.problems, [pool]))
    store.commit_unit(unit.key, **rows)  # the other driver lands its pool
    run, waiting = take_job(store, job, "me")
    assert waiting == 0 and run.units == job.units[1:] and set(run.pools) == {p.id for p in probs}


def test_a_chunk_waiting_on_a_dead_drivers_pool_takes_the_pool_over(tmp_path):
    from ttsopt.train.sweep.units import chunk_jobs, chunks, take_job
    from ttsopt.train.sweep.driver import plan_sweep

    probs, _ = _problems(4)
    cfg = config_from_dict(CONFIG)
    store = OutcomeStore(tmp_path / "w.sqlite")
    units = plan_sweep(cfg, len(probs))["coin"]
    job = next(chunk_jobs(cfg, store, "coin", units, chunks(probs, 4), set()))
    store.take([job.units[0].key], f"{socket_host()}:{_dead_pid()}:gone")
    run, waiting = take_job(store, job, "me")
    assert waiting == 0 and run.units == job.units


def socket_host() -> str:
    import socket

    return socket.gethostname()


def test_a_sweep_without_embeddings_keeps_those_the_features_file_has_for_the_same_questions(tmp_path):
    import numpy as np
    import pandas as pd

    from ttsopt.selector.features import problem_features
    from ttsopt.train.sweep.driver import write_problem_features

    probs, _ = _problems(3)
    with_emb = problem_features(probs).assign(raw_emb_0=[0.1, 0.2, 0.3], raw_emb_1=[1.0, 2.0, 3.0])
    with_emb.reset_index().to_parquet(tmp_path / "features.parquet", index=False)
    kept = pd.read_parquet(write_problem_features(probs, tmp_path, embeddings=False)).set_index("problem_id")
    assert np.allclose(kept["raw_emb_1"], [1.0, 2.0, 3.0])
    other = [Problem(p.id, p.question + " Show your work.", p.answer, p.source, p.metadata) for p in probs]
    fresh = pd.read_parquet(write_problem_features(other, tmp_path, embeddings=False))
    assert not [c for c in fresh.columns if c.startswith("raw_emb_")]  # other questions: not theirs


def test_progress_bars_count_the_units_other_drivers_finished(tmp_path):
    from ttsopt.train.sweep.driver import _sync_progress, plan_sweep
    from ttsopt.train.sweep.units import progress_group

    cfg = config_from_dict(CONFIG)
    units = plan_sweep(cfg, 8)["coin"]
    store = OutcomeStore(tmp_path / "p.sqlite")
    for u in units[:3]:  # committed by another driver
        store.commit_unit(u.key)
    seen = {}

    class Bars:
        def update(self, name, completed):
            seen[name] = completed

    _sync_progress(Bars(), {"coin": units}, store)
    assert sum(seen.values()) == 3 and seen[progress_group(units[0])] >= 1
    _sync_progress(object(), {"coin": units}, store)  # a progress object without update is left alone


def test_drivers_sharing_the_cores_with_all_threads_each_are_warned(tmp_path, monkeypatch, caplog):
    from ttsopt.train.sweep.driver import oversubscription

    assert oversubscription(1, 2, 2) is None  # one driver may use every core
    assert oversubscription(2, 1, 2) is None
    assert "--threads 1" in oversubscription(2, 2, 2)
    assert "--threads 4" in oversubscription(2, 16, 8)

    probs, policy = _problems(4)
    store = OutcomeStore(tmp_path / "t.sqlite")
    store.take(["held-by-another-driver"], f"{socket_host()}:{os.getpid()}:other")  # alive: this process
    store.take(["held-by-a-dead-one"], f"{socket_host()}:{_dead_pid()}:gone")
    assert store.live_drivers_here(exclude="me") == {f"{socket_host()}:{os.getpid()}:other"}
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("TTSOPT_NUM_THREADS", raising=False)
    with caplog.at_level("WARNING", logger="ttsopt.train.sweep.driver"):
        _sweep(tmp_path, "t", CONFIG, probs, policy, store=store)
    assert [r.message for r in caplog.records if "oversubscribed" in r.message] != []

    caplog.clear()
    monkeypatch.setenv("TTSOPT_NUM_THREADS", "1")
    store2 = OutcomeStore(tmp_path / "t2.sqlite")
    store2.take(["held-by-another-driver"], f"{socket_host()}:{os.getpid()}:other")
    with caplog.at_level("WARNING", logger="ttsopt.train.sweep.driver"):
        _sweep(tmp_path, "t2", CONFIG, probs, policy, store=store2)
    assert not [r for r in caplog.records if "oversubscribed" in r.message]


def test_sweep_threads_option_sets_the_engines_thread_count(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ttsopt.cli import app

    monkeypatch.setenv("TTSOPT_NUM_THREADS", "7")  # restored after the test: the CLI sets it for its process
    seen = {}

    def fake_run_sweep(*args, **kwargs):
        seen["threads"] = os.environ.get("TTSOPT_NUM_THREADS")
        raise SystemExit(0)

    monkeypatch.setattr("ttsopt.train.sweep.driver.run_sweep", fake_run_sweep)
    result = CliRunner().invoke(app, ["sweep", "arith-smoke", "--store", str(tmp_path / "s.sqlite"),
                                      "--threads", "1", "--no-embeddings"])
    assert seen == {"threads": "1"}, result.output
    bad = CliRunner().invoke(app, ["sweep", "arith-smoke", "--threads", "0"])
    assert bad.exit_code == 2
