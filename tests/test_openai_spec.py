"""``openai:`` specs against servers that do not say how large their model is, and what a server
lacks: the spec carries ``?num_parameters=``, a missing size is one clean line saying how to give it,
a judge over a server is refused up front, and every feature a server lacks is logged, never silent."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ttsopt.search import SamplingParams
from ttsopt.search.engines.continuations import begin_generate, prompt_seed
from ttsopt.search.engines.openai_policy import OpenAIPolicy, UnknownParameterCount
from ttsopt.search.registry import OPENAI_SPEC_OPTIONS, load_policy, load_prm, openai_spec_parts
from ttsopt.web import start_background

LOGGER = "ttsopt.search.engines.openai_policy"


# -- spec parsing (no server) ---------------------------------------------------------------------


def test_an_openai_spec_carries_policy_options_after_the_model():
    url, model, options = openai_spec_parts(
        "openai:http://127.0.0.1:8080/v1#smollm2?num_parameters=135e6&tokenizer=smollm2-135m&max_concurrency=2")
    assert (url, model) == ("http://127.0.0.1:8080/v1", "smollm2")
    assert options == {"num_parameters": 135_000_000, "tokenizer": "smollm2-135m", "max_concurrency": 2}
    assert isinstance(options["num_parameters"], int)
    assert openai_spec_parts("openai:http://h/v1#m") == ("http://h/v1", "m", {})
    assert openai_spec_parts("openai:http://h/v1#m?num_parameters=134515008")[2] == {"num_parameters": 134515008}


@pytest.mark.parametrize("spec, words", [
    ("openai:http://h/v1#m?num_parameters=0", "num_parameters must be a positive whole number"),
    ("openai:http://h/v1#m?num_parameters=1.5", "num_parameters must be a positive whole number"),
    ("openai:http://h/v1#m?num_parameters=lots", "num_parameters must be a positive whole number"),
    ("openai:http://h/v1#m?num_parameters=true", "num_parameters must be a positive whole number"),
    ("openai:http://h/v1#m?api_key=sk-123", "unknown option(s) api_key"),
    ("openai:http://h/v1#m?num_parameters", "key=value"),
    ("openai:http://h/v1#?num_parameters=5", "needs a model name"),
    ("openai:http://h/v1", "needs a model name"),
])
def test_a_bad_openai_spec_is_a_value_error_naming_what_is_wrong(spec, words):
    with pytest.raises(ValueError) as e:
        load_policy(spec)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_every_spec_option_is_a_constructor_keyword():
    import inspect

    keywords = inspect.signature(OpenAIPolicy).parameters
    assert all(name in keywords for name in OPENAI_SPEC_OPTIONS)


@pytest.mark.parametrize("spec", ["judge:openai:http://127.0.0.1:8080/v1#smollm2", "judge:vllm:Qwen/Qwen2.5-0.5B"])
def test_a_judge_over_a_server_is_refused_with_the_way_out(spec):
    with pytest.raises(ValueError) as e:
        load_prm(spec)
    message = str(e.value)
    assert "is not supported" in message and "judge:llamacpp:" in message and "--prm calc" in message


def test_the_shared_preamble_checks_prompts_and_stops_and_numbers_seeds():
    params = SamplingParams(n=4, stop=("\n\n",), seed=10)
    call = begin_generate(["a", "b"], params, ("\nQuestion:", "\n\n"))
    assert call.stops == ["\n\n", "\nQuestion:"] and not call.empty
    assert [call.seed(i) for i in range(3)] == [10, 14, 18] == [prompt_seed(params, i) for i in range(3)]
    assert call.seed(0) is not None and begin_generate([], params).empty
    assert SamplingParams(seed=None).seed is None and prompt_seed(SamplingParams(seed=None), 3) is None
    with pytest.raises(TypeError, match="not a single string"):
        begin_generate("abc", params)
    with pytest.raises(TypeError, match="prompt 1 is int"):
        begin_generate(["a", 5], params)
    with pytest.raises(ValueError, match="non-empty"):
        begin_generate(["a"], SamplingParams(stop=("",)))


def test_every_policy_starts_generate_with_the_shared_preamble():
    """One home for the argument checks: each backend's generate calls begin_generate."""
    import inspect

    from ttsopt.search.engines import hf_policy, llamacpp_policy, openai_policy, vllm_policy

    for module, cls in ((hf_policy, "TransformersPolicy"), (llamacpp_policy, "LlamaCppPolicy"),
                        (openai_policy, "OpenAIPolicy"), (vllm_policy, "VLLMPolicy")):
        source = inspect.getsource(getattr(module, cls).generate)
        assert "begin_generate(prompts, params" in source, cls


def test_openai_policy_refuses_a_single_string_as_prompts():
    with pytest.raises(TypeError, match="not a single string"):
        OpenAIPolicy("http://127.0.0.1:1", "m", num_parameters=1).generate("What is 1 + 1?", SamplingParams())


# -- servers that do not report a size, or lack features --------------------------------------------


def fake_server(models: list[dict], complete=None):
    """/v1/models answers ``models``; /v1/completions runs ``complete(body) -> (status, json)``."""
    app = FastAPI()
    seen: list[dict] = []

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": models}

    @app.post("/v1/completions")
    async def completions(request: Request):
        seen.append(await request.json())
        status, data = complete(seen[-1])
        return JSONResponse(status_code=status, content=data)

    return start_background(app), seen


LLAMA_CPP_PYTHON_MODELS = [{"id": "smollm2", "object": "model", "owned_by": "me", "permissions": []}]


