"""One service for every pair of a router: each pair is its own model (``router/PAIR``), its models
load on its first request, ``--pair`` still limits the service to one, and one pair keeps its old name.

Scripted routers (tests/serve_fakes.py) for the endpoints; the tiny real artifact of
tests/router_fixtures.py, given a second pair, for :func:`load_served` over ``Router.load``.
"""

from __future__ import annotations

import asyncio
import json
import shutil

import httpx
import pytest
import router_fixtures as rf
from fastapi.testclient import TestClient
from serve_fakes import FakeRouter

from ttsopt.selector.router import Budget, Router, RouterError
from ttsopt.serve.app import create_app
from ttsopt.serve.routers import ServedRouters, load_served

Q = "What is 2 + 3?"
PAIRS = ("smollm2-135m+calc", "gemma3-270m+judge")


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("TTSOPT_API_KEY", raising=False)


def fakes(name: str = "router", pairs=PAIRS) -> dict[str, FakeRouter]:
    out = {}
    for pair in pairs:
        r = FakeRouter()
        r.name, r.pair, r.pairs = name, pair, list(pairs)
        out[pair] = r
    return out


def chat(c, model, question=Q, **extra):
    body = {"messages": [{"role": "user", "content": question}], **extra}
    if model is not None:
        body["model"] = model
    return c.post("/v1/chat/completions", json=body)


def test_every_pair_is_its_own_model_and_requests_reach_their_pair():
    routers = fakes()
    with TestClient(create_app(ServedRouters("router", routers), batch_window_ms=0)) as c:
        listed = c.get("/v1/models").json()["data"]
        assert [m["id"] for m in listed] == ["router/smollm2-135m+calc", "router/gemma3-270m+judge"]
        assert [m["meta"]["pair"] for m in listed] == list(PAIRS)
        r = chat(c, "router/gemma3-270m+judge", budget=4)
        assert r.status_code == 200 and r.json()["model"] == "router/gemma3-270m+judge"
        route = c.post("/v1/route", json={"model": "router/smollm2-135m+calc", "question": Q}).json()
        solve = c.post("/v1/solve", json={"model": "router/gemma3-270m+judge", "questions": [Q, Q]}).json()
        assert route["model"] == "router/smollm2-135m+calc" and solve["model"] == "router/gemma3-270m+judge"
        assert c.get("/healthz").json() == {"status": "ok", "model": "router",
                                            "models": ["router/smollm2-135m+calc", "router/gemma3-270m+judge"]}
    assert routers[PAIRS[0]].calls == [("route", [Q], Budget(n=16))]
    assert [(op, qs) for op, qs, _ in routers[PAIRS[1]].calls] == [("solve", [Q]), ("solve", [Q, Q])]


@pytest.mark.parametrize("model", [None, "router"])
def test_with_several_pairs_a_request_must_name_one(model):
    with TestClient(create_app(ServedRouters("router", fakes()))) as c:
        r = chat(c, model)
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert message.startswith("model:") and "'router/smollm2-135m+calc'" in message and "'router/gemma3-270m+judge'" in message


def test_an_unknown_model_is_a_404_listing_the_served_ones():
    with TestClient(create_app(ServedRouters("router", fakes()))) as c:
        r = chat(c, "router/qwen+calc")
    assert r.status_code == 404
    assert r.json()["error"]["message"] == ("model 'router/qwen+calc' is not served here; this server serves "
                                            "'router/smollm2-135m+calc', 'router/gemma3-270m+judge'")


def test_concurrent_requests_for_two_pairs_batch_per_pair():
    routers = fakes()
    app = create_app(ServedRouters("router", routers), batch_window_ms=200)
    questions = [f"What is {i} + 1?" for i in range(6)]

    async def main():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=10) as c:
            return await asyncio.gather(*(
                c.post("/v1/chat/completions", json={"model": f"router/{PAIRS[i % 2]}",
                                                     "messages": [{"role": "user", "content": q}]})
                for i, q in enumerate(questions)))

    responses = asyncio.run(main())
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [str(i + 1) for i in range(6)]
    assert [sorted(c) for c in routers[PAIRS[0]].solve_calls()] == [sorted(questions[0::2])]
    assert [sorted(c) for c in routers[PAIRS[1]].solve_calls()] == [sorted(questions[1::2])]


