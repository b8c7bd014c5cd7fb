"""The online router: budgets, decisions, the probe and its reuse, solving, errors, the CLI, and that the
features it computes online are the ones the selector was trained on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import router_fixtures as rf
from fakes import LevelPolicy

from ttsopt.data import Problem
from ttsopt.search.registry import load_prm
from ttsopt.selector.artifact import write_manifest
from ttsopt.selector.router import Budget, Router, RouterError

Q = "What is 12 + 30?"
QS = ["What is 3 * 4?", "What is 5 + 6 * 7?", Q, "What is 81 + 9?"]


@pytest.fixture
def router(tmp_path):
    return rf.tiny_router(tmp_path)


@pytest.fixture
def plain(tmp_path):
    """The tiny router without a probe (text + embedding only)."""
    return rf.tiny_router(tmp_path, probe=False, name="tiny-noprobe")


# --------------------------------------------------------------------------- budgets


@pytest.mark.parametrize("kwargs,match", [({}, "exactly one"), ({"n": 2, "tokens": 5}, "exactly one"),
                                          ({"n": 0}, "n must be"), ({"n": 2.5}, "n must be"),
                                          ({"tokens": -1}, "tokens must"), ({"flops": float("nan")}, "flops must"),
                                          ({"target_accuracy": 1.5}, r"\[0, 1\]")])
def test_a_bad_budget_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Budget(**kwargs)


def test_budget_kinds_and_json():
    assert Budget(n=4).kind == "n" and Budget(tokens=10).to_dict() == {"tokens": 10}
    assert Budget(target_accuracy=0.5).value == 0.5


# --------------------------------------------------------------------------- decisions


def test_an_n_budget_only_allows_strategies_with_n_within_it(plain):
    for n in (1, 2, 4):
        d = plain.route(Q, Budget(n=n))
        assert d.strategy is not None
        assert d.chosen.n <= n
        assert {c.strategy for c in d.candidates if c.fits} == {c.strategy for c in d.candidates if c.n <= n}
        best = max(c.predicted_accuracy for c in d.candidates if c.fits)
        assert d.predicted_accuracy == pytest.approx(best, abs=1e-12)


def test_a_token_budget_charges_the_probe_and_never_overspends(router):
    d = router.route(Q, Budget(tokens=1e9))
    probe_tokens = d.probe["tokens"]
    assert probe_tokens > 0 and d.probe["k"] == rf.PROBE_K
    for c in d.candidates:
        if c.reuses_probe:  # the probe's samples are part of its N: only the rest is new
            assert c.total_tokens < c.tokens + probe_tokens
        else:
            assert c.total_tokens == pytest.approx(c.tokens + probe_tokens)
    budget = sorted(c.total_tokens for c in d.candidates)[2]
    tight = router.route(Q, Budget(tokens=budget))
    assert tight.chosen.total_tokens <= budget
    assert all(c.fits == (c.total_tokens <= budget) for c in tight.candidates)
    assert router.route(Q, Budget(tokens=1)).strategy is None  # not even the probe fits


def test_a_flops_budget(plain):
    d = plain.route(Q, Budget(flops=1e18))
    cheapest = min(c.total_flops for c in d.candidates)
    d = plain.route(Q, Budget(flops=cheapest))
    assert d.strategy is not None and d.chosen.total_flops == cheapest


def test_target_mode_picks_the_cheapest_strategy_that_reaches_it(plain):
    d = plain.route(Q, Budget(target_accuracy=0.0))
    assert d.reached is True
    assert d.chosen.total_tokens == min(c.total_tokens for c in d.candidates)
    d = plain.route(Q, Budget(target_accuracy=1.0))
    assert d.reached is False  # nothing is predicted perfect: the best one is returned, flagged
    assert d.predicted_accuracy == max(c.predicted_accuracy for c in d.candidates)


def test_a_decision_is_json_and_names_its_inputs(router):
    d = router.route(Q, Budget(n=4))
    blob = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert blob["question_key"] == d.question_key and blob["pair"] == "scripted+calc"
    assert {"txt_chars", "emb_0", "emb_1", "probe_agreement"} <= set(d.features)
    assert len(blob["candidates"]) == len(rf.STRATEGIES)
    assert d.seconds > 0


def test_route_many_is_route_for_each_question(plain):
    many = plain.route_many(QS, Budget(n=4))
    for q, d in zip(QS, many):
        one = plain.route(q, Budget(n=4))
        assert (one.strategy, one.predicted_accuracy) == (d.strategy, d.predicted_accuracy)
        assert one.features == pytest.approx(d.features, rel=1e-12, abs=1e-15)  # BLAS: batch shape moves ULPs


def test_the_fast_path_predicts_exactly_what_the_pandas_path_does(router):
    questions = rf.questions(30, seed=5)
    raw = router._raw_embeddings(questions)
    probes = router._probes(questions)
    block = router._question_block(questions, raw, probes)
    fast = router.predict(block)
    for i, q in enumerate(questions):
        frame = router.model_frame(q, raw[i], probes[i].row)
        assert np.array_equal(router.model_inputs(block[i:i + 1]), frame.apply(
            lambda c: c.cat.codes.astype(float).where(c.cat.codes >= 0) if str(c.dtype) == "category" else c
        ).to_numpy(dtype=float), equal_nan=True)
        assert np.array_equal(fast[i], router.booster.predict(frame))


def test_allocate_spends_within_the_total(plain):
    questions = rf.questions(9, seed=3)
    alone = plain.route_many(questions, Budget(tokens=1e9))
    floor = sum(min(c.total_tokens for c in d.candidates) for d in alone)
    total = floor * 1.6
    decisions = plain.allocate(questions, Budget(tokens=total))
    assert sum(d.chosen.total_tokens for d in decisions) <= total
    assert sum(d.predicted_accuracy for d in decisions) >= sum(
        next(c for c in d.candidates if c.total_tokens == min(x.total_tokens for x in d.candidates)).predicted_accuracy
        for d in alone) - 1e-12
    gens = plain.allocate(questions, Budget(n=len(questions) * 2))
    assert sum(d.chosen.n for d in gens) <= len(questions) * 2
    with pytest.raises(RouterError, match="below the minimum"):
        plain.allocate(questions, Budget(tokens=floor / 2))
    with pytest.raises(RouterError, match="target"):
        plain.allocate(questions, Budget(target_accuracy=0.5))


# --------------------------------------------------------------------------- the probe and its reuse


def test_the_probe_runs_with_the_manifests_k_and_seed(router):
    policy = router.policy
    router.route(Q, Budget(n=4))
    prompts, params = policy.calls[-1]
    assert params.n == rf.PROBE_K and params.temperature == rf.SEARCH["temperature"]
    assert params.max_tokens == rf.SEARCH["max_tokens"] and prompts == [policy.format_prompt(Q)]
    from ttsopt.selector.probe import probe_seed

    assert params.seed == router.route(Q, Budget(n=4)).probe["seed"]
    assert params.seed != probe_seed(0, rf.PROBE_SEED + 1, 0)


class CountingPRM:
    """The calculator PRM, counting the steps it is asked to score."""

    def __init__(self):
        self.inner = load_prm("calc")
        self.name, self.num_parameters, self.items = "calc", 0, 0

    def score(self, items):
        self.items += len(items)
        return self.inner.score(items)


@pytest.mark.parametrize("key,new", [("majority:n=1", 0), ("majority:n=2", 0), ("majority:n=4", 2),
                                     ("best_of_n:n=4,agg=min,vote=prm_vote", 2)])
def test_pooled_strategies_reuse_the_probes_samples(tmp_path, key, new):
    prm = CountingPRM()
    router = rf.tiny_router(tmp_path, prm=prm)
    # force the strategy: a budget of exactly its expected cost, with everything else predicted worse
    d = router.route(Q, Budget(n=4))
    probes = router._probes([Q])
    calls_before, scored_before = len(router.policy.calls), prm.items
    (answer, trace, compute), = router._run_reusing([Q], probes, router.strategies[router.keys.index(key)],
                                                    router._search_settings())
    new_calls = router.policy.calls[calls_before:]
    assert trace["reused_probe_samples"] == min(int(key.split("n=")[1].split(",")[0]), rf.PROBE_K)
    assert len(trace["candidates"]) == int(key.split("n=")[1].split(",")[0])
    if new:
        assert len(new_calls) == 1 and new_calls[0][1].n == new
        assert compute["generated_tokens"] > 0 and compute["prompt_tokens"] == 0  # the probe paid the prompt
    else:
        assert not new_calls and compute["tokens"] == 0
    if key.startswith("best_of_n"):
        # only the new samples are scored: the probe's step scores are reused
        assert prm.items - scored_before == sum(1 for c in trace["candidates"][rf.PROBE_K:] if c["step_scores"])
        assert all(c["score"] is not None for c in trace["candidates"])
    assert answer is not None and d.probe is not None


def test_solve_reuses_the_probe_and_counts_all_it_spent(router):
    s = router.solve(Q, Budget(n=4))
    d = s.decision
    assert s.answer == "42" and d.strategy is not None
    assert s.compute["probe"]["tokens"] == d.probe["tokens"]
    assert s.compute["tokens"] == s.compute["search"]["tokens"] + d.probe["tokens"]
    assert s.compute["flops"] == pytest.approx(s.compute["search"]["flops"] + d.probe["flops"])
    if d.chosen.reuses_probe:
        assert s.trace["reused_probe_samples"] == d.chosen.reuses_probe
    json.dumps(s.to_dict(), allow_nan=False)


def test_without_reuse_the_search_runs_from_scratch(tmp_path):
    router = rf.tiny_router(tmp_path, reuse_probe=False)
    d = router.route(Q, Budget(n=4))
    assert all(c.reuses_probe == 0 for c in d.candidates)
    assert all(c.total_tokens == pytest.approx(c.tokens + d.probe["tokens"]) for c in d.candidates)
    s = router.solve(Q, Budget(n=4))
    assert s.trace["reused_probe_samples"] == 0 and s.compute["search"]["prompt_tokens"] > 0


def test_solve_many_runs_coinciding_strategies_as_one_call(plain):
    from ttsopt.search.strategy import Strategy

    questions = [q for q in rf.questions(24, seed=9) if "*" not in q]  # alike: mostly one strategy
    decisions = plain.route_many(questions, Budget(n=4))
    methods = {d.strategy: Strategy.from_key(d.strategy).method for d in decisions}
    assert len(methods) < len(questions)
    policy = plain.policy
    before = len(policy.calls)
    sols = plain.solve_many(questions, Budget(n=4))
    assert [s.decision.strategy for s in sols] == [d.strategy for d in decisions]
    sampling = sum(1 for m in methods.values() if m in ("cot", "majority", "best_of_n"))
    trees = len(methods) - sampling
    # one generate call per distinct strategy (a tree search: one per depth), whatever the number of questions
    assert sampling + trees <= len(policy.calls) - before <= sampling + trees * rf.SEARCH["max_depth"]
    assert all(s.answer is None or s.answer.isdigit() for s in sols)
    # one budget per question
    mixed = plain.solve_many(questions[:2], [Budget(n=1), Budget(n=4)])
    assert mixed[0].decision.chosen.n <= 1 and mixed[1].decision.budget == Budget(n=4)


def test_nothing_fits_answers_with_the_probe_majority(router):
    s = router.solve(Q, Budget(tokens=1))
    assert s.decision.strategy is None
    assert s.trace["fallback"].startswith("nothing fits") and s.compute["search"]["tokens"] == 0


# --------------------------------------------------------------------------- errors


def test_unknown_pair_and_a_multi_pair_router(tmp_path):
    router = rf.tiny_router(tmp_path)
    with pytest.raises(RouterError, match="unknown pair 'x\\+calc'.*scripted\\+calc"):
        Router.load(router.path, pair="x+calc", policy=rf.ScriptedPolicy(), prm=load_prm("calc"))
    manifest = json.loads((router.path / "manifest.json").read_text())
    manifest["catalogue"]["other+calc"] = manifest["catalogue"]["scripted+calc"]
    write_manifest(router.path, manifest)  # re-sealed: an edited manifest is refused by its digest
    with pytest.raises(RouterError, match="2 pairs.*other\\+calc"):
        Router.load(router.path)


class OtherPolicy(rf.ScriptedPolicy):
    name = "smollm2-135m"


class BiggerPolicy(rf.ScriptedPolicy):
    num_parameters = rf.POLICY_PARAMS * 2


class JudgeLike:
    name, num_parameters = "judge:smollm2-135m", 134_515_008

    def score(self, items):
        raise AssertionError("never called")


def test_an_artifact_for_another_policy_or_prm_is_refused(tmp_path):
    path = rf.tiny_router(tmp_path).path
    with pytest.raises(RouterError, match="trained for the policy 'scripted'.*'smollm2-135m'"):
        Router.load(path, policy=OtherPolicy())
    with pytest.raises(RouterError, match="2000000 parameters"):
        Router.load(path, policy=BiggerPolicy())
    with pytest.raises(RouterError, match="trained for the PRM 'calc'"):
        Router.load(path, policy=rf.ScriptedPolicy(), prm=JudgeLike())


def test_a_missing_model_is_a_clear_error(tmp_path, monkeypatch):
    from ttsopt.search.engines.models import ModelNotInstalledError

    def not_installed(spec, **kw):
        raise ModelNotInstalledError(f"model preset {spec!r} is not installed; run:\n  pip install ...")

    monkeypatch.setattr("ttsopt.search.registry.load_policy", not_installed)
    router = Router.load(rf.tiny_router(tmp_path).path, prm=load_prm("calc"), encoder=rf.fake_encoder)
    with pytest.raises(RouterError, match="cannot load its policy 'scripted'.*not installed"):
        router.route(Q, Budget(n=4))  # the probe needs the policy
    # a spec the registry does not know is a RouterError too (no model was injected)
    monkeypatch.undo()
    router = Router.load(rf.tiny_router(tmp_path).path, prm=load_prm("calc"), encoder=rf.fake_encoder)
    with pytest.raises(RouterError, match="cannot load its policy"):
        router.solve(Q, Budget(n=4))


def test_an_artifact_without_search_settings_routes_but_cannot_solve(tmp_path):
    router = rf.tiny_router(tmp_path, probe=False, name="old")
    manifest = json.loads((router.path / "manifest.json").read_text())
    del manifest["search"]
    write_manifest(router.path, manifest)  # re-sealed: an edited manifest is refused by its digest
    old = Router.load(router.path, policy=rf.ScriptedPolicy(), prm=load_prm("calc"), encoder=rf.fake_encoder)
    assert old.route(Q, Budget(n=4)).strategy is not None
    with pytest.raises(RouterError, match="does not record how pair scripted\\+calc's searches ran.*retrain"):
        old.solve(Q, Budget(n=4))
    given = Router.load(router.path, policy=rf.ScriptedPolicy(), prm=load_prm("calc"), encoder=rf.fake_encoder,
                        search=rf.search_settings(False)["scripted+calc"])
    assert given.solve(Q, Budget(n=4)).answer == "42"


def test_bad_inputs_are_router_errors(router):
    with pytest.raises(RouterError, match="Budget"):
        router.route(Q, 4)
    with pytest.raises(RouterError, match="non-empty string"):
        router.route("  ", Budget(n=4))
    with pytest.raises(RouterError, match="one string"):
        router.route_many(Q, Budget(n=4))
    with pytest.raises(RouterError, match="2 budgets for 1"):
        router.solve_many([Q], [Budget(n=1), Budget(n=2)])
    with pytest.raises(RouterError, match="engine"):
        Router.load(router.path, engine="tpu")


def test_an_encoder_of_another_size_is_refused(tmp_path):
    path = rf.tiny_router(tmp_path, probe=False, name="p").path
    router = Router.load(path, encoder=lambda texts: np.ones((len(texts), 7), dtype=np.float32))
    with pytest.raises(RouterError, match="7-d vectors.*16-d"):
        router.route(Q, Budget(n=4))


# --------------------------------------------------------------------------- online features = offline features


CONFIG = {"name": "route", "problems": "builtin:arith", "pairs": [{"policy": "levels", "prm": "calc"}],
          "methods": {"cot": {}, "majority": {}, "best_of_n": {"agg": ["min"], "vote": ["prm_vote"]},
                      "beam": {"m": [2]}},
          "budgets": [1, 2, 4], "n_subsets": 4, "chunk_size": 6, "max_depth": 3, "probe": {"k": 4, "seed": 7},
          "sampling": {"max_tokens": 48, "step_max_tokens": 24, "temperature": 0.6}}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny real sweep's snapshot, its training table, and a router trained on it by the real code."""
    from ttsopt.selector.features import Embedder, problem_features
    from ttsopt.train.fit.build import search_settings, write_router
    from ttsopt.train.sweep.config import config_from_dict
    from ttsopt.train.sweep.snapshot import export_snapshot
    from ttsopt.train.sweep.store import OutcomeStore
    from ttsopt.train.sweep.driver import run_sweep
    from ttsopt.train.fit.table import load_training_table
    from ttsopt.train.fit.tuning import TrainSettings, fit_fixed
    from ttsopt.train.sweep.units import ChunkWorker

    tmp = tmp_path_factory.mktemp("route")
    problems = [Problem(f"p{i}", f"How much is {i} plus {i} {'and more ' * (i % 3)}?", str(2 * i), "test",
                        {"level": 1 + i % 3}) for i in range(18)]
    cfg = config_from_dict(CONFIG)
    with OutcomeStore(tmp / "s.sqlite") as store:
        run_sweep(cfg, store, problems, workers={"levels": ChunkWorker(cfg, "levels", ["calc"],
                                                                       policy=LevelPolicy(problems, logprob=-2.0),
                                                                       prms={"calc": load_prm("calc")})})
        export_snapshot(store, tmp / "snap")
    # features.parquet as `ttsopt sweep` writes it, with the fake encoder in MiniLM's place
    frame = problem_features(problems)
    raw = Embedder(rf.fake_encoder, "fake").embed(problems)
    emb = pd.DataFrame(raw, index=frame.index, columns=[f"raw_emb_{i}" for i in range(raw.shape[1])])
    pd.concat([frame, emb], axis=1).reset_index().to_parquet(tmp / "snap" / "features.parquet", index=False)
    settings = TrainSettings(trials=0, n_components=3, probe_k=2)
    table = load_training_table([tmp / "snap"], probe_k=2)
    fit = fit_fixed(table, settings, rf.FIT_PARAMS, 30)
    manifest = write_router(table, tmp / "router", settings, search=search_settings([tmp / "snap"], table, settings),
                            snapshots=[tmp / "snap"], fit=fit)
    return problems, table, tmp / "router", manifest