def one_choice(body):
    """A llama-cpp-python-like answer: one choice whatever n is, the stop string stripped, logprobs kept."""
    text = f"s{body.get('seed')}"
    lp = {"tokens": [text, "\n\n"], "token_logprobs": [-0.5, -0.25]} if body.get("logprobs") else None
    return 200, {"choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": lp}],
                 "usage": {"prompt_tokens": 4, "completion_tokens": 2}}


def test_a_server_without_a_size_is_one_clean_line_naming_the_spec_option():
    server, _ = fake_server(LLAMA_CPP_PYTHON_MODELS)
    with server:
        spec = f"openai:{server.url}/v1#smollm2"
        with pytest.raises(UnknownParameterCount) as e:
            load_policy(spec)
        message = str(e.value)
        assert "does not report the parameter count of 'smollm2'" in message and "'smollm2'" in message
        assert f"pass ?num_parameters=... in the spec, e.g. {spec}?num_parameters=135e6" in message
        assert "\n" not in message and e.value.__cause__ is None and e.value.__suppress_context__
        assert isinstance(e.value, ValueError)  # what the CLI's ValueError handlers print
        with pytest.raises(UnknownParameterCount, match=r"#smollm2\?max_retries=1&num_parameters=135e6"):
            load_policy(spec + "?max_retries=1")
        policy = load_policy(spec + "?num_parameters=135e6")
        assert policy.num_parameters == 135_000_000 and policy.model == "smollm2"


def test_an_unreachable_server_at_load_says_so_in_one_line():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(UnknownParameterCount) as e:
        load_policy(f"openai:http://127.0.0.1:{port}/v1#m?max_retries=0")
    assert "is the server running?" in str(e.value) and "?num_parameters=" in str(e.value)
    assert "\n" not in str(e.value)


def test_a_server_that_ignores_n_is_topped_up_and_says_so_once(caplog):
    server, seen = fake_server(LLAMA_CPP_PYTHON_MODELS, one_choice)
    with server, caplog.at_level(logging.WARNING, logger=LOGGER):
        policy = load_policy(f"openai:{server.url}/v1#smollm2?num_parameters=135e6")
        params = SamplingParams(n=3, seed=5, stop=("\n\n", "."))
        gen, = policy.generate(["q"], params)
        policy.generate(["r"], params)
    assert [c.text for c in gen.completions] == ["s5\n\n", "s6\n\n", "s7\n\n"]  # stop told by the token strings
    assert [c.finish_reason for c in gen.completions] == ["stop"] * 3
    assert [c.logprob for c in gen.completions] == [-0.75] * 3
    assert [(b["n"], b["seed"]) for b in seen[:3]] == [(3, 5), (2, 6), (1, 7)]
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("ignores n" in w for w in warnings) == 1 and policy.degraded == {"n"}


def test_a_server_that_refuses_seed_by_name_is_sent_none_and_says_so(caplog):
    def no_seed(body):
        if "seed" in body:
            return 422, {"detail": [{"loc": ["body", "seed"], "msg": "extra fields not permitted"}]}
        return one_choice(body)

    server, seen = fake_server(LLAMA_CPP_PYTHON_MODELS, no_seed)
    with server, caplog.at_level(logging.WARNING, logger=LOGGER):
        policy = OpenAIPolicy(server.url, "smollm2", num_parameters=1)
        gen, = policy.generate(["q"], SamplingParams(n=2, seed=1, stop=("\n\n",)))
    assert len(gen.completions) == 2 and [("seed" in b) for b in seen] == [True, False, False]
    assert "seed" in policy.degraded and any("refused the request field 'seed'" in r.getMessage()
                                             and "no longer reproducible" in r.getMessage() for r in caplog.records)


def test_a_server_that_returns_no_logprobs_says_so(caplog):
    def bare(body):
        return 200, {"choices": [{"index": 0, "text": "x", "finish_reason": "length"}],
                     "usage": {"prompt_tokens": 2, "completion_tokens": 3}}

    server, _ = fake_server(LLAMA_CPP_PYTHON_MODELS, bare)
    with server, caplog.at_level(logging.WARNING, logger=LOGGER):
        policy = OpenAIPolicy(server.url, "smollm2", num_parameters=1)
        gen, = policy.generate(["q"], SamplingParams(n=1))
    assert gen.completions[0].logprob is None and policy.degraded == {"logprobs"}
    assert any("returned no logprobs" in r.getMessage() for r in caplog.records)


def test_a_400_that_is_a_limit_is_not_taken_for_a_missing_feature():
    def limit(body):
        return 400, {"error": {"message": f"n={body['n']} exceeds this server's limit max_n=2"}}

    server, seen = fake_server(LLAMA_CPP_PYTHON_MODELS, limit)
    with server:
        policy = OpenAIPolicy(server.url, "smollm2", num_parameters=1)
        with pytest.raises(Exception, match="max_n=2"):
            policy.generate(["q"], SamplingParams(n=3))
    assert len(seen) == 1 and not policy.degraded


def test_a_router_loading_its_pair_may_pass_a_device_the_server_does_not_need():
    """Router.load passes device= to every policy it loads; a server placed its own model (this was
    a TypeError at `ttsopt solve` with a router whose policy is an openai: spec)."""
    from ttsopt.search.registry import load_policy

    p = load_policy("openai:http://127.0.0.1:9/v1#m?num_parameters=1e6", device="cuda")
    try:
        assert p.num_parameters == 1_000_000
    finally:
        p.close()
