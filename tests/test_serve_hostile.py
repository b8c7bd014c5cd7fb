"""Hostile and careless clients against the router service: every bad request is a 4xx that names
the field (never a 5xx, never a stack trace), no model work is done for it, and the server stays
healthy after. The scripted router of tests/serve_fakes.py stands in for the models.

In-process (TestClient) for the request bodies; on loopback for what needs a real socket: a client
that disconnects while its batch runs, and one that sends half a body and hangs up.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from serve_fakes import FakeRouter

from ttsopt.serve.app import create_app, serve_in_background

Q = "What is 2 + 3?"
USER = [{"role": "user", "content": Q}]


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("TTSOPT_API_KEY", raising=False)


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


def client(router, **settings) -> TestClient:
    settings.setdefault("batch_window_ms", 0)
    return TestClient(create_app(router, **settings), raise_server_exceptions=False)


def refused(r, status: int, *words: str) -> str:
    """The error message of a refusal with ``status`` that mentions every word; no trace leaks."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    message = body["error"]["message"]
    assert body["error"]["code"] == status and isinstance(body["error"]["type"], str)
    for word in words:
        assert word in message, (word, message)
    assert "Traceback" not in r.text and 'File "' not in r.text
    return message


def still_healthy(c: TestClient) -> None:
    assert c.get("/healthz").json()["status"] == "ok"
    ok = c.post("/v1/chat/completions", json={"messages": USER, "budget": 2})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "5"


# -- every field of a chat completion, with the wrong type -----------------------------------------


@pytest.mark.parametrize("field, value, expected", [
    *[("budget", v, "budget") for v in ["4", True, 4.5, [4], {"n": 4}]],
    *[(f, v, f) for f in ("budget_tokens", "budget_flops", "target_accuracy") for v in ["lots", True, [1], {"x": 1}]],
    *[("model", v, "model") for v in [5, ["fake-router"], {"id": "x"}, True]],
    *[("messages", v, "messages") for v in ["What is 2 + 3?", 5, {"role": "user"}, None, [Q]]],
    *[("stream", v, "stream") for v in ["yes", 1, [True], None]],
    *[("n", v, "n") for v in ["1", 1.5, True, [1], None]],
    *[("include_trace", v, "include_trace") for v in ["yes", 2, [True], None]],
    *[("cascade", v, "cascade") for v in [5, [True], {"mode": "router"}, 1.5]],
])
def test_a_wrong_type_in_any_chat_field_is_a_400_naming_it(router, field, value, expected):
    with client(router) as c:
        body = {"model": "fake-router", "messages": USER, field: value}
        message = refused(c.post("/v1/chat/completions", json=body), 400, expected)
        assert message.startswith(expected)
        still_healthy(c)
    assert len(router.calls) == 1  # only the health check's request reached the models


@pytest.mark.parametrize("message, where", [
    ({"role": 5, "content": Q}, "messages[0].role"),
    ({"content": Q}, "messages[0].role: Field required"),
    ({"role": "user", "content": 5}, "messages[0].content"),
    ({"role": "user", "content": {"text": Q}}, "messages[0].content"),
    ({"role": "user", "content": [Q]}, "messages[0].content[0]"),
    ({"role": "user", "content": [{"type": "text", "text": 5}]}, "messages[0].content[0].text"),
    ({"role": "user", "content": [{"text": Q}]}, "messages[0].content[0].type: Field required"),
    ({"role": "user", "content": [{"type": "text"}]}, "messages[0].content[0].text"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]},
     "messages[0].content[0]: only text content parts"),
    ({"role": "user", "content": None}, "messages[0].content: the last user message has no content"),
    ("hello", "messages[0]"),
])
def test_a_malformed_message_is_a_400_naming_where_it_is(router, message, where):
    with client(router) as c:
        refused(c.post("/v1/chat/completions", json={"messages": [message]}), 400, where)
        still_healthy(c)


@pytest.mark.parametrize("body, expected", [
    ({"question": 5}, "question"), ({"question": ["a"]}, "question"), ({"question": None, "questions": None}, "exactly one"),
    ({"questions": "What is 1 + 1?"}, "questions"), ({"questions": [1, 2]}, "questions[0]"),
    ({"questions": [Q, None]}, "questions[1]"), ({"questions": {"a": Q}}, "questions"),
    ({"questions": [[Q]]}, "questions[0]"), ({"question": Q, "model": 1}, "model"),
    ({"question": Q, "include_trace": "no"}, "include_trace"), ({"question": Q, "budget": "8"}, "budget"),
])
def test_a_wrong_type_in_route_and_solve_is_a_400_naming_it(router, body, expected):
    with client(router) as c:
        for path in ("/v1/route", "/v1/solve"):
            refused(c.post(path, json=body), 400, expected)
        still_healthy(c)