def test_build_records_how_the_searches_ran(swept):
    _, _, _, manifest = swept
    s = manifest["search"]["levels+calc"]
    assert (s["temperature"], s["max_tokens"], s["step_max_tokens"], s["max_depth"]) == (0.6, 48, 24, 3)
    assert s["probe"] == {"k": 2, "sweep_k": 4, "seed": 7} and s["engine"] == "transformers"
    assert s["models"]["policy"] == {"name": "levels", "num_parameters": 1000}
    assert s["models"]["prm"] == {"name": "calc", "num_parameters": 0}
    entry = manifest["catalogue"]["levels+calc"]
    assert entry["policy_params"] == 1000 and all("generated_tokens" in x for x in entry["strategies"])


def test_online_features_equal_the_training_tables_for_the_training_problems(swept):
    problems, table, path, _ = swept
    router = Router.load(path, policy=LevelPolicy(problems, logprob=-2.0), prm=load_prm("calc"),
                         encoder=rf.fake_encoder)
    for p in problems:
        rows = table[table["problem_id"] == p.id].set_index("strategy").loc[router.keys].reset_index()
        offline = router.pipeline.transform(rows)
        raw = router._raw_embeddings([p.question])  # computed online, from the text alone
        probe = rows.iloc[0][list(router._probe_cols) + ["probe_cost_tokens", "probe_cost_flops"]].to_dict()
        online = router.model_frame(p.question, raw[0], probe)
        pd.testing.assert_frame_equal(online.reset_index(drop=True), offline.reset_index(drop=True))
        # and the fast path gives the model exactly the offline predictions
        block = router._question_block([p.question], raw, [type("P", (), {"row": probe})()])
        assert np.array_equal(router.predict(block)[0], router.booster.predict(offline))


