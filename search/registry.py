"""Model specs -> objects: one place that knows every backend and PRM family.

Imports are lazy so that choosing the OpenAI backend never imports torch, and the
vLLM backend is imported only on machines that have vLLM.

Policy specs: a preset (``smollm2-135m``, ``gemma3-270m``), ``hf:PATH_OR_NAME``,
a ``.gguf`` path (all on transformers), ``llamacpp:PRESET_OR_GGUF`` (llama.cpp),
``openai:BASE_URL#MODEL[?option=value&...]`` or ``vllm:MODEL[?engine_arg=value&...]``.
An OpenAI spec's options are :class:`OpenAIPolicy` keywords (:data:`OPENAI_SPEC_OPTIONS`); the one
most servers need is ``num_parameters`` (``openai:http://127.0.0.1:8080/v1#smollm2?num_parameters=135e6``):
llama-cpp-python's server, vLLM and SGLang do not report a model's size, and FLOPs need it.
PRM specs: ``calc``, ``judge:POLICY_SPEC`` (``judge:llamacpp:PRESET_OR_GGUF`` on llama.cpp; a judge
over ``openai:`` or ``vllm:`` is refused: it reads the next-token distribution at one position),
``math-shepherd:PATH``, ``rlhflow:PATH``, ``skywork:PATH``, ``qwen-prm:PATH``.

An *engine* (one of :data:`ENGINES`) can be chosen for a whole sweep without renaming
its pairs: :func:`on_engine` rewrites the specs that both engines can run.
"""

from __future__ import annotations

from typing import Any

from .engines.models import PRESETS
from .types import PRM, Policy

PRM_FAMILIES = ("calc", "judge", "math-shepherd", "rlhflow", "skywork", "qwen-prm")

#: The local engines that run presets and GGUF files. The one list: the CLI's ``--engine``, a
#: sweep config's ``engine`` and the benchmarks check against it (:func:`check_engine`).
ENGINES = ("transformers", "llamacpp")

#: Constructor arguments that say where and how to hold weights; a PRM without weights ignores them.
WEIGHT_PLACEMENT = ("device", "dtype")

#: ``OpenAIPolicy`` keywords an ``openai:`` spec may carry after ``?`` (``tokenizer`` and ``name`` are
#: text, the rest numbers or true/false). ``api_key`` is not among them: a spec is written into every
#: run's rows and a sweep's config, so a key in it would be too; pass ``api_key=`` in code.
OPENAI_SPEC_OPTIONS = ("num_parameters", "tokenizer", "name", "timeout_s", "max_concurrency", "prompts_per_request",
                       "logprobs", "max_retries", "retry_backoff_s")


def policy_backend(spec: str) -> str:
    """Which backend runs ``spec``: ``transformers``, ``llamacpp``, ``openai`` or ``vllm``.

    An explicit backend prefix wins over the path's form: ``llamacpp:/x/model.gguf`` ends in
    ``.gguf`` too, and it is exactly what :func:`on_engine` writes for a GGUF policy on llama.cpp.
    """
    kind, _, _ = spec.partition(":")
    if kind in ("llamacpp", "openai", "vllm"):
        return kind
    if kind == "hf" or spec in PRESETS or spec.endswith(".gguf"):
        return "transformers"
    raise ValueError(
        f"unknown policy spec {spec!r}; expected a preset ({', '.join(PRESETS)}), hf:PATH, a .gguf file, "
        "llamacpp:PRESET_OR_GGUF, openai:BASE_URL#MODEL or vllm:MODEL"
    )


def load_policy(spec: str, **kwargs: Any) -> Policy:
    """Build a policy from a spec string; ``kwargs`` go to the backend's constructor."""
    backend = policy_backend(spec)
    kind, _, rest = spec.partition(":")
    if backend == "transformers":
        from .engines.hf_policy import TransformersPolicy

        return TransformersPolicy(rest if kind == "hf" else spec, **kwargs)
    if backend == "llamacpp":
        from .engines.llamacpp_policy import LlamaCppPolicy

        kwargs.pop("device", None)  # llama.cpp here is a CPU engine
        return LlamaCppPolicy(rest, **kwargs)
    if backend == "openai":
        from .engines.openai_policy import OpenAIPolicy, UnknownParameterCount

        kwargs.pop("device", None)  # the server placed its model; a router loading its pair passes one
        base_url, model, options = openai_spec_parts(spec)
        policy = OpenAIPolicy(base_url, model, **{**options, **kwargs})
        try:
            policy.num_parameters  # an unknown size fails here, at load, not as 0 FLOPs in every row
        except UnknownParameterCount as e:
            policy.close()
            raise UnknownParameterCount(e.reason, f"pass ?num_parameters=... in the spec, e.g. "
                                                  f"{_with_option(spec, 'num_parameters=135e6')}") from None
        return policy
    from .engines.vllm_policy import VLLMPolicy

    model, options = _engine_options(rest, spec)
    return VLLMPolicy(model, **{**options, **kwargs})


