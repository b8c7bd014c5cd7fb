"""TransformersPolicy on a tiny random Llama (no download) and, marked slow, on SmolLM2-135M.

Random weights write gibberish, so the tests learn what greedy decoding writes first and
then pick stop strings, end markers and EOS tokens out of that text: the expected result
of every stop is then known exactly, including the token at which it must happen.

The fixture model ties its output head to its random input embeddings, which makes greedy
decoding repeat the last token forever ("\n\n\n..."); the tests give it a separate random
output head so that greedy decoding writes varied text.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from ttsopt.search.engines.hf_policy import TransformersPolicy
from ttsopt.search.engines.prompts import PromptFormat
from ttsopt.search.types import Policy, SamplingParams

QUESTION = "What is 3 + 4?"
#: a partial solution to continue; the tiny model writes something else after it than after the chat prompt
CONTINUATION = "Tom has 5 apples"
#: tokens of a free greedy run, enough for the tiny model to write a few distinct ASCII pairs
FREE = 24


def greedy(max_tokens: int = FREE, **kw) -> SamplingParams:
    return SamplingParams(n=1, temperature=0.0, max_tokens=max_tokens, **kw)


def ascii_probe(text: str, avoid: str = "", min_start: int = 4) -> tuple[str, int]:
    """A 2-character ASCII-word substring of ``text`` first seen at index >= min_start (and not in ``avoid``)."""
    for m in re.finditer(r"(?=([A-Za-z0-9 ]{2}))", text):
        s = m.group(1)
        i = text.find(s)
        if i >= min_start and s not in avoid and s.strip():
            return s, i
    pytest.skip(f"no usable ASCII probe in the tiny model's output {text!r}")


def load_tiny(model_dir, **kw) -> TransformersPolicy:
    policy = TransformersPolicy(str(model_dir), dtype="float32", **kw)
    head = policy.model.lm_head
    gen = torch.Generator().manual_seed(1)
    head.weight = torch.nn.Parameter(torch.randn(head.weight.shape, generator=gen), requires_grad=False)
    return policy


@pytest.fixture(scope="module")
def policy(tiny_model_dir) -> TransformersPolicy:
    return load_tiny(tiny_model_dir, name="tiny")


@pytest.fixture(scope="module")
def prompts(policy) -> list[str]:
    return [policy.format_prompt(QUESTION), CONTINUATION]


@pytest.fixture(scope="module")
def free_run(policy, prompts):
    """What greedy decoding writes for both prompts (one batch) with nothing to stop it."""
    gens = policy.generate(prompts, greedy(FREE))
    for g in gens:
        assert g.completions[0].finish_reason == "length", "the tiny model hit EOS; pick other questions"
    return [g.completions[0] for g in gens]


def test_policy_has_the_protocol_shape_and_counts_its_parameters(policy, tiny_model_dir):
    assert isinstance(policy, Policy)
    assert policy.name == "tiny"
    assert policy.num_parameters > 0
    fresh = TransformersPolicy(str(tiny_model_dir), dtype="float32")
    assert fresh.name == tiny_model_dir.name
    assert fresh.num_parameters == sum(p.numel() for p in fresh.model.parameters())


def test_chat_prompt_is_rendered_with_the_template_and_tokenised_without_extra_specials(policy, prompts):
    assert policy.prompt_format.chat
    prompt = prompts[0]
    assert prompt.endswith("<|im_start|>assistant\n") and "What is 3 + 4?" in prompt
    assert "The answer is 19." in prompt  # the worked examples travel as chat turns
    ids = policy.encode_prompt(prompt)
    assert ids == policy.tokenizer(prompt, add_special_tokens=False).input_ids
    im_start = policy.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(im_start) == prompt.count("<|im_start|>")


def test_prompt_and_prefill_counts(policy, prompts):
    sampled = policy.generate(prompts, SamplingParams(n=3, temperature=1.0, max_tokens=4))
    greedy_gens = policy.generate(prompts, greedy(4).replace(n=3))
    policy.shared_prefix = False
    try:
        rows = policy.generate(prompts, SamplingParams(n=3, temperature=1.0, max_tokens=4))
    finally:
        policy.shared_prefix = True
    for prompt, s, g, r in zip(prompts, sampled, greedy_gens, rows):
        n_prompt = len(policy.tokenizer(prompt, add_special_tokens=False).input_ids)
        assert s.prompt_tokens == g.prompt_tokens == r.prompt_tokens == n_prompt
        assert s.prefill_tokens == n_prompt  # the samples share one prefill of their prompt
        assert r.prefill_tokens == 3 * n_prompt  # through generate, every sample is its own row
        assert g.prefill_tokens == n_prompt  # greedy is computed once and copied


def test_max_tokens_is_respected_and_ends_with_length(policy, prompts, free_run):
    gens = policy.generate(prompts, greedy(7))
    for g, full in zip(gens, free_run):
        (c,) = g.completions
        assert (c.tokens, c.finish_reason) == (7, "length")
        assert full.text.startswith(c.text.rstrip("\ufffd"))
    sampled = policy.generate(prompts, SamplingParams(n=4, temperature=1.0, max_tokens=5))
    for g in sampled:
        for c in g.completions:
            assert c.tokens <= 5
            assert c.finish_reason in ("length", "eos") and (c.tokens == 5) == (c.finish_reason == "length")


def test_stop_string_is_kept_and_text_after_it_is_cut(policy, prompts, free_run):
    full = free_run[0].text
    stop, i = ascii_probe(full)
    (c,) = policy.generate(prompts[:1], greedy(FREE, stop=(stop,)))[0].completions
    assert c.finish_reason == "stop"
    assert c.text == full[: i + len(stop)]
    # The count runs up to and including the token that completed the match, no further:
    shorter = policy.generate(prompts[:1], greedy(c.tokens - 1))[0].completions[0]
    exact = policy.generate(prompts[:1], greedy(c.tokens))[0].completions[0]
    assert stop not in shorter.text and stop in exact.text


def test_first_of_several_stop_strings_wins(policy, prompts, free_run):
    full = free_run[0].text
    early, i = ascii_probe(full)
    late, j = ascii_probe(full, avoid=full[: i + len(early)], min_start=i + len(early))
    (c,) = policy.generate(prompts[:1], greedy(FREE, stop=(late, early)))[0].completions
    assert c.text == full[: i + len(early)] and c.finish_reason == "stop"


def test_rows_in_one_batch_finish_independently(policy, prompts, free_run):
    stop, i = ascii_probe(free_run[0].text, avoid=free_run[1].text)
    a, b = policy.generate(prompts, greedy(FREE, stop=(stop,)))
    assert a.completions[0].finish_reason == "stop"
    assert a.completions[0].text == free_run[0].text[: i + len(stop)]
    assert b.completions[0].finish_reason == "length"
    assert b.completions[0].text == free_run[1].text  # unaffected by its neighbour stopping
    assert b.completions[0].tokens == FREE


def test_a_stop_string_spanning_the_prompt_boundary_does_not_stop(policy, prompts, free_run):
    """Only generated text can match: the prompt's own trailing text never ends a completion."""
    first_char = free_run[0].text[0]
    stop = "\n" + first_char  # the chat prompt ends with "\n", the completion starts with first_char
    (c,) = policy.generate(prompts[:1], greedy(10, stop=(stop,)))[0].completions
    if stop in c.text:
        pytest.skip("the probe also occurs inside the generated text")
    assert c.finish_reason == "length" and c.tokens == 10


