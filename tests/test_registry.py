"""Spec strings -> backends, with every backend's constructor replaced by a recorder (no model loads)."""

from __future__ import annotations

import pytest

from ttsopt.search import registry
from ttsopt.search.registry import ENGINES, load_policy, load_prm, on_engine, policy_backend

BACKENDS = {
    "transformers": ("ttsopt.search.engines.hf_policy", "TransformersPolicy"),
    "llamacpp": ("ttsopt.search.engines.llamacpp_policy", "LlamaCppPolicy"),
    "openai": ("ttsopt.search.engines.openai_policy", "OpenAIPolicy"),
    "vllm": ("ttsopt.search.engines.vllm_policy", "VLLMPolicy"),
}


class _Built(str):
    """What a recorder returns: the backend's name, with a known size (load_policy checks it)."""

    num_parameters = 1


@pytest.fixture
def built(monkeypatch) -> list[tuple[str, tuple, dict]]:
    """Every backend class swapped for a recorder; the list gets (backend, args, kwargs) per build."""
    import importlib

    calls: list[tuple[str, tuple, dict]] = []
    for backend, (module, cls) in BACKENDS.items():
        def record(*args, _backend=backend, **kwargs):
            calls.append((_backend, args, kwargs))
            return _Built(_backend)

        monkeypatch.setattr(importlib.import_module(module), cls, record)
    return calls


@pytest.mark.parametrize("spec, backend, args", [
    ("smollm2-135m", "transformers", ("smollm2-135m",)),
    ("hf:/models/qwen", "transformers", ("/models/qwen",)),
    ("/models/model.gguf", "transformers", ("/models/model.gguf",)),
    ("llamacpp:smollm2-135m", "llamacpp", ("smollm2-135m",)),
    ("llamacpp:/models/model.gguf", "llamacpp", ("/models/model.gguf",)),
    ("openai:http://host:8000/v1#qwen", "openai", ("http://host:8000/v1", "qwen")),
    ("vllm:Qwen/Qwen2.5-1.5B", "vllm", ("Qwen/Qwen2.5-1.5B",)),
])
def test_each_spec_form_builds_its_backend(built, spec, backend, args):
    assert load_policy(spec) == backend == policy_backend(spec)
    assert built == [(backend, args, {})]


def test_a_vllm_spec_carries_engine_arguments_in_its_query(built):
    """A vLLM policy sharing its GPU with a PRM must be told how much memory to take, in the spec."""
    load_policy("vllm:Qwen/Qwen2.5-1.5B-Instruct?gpu_memory_utilization=0.4&max_model_len=4096&enforce_eager=true")
    assert built == [("vllm", ("Qwen/Qwen2.5-1.5B-Instruct",),
                      {"gpu_memory_utilization": 0.4, "max_model_len": 4096, "enforce_eager": True})]
    with pytest.raises(ValueError, match="key=value"):
        load_policy("vllm:Qwen/Qwen2.5-1.5B-Instruct?gpu_memory_utilization")


def test_a_gguf_path_moved_onto_llamacpp_runs_on_llamacpp(built):
    """on_engine writes llamacpp:/x.gguf; its .gguf suffix must not send it back to transformers."""
    spec = on_engine("/models/model.gguf", "llamacpp")
    assert spec == "llamacpp:/models/model.gguf"
    assert load_policy(spec, device="cpu") == "llamacpp"
    assert built == [("llamacpp", ("/models/model.gguf",), {})]  # llama.cpp here takes no device


def test_an_unknown_spec_names_the_forms_it_accepts(built):
    with pytest.raises(ValueError, match="unknown policy spec 'tgi:x'.*llamacpp:PRESET_OR_GGUF"):
        load_policy("tgi:x")
    assert built == []


def test_an_openai_spec_needs_a_model_name(built):
    with pytest.raises(ValueError, match="needs a model name"):
        load_policy("openai:http://host/v1")


@pytest.mark.parametrize("kwargs", [{}, {"device": "cuda:0"}, {"dtype": "bfloat16"}, {"device": "cpu", "dtype": "auto"}])
def test_the_calculator_takes_device_and_dtype_and_ignores_them(kwargs):
    """It has no weights, so callers pass placement to every PRM alike."""
    prm = load_prm("calc", wrong_score=0.1, **kwargs)
    assert prm.score([("q", ["2 + 2 = 5"])])[0].scores == [0.1]


def test_engines_is_the_one_list_that_on_engine_checks():
    assert ENGINES == ("transformers", "llamacpp")
    for engine in ENGINES:
        assert registry.check_engine(engine) == engine
        on_engine("smollm2-135m", engine)
    with pytest.raises(ValueError, match="expected one of transformers, llamacpp"):
        registry.check_engine("tgi")


def test_the_cli_engine_options_name_exactly_the_registrys_engines():
    """The CLI writes the names in its --engine help (typer needs the text at import, and the CLI
    imports nothing heavy at import); this keeps that text in step with ENGINES."""
    import typer

    from ttsopt.cli import app

    group = typer.main.get_command(app)
    for command in ("run", "sweep"):
        (option,) = [p for p in group.commands[command].params if p.name == "engine"]
        named = [e for e in ("transformers", "llamacpp", "vllm", "openai") if e in option.help]
        assert tuple(named) == ENGINES, (command, option.help)