def openai_spec_parts(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``openai:BASE_URL#MODEL?num_parameters=135e6&tokenizer=smollm2-135m`` -> (base URL, model, options).

    Options are :data:`OPENAI_SPEC_OPTIONS`, read as :func:`_engine_options` reads vLLM's engine
    arguments; ``num_parameters`` may be written ``135e6`` (a whole number, however spelt).
    """
    kind, _, rest = spec.partition(":")
    if kind != "openai":
        raise ValueError(f"not an openai policy spec: {spec!r}")
    base_url, _, tail = rest.partition("#")
    model, _, query = tail.partition("?")
    if not model:
        raise ValueError(f"openai policy spec needs a model name: openai:BASE_URL#MODEL[?num_parameters=N], got {spec!r}")
    _, options = _engine_options(f"{model}?{query}", spec)
    unknown = sorted(set(options) - set(OPENAI_SPEC_OPTIONS))
    if unknown:
        raise ValueError(f"{spec!r}: unknown option(s) {', '.join(unknown)} after '?'; an openai spec takes "
                         f"{', '.join(OPENAI_SPEC_OPTIONS)}")
    for key in ("tokenizer", "name"):
        if key in options:
            options[key] = str(options[key])
    if "num_parameters" in options:
        options["num_parameters"] = _whole_number(options["num_parameters"], "num_parameters", spec)
    return base_url, model, options


def _whole_number(value: Any, key: str, spec: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value <= 0 \
            or value == float("inf") or int(value) != value:
        raise ValueError(f"{spec!r}: {key} must be a positive whole number (e.g. 135e6 or 135000000), got {value!r}")
    return int(value)


def _with_option(spec: str, option: str) -> str:
    """``spec`` with ``option`` (``key=value``) added to its query."""
    return f"{spec}{'&' if '?' in spec.partition('#')[2] else '?'}{option}"


def _engine_options(rest: str, spec: str) -> tuple[str, dict[str, Any]]:
    """``MODEL?gpu_memory_utilization=0.45&max_model_len=4096`` -> the model and vLLM engine arguments.

    A sweep config names a policy by one string, and a vLLM engine sharing its GPU with a PRM
    must be told how much memory to take; so engine arguments ride in the spec's query. Values
    are read as int, then float, then ``true``/``false``, else kept as text.
    """
    from urllib.parse import parse_qsl

    model, _, query = rest.partition("?")
    if not model:
        raise ValueError(f"vllm policy spec needs a model: vllm:MODEL[?engine_arg=value&...], got {spec!r}")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ValueError(f"{spec!r}: engine arguments after '?' must be key=value pairs joined by '&'") from None
    return model, {key: _option_value(value) for key, value in pairs}


def _option_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def check_engine(engine: str) -> str:
    """``engine`` if it is one of :data:`ENGINES`, else a ValueError that names them."""
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    return engine


def on_engine(spec: str, engine: str) -> str:
    """The spec that runs ``spec`` on ``engine``: presets and GGUF files move between
    transformers and llama.cpp (policies and judges); every other spec is left alone."""
    if check_engine(engine) == "transformers":
        return spec
    if spec.startswith("judge:"):
        return "judge:" + on_engine(spec[len("judge:"):], engine)
    if spec in PRESETS or spec.endswith(".gguf"):
        return f"llamacpp:{spec}"
    return spec


def load_prm(spec: str, **kwargs: Any) -> PRM:
    """Build a PRM from a spec string; ``kwargs`` go to the adapter's constructor.

    ``calc`` accepts and ignores ``device`` and ``dtype``: it has no weights to place, so callers
    pass them to every PRM alike instead of special-casing the calculator.
    """
    family, _, rest = spec.partition(":")
    if family == "calc":
        from .prm.calc import CalculatorPRM

        return CalculatorPRM(**{k: v for k, v in kwargs.items() if k not in WEIGHT_PLACEMENT})
    if not rest:
        raise ValueError(f"PRM spec {spec!r} needs a model: {family}:PATH_OR_NAME")
    if family == "judge":
        remote = rest.partition(":")[0]
        if remote in ("openai", "vllm"):
            raise ValueError(
                f"PRM spec {spec!r}: a judge over {remote}: is not supported; the judge reads P(Yes) and P(No) from "
                "the next-token distribution at one position, which it computes in-process. Run the judge on a "
                "local model (judge:PRESET, judge:llamacpp:PRESET_OR_GGUF, judge:PATH_OR_GGUF) or use --prm calc; "
                f"the policy may stay on {remote}:")
        from .prm.judge import JudgePRM

        return JudgePRM(rest, **kwargs)
    if family == "math-shepherd":
        from .prm.math_shepherd import MathShepherdPRM

        return MathShepherdPRM(rest, **kwargs)
    if family == "rlhflow":
        from .prm.rlhflow import RLHFlowPRM

        return RLHFlowPRM(rest, **kwargs)
    if family == "skywork":
        from .prm.skywork import SkyworkPRM

        return SkyworkPRM(rest, **kwargs)
    if family == "qwen-prm":
        from .prm.qwen_math import QwenMathPRM

        return QwenMathPRM(rest, **kwargs)
    raise ValueError(f"unknown PRM family {family!r} in {spec!r}; expected one of {', '.join(PRM_FAMILIES)}")
