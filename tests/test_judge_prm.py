"""The LLM-as-judge PRM: prompt shape, verdict tokens, the position it reads, batching, truncation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from ttsopt.search.prm.judge import (
    DEFAULT_PROMPT,
    JudgeInputTooLong,
    JudgePRM,
    verdict_token_ids,
)
from ttsopt.search.types import PRM, StepScores

QUESTION = "What is 3 + 4, doubled?"
STEPS = ["3 + 4 = 7\n\n", "7 * 2 = 15\n\n", "The answer is 7."]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def tiny_llama(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


class StandIn(torch.nn.Module):
    """A 'model' whose verdict logits we choose, so the judge's arithmetic can be checked by hand.

    At the last real position of every row it puts ``verdict(text_of_row)`` (a dict
    token id -> logit) and at every other position the opposite preference, so reading
    the wrong position gives a visibly wrong score. It records what it was called with.
    """

    def __init__(self, tokenizer, verdict):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(7))
        self.tokenizer = tokenizer
        self.verdict = verdict
        self.calls = []

    def forward(self, input_ids, attention_mask, position_ids, use_cache=False, logits_to_keep=0):
        self.calls.append(SimpleNamespace(input_ids=input_ids.clone(), mask=attention_mask.clone(),
                                          position_ids=position_ids.clone(), logits_to_keep=logits_to_keep))
        batch, width = input_ids.shape
        logits = torch.zeros(batch, width, len(self.tokenizer))
        for row in range(batch):
            real = input_ids[row][attention_mask[row] == 1].tolist()
            wanted = self.verdict(self.tokenizer.decode(real))
            for tok, value in wanted.items():
                logits[row, :, tok] = -value  # every earlier (and padded) position disagrees
                logits[row, -1, tok] = value
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits)


def ids(tokenizer, text):
    (token,) = tokenizer.encode(text, add_special_tokens=False)
    return token


def latest_step(text: str) -> str:
    return text.split("Latest step:")[1].split("Is this step correct?")[0]


# ---- verdict tokens ---------------------------------------------------------------------------


def test_verdict_ids_are_the_single_token_spellings_of_yes_and_no(tiny_llama, tokenizer):
    judge = JudgePRM.from_model(tiny_llama, tokenizer)
    # In the tiny vocabulary "Yes"/" Yes" are single tokens but "yes"/" yes" are not.
    assert judge.yes_ids == sorted([ids(tokenizer, "Yes"), ids(tokenizer, " Yes")])
    assert judge.no_ids == sorted([ids(tokenizer, "No"), ids(tokenizer, " No")])
    assert len(tokenizer.encode("yes", add_special_tokens=False)) > 1


def test_a_vocabulary_without_single_token_verdicts_is_refused(tiny_llama):
    class SplitsEverything:
        chat_template = None
        pad_token_id = eos_token_id = 0

        def encode(self, text, add_special_tokens=False):
            return [1, 2]

    assert verdict_token_ids(SplitsEverything(), ["Yes", " Yes"]) == []
    with pytest.raises(ValueError, match="single-token verdict"):
        JudgePRM.from_model(tiny_llama, SplitsEverything())


def test_score_sums_the_verdict_variants_read_at_the_last_position(tokenizer):
    yes, space_yes = ids(tokenizer, "Yes"), ids(tokenizer, " Yes")
    no, space_no = ids(tokenizer, "No"), ids(tokenizer, " No")
    model = StandIn(tokenizer, lambda text: {yes: math.log(3.0), space_yes: 0.0, no: 0.0, space_no: 0.0})
    judge = JudgePRM.from_model(model, tokenizer)
    (result,) = judge.score([(QUESTION, STEPS)])
    # P(yes) ∝ 3 + 1, P(no) ∝ 1 + 1  ->  4 / 6
    assert result.scores == pytest.approx([2 / 3] * 3, abs=1e-6)
    assert all(call.logits_to_keep == 1 for call in model.calls)


def test_each_score_judges_its_own_step_with_the_earlier_ones_as_context(tokenizer):
    yes = [ids(tokenizer, "Yes"), ids(tokenizer, " Yes")]
    no = [ids(tokenizer, "No"), ids(tokenizer, " No")]

    def right_if_seven(text):
        good = "= 7" in latest_step(text) or "is 7" in latest_step(text)
        return {**dict.fromkeys(yes, 4.0 if good else 0.0), **dict.fromkeys(no, 0.0 if good else 4.0)}

    judge = JudgePRM.from_model(StandIn(tokenizer, right_if_seven), tokenizer)
    (result,) = judge.score([(QUESTION, STEPS)])
    high, low = 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(4))
    assert result.scores == pytest.approx([high, low, high], abs=1e-6)

    text = judge.prompt_text(QUESTION, STEPS, 1)
    assert QUESTION in text
    assert "Previous steps:\nStep 1: 3 + 4 = 7\n\nLatest step:\nStep 2: 7 * 2 = 15\n\n" in text
    assert "The answer is 7" not in text  # later steps are not shown
    assert text.endswith("<|im_start|>assistant\n")  # the next token is the verdict
    assert "Previous steps:\n(none)" in judge.prompt_text(QUESTION, STEPS, 0)


def test_batches_are_left_padded_with_positions_counted_from_the_first_real_token(tokenizer):
    yes, no = ids(tokenizer, " Yes"), ids(tokenizer, " No")
    model = StandIn(tokenizer, lambda text: {yes: 1.0, no: 0.0})
    judge = JudgePRM.from_model(model, tokenizer, batch_size=2)
    judge.score([(QUESTION, STEPS), ("Q?", ["a long step " * 5])])
    assert len(model.calls) == 2  # 4 step prompts, 2 per forward pass
    for call in model.calls:
        assert (call.mask[:, -1] == 1).all()  # the last column is real for every row
        lengths = call.mask.sum(-1)
        assert (call.position_ids[:, -1] == lengths - 1).all()
        assert lengths.max() == call.mask.shape[1]


# ---- real (tiny, random) model ----------------------------------------------------------------


def test_scores_do_not_depend_on_batching_or_neighbours(tiny_llama, tokenizer):
    items = [
        (QUESTION, STEPS),
        ("Tom has 5 apples and buys 3 more. How many apples does he have?", ["5 + 3 = 8\n\n", "The answer is 8."]),
        ("What is 12 * 5?", ["12 * 5 = 60"]),
    ]
    batched = JudgePRM.from_model(tiny_llama, tokenizer, batch_size=16).score(items)
    single = JudgePRM.from_model(tiny_llama, tokenizer, batch_size=1).score(items)
    alone = [JudgePRM.from_model(tiny_llama, tokenizer, batch_size=3).score([item])[0] for item in items]
    for a, b, c in zip(batched, single, alone):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)
        assert a.scores == pytest.approx(c.scores, abs=1e-5)
        assert all(0.0 < s < 1.0 for s in a.scores)
        assert a.tokens == b.tokens == c.tokens


def test_trailing_step_delimiters_are_stripped(tiny_llama, tokenizer):
    judge = JudgePRM.from_model(tiny_llama, tokenizer)
    raw, clean = judge.score([(QUESTION, STEPS), (QUESTION, [s.strip() for s in STEPS])])
    assert raw.scores == pytest.approx(clean.scores, abs=1e-6)
    assert judge.prompt_ids(QUESTION, STEPS, 2) == judge.prompt_ids(QUESTION, [s.strip() for s in STEPS], 2)


def test_tokens_are_the_prompt_tokens_read_and_parameters_are_counted(tiny_llama, tokenizer):
    judge = JudgePRM.from_model(tiny_llama, tokenizer)
    (result,) = judge.score([(QUESTION, STEPS)])
    assert result.tokens == sum(len(judge.prompt_ids(QUESTION, STEPS, k)) for k in range(len(STEPS)))
    assert judge.num_parameters == sum(p.numel() for p in tiny_llama.parameters())
    assert isinstance(judge, PRM)


def test_empty_inputs(tiny_llama, tokenizer):
    judge = JudgePRM.from_model(tiny_llama, tokenizer)
    assert judge.score([]) == []
    assert judge.score([(QUESTION, [])]) == [StepScores(scores=[], tokens=0)]
    with pytest.raises(TypeError, match="item 0"):
        judge.score([(QUESTION, "a single string is not a list of steps")])


# ---- prompts ----------------------------------------------------------------------------------


def test_base_models_get_plain_text_ending_in_answer(tiny_llama, tokenizer):
    judge = JudgePRM.from_model(tiny_llama, tokenizer, chat=False)
    text = judge.prompt_text(QUESTION, STEPS, 1)
    assert "<|im_start|>" not in text
    assert text.endswith("Is this step correct? Answer Yes or No.\nAnswer:")

    no_template = type(tokenizer).from_pretrained(tokenizer.name_or_path)
    no_template.chat_template = None
    assert JudgePRM.from_model(tiny_llama, no_template).chat is False
    with pytest.raises(ValueError, match="chat template"):
        JudgePRM.from_model(tiny_llama, no_template, chat=True)


def test_custom_prompt_templates_are_checked_and_used(tiny_llama, tokenizer):
    judge = JudgePRM.from_model(tiny_llama, tokenizer, prompt="Q: {question}\nSo far: {context}\nNow: {step}\nOK?")
    assert "So far: Step 1: 3 + 4 = 7\nNow: Step 2: 7 * 2 = 15\nOK?" in judge.prompt_text(QUESTION, STEPS, 1)
    with pytest.raises(ValueError, match="step"):
        JudgePRM.from_model(tiny_llama, tokenizer, prompt="Q: {question} OK?")
    with pytest.raises(ValueError, match="unknown fields"):
        JudgePRM.from_model(tiny_llama, tokenizer, prompt="{question} {step} {answer}")
    assert "{context}" in DEFAULT_PROMPT


# ---- long inputs ------------------------------------------------------------------------------


def long_solution(n: int = 8):
    return [f"Then we add {i} apples and {i} pears to the basket, which makes {i * 2} more fruits.\n\n"
            for i in range(1, n + 1)]


def test_long_context_loses_whole_early_steps_first(tiny_llama, tokenizer):
    steps = long_solution()
    full = JudgePRM.from_model(tiny_llama, tokenizer, max_length=4096)
    full_len = len(full.prompt_ids(QUESTION, steps, 7))
    bare_len = len(full.prompt_ids(QUESTION, steps, 0))
    limit = bare_len + (full_len - bare_len) // 3  # room for about a third of the earlier steps
    judge = JudgePRM.from_model(tiny_llama, tokenizer, max_length=limit)

    ids_ = judge.prompt_ids(QUESTION, steps, 7)
    text = tokenizer.decode(ids_)
    assert len(ids_) <= limit
    assert QUESTION in text and "Step 8: Then we add 8 apples" in text  # never cut
    assert "[... earlier steps omitted ...]\nStep 7: Then we add 7 apples" in text  # newest context kept
    assert "Step 1:" not in text
    kept = [i for i in range(1, 8) if f"Step {i}: Then" in text]
    assert kept == list(range(kept[0], 8))  # a contiguous suffix of whole steps
    # and no more was dropped than needed: one more step would not fit
    assert len(full._render(QUESTION, "[... earlier steps omitted ...]\n" + "\n\n".join(
        f"Step {i}: {steps[i - 1].strip()}" for i in range(kept[0] - 1, 8)), "Step 8: " + steps[7].strip())) > limit

    assert "omitted" not in full.prompt_text(QUESTION, steps, 7)  # short enough: untouched


def test_a_previous_step_too_long_to_keep_whole_is_cut_from_its_left(tiny_llama, tokenizer):
    giant = "first words " + "and more words " * 60 + "the final words."
    steps = [giant, "So 3 + 4 = 7."]
    unlimited = JudgePRM.from_model(tiny_llama, tokenizer, max_length=4096)
    limit = len(unlimited.prompt_ids(QUESTION, [steps[1]], 0)) + 40
    judge = JudgePRM.from_model(tiny_llama, tokenizer, max_length=limit)
    ids_ = judge.prompt_ids(QUESTION, steps, 1)
    text = tokenizer.decode(ids_)
    assert len(ids_) <= limit
    assert "the final words.\n\nLatest step:\nStep 2: So 3 + 4 = 7." in text
    assert "first words" not in text and "omitted" in text


def test_question_and_step_that_alone_do_not_fit_are_refused(tiny_llama, tokenizer):
    limit = len(JudgePRM.from_model(tiny_llama, tokenizer).prompt_ids(QUESTION, ["ok", "ok"], 1)) + 10
    judge = JudgePRM.from_model(tiny_llama, tokenizer, max_length=limit)
    with pytest.raises(JudgeInputTooLong, match=f"max_length={limit}"):
        judge.prompt_ids(QUESTION, ["word " * 100], 0)
    with pytest.raises(JudgeInputTooLong, match="item 1"):
        judge.score([("Q?", ["ok"]), (QUESTION, ["ok", "word " * 100])])


# ---- registry ---------------------------------------------------------------------------------


def test_registry_builds_a_judge_from_a_model_folder(tiny_model_dir):
    from ttsopt.search.registry import load_prm

    judge = load_prm(f"judge:{tiny_model_dir}", dtype="float32", batch_size=4)
    assert isinstance(judge, JudgePRM)
    assert judge.name == f"judge:{tiny_model_dir}" and judge.batch_size == 4 and judge.chat
    (result,) = judge.score([(QUESTION, STEPS)])
    assert len(result.scores) == 3 and result.tokens > 0


def test_verdicts_are_remembered_but_their_tokens_still_counted(tiny_llama, tokenizer):
    judge = JudgePRM.from_model(tiny_llama, tokenizer, chat=False)
    steps = ["3 + 4 = 7\n\n", "7 * 2 = 14\n\n", "The answer is 14."]
    calls = []
    real = judge.score_prompts
    judge.score_prompts = lambda prompts: calls.append(len(prompts)) or real(prompts)
    first = judge.score([("What is (3 + 4) * 2?", steps[:2])])[0]
    # the next depth of a tree search: the two earlier verdicts come from the memo
    second = judge.score([("What is (3 + 4) * 2?", steps)])[0]
    assert calls == [2, 1]
    assert second.scores[:2] == first.scores
    assert second.tokens > first.tokens  # every prompt is still charged
    judge.reset_cache()
    judge.score([("What is (3 + 4) * 2?", steps)])
    assert calls == [2, 1, 3]