# -- budgets: negative, zero, huge, not finite ------------------------------------------------------


@pytest.mark.parametrize("extra, words", [
    ({"budget": -3}, ["budget", "positive"]),
    ({"budget": 0}, ["budget", "positive"]),
    ({"budget": 257}, ["max_budget_n=256"]),
    ({"budget": 10 ** 30}, ["max_budget_n=256"]),
    ({"budget": 10 ** 400}, ["max_budget_n=256"]),
    ({"budget_tokens": -1}, ["budget_tokens", "positive"]),
    ({"budget_tokens": 1e300}, ["max_budget_tokens"]),
    ({"budget_tokens": 10 ** 400}, ["budget_tokens"]),
    ({"budget_flops": -1e12}, ["budget_flops", "positive"]),
    ({"budget_flops": 1e308}, ["max_budget_flops"]),
    ({"target_accuracy": -0.5}, ["target_accuracy"]),
    ({"target_accuracy": 0}, ["target_accuracy"]),
    ({"target_accuracy": 1.0001}, ["target_accuracy"]),
    ({"target_accuracy": 1e300}, ["target_accuracy"]),
    ({"budget": 4, "budget_tokens": 100}, ["at most one"]),
])
def test_negative_zero_and_huge_budgets_are_400s_naming_the_field(router, extra, words):
    with client(router) as c:
        refused(c.post("/v1/chat/completions", json={"messages": USER, **extra}), 400, *words)
        refused(c.post("/v1/solve", json={"question": Q, **extra}), 400, *words)
        still_healthy(c)


@pytest.mark.parametrize("raw, field", [(b"NaN", "budget_tokens"), (b"Infinity", "budget_tokens"),
                                        (b"-Infinity", "budget_flops"), (b"NaN", "target_accuracy")])
def test_json_nan_and_infinity_budgets_are_400s(router, raw, field):
    body = b'{"messages": [{"role": "user", "content": "What is 1 + 1?"}], "' + field.encode() + b'": ' + raw + b"}"
    with client(router) as c:
        r = c.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
        refused(r, 400, field)
        still_healthy(c)


# -- models, messages, bodies -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-4o", "", "fake-router/other+pair", "FAKE-ROUTER", "x" * 10_000])
def test_an_unknown_model_is_a_404_naming_the_served_one(router, model):
    with client(router) as c:
        for path, body in (("/v1/chat/completions", {"messages": USER}), ("/v1/route", {"question": Q}),
                           ("/v1/solve", {"question": Q})):
            message = refused(c.post(path, json={**body, "model": model}), 404, "'fake-router'")
            assert len(message) < 500  # a long name is not echoed whole
        still_healthy(c)


@pytest.mark.parametrize("content, words", [
    ("", ["messages[0].content is empty"]),
    ("   \n\t ", ["messages[0].content is empty"]),
    ([], ["messages[0].content is empty"]),
    ("x" * 8001, ["messages[0].content has 8001 characters", "max_question_chars=8000"]),
])
def test_empty_and_very_long_messages_are_400s_naming_the_limit(router, content, words):
    with client(router) as c:
        refused(c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]}), 400, *words)
        still_healthy(c)


def test_no_messages_and_no_user_message_are_400s(router):
    with client(router) as c:
        refused(c.post("/v1/chat/completions", json={"messages": []}), 400, "messages has no user message")
        refused(c.post("/v1/chat/completions", json={"model": "fake-router"}), 400, "messages: Field required")
        still_healthy(c)


def test_a_message_as_long_as_the_body_limit_allows_is_a_413(router):
    with client(router, max_body_bytes=10_000) as c:
        refused(c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 20_000}]}),
                413, "max_body_bytes=10000")
        still_healthy(c)


@pytest.mark.parametrize("raw, words", [
    (b'{"messages": [', ["not valid JSON"]),
    (b'{"messages": []}}', ["not valid JSON", "Extra data"]),
    (b"{'messages': []}", ["not valid JSON"]),
    (b"\xff\xfe\x00{", ["not valid JSON"]),
    (b"", ["body"]),
    (b"null", ["body"]),
    (b"[1, 2]", ["body"]),
    (b'"hello"', ["body"]),
    (b'{"budget": ' + b"9" * 5000 + b"}", ["parsing the body"]),  # past Python's int-digits limit
    (b'{"messages": ' + b"[" * 3000 + b"]" * 3000 + b"}", ["parsing the body"]),  # nested past the recursion limit
])
def test_malformed_json_is_a_400(router, raw, words):
    with client(router) as c:
        for path in ("/v1/chat/completions", "/v1/route", "/v1/solve"):
            refused(c.post(path, content=raw, headers={"content-type": "application/json"}), 400, *words)
        still_healthy(c)
    assert len(router.calls) == 1