def test_one_pair_keeps_the_routers_name_and_accepts_router_slash_pair():
    router = fakes(pairs=("smollm2-135m+calc",))["smollm2-135m+calc"]
    with TestClient(create_app(router, batch_window_ms=0)) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["router"]
        assert chat(c, None).json()["model"] == "router"
        assert chat(c, "router").status_code == 200
        r = chat(c, "router/smollm2-135m+calc")
        assert r.status_code == 200 and r.json()["model"] == "router"
    assert len(router.solve_calls()) == 3


# -- load_served over the real Router.load ----------------------------------------------------------


@pytest.fixture(scope="module")
def two_pairs(tmp_path_factory):
    """The tiny artifact with a second pair, ``scripted+calc-b``: the same entry under another name."""
    from ttsopt.selector.artifact import write_manifest

    path = tmp_path_factory.mktemp("pairs") / "duo"
    shutil.copytree(rf.tiny_artifact(True), path)
    manifest = json.loads((path / "manifest.json").read_text())
    for key in ("catalogue", "search", "cascade"):
        if isinstance(manifest.get(key), dict) and "scripted+calc" in manifest[key]:
            manifest[key]["scripted+calc-b"] = manifest[key]["scripted+calc"]
    write_manifest(path, manifest)
    return path


def scripted_loader(made: dict):
    """Router.load with a fresh scripted policy per pair (recorded in ``made``) and the calculator PRM."""
    from ttsopt.search.registry import load_prm

    def load(path, *, pair, **options):
        policy = rf.ScriptedPolicy()
        made[pair] = policy
        return Router.load(path, pair=pair, policy=policy, prm=load_prm("calc"), encoder=rf.fake_encoder, **options)

    return load


def test_load_served_serves_every_pair_and_loads_each_pairs_models_on_its_first_request(two_pairs):
    made: dict = {}
    served = load_served(two_pairs, load=scripted_loader(made), seed=3)
    assert served.pairs == ["scripted+calc", "scripted+calc-b"] and not served.single
    assert all(not p.calls for p in made.values())  # nothing ran at start-up
    assert served.warm() is None and all(not p.calls for p in made.values())  # no warm-up with several pairs
    with TestClient(create_app(served, batch_window_ms=0)) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["duo/scripted+calc", "duo/scripted+calc-b"]
        r = chat(c, "duo/scripted+calc-b", "What is 12 + 30?", budget=4)
        assert r.status_code == 200, r.text
        assert r.json()["ttsopt"]["decision"]["pair"] == "scripted+calc-b"
        assert made["scripted+calc-b"].calls and not made["scripted+calc"].calls
        assert chat(c, None).status_code == 400


def test_pair_limits_the_service_to_one_pair_under_the_routers_name(two_pairs):
    made: dict = {}
    served = load_served(two_pairs, pair="scripted+calc-b", load=scripted_loader(made), warmup=True)
    assert served.single and served.pair == "scripted+calc-b" and list(made) == ["scripted+calc-b"]
    assert served.warm_seconds is not None and made["scripted+calc-b"].calls  # warm-up solved one question
    with TestClient(create_app(served, batch_window_ms=0)) as c:
        assert [m["id"] for m in c.get("/v1/models").json()["data"]] == ["duo"]
        assert chat(c, "duo", budget=2).status_code == 200


def test_load_served_refuses_what_it_cannot_serve_with_a_router_error(two_pairs, tmp_path):
    with pytest.raises(RouterError, match="give --pair too"):
        load_served(two_pairs, policy_spec="openai:http://127.0.0.1:1/v1#x")
    with pytest.raises(RouterError, match="unknown pair 'nope'"):
        load_served(two_pairs, pair="nope")
    with pytest.raises(RouterError, match="no manifest.json"):
        load_served(tmp_path / "missing")
