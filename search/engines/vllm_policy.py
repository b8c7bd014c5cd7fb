"""A policy on vLLM's offline engine (GPU machines; ``pip install 'ttsopt[vllm]'``).

Kept thin: vLLM already does what the search needs (continuous batching, prefix caching
shared across the ``n`` samples and the beams of one question). This module only maps
our ``SamplingParams`` to vLLM's and vLLM's ``RequestOutput`` to our ``Generation``;
both mappings are pure functions, tested without vLLM.

vLLM API relied on (vllm >= 0.8; checked against vllm/sampling_params.py,
vllm/outputs.py, vllm/entrypoints/llm.py, vllm/v1/engine/parallel_sampling.py):

* ``LLM(model=..., seed=..., enable_prefix_caching=..., **engine_args)``;
  ``LLM.generate(prompts, sampling_params, use_tqdm=False)`` takes one
  ``SamplingParams`` per prompt and returns ``RequestOutput``s in prompt order.
* ``SamplingParams(n, temperature, top_p, max_tokens, stop, seed, logprobs,
  include_stop_str_in_output)``; with a seed and ``n > 1`` sample ``j`` is drawn with
  ``seed + j``, so prompt ``i`` gets ``seed + i * n`` to keep all samples distinct.
* ``RequestOutput.prompt_token_ids``, ``.outputs`` of ``CompletionOutput(index, text,
  token_ids, cumulative_logprob, finish_reason in {"stop", "length", "abort"},
  stop_reason: str (stop string) | int (stop token) | None (EOS))``.
* ``cumulative_logprob`` is ``None`` unless ``logprobs`` is requested (older releases
  need ``logprobs >= 1``), hence ``logprobs=1`` by default.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from .continuations import all_stop_strings, begin_generate, prompt_seed
from .openai_policy import settle_stop
from .prompts import PromptFormat, default_format
from ..types import Completion, Generation, SamplingParams

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'ttsopt[vllm]' (on a machine with a CUDA GPU)"


class VLLMPolicy:
    """Policy protocol on ``vllm.LLM``. ``engine_kwargs`` go to ``vllm.LLM`` unchanged
    (``dtype``, ``gpu_memory_utilization``, ``tensor_parallel_size``, ``max_model_len``...)."""

    def __init__(
        self,
        model: str,
        *,
        prompt_format: PromptFormat | None = None,
        seed: int = 0,
        name: str | None = None,
        num_parameters: int | None = None,
        logprobs: int | None = 1,
        **engine_kwargs: Any,
    ):
        try:
            import vllm
        except ImportError as e:
            raise ImportError(f"the vLLM policy needs vLLM, which is not installed: {INSTALL_HINT}") from e
        self._vllm = vllm
        engine_kwargs.setdefault("enable_prefix_caching", True)
        self.llm = vllm.LLM(model=model, seed=seed, **engine_kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.prompt_format = prompt_format or default_format(self.tokenizer)
        self.name = name or f"vllm:{model}"
        self.logprobs = logprobs
        self.num_parameters = num_parameters if num_parameters is not None else parameters_from_config(model)

    def format_prompt(self, question: str) -> str:
        return self.prompt_format.render(question, self.tokenizer)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        markers = self.prompt_format.end_markers
        call = begin_generate(prompts, params, markers)
        if call.empty:
            return []
        prompts = call.prompts
        per_prompt = [self._vllm.SamplingParams(**vllm_sampling_kwargs(params, i, markers, self.logprobs))
                      for i in range(len(prompts))]
        outputs = self.llm.generate(self._engine_inputs(prompts), per_prompt, use_tqdm=False)
        return [generation_from_output(o, params.stop, markers) for o in outputs]

    def _engine_inputs(self, prompts: list[str]) -> list:
        """Chat-rendered prompts already hold the template's BOS: pass token ids so vLLM adds none."""
        if not self.prompt_format.chat:
            return prompts
        return [{"prompt_token_ids": self.tokenizer.encode(p, add_special_tokens=False)} for p in prompts]


def vllm_sampling_kwargs(params: SamplingParams, prompt_index: int = 0, end_markers: Sequence[str] = (),
                         logprobs: int | None = 1) -> dict[str, Any]:
    """Keyword arguments of ``vllm.SamplingParams`` for prompt ``prompt_index`` of a call."""
    kwargs: dict[str, Any] = {
        "n": params.n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "stop": all_stop_strings(params.stop, end_markers),
        "include_stop_str_in_output": True,
        "seed": prompt_seed(params, prompt_index),
    }
    if logprobs is not None:
        kwargs["logprobs"] = logprobs
    return kwargs


def generation_from_output(output, stop: Sequence[str], end_markers: Sequence[str] = ()) -> Generation:
    """Our Generation from a vLLM ``RequestOutput`` (or anything shaped like one)."""
    completions = []
    for o in sorted(output.outputs, key=lambda o: o.index):
        if o.finish_reason == "length":
            text, finish = o.text, "length"
        elif o.finish_reason == "stop":
            matched = o.stop_reason if isinstance(o.stop_reason, str) else None  # int: a stop *token*, EOS-like
            text, finish = settle_stop(o.text, matched, stop, end_markers, included=True)
        else:
            raise RuntimeError(f"vLLM finished a completion with finish_reason={o.finish_reason!r} "
                               "(aborted or unfinished); not a usable sample")
        completions.append(Completion(text=text, tokens=len(o.token_ids), finish_reason=finish,
                                      logprob=o.cumulative_logprob))
    return Generation(prompt_tokens=len(output.prompt_token_ids or ()), completions=completions)


def parameters_from_config(model: str) -> int:
    """Exact parameter count from the HF config alone (weights built on the meta device, none read).

    An unreadable config is an error: FLOPs of 0 would make this model look free on every
    budget axis; pass ``num_parameters=`` to the policy instead.
    """
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        path = Path(model).expanduser()
        if path.suffix == ".gguf":
            config = AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        else:
            config = AutoConfig.from_pretrained(model)
        with torch.device("meta"):
            net = AutoModelForCausalLM.from_config(config)
        return sum(p.numel() for p in net.parameters())
    except Exception as e:
        raise ValueError(f"could not count the parameters of {model} from its config ({e}); "
                         "pass num_parameters= (FLOPs are charged per parameter)") from e


__all__ = ["VLLMPolicy", "vllm_sampling_kwargs", "generation_from_output", "parameters_from_config", "INSTALL_HINT"]
