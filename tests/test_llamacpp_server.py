"""``OpenAIPolicy`` against a server nobody here wrote: llama-cpp-python's own OpenAI-compatible server
(``python -m llama_cpp.server``) serving the embedded SmolLM2-135M GGUF, on loopback only, started and
stopped by a fixture.

What that server does and does not do (llama-cpp-python 0.3.x), and what the policy makes of it:
``/v1/models`` gives no parameter count (the spec's ``?num_parameters=`` gives it); ``n`` is ignored
(one choice: topped up with separate requests, logged once); ``seed`` and ``logprobs`` work; the
matched stop string is stripped and not named (it is recovered from the logprobs' token strings);
any ``model`` name is answered with the one model it loaded; a list of prompts fails (so one prompt
per request, the default).

Skipped cleanly where llama-cpp-python, its server extras (``sse-starlette``, ``starlette-context``,
``pydantic-settings``; in the ``dev`` extra) or the SmolLM2 package is absent. The server start and
the spec checks are the network test of the default suite (a few seconds); sampling and the
strategies are ``slow`` (a minute or more on two busy cores).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from ttsopt.search import SamplingParams

pytestmark = [pytest.mark.network, pytest.mark.timeout(600)]

SERVER_MODULES = ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings")
MODEL = "smollm2"
PARAMS = 134_515_008  # SmolLM2-135M, as llama.cpp counts it (the size the local llama.cpp policy reports)


def _gguf():
    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama-cpp-python's server needs {', '.join(missing)} (pip install -e '.[dev,llamacpp]')")
    from ttsopt.search.engines.models import ModelNotInstalledError, preset_gguf_path

    try:
        return preset_gguf_path("smollm2-135m")
    except ModelNotInstalledError as e:
        pytest.skip(str(e).splitlines()[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``python -m llama_cpp.server`` on 127.0.0.1 and a free port; its base URL (``.../v1``)."""
    gguf = _gguf()
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    threads = str(max(1, min(4, os.cpu_count() or 1)))
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL,
             "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", threads,
             "--verbose", "False"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not answer within 120 s:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def policy(server):
    from ttsopt.search.registry import load_policy

    p = load_policy(f"openai:{server}#{MODEL}?num_parameters={PARAMS}&tokenizer=smollm2-135m&max_concurrency=1")
    yield p
    p.close()


def test_the_spec_without_a_size_fails_cleanly_and_with_one_it_loads(server):
    from ttsopt.search.engines.openai_policy import UnknownParameterCount
    from ttsopt.search.registry import load_policy

    with pytest.raises(UnknownParameterCount) as e:
        load_policy(f"openai:{server}#{MODEL}")
    assert "does not report the parameter count" in str(e.value) and "?num_parameters=" in str(e.value)
    assert "\n" not in str(e.value)
    bare = load_policy(f"openai:{server}#{MODEL}?num_parameters=135e6")
    assert bare.num_parameters == 135_000_000 and bare.models()[0]["id"] == MODEL


@pytest.mark.slow
def test_samples_with_stops_seeds_logprobs_and_n_topped_up(policy, caplog):
    prompt = policy.format_prompt("What is 6 + 7?")
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")  # the chat template
    params = SamplingParams(n=3, temperature=0.7, max_tokens=24, stop=("\n", "."), seed=11)
    with caplog.at_level(logging.WARNING, logger="ttsopt.search.engines.openai_policy"):
        gen, = policy.generate([prompt], params)
    assert "n" in policy.degraded and any("ignores n" in r.getMessage() for r in caplog.records)
    assert len(gen.completions) == 3 and gen.prompt_tokens > 10
    for c in gen.completions:
        assert 1 <= c.tokens <= 24 and c.logprob is not None and c.logprob < 0
        assert c.finish_reason in ("stop", "eos", "length")
        assert (c.finish_reason == "stop") == c.text.endswith(("\n", "."))  # the stripped stop string is back
    again, = policy.generate([prompt], params)
    assert [c.text for c in again.completions] == [c.text for c in gen.completions]  # seeds are honoured
    greedy = policy.generate([prompt, prompt], SamplingParams(n=1, temperature=0, max_tokens=8, seed=0))
    assert greedy[0].completions[0].text == greedy[1].completions[0].text


@pytest.mark.slow
def test_cot_majority_and_best_of_n_run_against_the_server(policy):
    from ttsopt.data import load_problems
    from ttsopt.search import Strategy
    from ttsopt.search.registry import load_prm
    from ttsopt.search.run import run_search

    problems = load_problems("builtin:arith", limit=4, seed=0)
    calc = load_prm("calc")
    for strategy, prm in ((Strategy("cot"), None), (Strategy("majority", n=3), None),
                          (Strategy("best_of_n", n=3, agg="last", vote="prm_vote"), calc)):
        results = run_search(problems, strategy, policy, prm, seed=0, temperature=0.7, max_tokens=96,
                             problem_batch_size=len(problems))
        assert len(results) == len(problems)
        for res in results:
            d = res.to_dict()
            assert d["correct"] in (True, False)
            assert d["compute"]["policy_generated_tokens"] > 0 and d["compute"]["flops"] > 0
            assert len(d["candidates"]) == strategy.n


@pytest.mark.slow
def test_a_small_sweep_then_train_then_solve_all_through_the_server(server, tmp_path):
    """The whole loop a `vllm serve` user runs, against a server no one here wrote: a sweep whose pair's
    policy is the server, a router trained on that snapshot, and `ttsopt solve` with that router (its
    policy spec, the server's, is what it runs)."""
    import json

    from typer.testing import CliRunner

    from ttsopt.cli import app

    spec = f"openai:{server}#{MODEL}?num_parameters={PARAMS}&tokenizer=smollm2-135m&max_concurrency=1"
    config = tmp_path / "server-sweep.yaml"
    config.write_text(json.dumps({
        "name": "server-sweep", "problems": "builtin:arith", "problem_options": {"per_level": 2, "seed": 0},
        "pairs": [{"policy": spec, "prm": "calc"}], "methods": {"cot": {}, "majority": {}},
        "budgets": [1, 2], "seeds": [0], "n_subsets": 4, "chunk_size": 5,
        "sampling": {"temperature": 0.7, "max_tokens": 64}}))
    runner = CliRunner()
    snap, router = tmp_path / "snap", tmp_path / "router"
    res = runner.invoke(app, ["sweep", str(config), "--store", str(tmp_path / "store.sqlite3"), "--snapshot", str(snap),
                              "--no-embeddings"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["train", "--data", str(snap), "--out", str(router), "--trials", "1", "--folds", "2",
                              "--no-choose-default"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((router / "manifest.json").read_text())
    assert spec in json.dumps(manifest)  # the router runs the server's policy: its spec is in the artifact
    res = runner.invoke(app, ["solve", "What is 2 + 3?", "--router", str(router), "--budget", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("{"):])
    assert out["compute"]["policy_generated_tokens"] > 0 and out["decision"]["strategy"] is not None
