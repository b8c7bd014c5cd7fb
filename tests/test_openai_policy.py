"""OpenAIPolicy against real HTTP servers on loopback: ttsopt's own server over a scripted
policy (exact answers), over the transformers policy, and fake servers that fail on purpose."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ttsopt.search import Completion, Generation, SamplingParams
from ttsopt.search.engines.openai_policy import OpenAIPolicy, OpenAIServerError, completions_from_response
from ttsopt.search.engines.policy_server import serve_in_background, start_background
from ttsopt.search.engines.prompts import PromptFormat, plain_format

pytestmark = [pytest.mark.network, pytest.mark.timeout(120)]


# -- a deterministic stand-in policy ------------------------------------------------------


def script(prompt: str, j: int) -> str:
    """What sample j of a prompt would say if nothing stopped it."""
    if "eos" in prompt:
        return f"done {j}"
    if "marker" in prompt:
        return f"x = {j}\n\nThe answer is {j}.\nQuestion: what next?"
    return f"{prompt} step {j}\n\n{j} + {j} = {2 * j}\n\nThe answer is {2 * j}."


class ScriptedPolicy:
    """Continues each prompt with ``script``: honours stop strings (kept in the text) and
    max_tokens; one character is one token. Records what it was asked."""

    name = "scripted"
    num_parameters = 1234

    def __init__(self, delay_s: float = 0.0):
        self.calls: list[tuple[list[str], SamplingParams]] = []
        self.delay_s = delay_s

    def format_prompt(self, question: str) -> str:
        return f"Q: {question}\nA: "

    def generate(self, prompts, params):
        self.calls.append((list(prompts), params))
        time.sleep(self.delay_s)
        gens = []
        for p in prompts:
            comps = []
            for j in range(params.n):
                full = script(p, j)
                ends = [full.find(s) + len(s) for s in params.stop if s in full]
                end = min(ends) if ends else None
                if end is not None and end <= params.max_tokens:
                    text, reason = full[:end], "stop"
                elif len(full) > params.max_tokens:
                    text, reason = full[: params.max_tokens], "length"
                else:
                    text, reason = full, "eos"
                comps.append(Completion(text=text, tokens=len(text), finish_reason=reason, logprob=-0.5 * len(text)))
            gens.append(Generation(prompt_tokens=len(p), completions=comps))
        return gens


@pytest.fixture(scope="module")
def scripted():
    policy = ScriptedPolicy()
    with serve_in_background(policy) as server:
        yield policy, server.url


PROMPTS = ["alpha", "beta", "gamma", "delta", "epsilon"]
STEP = SamplingParams(n=3, temperature=0.7, max_tokens=64, stop=("\n\n",), seed=0)


@pytest.mark.parametrize("per_request", [1, 2, 5])
def test_remote_generations_equal_the_local_policy_exactly(scripted, per_request):
    policy, url = scripted
    remote = OpenAIPolicy(url, "scripted", prompts_per_request=per_request, max_concurrency=3)
    assert remote.generate(PROMPTS, STEP) == policy.generate(PROMPTS, STEP)
    # ...and stop strings stay at the end of the text, as the Policy contract says
    first = remote.generate(["alpha"], STEP)[0].completions[1]
    assert first == Completion("alpha step 1\n\n", tokens=14, finish_reason="stop", logprob=-7.0)


def test_finish_reasons_eos_and_length_survive_the_round_trip(scripted):
    _, url = scripted
    remote = OpenAIPolicy(url, "scripted")
    eos, cut = remote.generate(["eos", "long"], SamplingParams(n=1, max_tokens=6, stop=("\n\n",)))
    assert eos.completions[0] == Completion("done 0", 6, "eos", -3.0)
    assert cut.completions[0] == Completion("long s", 6, "length", -3.0)
    assert (eos.prompt_tokens, cut.prompt_tokens) == (3, 4)


def test_end_markers_end_a_completion_like_eos_and_are_removed(scripted):
    policy, url = scripted
    remote = OpenAIPolicy(url, "scripted", prompt_format=plain_format())
    gen = remote.generate(["marker"], SamplingParams(n=2, max_tokens=100, stop=("\n\n",)))[0]
    assert [c.text for c in gen.completions] == ["x = 0\n\n", "x = 1\n\n"]
    whole = remote.generate(["marker"], SamplingParams(n=1, max_tokens=100))[0].completions[0]
    assert (whole.text, whole.finish_reason) == ("x = 0\n\nThe answer is 0.", "eos")
    # the marker was sent as a stop string; the token count still covers it
    assert policy.calls[-1][1].stop == ("\nQuestion:", "Question:")
    assert whole.tokens == len("x = 0\n\nThe answer is 0.\nQuestion:")


def test_every_prompt_gets_its_own_seed_so_identical_prompts_differ(scripted):
    policy, url = scripted
    remote = OpenAIPolicy(url, "scripted", max_concurrency=1)
    before = len(policy.calls)
    remote.generate(["q", "q", "q"], STEP.replace(seed=10))
    assert sorted(params.seed for _, params in policy.calls[before:]) == [10, 13, 16]
    before = len(policy.calls)
    remote.generate(["q", "q"], STEP.replace(seed=None))
    assert [params.seed for _, params in policy.calls[before:]] == [None, None]


def test_results_keep_prompt_order_under_concurrency():
    policy = ScriptedPolicy(delay_s=0.01)
    with serve_in_background(policy) as server:
        remote = OpenAIPolicy(server.url, "scripted", max_concurrency=4)
        prompts = [f"p{i}" for i in range(12)]
        gens = remote.generate(prompts, SamplingParams(n=1, max_tokens=64, stop=("\n\n",)))
    assert [g.completions[0].text for g in gens] == [f"p{i} step 0\n\n" for i in range(12)]
    assert len(policy.calls) == 12


def test_parameter_count_comes_from_the_models_endpoint(scripted):
    _, url = scripted
    assert OpenAIPolicy(url, "scripted").num_parameters == 1234
    assert OpenAIPolicy(url, "scripted", num_parameters=7).num_parameters == 7
    assert OpenAIPolicy(url + "/v1/", "scripted").models()[0]["id"] == "scripted"


def test_the_registry_builds_it_from_a_spec(scripted):
    from ttsopt.search.registry import load_policy

    _, url = scripted
    policy = load_policy(f"openai:{url}/v1#scripted")
    assert policy.name == "openai:scripted"
    assert policy.generate(["beta"], STEP)[0].completions[2].text == "beta step 2\n\n"


def test_a_wrong_model_name_is_a_clear_client_error(scripted):
    _, url = scripted
    with pytest.raises(OpenAIServerError, match="'nope' is not served here; this server serves 'scripted'") as e:
        OpenAIPolicy(url, "nope").generate(["alpha"], STEP)
    assert e.value.status_code == 404


def test_the_server_rejects_bad_requests_with_its_reason(scripted):
    _, url = scripted
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "a", "top_p": 0}, timeout=10)
    assert r.status_code == 400 and "top_p must be in (0, 1]" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/completions", json={"prompt": [1, 2]}, timeout=10)
    assert r.status_code == 400 and "prompt" in r.json()["error"]["message"]
    r = httpx.post(f"{url}/v1/completions", json={"prompt": "a", "stream": True}, timeout=10)
    assert r.status_code == 400


def test_the_server_speaks_vllms_dialect(scripted):
    _, url = scripted
    body = {"model": "scripted", "prompt": ["alpha", "eos"], "n": 2, "stop": "\n\n", "max_tokens": 64,
            "logprobs": 1}
    data = httpx.post(f"{url}/v1/completions", json=body, timeout=10).json()
    c = data["choices"]
    assert [x["index"] for x in c] == [0, 1, 2, 3]
    assert (c[1]["text"], c[1]["finish_reason"], c[1]["stop_reason"]) == ("alpha step 1", "stop", "\n\n")
    assert (c[2]["text"], c[2]["finish_reason"], c[2]["stop_reason"]) == ("done 0", "stop", None)
    assert c[0]["logprobs"] is None  # no token strings to give; exact counts are in c["ttsopt"]
    assert c[1]["ttsopt"] == {"tokens": 14, "logprob": -7.0, "prompt_tokens": 5, "prefill_tokens": None}
    assert data["usage"] == {"prompt_tokens": 8, "completion_tokens": 14 + 14 + 6 + 6, "total_tokens": 48}


# -- fake servers that misbehave on purpose ------------------------------------------------


def vllm_choice(index, text, stop_reason, tokens, finish="stop"):
    return {"index": index, "text": text, "finish_reason": finish, "stop_reason": stop_reason,
            "logprobs": {"tokens": tokens, "token_logprobs": [-0.25] * len(tokens)}}


def fake_server(handler):
    """Serve ``handler(body) -> (status, json)`` at /v1/completions; returns (server, bodies seen)."""
    app = FastAPI()
    seen: list[dict] = []

    @app.post("/v1/completions")
    async def completions(request: Request):
        seen.append(await request.json())
        status, data = handler(seen[-1], len(seen))
        return JSONResponse(status_code=status, content=data)

    return start_background(app), seen


def test_server_errors_are_retried_with_backoff():
    ok = {"choices": [vllm_choice(0, "7 + 5 = 12", "\n\n", ["7", " +", " 5", " =", " 12", "\n\n"])],
          "usage": {"prompt_tokens": 9, "completion_tokens": 6}}
    server, seen = fake_server(lambda body, k: (500, {"error": {"message": "busy"}}) if k == 1 else (200, ok))
    with server:
        policy = OpenAIPolicy(server.url, "m", retry_backoff_s=0.01, extra_body={"add_special_tokens": False})
        gen = policy.generate(["q"], SamplingParams(stop=("\n\n",)))[0]
        with pytest.raises(ValueError, match="num_parameters="):  # no /v1/models here: not 0 FLOPs but an error
            policy.num_parameters
    assert len(seen) == 2 and seen[0]["add_special_tokens"] is False
    assert gen == Generation(prompt_tokens=9, completions=[Completion("7 + 5 = 12\n\n", 6, "stop", -1.5)])
    assert seen[0]["logprobs"] == 1 and seen[0]["seed"] == 0
    # without a tokenizer prompts are plain few-shot text, whose end markers travel as stop strings
    assert seen[0]["stop"] == ["\n\n", "\nQuestion:", "Question:"]


def test_client_errors_fail_at_once_with_the_servers_message():
    server, seen = fake_server(lambda body, k: (400, {"error": {"message": "max_tokens is too large: 99999"}}))
    with server:
        with pytest.raises(OpenAIServerError, match="HTTP 400: max_tokens is too large: 99999") as e:
            OpenAIPolicy(server.url, "m", retry_backoff_s=0.01).generate(["q"], SamplingParams(max_tokens=99999))
    assert e.value.status_code == 400 and len(seen) == 1


def test_persistent_failures_give_up_after_the_retries():
    server, seen = fake_server(lambda body, k: (503, {"message": "loading model"}))
    with server:
        with pytest.raises(OpenAIServerError, match="loading model.*gave up after 3 attempts"):
            OpenAIPolicy(server.url, "m", max_retries=2, retry_backoff_s=0.01).generate(["q"], SamplingParams())
    assert len(seen) == 3


def test_an_unreachable_server_is_named_in_the_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    policy = OpenAIPolicy(f"http://127.0.0.1:{port}", "m", max_retries=1, retry_backoff_s=0.01)
    with pytest.raises(OpenAIServerError, match=f"could not reach http://127.0.0.1:{port}/v1/completions"):
        policy.generate(["q"], SamplingParams())
    with pytest.raises(ValueError, match="could not ask"):
        policy.num_parameters


def test_a_server_that_ignores_n_is_topped_up_with_more_requests():
    def one_choice(body, k):
        return 200, {"choices": [{"index": 0, "text": f"s{body['seed']}", "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 4, "completion_tokens": 2}}

    server, seen = fake_server(one_choice)
    with server:
        gen = OpenAIPolicy(server.url, "m").generate(["q"], SamplingParams(n=3, seed=5))[0]
    assert [(b["n"], b["seed"]) for b in seen] == [(3, 5), (2, 6), (1, 7)]
    assert [c.text for c in gen.completions] == ["s5", "s6", "s7"]
    assert [c.finish_reason for c in gen.completions] == ["eos"] * 3 and gen.prompt_tokens == 4


# -- parsing of other servers' dialects (no server needed) --------------------------------


def parse(response, n_prompts=1, n=1, stop=("\n\n",), end_markers=(), count_tokens=None):
    return completions_from_response(response, n_prompts=n_prompts, n=n, stop=stop,
                                     end_markers=end_markers, count_tokens=count_tokens)


def test_stop_reason_and_matched_stop_tell_stop_from_eos_and_end_markers():
    choices = [
        vllm_choice(0, "a", "\n\n", ["a", "\n\n"]),
        vllm_choice(1, "b", None, ["b", "</s>"]),
        vllm_choice(2, "c", "\nQuestion:", ["c", "\n", "Question", ":"]),
        vllm_choice(3, "d", 2, ["d", "<eot>"]),  # a stop token id: EOS-like
        {"index": 4, "text": "e", "finish_reason": "stop", "matched_stop": "\n\n"},  # SGLang
        vllm_choice(5, "ffff", None, ["ff", "ff"], finish="length"),
    ]
    (gen,), estimated = parse({"choices": choices, "usage": {"prompt_tokens": 3, "completion_tokens": 15}},
                              n=6, end_markers=("\nQuestion:",))
    got = [(c.text, c.finish_reason, c.tokens) for c in gen.completions]
    assert got[:4] == [("a\n\n", "stop", 2), ("b", "eos", 2), ("c", "eos", 4), ("d", "eos", 2)]
    assert got[4][:2] == ("e\n\n", "stop") and got[5] == ("ffff", "length", 2)
    assert gen.completions[0].logprob == -0.5 and gen.prompt_tokens == 3
    assert estimated  # the SGLang choice had no token count: its share of usage was estimated
    assert got[4][2] == 15 - (2 + 2 + 4 + 2 + 2)


def test_without_a_stop_field_the_stop_string_is_recovered_when_it_can_be():
    bare = {"choices": [{"index": 0, "text": "x", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 3}}
    (gen,), _ = parse(bare)
    assert gen.completions[0] == Completion("x\n\n", tokens=3, finish_reason="stop", logprob=None)
    # two stop strings: llama.cpp-style per-token strings show which one ended it
    tokens = {"choices": [{"index": 0, "text": "x", "finish_reason": "stop",
                           "logprobs": {"content": [{"token": "x", "logprob": -1.0},
                                                    {"token": "\n\n", "logprob": -2.0}]}}]}
    (gen,), _ = parse(tokens, stop=("\n\n", "."))
    assert gen.completions[0] == Completion("x\n\n", 2, "stop", -3.0)
    # nothing to tell by: taken as EOS, text as returned
    (gen,), _ = parse(bare, stop=("\n\n", "."))
    assert gen.completions[0].finish_reason == "eos" and gen.completions[0].text == "x"


def test_token_counts_fall_back_to_the_local_tokenizer_then_to_a_length_split():
    resp = {"choices": [{"index": i, "text": t, "finish_reason": "length"} for i, t in enumerate(["aaa", "a"])],
            "usage": {"prompt_tokens": 10, "completion_tokens": 9}}
    gens, estimated = parse(resp, n_prompts=2, n=1, count_tokens=len)
    assert [g.completions[0].tokens for g in gens] == [3, 1] and not estimated
    assert [g.prompt_tokens for g in gens] == [5, 5]
    gens, estimated = parse(resp, n_prompts=2, n=1)
    assert estimated and sum(g.completions[0].tokens for g in gens) == 9
    assert gens[0].completions[0].tokens > gens[1].completions[0].tokens


def test_bad_arguments_are_refused_early():
    with pytest.raises(ValueError, match="http"):
        OpenAIPolicy("localhost:8000", "m")
    with pytest.raises(ValueError, match="chat prompt format needs tokenizer"):
        OpenAIPolicy("http://127.0.0.1:1", "m", prompt_format=PromptFormat(chat=True))


# -- the real transformers policy behind the server ----------------------------------------


def test_remote_transformers_policy_matches_the_local_one(tiny_model_dir):
    hf_policy = pytest.importorskip("ttsopt.search.engines.hf_policy")
    local = hf_policy.TransformersPolicy(str(tiny_model_dir))
    params = SamplingParams(n=2, temperature=0.8, max_tokens=12, stop=("\n\n",), seed=3)
    with serve_in_background(local, model_name="tiny") as server:
        remote = OpenAIPolicy(server.url, "tiny", tokenizer=str(tiny_model_dir), prompts_per_request=8)
        prompts = [remote.format_prompt(q) for q in ("What is 3 + 4?", "What is 12 * 5?")]
        assert prompts == [local.format_prompt(q) for q in ("What is 3 + 4?", "What is 12 * 5?")]
        # one request with all prompts: the server makes the very call a local user would
        assert remote.generate(prompts, params) == local.generate(prompts, params)
        assert remote.num_parameters == local.num_parameters > 0
        # one request per prompt (the vLLM-safe default): same shape and contract
        gens = OpenAIPolicy(server.url, "tiny", tokenizer=str(tiny_model_dir)).generate(prompts, params)
    for gen in gens:
        assert gen.prompt_tokens > 0 and len(gen.completions) == 2
        for c in gen.completions:
            assert 1 <= c.tokens <= 12 and c.finish_reason in ("stop", "eos", "length")
            assert (c.finish_reason == "stop") == c.text.endswith("\n\n")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_embedded_model_served_over_http_writes_steps():
    hf_policy = pytest.importorskip("ttsopt.search.engines.hf_policy")
    local = hf_policy.TransformersPolicy("smollm2-135m")
    with serve_in_background(local) as server:
        remote = OpenAIPolicy(server.url, local.name, tokenizer="smollm2-135m")
        question = "What is 6 + 7?"
        prompt = remote.format_prompt(question)
        assert prompt == local.format_prompt(question) and "<|im_start|>assistant" in prompt
        params = SamplingParams(n=4, temperature=0.7, max_tokens=48, stop=("\n\n",), seed=0)
        (gen,) = remote.generate([prompt], params)
        assert remote.num_parameters == local.num_parameters > 100_000_000
    assert gen.prompt_tokens == len(remote.tokenizer.encode(prompt, add_special_tokens=False))
    assert len(gen.completions) == 4
    for c in gen.completions:
        assert c.tokens >= 1 and c.logprob is not None and c.logprob < 0
        assert (c.finish_reason == "stop") == c.text.endswith("\n\n")
