"""The vLLM backend without vLLM: its two pure mappings, its laziness, and its wiring
against a stand-in ``vllm`` module shaped like the documented API."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from types import SimpleNamespace as NS

import pytest

from ttsopt.search import Completion, Generation, SamplingParams
from ttsopt.search.engines.prompts import plain_format
from ttsopt.search.engines.vllm_policy import (
    VLLMPolicy,
    generation_from_output,
    parameters_from_config,
    vllm_sampling_kwargs,
)

MARKERS = ("\nQuestion:", "Question:")


def out(index, text, n_tokens, finish, stop_reason=None, logprob=-1.0):
    return NS(index=index, text=text, token_ids=list(range(n_tokens)), cumulative_logprob=logprob,
              finish_reason=finish, stop_reason=stop_reason)


def test_sampling_params_map_to_vllm_keywords_with_distinct_seeds_per_prompt():
    params = SamplingParams(n=4, temperature=0.7, top_p=0.9, max_tokens=128, stop=("\n\n",), seed=11)
    assert vllm_sampling_kwargs(params, 0, MARKERS) == {
        "n": 4, "temperature": 0.7, "top_p": 0.9, "max_tokens": 128,
        "stop": ["\n\n", "\nQuestion:", "Question:"], "include_stop_str_in_output": True,
        "seed": 11, "logprobs": 1,
    }
    # vLLM seeds sample j of a request with seed + j, so prompt i starts at seed + i * n
    assert [vllm_sampling_kwargs(params, i)["seed"] for i in range(3)] == [11, 15, 19]
    unseeded = vllm_sampling_kwargs(params.replace(seed=None, stop=()), 2, logprobs=None)
    assert unseeded["seed"] is None and unseeded["stop"] == [] and "logprobs" not in unseeded


def test_request_output_maps_to_a_generation_with_stop_strings_kept():
    request = NS(prompt_token_ids=[1] * 17, outputs=[
        out(1, "b = 2", 5, "stop", None, -2.5),                 # EOS
        out(0, "a = 1\n\n", 6, "stop", "\n\n", -1.5),           # a stop string, kept by vLLM
        out(2, "c = 3\nQuestion:", 9, "stop", "\nQuestion:"),   # an end marker: removed, EOS-like
        out(3, "d = 4", 3, "stop", 128009),                     # a stop *token* id: EOS-like
        out(4, "e = 5 and so", 12, "length", None),
    ])
    gen = generation_from_output(request, stop=("\n\n",), end_markers=MARKERS)
    assert gen == Generation(prompt_tokens=17, completions=[
        Completion("a = 1\n\n", 6, "stop", -1.5),
        Completion("b = 2", 5, "eos", -2.5),
        Completion("c = 3", 9, "eos", -1.0),
        Completion("d = 4", 3, "eos", -1.0),
        Completion("e = 5 and so", 12, "length", -1.0),
    ])


def test_an_aborted_request_is_an_error_not_a_sample():
    with pytest.raises(RuntimeError, match="finish_reason='abort'"):
        generation_from_output(NS(prompt_token_ids=[1], outputs=[out(0, "x", 1, "abort")]), stop=())


def test_importing_the_module_does_not_import_vllm(tmp_path):
    # A `vllm` that explodes when imported: the module must load without touching it.
    (tmp_path / "vllm").mkdir()
    (tmp_path / "vllm" / "__init__.py").write_text("raise RuntimeError('vllm was imported')\n")
    code = "import ttsopt.search.engines.vllm_policy, sys; assert 'vllm' not in sys.modules"
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": path})
    assert result.returncode == 0, result.stderr


def test_without_vllm_construction_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'ttsopt\[vllm\]'"):
        VLLMPolicy("some/model")


def test_parameter_count_comes_from_the_config_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from ttsopt.search.engines.models import count_parameters

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    assert parameters_from_config(str(tiny_model_dir)) == count_parameters(model) > 0
    with pytest.raises(ValueError, match="num_parameters="):  # an unknown size is an error, not 0 FLOPs
        parameters_from_config(str(tiny_model_dir / "missing"))


class FakeLLM:
    """Stands in for ``vllm.LLM``: records its arguments, answers from a script."""

    instances: list["FakeLLM"] = []

    def __init__(self, model, **kwargs):
        from transformers import AutoTokenizer

        self.model, self.kwargs, self.calls = model, kwargs, []
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return self.tokenizer

    def generate(self, prompts, sampling_params, *, use_tqdm=True):
        self.calls.append((prompts, sampling_params, use_tqdm))
        results = []
        for prompt, sp in zip(prompts, sampling_params):
            ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else [0] * len(prompt)
            outputs = [out(j, f"s{sp.seed + j}\n\n", 3, "stop", "\n\n") for j in range(sp.n)]
            results.append(NS(prompt_token_ids=ids, outputs=outputs))
        return results


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: NS(**kw)
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def test_policy_wires_prompts_and_params_through_the_engine(fake_vllm, tiny_model_dir):
    policy = VLLMPolicy(str(tiny_model_dir), seed=5, dtype="float32")
    llm = FakeLLM.instances[0]
    assert llm.kwargs == {"seed": 5, "dtype": "float32", "enable_prefix_caching": True}
    assert policy.num_parameters == parameters_from_config(str(tiny_model_dir))

    prompt = policy.format_prompt("What is 3 + 4?")
    assert prompt.endswith("<|im_start|>assistant\n")  # the model's chat template
    gens = policy.generate([prompt, prompt], SamplingParams(n=2, stop=("\n\n",), seed=0))
    prompts, per_prompt, use_tqdm = llm.calls[0]
    assert use_tqdm is False and [p.seed for p in per_prompt] == [0, 2]
    # chat prompts go in as token ids, so vLLM cannot add a second BOS
    assert prompts[0]["prompt_token_ids"] == llm.tokenizer.encode(prompt, add_special_tokens=False)
    assert [[c.text for c in g.completions] for g in gens] == [["s0\n\n", "s1\n\n"], ["s2\n\n", "s3\n\n"]]
    assert gens[0].prompt_tokens == len(prompts[0]["prompt_token_ids"])
    assert policy.generate([], SamplingParams()) == []


def test_plain_prompts_go_in_as_text_with_end_markers_as_stop_strings(fake_vllm, tiny_model_dir):
    policy = VLLMPolicy(str(tiny_model_dir), prompt_format=plain_format(), num_parameters=99)
    assert policy.num_parameters == 99
    policy.generate(["Question: 1+1?\nAnswer:\n"], SamplingParams(stop=("\n\n",)))
    prompts, per_prompt, _ = FakeLLM.instances[0].calls[0]
    assert prompts == ["Question: 1+1?\nAnswer:\n"]
    assert per_prompt[0].stop == ["\n\n", "\nQuestion:", "Question:"]
    assert per_prompt[0].include_stop_str_in_output is True