def test_online_probe_columns_come_from_the_shared_probe_code(swept):
    problems, table, path, _ = swept
    router = Router.load(path, policy=LevelPolicy(problems, logprob=-2.0), prm=load_prm("calc"),
                         encoder=rf.fake_encoder)
    d = router.route(problems[0].question, Budget(n=4))
    from ttsopt.selector.probe import PROBE_COST_COLUMNS

    assert d.probe["k"] == 2 and len(d.probe["answers"]) == 2
    assert set(d.features) >= set(router._probe_cols)
    # what the sweep stored for k=2 is in the same ranges: same columns, same meaning
    stored = table[table["problem_id"] == problems[0].id].iloc[0]
    assert d.features["probe_tokens_mean"] == stored["probe_tokens_mean"] == 11.0
    assert set(PROBE_COST_COLUMNS) <= set(table.columns)


@pytest.mark.slow
def test_online_minilm_features_equal_the_arith_embedded_table():
    """The real MiniLM (installed, offline): online text statistics and embeddings of arith-embedded's
    problems equal the stored features.parquet; a router fitted on them predicts the offline values."""
    import tempfile

    from ttsopt.train.fit.build import write_router
    from ttsopt.train.fit.table import load_training_table
    from ttsopt.train.fit.tuning import TrainSettings, fit_fixed

    folder = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "arith-embedded"
    table = load_training_table([folder])
    table = table[(table["policy"] == "smollm2-135m") & (table["prm"] == "calc")].reset_index(drop=True)
    settings = TrainSettings(trials=0, n_components=8)
    out = Path(tempfile.mkdtemp()) / "r"
    write_router(table, out, settings, search={}, fit=fit_fixed(table, settings, rf.FIT_PARAMS, 20))
    router = Router.load(out)
    questions = pd.read_parquet(folder / "problems.parquet").set_index("problem_id")["question"]
    ids = list(table["problem_id"].unique()[:12])
    raw_online = router._raw_embeddings([questions[i] for i in ids])
    for j, pid in enumerate(ids):
        rows = table[table["problem_id"] == pid].set_index("strategy").loc[router.keys].reset_index()
        offline = router.pipeline.transform(rows)
        stored_raw = rows.iloc[0][[f"raw_emb_{i}" for i in range(384)]].to_numpy(dtype=np.float32)
        assert np.abs(raw_online[j] - stored_raw).max() < 1e-5
        online = router.model_frame(questions[pid], raw_online[j], None)
        pd.testing.assert_frame_equal(online[[c for c in online if not c.startswith("emb_")]].reset_index(drop=True),
                                      offline[[c for c in offline if not c.startswith("emb_")]].reset_index(drop=True))
        emb = [c for c in online if c.startswith("emb_")]
        assert np.allclose(online[emb].to_numpy(), offline[emb].to_numpy(), atol=1e-5)
        exact = router.predict(router._question_block([questions[pid]], stored_raw[None, :], None))[0]
        assert np.array_equal(exact, router.booster.predict(offline))


