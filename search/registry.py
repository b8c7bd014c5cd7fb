"""Model specs -> objects: one place that knows every backend and PRM family.

Imports are lazy so that choosing the OpenAI backend never imports torch, and the
vLLM backend is imported only on machines that have vLLM.

Policy specs: a preset (``smollm2-135m``, ``gemma3-270m``), ``hf:PATH_OR_NAME``,
a ``.gguf`` path, ``openai:BASE_URL#MODEL`` or ``vllm:MODEL``.
PRM specs: ``calc``, ``judge:POLICY_SPEC``, ``math-shepherd:PATH``, ``rlhflow:PATH``,
``skywork:PATH``, ``qwen-prm:PATH``.
"""

from __future__ import annotations

from typing import Any

from .models import PRESETS
from .types import PRM, Policy

PRM_FAMILIES = ("calc", "judge", "math-shepherd", "rlhflow", "skywork", "qwen-prm")


def load_policy(spec: str, **kwargs: Any) -> Policy:
    """Build a policy from a spec string; ``kwargs`` go to the backend's constructor."""
    kind, _, rest = spec.partition(":")
    if spec in PRESETS or spec.endswith(".gguf") or kind == "hf":
        from .hf_policy import TransformersPolicy

        return TransformersPolicy(rest if kind == "hf" else spec, **kwargs)
    if kind == "openai":
        from .openai_policy import OpenAIPolicy

        base_url, _, model = rest.partition("#")
        if not model:
            raise ValueError(f"openai policy spec needs a model name: openai:BASE_URL#MODEL, got {spec!r}")
        return OpenAIPolicy(base_url, model, **kwargs)
    if kind == "vllm":
        from .vllm_policy import VLLMPolicy

        return VLLMPolicy(rest, **kwargs)
    raise ValueError(
        f"unknown policy spec {spec!r}; expected a preset ({', '.join(PRESETS)}), hf:PATH, a .gguf file, "
        "openai:BASE_URL#MODEL or vllm:MODEL"
    )


def load_prm(spec: str, **kwargs: Any) -> PRM:
    """Build a PRM from a spec string; ``kwargs`` go to the adapter's constructor."""
    family, _, rest = spec.partition(":")
    if family == "calc":
        from .prm.calc import CalculatorPRM

        return CalculatorPRM(**kwargs)
    if not rest:
        raise ValueError(f"PRM spec {spec!r} needs a model: {family}:PATH_OR_NAME")
    if family == "judge":
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
