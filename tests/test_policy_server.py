"""The policy server's bounds and error answers, in process (FastAPI's TestClient) over a fake policy.

A served model handles one request at a time, so a request past a bound is refused up front
with a 4xx that names the bound; a model failure answers 500 with a request id and no
internals, and the exception goes to the server's log under that id.
"""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from ttsopt.search import Completion, Generation
from ttsopt.search.engines.policy_server import ServerLimits, create_app

SECRET = "/home/alice/models/secret.gguf: CUDA out of memory at 0xdeadbeef"


class FakePolicy:
    """Answers ``ok j`` for sample j of each prompt; ``fail`` makes the next call raise it."""

    name = "fake"
    num_parameters = 7

    def __init__(self) -> None:
        self.calls = 0
        self.fail: BaseException | None = None
        self.broken = False

    def format_prompt(self, question: str) -> str:
        return question

    def generate(self, prompts, params):
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        if self.broken:  # a Generation whose completions are not Completions
            return [Generation(prompt_tokens=1, completions=[object()]) for _ in prompts]
        return [Generation(prompt_tokens=len(p), completions=[
            Completion(text=f"ok {j}", tokens=2, finish_reason="eos", logprob=None) for j in range(params.n)
        ]) for p in prompts]


@pytest.fixture
def policy() -> FakePolicy:
    return FakePolicy()


def client(policy: FakePolicy, **limits) -> TestClient:
    return TestClient(create_app(policy, **limits), raise_server_exceptions=False)


def post(c: TestClient, **body):
    return c.post("/v1/completions", json={"prompt": "q", **body})


def error_of(response) -> dict:
    return response.json()["error"]


# -- bounds ---------------------------------------------------------------------------------------


def test_a_request_within_the_limits_is_served(policy):
    r = post(client(policy, max_n=4, max_tokens=32, max_prompts=2), prompt=["a", "b"], n=4, max_tokens=32)
    assert r.status_code == 200
    assert [c["text"] for c in r.json()["choices"]] == ["ok 0", "ok 1", "ok 2", "ok 3"] * 2


@pytest.mark.parametrize("body, named", [
    ({"n": 5}, "n=5 exceeds this server's limit max_n=4"),
    ({"max_tokens": 33}, "max_tokens=33 exceeds this server's limit max_tokens=32"),
    ({"prompt": ["a", "b", "c"]}, "prompts=3 exceeds this server's limit max_prompts=2"),
    ({"prompt": ["a", "b"], "n": 3}, "6 samples exceeds this server's limit max_samples=5"),
])
def test_a_request_past_a_limit_is_refused_naming_the_limit_and_its_value(policy, body, named):
    r = post(client(policy, max_n=4, max_tokens=32, max_prompts=2, max_samples=5), **body)
    assert r.status_code == 400
    assert named in error_of(r)["message"]
    assert policy.calls == 0  # refused before the model is touched


def test_a_declared_body_over_the_limit_is_refused_with_413(policy):
    r = post(client(policy, max_body_bytes=100), prompt="x" * 200)
    assert r.status_code == 413
    assert error_of(r)["message"] == "request body exceeds this server's limit max_body_bytes=100"
    assert policy.calls == 0


def test_a_chunked_body_is_counted_as_it_arrives(policy):
    chunks = (b'{"prompt": "', b"x" * 80, b"x" * 80, b'"}')
    r = client(policy, max_body_bytes=100).post("/v1/completions", content=iter(chunks),
                                                headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "max_body_bytes=100" in error_of(r)["message"]
    assert policy.calls == 0


def test_the_defaults_admit_what_a_sweep_sends(policy):
    limits = ServerLimits()
    assert limits.refusal(n=256, max_tokens=4096, prompts=16) is None
    assert post(client(policy), n=256, max_tokens=1024).status_code == 200


@pytest.mark.parametrize("bad", [{"max_n": 0}, {"max_tokens": -1}, {"max_body_bytes": 1.5}, {"max_prompts": True}])
def test_limits_must_be_positive_integers(policy, bad):
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive integer"):
        create_app(policy, **bad)


def test_limits_come_as_an_object_or_as_keywords_not_both(policy):
    assert create_app(policy, limits=ServerLimits(max_n=3)).state.limits.max_n == 3
    with pytest.raises(TypeError, match="not both"):
        create_app(policy, limits=ServerLimits(), max_n=3)


# -- errors ---------------------------------------------------------------------------------------


def test_a_model_failure_is_a_generic_500_with_a_request_id_and_the_details_are_logged(policy, caplog):
    policy.fail = RuntimeError(SECRET)
    with caplog.at_level(logging.ERROR, logger="ttsopt.search.engines.policy_server"):
        r = post(client(policy))
    assert r.status_code == 500
    err = error_of(r)
    assert err["type"] == "InternalServerError" and err["request_id"].startswith("req-")
    assert err["request_id"] in err["message"]
    assert SECRET not in r.text and "RuntimeError" not in r.text
    logged = [rec for rec in caplog.records if err["request_id"] in rec.getMessage()]
    assert logged and SECRET in str(logged[0].exc_info[1])


def test_every_failure_gets_its_own_request_id(policy):
    policy.fail = RuntimeError(SECRET)
    c = client(policy)
    assert error_of(post(c))["request_id"] != error_of(post(c))["request_id"]


def test_a_policy_that_breaks_its_contract_is_a_500_too(policy):
    policy.broken = True
    r = post(client(policy))
    assert r.status_code == 500 and "request id" in error_of(r)["message"]


def test_the_policys_argument_checks_stay_client_errors_with_their_reason(policy):
    policy.fail = ValueError("prompt 0 is empty after tokenisation")
    r = post(client(policy))
    assert r.status_code == 400 and error_of(r)["message"] == "prompt 0 is empty after tokenisation"


def test_an_unknown_route_answers_in_the_same_error_shape(policy):
    r = client(policy).get("/v1/nope")
    assert r.status_code == 404 and error_of(r)["type"] == "NotFoundError"
