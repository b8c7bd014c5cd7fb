"""The router service on loopback: the official ``openai`` client, disconnects, 100 concurrent clients.

The server is uvicorn in a thread of this process on 127.0.0.1 and a free port, over the tiny
real router (tests/router_fixtures.py: a trained artifact with scripted models injected) or, where
a test must hold the models on a gate, the scripted router of tests/serve_fakes.py.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

openai = pytest.importorskip("openai")

import router_fixtures as fixtures  # noqa: E402
import serve_fakes  # noqa: E402

from ttsopt.serve.app import serve_in_background  # noqa: E402

pytestmark = pytest.mark.network

KEY = "test-key-0123"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return fixtures.tiny_router(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(tiny):
    with serve_in_background(tiny, api_key=KEY, batch_window_ms=10) as s:
        yield s


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=30)


def _metric(url: str, line_start: str, key: str | None = KEY) -> float:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for line in httpx.get(f"{url}/metrics", headers=headers).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_the_openai_client_gets_the_answer_the_decision_and_real_usage(client, tiny):
    question = "What is 12 + 30?"
    r = client.chat.completions.create(model=tiny.name, messages=[{"role": "user", "content": question}],
                                       extra_body={"budget": 4})
    extra = r.ttsopt
    assert r.model == "tiny" and r.object == "chat.completion"
    assert r.choices[0].message.content == extra["answer"] and extra["answer"] in {"42", "43", "44", "45"}
    decision = extra["decision"]
    assert decision["question"] == question and decision["budget"] == {"n": 4}
    assert decision["strategy"] in fixtures.STRATEGIES and decision["pair"] == "scripted+calc"
    assert {c["strategy"] for c in decision["candidates"]} == set(fixtures.STRATEGIES)
    compute = extra["compute"]
    assert r.usage.prompt_tokens == compute["prompt_tokens"] > 0
    assert r.usage.completion_tokens == compute["generated_tokens"] > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_target_accuracy_and_token_budgets_through_extra_body(client, tiny):
    r = client.chat.completions.create(model=tiny.name, messages=[{"role": "user", "content": "What is 3 * 4?"}],
                                       extra_body={"target_accuracy": 0.3, "include_trace": True})
    d = r.ttsopt["decision"]
    assert d["budget"] == {"target_accuracy": 0.3} and isinstance(d["reached"], bool)
    assert r.ttsopt["trace"]["strategy"] == d["strategy"]
    r = client.chat.completions.create(model=tiny.name, messages=[{"role": "user", "content": "What is 3 * 4?"}],
                                       extra_body={"budget_tokens": 60})
    d = r.ttsopt["decision"]
    assert all(c["total_tokens"] <= 60 for c in d["candidates"] if c["fits"])


def test_models_list_names_the_router(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]


def test_client_errors_arrive_as_the_openai_clients_exceptions(client, server):
    messages = [{"role": "user", "content": "What is 1 + 1?"}]
    with pytest.raises(openai.NotFoundError, match="this server serves 'tiny'"):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.BadRequestError, match="max_budget_n=256"):
        client.chat.completions.create(model="tiny", messages=messages, extra_body={"budget": 512})
    with pytest.raises(openai.BadRequestError, match="stream=true is not supported"):
        client.chat.completions.create(model="tiny", messages=messages, stream=True)
    wrong = openai.OpenAI(base_url=f"{server.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="tiny", messages=messages)
    assert httpx.get(f"{server.url}/healthz").status_code == 200  # open without the key
    assert httpx.get(f"{server.url}/metrics").status_code == 401


def test_route_and_solve_over_http(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    qs = ["What is 2 + 2?", "What is 5 * 6?"]
    routed = httpx.post(f"{server.url}/v1/route", json={"questions": qs, "budget": 2}, headers=headers).json()
    assert [d["question"] for d in routed["decisions"]] == qs
    solved = httpx.post(f"{server.url}/v1/solve", json={"question": qs[0], "budget": 4}, headers=headers).json()
    assert solved["solution"]["decision"]["question"] == qs[0] and "trace" in solved["solution"]


def test_metrics_show_the_requests_after_a_call(client, server):
    before = _metric(server.url, 'ttsopt_requests_total{route="/v1/chat/completions",status="200"}')
    client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "What is 7 + 8?"}])
    after = _metric(server.url, 'ttsopt_requests_total{route="/v1/chat/completions",status="200"}')
    assert after == before + 1
    assert _metric(server.url, 'ttsopt_tokens_total{kind="generated"}') > 0
    assert _metric(server.url, 'ttsopt_batch_size_count{op="solve"}') >= 1


def test_a_client_that_disconnects_is_dropped_from_its_batch():
    router = serve_fakes.FakeRouter()
    router.gate = threading.Event()
    with serve_in_background(router, batch_window_ms=0) as s:
        def post(question, timeout):
            return httpx.post(f"{s.url}/v1/solve", json={"question": question}, timeout=timeout)

        first = threading.Thread(target=post, args=("What is 1 + 1?", 10))
        first.start()
        assert router.entered.wait(5)  # the models are busy with the first question
        with pytest.raises(httpx.ReadTimeout):
            post("What is 2 + 2?", 0.3)  # this client gives up while its question waits
        deadline = time.monotonic() + 5
        while _metric(s.url, 'ttsopt_requests_total{route="/v1/solve",status="499"}', None) < 1:
            assert time.monotonic() < deadline, "the server never noticed the disconnect"
            time.sleep(0.02)
        router.gate.set()
        first.join(10)
        assert post("What is 3 + 3?", 10).json()["solution"]["answer"] == "6"
    assert router.solve_calls() == [["What is 1 + 1?"], ["What is 3 + 3?"]]


def test_a_request_that_fails_inside_the_router_leaves_the_server_serving():
    router = serve_fakes.FakeRouter()
    router.fail_on = {"What is 6 + 6?"}
    with serve_in_background(router) as s:
        c = openai.OpenAI(base_url=f"{s.url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as e:
            c.chat.completions.create(model="fake-router", messages=[{"role": "user", "content": "What is 6 + 6?"}])
        assert serve_fakes.SECRET not in str(e.value) and "request id" in str(e.value)
        ok = c.chat.completions.create(model="fake-router", messages=[{"role": "user", "content": "What is 6 + 7?"}])
        assert ok.choices[0].message.content == "13"


def test_one_hundred_concurrent_clients_all_succeed_and_share_calls(tiny):
    """A bounded load test: 100 clients x 2 requests on loopback, within 60 s, no failed request."""
    clients, per_client = 100, 2
    qs = fixtures.questions(clients * per_client, seed=3)
    with serve_in_background(tiny, batch_window_ms=10, max_batch=64) as s:
        async def main():
            limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
            async with httpx.AsyncClient(base_url=s.url, limits=limits, timeout=30) as http:
                async def one_client(c):
                    codes = []
                    for j in range(per_client):
                        body = {"model": "tiny", "budget": 4,
                                "messages": [{"role": "user", "content": qs[c * per_client + j]}]}
                        r = await http.post("/v1/chat/completions", json=body)
                        codes.append((r.status_code, r.json()["choices"][0]["message"]["content"]
                                      if r.status_code == 200 else r.text))
                    return codes

                return await asyncio.wait_for(asyncio.gather(*(one_client(c) for c in range(clients))), 60)

        started = time.perf_counter()
        results = asyncio.run(main())
        elapsed = time.perf_counter() - started
        calls = _metric(s.url, 'ttsopt_batch_size_count{op="solve"}', None)
        solved = _metric(s.url, 'ttsopt_batch_size_sum{op="solve"}', None)
    codes = [code for client_codes in results for code, _ in client_codes]
    assert codes == [200] * (clients * per_client), [c for c in results if any(x != 200 for x, _ in c)][:3]
    # the window merged concurrent requests (the clients share this process's GIL, so they trickle in)
    assert solved == clients * per_client and calls <= solved / 2
    assert elapsed < 60