def test_a_body_without_a_json_content_type_is_a_400_saying_so(router):
    with client(router) as c:
        r = c.post("/v1/chat/completions", content=json.dumps({"messages": USER}), headers={"content-type": "text/plain"})
        refused(r, 400, "Content-Type: application/json")
        still_healthy(c)


def test_wrong_methods_and_paths_answer_in_the_error_shape(router):
    with client(router) as c:
        refused(c.get("/v1/chat/completions"), 405)
        refused(c.put("/v1/solve", json={"question": Q}), 405)
        refused(c.post("/v1/models", json={}), 405)
        refused(c.post("/v1/completions", json={"prompt": "x"}), 404)
        still_healthy(c)


def test_a_barrage_of_bad_requests_leaves_no_question_waiting(router):
    bodies = [{"messages": USER, "budget": "x"}, {"messages": 5}, {"question": Q}, {"messages": USER, "model": "no"},
              {"messages": [{"role": "user", "content": ""}]}, {"messages": USER, "budget": -1}]
    with client(router) as c:
        for _ in range(20):
            for body in bodies:
                assert 400 <= c.post("/v1/chat/completions", json=body).status_code < 500
        text = c.get("/metrics").text
        assert "ttsopt_questions_waiting 0.0" in text
        assert 'status="500"' not in text
        still_healthy(c)


# -- on a real socket: disconnects --------------------------------------------------------------------


def _metric(url: str, line_start: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.network
@pytest.mark.timeout(60)
def test_a_client_that_disconnects_mid_batch_leaves_the_others_answered_and_the_server_healthy():
    router = FakeRouter()
    router.gate = threading.Event()
    with serve_in_background(router, batch_window_ms=300) as s:
        results: dict[str, object] = {}

        def post(question: str, timeout: float) -> None:
            try:
                r = httpx.post(f"{s.url}/v1/solve", json={"question": question}, timeout=timeout)
                results[question] = r.json()["solution"]["answer"]
            except httpx.TimeoutException as e:
                results[question] = e

        threads = [threading.Thread(target=post, args=(q, t)) for q, t in
                   (("What is 1 + 1?", 20), ("What is 2 + 2?", 1.0), ("What is 3 + 3?", 20))]
        for t in threads:
            t.start()
            time.sleep(0.02)
        assert router.entered.wait(5)  # the three questions are one batch, running on the models
        threads[1].join(10)  # this client gives up while its batch runs
        assert isinstance(results["What is 2 + 2?"], httpx.TimeoutException)
        assert httpx.get(f"{s.url}/healthz", timeout=5).json()["status"] == "ok"  # answers while the models work
        router.gate.set()
        for t in threads:
            t.join(10)
        assert results["What is 1 + 1?"] == "2" and results["What is 3 + 3?"] == "6"
        deadline = time.monotonic() + 5
        while _metric(s.url, "ttsopt_questions_waiting") != 0:
            assert time.monotonic() < deadline, "a question the client left stayed counted as waiting"
            time.sleep(0.02)
        assert _metric(s.url, 'ttsopt_requests_total{route="/v1/solve",status="499"}') == 1
        r = httpx.post(f"{s.url}/v1/solve", json={"question": "What is 4 + 4?"}, timeout=10)
        assert r.json()["solution"]["answer"] == "8"
    assert sorted(router.solve_calls()[0]) == ["What is 1 + 1?", "What is 2 + 2?", "What is 3 + 3?"]


@pytest.mark.network
@pytest.mark.timeout(60)
def test_a_client_that_hangs_up_half_way_through_its_body_does_not_hurt_the_server():
    router = FakeRouter()
    with serve_in_background(router, batch_window_ms=0) as s:
        host, port = s.url.removeprefix("http://").split(":")
        for declared in (200, 10_000):
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"Content-Length: " + str(declared).encode() + b"\r\n\r\n" + b'{"messages": [{"ro')
        with socket.create_connection((host, int(port)), timeout=5) as sock:  # garbage, not HTTP
            sock.sendall(b"\x00\x01\x02 not http at all\r\n\r\n")
            sock.recv(1024)
        time.sleep(0.2)
        assert httpx.get(f"{s.url}/healthz", timeout=5).json()["status"] == "ok"
        r = httpx.post(f"{s.url}/v1/chat/completions", json={"messages": USER}, timeout=10)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "5"
        assert 'status="500"' not in httpx.get(f"{s.url}/metrics", timeout=5).text
    assert router.solve_calls() == [[Q]]