# --------------------------------------------------------------------------- the command line


def _out(res) -> str:
    """The command's output with rich's line wrapping undone (paths are long)."""
    return " ".join(res.output.split())


def _cli(monkeypatch, probe: bool = True):
    """The CLI with Router.load injecting the scripted models (the real loader would need real ones)."""
    from typer.testing import CliRunner

    from ttsopt.cli import app

    real = Router.load.__func__

    def load(cls, path, **kw):
        kw.pop("policy_spec", None), kw.pop("prm_spec", None)
        return real(cls, path, policy=rf.ScriptedPolicy(), prm=load_prm("calc"), encoder=rf.fake_encoder, **kw)

    monkeypatch.setattr(Router, "load", classmethod(load))
    return CliRunner(), app


def test_cli_route_prints_the_decision_table(tmp_path, monkeypatch):
    path = rf.tiny_router(tmp_path).path
    runner, app = _cli(monkeypatch)
    res = runner.invoke(app, ["route", Q, "--router", str(path), "--budget", "4"])
    assert res.exit_code == 0, res.output
    d = Router.load(path).route(Q, Budget(n=4))
    assert "→" in _out(res) and d.strategy.split(",")[0] in _out(res) and "probe: k=2" in _out(res)
    for c in d.candidates:
        assert f"{c.predicted_accuracy:.3f}" in _out(res)
    res = runner.invoke(app, ["route", Q, "--router", str(path), "--target", "0.5", "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["budget"] == {"target_accuracy": 0.5}


def test_cli_solve_prints_the_answer(tmp_path, monkeypatch):
    path = rf.tiny_router(tmp_path).path
    runner, app = _cli(monkeypatch)
    res = runner.invoke(app, ["solve", Q, "--router", str(path), "--tokens", "500"])
    assert res.exit_code == 0, res.output
    assert "answer: 42" in _out(res)


def test_cli_files_route_and_solve_with_resume(tmp_path, monkeypatch):
    path = rf.tiny_router(tmp_path).path
    runner, app = _cli(monkeypatch)
    src = tmp_path / "q.jsonl"
    src.write_text("".join(json.dumps({"id": f"x{i}", "question": q}) + "\n" for i, q in enumerate(QS)) + "\n")
    out = tmp_path / "d.jsonl"
    res = runner.invoke(app, ["route", "--file", str(src), "--out", str(out), "--router", str(path), "--budget", "4",
                              "--batch", "3"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["x0", "x1", "x2", "x3"] and all(x["strategy"] for x in lines)
    res = runner.invoke(app, ["route", "--file", str(src), "--out", str(out), "--router", str(path), "--budget", "4"])
    assert res.exit_code == 2 and "--resume" in _out(res)
    with src.open("a") as fh:
        fh.write(json.dumps({"id": "x4", "question": "What is 2 + 2?"}) + "\n")
    res = runner.invoke(app, ["route", "--file", str(src), "--out", str(out), "--router", str(path), "--budget", "4",
                              "--resume"])
    assert res.exit_code == 0 and "1 question(s) routed" in _out(res)
    assert len(out.read_text().splitlines()) == 5
    solved = tmp_path / "s.jsonl"
    res = runner.invoke(app, ["solve", "--file", str(src), "--out", str(solved), "--router", str(path), "--budget",
                              "2"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(x) for x in solved.read_text().splitlines()]
    assert rows[2]["answer"] == "42" and rows[2]["decision"]["strategy"] and rows[2]["compute"]["tokens"] > 0


def test_cli_a_bad_line_is_named_by_file_and_line(tmp_path, monkeypatch):
    path = rf.tiny_router(tmp_path).path
    runner, app = _cli(monkeypatch)
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"question": Q}) + "\n\n{not json\n")
    res = runner.invoke(app, ["route", "--file", str(src), "--out", str(tmp_path / "o.jsonl"), "--router", str(path),
                              "--budget", "4"])
    assert res.exit_code == 2 and "bad.jsonl:3: not valid JSON" in _out(res)
    src.write_text(json.dumps({"text": Q}) + "\n")
    res = runner.invoke(app, ["route", "--file", str(src), "--out", str(tmp_path / "o.jsonl"), "--router", str(path),
                              "--budget", "4"])
    assert res.exit_code == 2 and "bad.jsonl:1: no \"question\" field" in _out(res)
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_errors_are_clear(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ttsopt.cli import app

    path = rf.tiny_router(tmp_path).path
    runner = CliRunner()
    res = runner.invoke(app, ["route", Q, "--router", str(path)])
    assert res.exit_code == 2 and "exactly one" in _out(res)
    res = runner.invoke(app, ["route", Q, "--router", str(path), "--budget", "4", "--tokens", "9"])
    assert res.exit_code == 2 and "exactly one" in _out(res)
    res = runner.invoke(app, ["route", Q, "--router", str(tmp_path / "nowhere"), "--budget", "4"])
    assert res.exit_code == 2 and "no manifest.json" in _out(res)
    res = runner.invoke(app, ["route", Q, "--router", str(path), "--budget", "4", "--pair", "a+b"])
    assert res.exit_code == 2 and "unknown pair" in _out(res)
    # no model injected: the scripted policy cannot be loaded from its spec, which is said plainly
    res = runner.invoke(app, ["route", Q, "--router", str(path), "--budget", "4"])
    assert res.exit_code == 2 and "cannot load its policy 'scripted'" in _out(res)
    assert "Traceback" not in _out(res)


# --------------------------------------------------------------------------- the embedding cache and the fast entry


def test_the_embedding_cache_is_bounded_and_changes_nothing(tmp_path):
    calls = []

    def encoder(texts):
        calls.append(list(texts))
        return rf.fake_encoder(texts)

    cached = rf.tiny_router(tmp_path, probe=False, name="c", encoder=encoder, embedding_cache=2)
    uncached = rf.tiny_router(tmp_path, probe=False, name="c", embedding_cache=0)
    for q in QS + QS[:1]:
        assert cached.route(q, Budget(n=4)).features == uncached.route(q, Budget(n=4)).features
    assert len(cached._emb_cache) == 2 and not uncached._emb_cache
    assert sum(len(c) for c in calls) == len(QS) + 1  # QS[0] was evicted (LRU of 2) and encoded again
    cached.route(QS[-1], Budget(n=4))
    assert sum(len(c) for c in calls) == len(QS) + 1  # the most recent one is still cached


def test_route_features_takes_precomputed_inputs(plain, router):
    block, probes = plain.question_features(QS)
    assert [d.strategy for d in plain.route_features(QS, block, Budget(n=4))] == \
        [d.strategy for d in plain.route_many(QS, Budget(n=4))]
    with pytest.raises(RouterError, match="features must be"):
        plain.route_features(QS, block[:, :3], Budget(n=4))
    block, probes = router.question_features([Q])
    with pytest.raises(RouterError, match="probes"):
        router.route_features([Q], block, Budget(n=4))
    assert router.route_features([Q], block, Budget(n=4), probes)[0].probe["k"] == rf.PROBE_K