def test_seeded_sampling_is_reproducible_and_leaves_global_rng_alone(policy, prompts):
    params = SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = policy.generate(prompts, params)
    assert torch.equal(torch.get_rng_state(), state)
    second = policy.generate(prompts, params)
    other = policy.generate(prompts, params.replace(seed=4))
    texts = lambda gens: [c.text for g in gens for c in g.completions]  # noqa: E731
    assert texts(first) == texts(second)
    assert [c.logprob for g in first for c in g.completions] == [c.logprob for g in second for c in g.completions]
    assert texts(first) != texts(other)
    assert len(set(c.text for c in first[0].completions)) == 3  # samples of one prompt differ


def test_greedy_n_gives_identical_independent_copies(policy, prompts):
    (g,) = policy.generate(prompts[:1], greedy(10).replace(n=4))
    assert len(g.completions) == 4
    assert len({(c.text, c.tokens, c.finish_reason, c.logprob) for c in g.completions}) == 1
    assert len({id(c) for c in g.completions}) == 4
    assert g.generated_tokens == 4 * g.completions[0].tokens


def test_batch_size_only_changes_how_rows_are_chunked(policy, prompts, free_run):
    small = TransformersPolicy.from_loaded(policy.model, policy.tokenizer, batch_size=1)
    done: list[int] = []
    gens = small.generate(prompts, greedy(FREE), progress=done.append)
    assert [g.completions[0].text for g in gens] == [c.text for c in free_run]
    assert sum(done) == len(prompts)
    done.clear()
    policy.generate(prompts, SamplingParams(n=3, max_tokens=2), progress=done.append)
    assert sum(done) == 3 * len(prompts)


