"""The router service in process: endpoints, budgets, bounds, auth, errors, metrics, batching.

A scripted router (tests/serve_fakes.py) stands in for the models, so every test is fast and
can count the router calls the batching window made. The live-server tests with the official
``openai`` client, disconnects and the load test are in test_serve_openai.py.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_fakes import SECRET, FakeRouter

from ttsopt.selector.router import Budget
from ttsopt.serve.app import create_app
from ttsopt.serve.settings import ServeSettings

Q = "What is 2 + 3?"


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("TTSOPT_API_KEY", raising=False)


def client(router, **settings) -> TestClient:
    settings.setdefault("batch_window_ms", 0)
    return TestClient(create_app(router, **settings), raise_server_exceptions=False)


def chat(c: TestClient, question: str = Q, **extra):
    body = {"model": "fake-router", "messages": [{"role": "user", "content": question}], **extra}
    return c.post("/v1/chat/completions", json=body)


def error_of(r) -> dict:
    return r.json()["error"]


# -- chat completions -----------------------------------------------------------------------------


def test_a_chat_completion_answers_with_the_decision_compute_and_real_usage(router):
    with client(router) as c:
        r = chat(c, budget=8)
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "fake-router"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "5"} and choice["finish_reason"] == "stop"
    prompt, generated = 10 + len(Q), 40
    assert body["usage"] == {"prompt_tokens": prompt, "completion_tokens": generated,
                             "total_tokens": prompt + generated}
    extra = body["ttsopt"]
    assert extra["answer"] == "5" and extra["decision"]["strategy"].startswith("best_of_n")
    assert extra["compute"]["prm_tokens"] == 55 and extra["batch_size"] == 1
    assert "trace" not in extra
    assert router.calls == [("solve", [Q], Budget(n=8))]


def test_the_question_is_the_last_user_message_and_text_parts_are_joined(router):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 1 + 1?"},
                {"role": "assistant", "content": "2"},
                {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "4 + 4?"}]}]
    with client(router) as c:
        r = c.post("/v1/chat/completions", json={"model": "fake-router", "messages": messages, "include_trace": True})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "8"
    assert router.calls[0][1] == ["What is\n4 + 4?"]
    assert r.json()["ttsopt"]["trace"]["method"] == "best_of_n"


@pytest.mark.parametrize("extra, budget", [
    ({}, Budget(n=16)),  # the server's default
    ({"budget": 4}, Budget(n=4)),
    ({"budget_tokens": 2000}, Budget(tokens=2000.0)),
    ({"budget_flops": 1e12}, Budget(flops=1e12)),
    ({"target_accuracy": 0.8}, Budget(target_accuracy=0.8)),
])
def test_each_budget_field_becomes_its_budget(router, extra, budget):
    with client(router) as c:
        assert chat(c, **extra).status_code == 200
    assert router.calls[0][2] == budget


@pytest.mark.parametrize("extra, message", [
    ({"budget": 4, "target_accuracy": 0.5}, "give at most one of budget, budget_tokens, budget_flops, "
                                            "target_accuracy; got budget, target_accuracy"),
    ({"target_accuracy": 1.5}, "target_accuracy must be in (0, 1], got 1.5"),
    ({"budget": 0}, "budget must be a positive finite number, got 0"),
    ({"budget": 300}, "budget n=300 over this server's limit max_budget_n=256"),
    ({"budget_tokens": 2e6}, "budget tokens=2e+06 over this server's limit max_budget_tokens=1e+06"),
    ({"budget_flops": 1e16}, "budget flops=1e+16 over this server's limit max_budget_flops=1e+15"),
    ({"stream": True}, "stream=true is not supported by this server"),
    ({"n": 2}, "n=2 is not supported"),
])
def test_a_bad_or_oversized_budget_is_a_400_naming_the_limit(router, extra, message):
    with client(router) as c:
        r = chat(c, **extra)
    assert r.status_code == 400 and message in error_of(r)["message"]
    assert router.calls == []  # refused before the models are touched


def test_a_server_without_a_default_budget_demands_one(router):
    with client(router, default_budget_n=None) as c:
        r = chat(c)
    assert r.status_code == 400 and "no default budget" in error_of(r)["message"]


def test_a_model_name_that_is_not_the_routers_is_a_404_naming_the_served_one(router):
    with client(router) as c:
        r = c.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": [{"role": "user", "content": Q}]})
        assert r.status_code == 404
        assert error_of(r)["message"] == "model 'gpt-4o' is not served here; this server serves 'fake-router'"
        assert error_of(r)["type"] == "NotFoundError"
        ok = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}]})
        assert ok.status_code == 200  # no model: the served one


def test_a_chat_without_a_user_message_or_with_an_image_is_a_400(router):
    with client(router) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "system", "content": "hi"}]})
        assert r.status_code == 400 and "no user message" in error_of(r)["message"]
        image = [{"type": "image_url", "image_url": {"url": "http://x"}}]
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": image}]})
        assert r.status_code == 400 and "only text content parts" in error_of(r)["message"]
        r = c.post("/v1/chat/completions", json={"messages": "nope"})
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("messages")


# -- route, solve, models, health -----------------------------------------------------------------


def test_route_and_solve_take_one_question_or_a_list(router):
    with client(router) as c:
        one = c.post("/v1/route", json={"question": Q, "budget": 4}).json()
        many = c.post("/v1/route", json={"questions": [Q, "What is 1 + 2?"], "target_accuracy": 0.6}).json()
        solved = c.post("/v1/solve", json={"questions": [Q, "What is 1 + 2?"], "budget": 4}).json()
        lean = c.post("/v1/solve", json={"question": Q, "include_trace": False}).json()
    assert one["decision"]["question"] == Q and one["decision"]["budget"]["n"] == 4
    assert [d["question"] for d in many["decisions"]] == [Q, "What is 1 + 2?"]
    assert [s["answer"] for s in solved["solutions"]] == ["5", "3"]
    assert "trace" in solved["solutions"][0] and "trace" not in lean["solution"]
    assert lean["solution"]["answer"] == "5"


@pytest.mark.parametrize("body, message", [
    ({}, "give exactly one of question (a string) or questions (a list of strings)"),
    ({"question": Q, "questions": [Q]}, "give exactly one of question"),
    ({"questions": []}, "give a question or a non-empty list of questions"),
    ({"questions": [Q] * 4}, "4 questions in one call, over this server's limit max_questions=3"),
    ({"question": "x" * 51}, "question has 51 characters, over this server's limit max_question_chars=50"),
    ({"questions": [Q, "x" * 51]}, "questions[1] has 51 characters, over this server's limit max_question_chars=50"),
    ({"question": "  "}, "question is empty"),
])
def test_question_count_and_length_limits_are_400s_naming_the_limit(router, body, message):
    with client(router, max_questions=3, max_question_chars=50) as c:
        for route in ("/v1/route", "/v1/solve"):
            r = c.post(route, json=body)
            assert r.status_code == 400 and message in error_of(r)["message"], (route, r.text)
        assert chat(c, "y" * 60).status_code == 400
    assert router.calls == []


def test_a_body_over_the_byte_limit_is_a_413(router):
    with client(router, max_body_bytes=200) as c:
        r = chat(c, "What is 1 + 1? " + "pad " * 100)
    assert r.status_code == 413
    assert error_of(r)["message"] == "request body exceeds this server's limit max_body_bytes=200"


def test_a_chunked_body_is_counted_as_it_arrives(router):
    chunks = (b'{"question": "', b"x" * 150, b"x" * 150, b'"}')
    with client(router, max_body_bytes=200) as c:
        r = c.post("/v1/route", content=iter(chunks), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "max_body_bytes=200" in error_of(r)["message"]
    assert router.calls == []


def test_models_lists_the_router_and_healthz_answers(router):
    with client(router) as c:
        models = c.get("/v1/models").json()
        assert c.get("/healthz").json() == {"status": "ok", "model": "fake-router"}
    assert models["data"][0]["id"] == "fake-router" and models["data"][0]["meta"]["pairs"] == ["fake-policy+calc"]


def test_an_unknown_route_answers_in_the_error_shape(router):
    with client(router) as c:
        r = c.get("/v1/nope")
    assert r.status_code == 404 and error_of(r)["type"] == "NotFoundError"


# -- auth -----------------------------------------------------------------------------------------


def test_an_api_key_guards_every_route_but_healthz(router):
    with client(router, api_key="s3cret") as c:
        for method, path in (("post", "/v1/chat/completions"), ("post", "/v1/route"), ("post", "/v1/solve"),
                             ("get", "/v1/models"), ("get", "/metrics"), ("get", "/docs"), ("get", "/nope")):
            r = c.request(method, path, json={})
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer" and error_of(r)["type"] == "AuthenticationError"
        wrong = c.get("/v1/models", headers={"Authorization": "Bearer s3cre"})
        assert wrong.status_code == 401 and "s3cre" not in wrong.text
        assert c.get("/healthz").status_code == 200
        ok = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": Q}]},
                    headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
    assert len(router.calls) == 1


def test_the_api_key_comes_from_the_environment_too(router, monkeypatch):
    monkeypatch.setenv("TTSOPT_API_KEY", "from-env")
    with client(router) as c:
        assert c.get("/v1/models").status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer from-env"}).status_code == 200


def test_settings_refuse_nonsense():
    with pytest.raises(ValueError, match="max_questions must be a positive integer"):
        ServeSettings(max_questions=0)
    with pytest.raises(ValueError, match="batch_window_ms must be"):
        ServeSettings(batch_window_ms=-1)
    with pytest.raises(ValueError, match="api_key must not be empty"):
        ServeSettings(api_key=" ")
    with pytest.raises(TypeError, match="not both"):
        create_app(FakeRouter(), ServeSettings(), max_batch=3)


# -- errors ---------------------------------------------------------------------------------------


def test_a_router_failure_is_a_generic_500_with_a_request_id_and_the_next_request_works(router, caplog):
    router.fail_on = {"What is 6 + 6?"}
    with client(router) as c, caplog.at_level(logging.ERROR, logger="ttsopt.serve.app"):
        r = chat(c, "What is 6 + 6?")
        assert r.status_code == 500
        err = error_of(r)
        assert err["type"] == "InternalServerError" and err["request_id"] in err["message"]
        assert SECRET not in r.text and "RuntimeError" not in r.text and "Traceback" not in r.text
        assert chat(c).status_code == 200
        r = c.post("/v1/solve", json={"questions": [Q, "What is 6 + 6?"]})
        assert r.status_code == 500 and SECRET not in r.text
    logged = [rec for rec in caplog.records if err["request_id"] in rec.getMessage()]
    assert logged and SECRET in str(logged[0].exc_info[1])


def test_a_router_error_is_the_clients_400_with_its_reason(router):
    router.reject_on = {"What is 7 + 7?"}
    with client(router) as c:
        r = c.post("/v1/route", json={"questions": [Q, "What is 7 + 7?"]})
    assert r.status_code == 400 and error_of(r)["message"] == "questions[1]: no strategy for 'What is 7 + 7?'"


def _concurrently(app, bodies, path="/v1/chat/completions", stagger_s=0.0):
    """Post ``bodies`` at once through one in-process ASGI transport; the responses, in order."""

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", timeout=10) as c:
            async def one(i, body):
                await asyncio.sleep(i * stagger_s)
                return await c.post(path, json=body)

            return await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))

    return asyncio.run(main())


def _chat_body(question, **extra):
    return {"model": "fake-router", "messages": [{"role": "user", "content": question}], **extra}


def test_a_failing_batch_is_retried_one_by_one_so_only_the_bad_request_fails(router):
    router.fail_on = {"What is 6 + 6?"}
    app = create_app(router, batch_window_ms=200)
    questions = [f"What is {i} + 1?" for i in range(4)] + ["What is 6 + 6?"]
    responses = _concurrently(app, [_chat_body(q) for q in questions])
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 500]
    assert [r.json()["choices"][0]["message"]["content"] for r in responses[:4]] == ["1", "2", "3", "4"]
    calls = router.solve_calls()
    assert sorted(calls[0]) == sorted(questions) and all(len(c) == 1 for c in calls[1:]) and len(calls) == 6


# -- batching -------------------------------------------------------------------------------------


def test_concurrent_requests_with_one_budget_share_one_solve_many_call(router):
    app = create_app(router, batch_window_ms=200)
    questions = [f"What is {i} + {i}?" for i in range(6)]
    responses = _concurrently(app, [_chat_body(q, budget=8) for q in questions])
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [str(2 * i) for i in range(6)]
    assert [sorted(c) for c in router.solve_calls()] == [sorted(questions)]
    assert {r.json()["ttsopt"]["batch_size"] for r in responses} == {6}
    assert router.max_concurrent == 1


def test_solves_of_different_budgets_share_a_call_and_routes_group_by_budget(router):
    app = create_app(router, batch_window_ms=200)
    questions = ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"]
    budgets = [4, 8, 4]
    _concurrently(app, [_chat_body(q, budget=b) for q, b in zip(questions, budgets)])
    (op, qs, sent), = router.calls  # one solve_many, one budget per question
    assert op == "solve" and {q: b.n for q, b in zip(qs, sent)} == dict(zip(questions, budgets))
    router.calls.clear()
    _concurrently(app, [{"question": q, "budget": b} for q, b in zip(questions, budgets)], path="/v1/route")
    assert sorted((sorted(qs), b.n) for _, qs, b in router.calls) == [
        (["What is 1 + 1?", "What is 3 + 3?"], 4), (["What is 2 + 2?"], 8)]


def test_a_zero_window_solves_each_request_alone(router):
    app = create_app(router, batch_window_ms=0)
    _concurrently(app, [_chat_body(f"What is {i} + 0?") for i in range(4)])
    assert sorted(len(c) for c in router.solve_calls()) == [1, 1, 1, 1]


def test_max_batch_caps_one_call(router):
    app = create_app(router, batch_window_ms=200, max_batch=2)
    _concurrently(app, [_chat_body(f"What is {i} + 0?") for i in range(5)])
    assert sorted(len(c) for c in router.solve_calls()) == [1, 2, 2]


def test_a_full_queue_is_a_503_naming_the_limit(router):
    app = create_app(router, batch_window_ms=300, max_queue=2)
    responses = _concurrently(app, [_chat_body(f"What is {i} + 0?") for i in range(3)], stagger_s=0.01)
    assert [r.status_code for r in responses] == [200, 200, 503]
    assert "max_queue=2" in responses[2].json()["error"]["message"]


# -- metrics --------------------------------------------------------------------------------------


def test_metrics_count_requests_strategies_tokens_and_batches(router):
    with client(router) as c:
        assert chat(c).status_code == 200
        assert chat(c, budget=1000).status_code == 400
        c.post("/v1/route", json={"questions": [Q, Q]})
        text = c.get("/metrics").text
    assert 'ttsopt_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'ttsopt_requests_total{route="/v1/chat/completions",status="400"} 1.0' in text
    assert 'ttsopt_request_seconds_count{route="/v1/chat/completions"} 2.0' in text
    assert 'ttsopt_strategy_chosen_total{strategy="best_of_n:n=4,agg=last,vote=prm_vote"} 3.0' in text
    assert f'ttsopt_tokens_total{{kind="prompt"}} {10.0 + len(Q)}' in text
    assert 'ttsopt_tokens_total{kind="generated"} 40.0' in text
    assert 'ttsopt_batch_size_count{op="solve"} 1.0' in text
    assert 'ttsopt_batch_size_count{op="route"} 1.0' in text  # batch_window_ms=0: still one call per request
    assert "ttsopt_questions_waiting 0.0" in text


def test_unknown_paths_share_one_metrics_label(router):
    with client(router) as c:
        for i in range(3):
            c.get(f"/scan/{i}")
        text = c.get("/metrics").text
    assert 'ttsopt_requests_total{route="other",status="404"} 3.0' in text
    assert "/scan/" not in text


def test_two_apps_in_one_process_have_their_own_metrics(router):
    with client(router) as a, client(FakeRouter()) as b:
        chat(a)
        assert 'route="/v1/chat/completions"' in a.get("/metrics").text
        assert 'route="/v1/chat/completions"' not in b.get("/metrics").text


# -- the command ----------------------------------------------------------------------------------


def test_the_serve_command_refuses_bad_settings_and_a_missing_router_before_binding(tmp_path):
    from typer.testing import CliRunner

    from ttsopt.cli import app

    bad = CliRunner().invoke(app, ["serve", "--router", str(tmp_path), "--max-questions", "0"])
    assert bad.exit_code == 2 and "max_questions must be a positive integer" in bad.output
    missing = CliRunner().invoke(app, ["serve", "--router", str(tmp_path / "nope"), "--no-warmup"])
    assert missing.exit_code == 2 and "error" in missing.output


def test_cascade_true_solves_through_the_cascade_in_its_own_batches(router):
    app = create_app(router, batch_window_ms=200)
    bodies = [_chat_body("What is 1 + 1?", budget=8, cascade=True), _chat_body("What is 2 + 2?", budget=8),
              _chat_body("What is 3 + 3?", budget=8, cascade="fitted")]
    responses = _concurrently(app, bodies)
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert sorted((op, tuple(qs)) for op, qs, _ in router.calls) == [
        ("solve", ("What is 2 + 2?",)), ("solve+cascade=True", ("What is 1 + 1?",)),  # the router resolves True
        ("solve+cascade=fitted", ("What is 3 + 3?",))]


def test_cascade_on_route_is_a_400(router):
    from fastapi.testclient import TestClient

    with TestClient(create_app(router)) as client:
        r = client.post("/v1/route", json={"question": "What is 1 + 1?", "budget": 4, "cascade": True})
    assert r.status_code == 400 and "/v1/solve" in r.json()["error"]["message"]
    with TestClient(create_app(router)) as client:
        r = client.post("/v1/solve", json={"question": "What is 1 + 1?", "budget": 4, "cascade": "often"})
    assert r.status_code == 400 and "cascade must be" in r.json()["error"]["message"]


def test_the_cascade_outcomes_are_counted_for_prometheus():
    from ttsopt.serve.metrics import ServeMetrics

    m = ServeMetrics.create()
    m.observe_cascade({"cascade": {"kept_first_answer": True}})
    m.observe_cascade({"cascade": {"kept_first_answer": False}, "escalation": {}})
    m.observe_cascade({"cascade": {"kept_first_answer": True, "router_declined": {"keep_value": 0.2}}})
    m.observe_cascade({"strategy": "cot"})  # not a cascade: not counted
    text = m.exposition()[0].decode()
    for outcome in ("kept", "escalated", "declined"):
        assert f'ttsopt_cascade_total{{outcome="{outcome}"}} 1.0' in text