def test_eos_ends_a_completion_is_counted_and_not_in_the_text(tiny_model_dir, prompts):
    fresh = load_tiny(tiny_model_dir)
    ids = fresh.encode_prompt(prompts[0])
    with torch.inference_mode():
        ref = fresh.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                   do_sample=False, max_new_tokens=12)[0, len(ids):].tolist()
    k = next((j for j in range(3, len(ref)) if ref[j] not in ref[:j]), None)
    if k is None:
        pytest.skip("no fresh token in the reference continuation")
    fresh.model.generation_config.eos_token_id = [fresh.tokenizer.eos_token_id, ref[k]]
    fresh = TransformersPolicy.from_loaded(fresh.model, fresh.tokenizer)
    (c,) = fresh.generate(prompts[:1], greedy(12))[0].completions
    assert (c.finish_reason, c.tokens) == ("eos", k + 1)
    assert c.text == fresh.tokenizer.decode(ref[:k], skip_special_tokens=True, clean_up_tokenization_spaces=False)
    # logprob = sum of log-softmax of the model's logits at each generated token, EOS included
    with torch.inference_mode():
        logits = fresh.model(torch.tensor([ids + ref[: k + 1]])).logits[0].float()
    logp = torch.log_softmax(logits[len(ids) - 1: len(ids) + k], dim=-1)
    expected = logp.gather(1, torch.tensor(ref[: k + 1])[:, None]).sum().item()
    assert c.logprob == pytest.approx(expected, abs=1e-3)


def test_plain_format_end_markers_end_like_eos_and_are_stripped(tiny_model_dir):
    import copy

    loaded = load_tiny(tiny_model_dir)
    tokenizer = copy.deepcopy(loaded.tokenizer)  # loaded models are shared per process: never mutate them
    tokenizer.chat_template = None
    plain = TransformersPolicy.from_loaded(loaded.model, tokenizer)
    assert not plain.prompt_format.chat and "\nQuestion:" in plain.prompt_format.end_markers
    prompt = plain.format_prompt("What is 3 + 4?")
    assert prompt.endswith("Question: What is 3 + 4?\nAnswer:\n") and "<|im_start|>" not in prompt
    full = plain.generate([prompt], greedy(FREE))[0].completions[0].text
    marker, i = ascii_probe(full)
    marked = TransformersPolicy.from_loaded(
        plain.model, plain.tokenizer, prompt_format=PromptFormat(chat=False, end_markers=(marker,)))
    (c,) = marked.generate([prompt], greedy(FREE))[0].completions
    assert (c.text, c.finish_reason) == (full[:i], "eos")
    # a stop string that completes before the marker still wins, and is kept
    stop, j = ascii_probe(full[:i]) if i > 6 else (None, None)
    if stop is not None and j + len(stop) <= i:
        (s,) = marked.generate([prompt], greedy(FREE, stop=(stop,)))[0].completions
        assert (s.text, s.finish_reason) == (full[: j + len(stop)], "stop")


def test_bad_input_is_refused_clearly(policy):
    assert policy.generate([], greedy()) == []
    with pytest.raises(TypeError):
        policy.generate("What is 1 + 1?", greedy())
    with pytest.raises(ValueError, match="non-empty"):
        policy.generate(["What is 1 + 1?"], greedy(stop=("",)))
    with pytest.raises(ValueError):
        TransformersPolicy.from_loaded(policy.model, policy.tokenizer, batch_size=0)
    with pytest.raises(TypeError):
        TransformersPolicy(policy.model)  # objects go through from_loaded


@pytest.mark.slow
def test_smollm2_answers_easy_questions_in_well_formed_steps():
    policy = TransformersPolicy("smollm2-135m")
    questions = ["What is 2 + 3?", "What is 4 * 2?", "What is 9 - 6?"]
    prompts = [policy.format_prompt(q) for q in questions]
    gens = policy.generate(prompts, SamplingParams(n=2, temperature=0.7, max_tokens=64, seed=0))
    steps = policy.generate(prompts, SamplingParams(n=2, temperature=0.7, max_tokens=64, stop=("\n\n",)))
    answered = 0
    for prompt, g, s in zip(prompts, gens, steps):
        assert g.prompt_tokens == len(policy.tokenizer(prompt, add_special_tokens=False).input_ids)
        assert g.prefill_tokens == g.prompt_tokens  # both samples share one prefill
        for c in g.completions:
            assert c.finish_reason in ("eos", "length") and 0 < c.tokens <= 64
            assert math.isfinite(c.logprob) and c.logprob < 0
            retokenised = len(policy.tokenizer(c.text, add_special_tokens=False).input_ids)
            # a real model writes (nearly) canonical tokens; EOS is counted but has no text
            assert abs(c.tokens - (retokenised + (c.finish_reason == "eos"))) <= 2
            answered += "The answer is" in c.text
        for c in s.completions:
            assert c.finish_reason in ("stop", "eos", "length")
            if c.finish_reason == "stop":
                assert c.text.endswith("\n\n") and "\n\n" not in c.text[:-2]
    assert answered >= 3  # the 2-shot prompt teaches the answer format


def test_the_next_step_continues_from_the_generated_tokens_not_a_retokenisation(tiny_model_dir):
    """prompt + completion is fed back as prompt ids + generated ids: a re-tokenisation can merge
    tokens at the step boundary (SmolLM2 writes "\\n","\\n" but "\\n\\n" re-tokenises to one token)."""
    policy = load_tiny(tiny_model_dir)
    prompt = policy.format_prompt("What is 3 + 4?")
    gen = policy.generate([prompt], SamplingParams(n=4, temperature=1.0, max_tokens=12, seed=3))[0]
    for c in gen.completions:
        if c.finish_reason != "length":
            continue  # an EOS token is not part of the text, so it cannot be continued
        ids = policy.encode_prompt(prompt + c.text)
        assert len(ids) == gen.prompt_tokens + c.tokens
        assert policy.tokenizer.decode(ids[gen.prompt_tokens:], skip_special_tokens=True) == c.text


# ---- the stop rule and greedy copies both local policies share (search/engines/stopping.py) ----


def test_the_stop_rule_keeps_stop_strings_and_cuts_end_markers():
    from ttsopt.search.engines.stopping import StopRule, TextEnd

    rule = StopRule(stops=("\n\n",), end_markers=("Question:",))
    assert rule.markers == ("\n\n", "Question:") and rule.window == 2 * len("Question:") + 8
    assert rule.seen_in("so 2 + 2 = 4\n\n") and not rule.seen_in("so 2 + 2 = 4\n")
    assert rule.finish("2 + 2 = 4\n\nnext", "text") == TextEnd("2 + 2 = 4\n\n", "stop")
    assert rule.finish("The answer is 4.\nQuestion: what", "text") == TextEnd("The answer is 4.\n", "eos")
    assert rule.finish("whatever\n\n", "eos") == TextEnd("whatever\n\n", "eos")  # only text ends are cut
    assert rule.finish("whatever", "length") == TextEnd("whatever", "length")
    # a marker seen in the decoded window but not in the whole row: the text is kept, flagged
    assert rule.finish("no marker here", "text") == TextEnd("no marker here", "stop", unmatched=True)


def test_greedy_computes_one_row_per_prompt_and_copies_it_into_independent_completions():
    from ttsopt.search.engines.continuations import completions_per_row, fill_greedy, rows_per_prompt
    from ttsopt.search.types import Completion

    greedy3, sampled3 = SamplingParams(n=3, temperature=0.0), SamplingParams(n=3, temperature=0.7)
    assert (rows_per_prompt(greedy3), completions_per_row(greedy3)) == (1, 3)
    assert (rows_per_prompt(sampled3), completions_per_row(sampled3)) == (3, 1)
    one = Completion(text="4", tokens=1, finish_reason="eos", logprob=-0.1)
    copies = fill_greedy([one], greedy3)
    assert copies == [one] * 3 and len({id(c) for c in copies}) == 3
    three = [one, one, one]
    assert fill_greedy(three, sampled3) is three
