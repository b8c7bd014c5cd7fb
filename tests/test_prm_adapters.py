"""The four transformers PRM adapters read their model's exact input format at the right positions.

Every model here is a tiny random-weight model of the family's real architecture with an
in-process tokenizer holding the family's special tokens. Two kinds of checks:

* a *position probe* replaces the base model's hidden states by h[t] = (SLOPE * t, 0, ...)
  and makes the head read that channel, so a step's score is sigmoid(SLOPE * t) where t
  is the position it was read at; the expected t comes from the model card's own recipe;
* a *reference* re-computation following each model card / reference script (full
  forward pass, one sequence at a time) on the random model, compared number for number.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from pathlib import Path

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPast

from ttsopt.search.prm.hf_common import InputTooLongError
from ttsopt.search.prm.math_shepherd import MathShepherdPRM
from ttsopt.search.prm.qwen_math import SYSTEM_PROMPT, QwenMathPRM, RemoteCodeRequiredError
from ttsopt.search.prm.rlhflow import RLHFlowPRM
from ttsopt.search.prm.skywork import SkyworkPRM, ValueHead, ValueHeadModel
from ttsopt.search.registry import load_prm
from ttsopt.search.types import PRM, StepScores

# tests/ is not a package (importlib import mode): load the shared builders from conftest.py by path.
_spec = importlib.util.spec_from_file_location("_prm_conftest", Path(__file__).with_name("conftest.py"))
_conftest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_conftest)
build_tiny_llama, build_tiny_tokenizer = _conftest.build_tiny_llama, _conftest.build_tiny_tokenizer

SLOPE = 0.02
SPECIALS = ("ки", "<extra_0>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
# The shape of Llama 3.1's template: BOS, header tokens, trimmed content, <|eot_id|>.
LLAMA3_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
)
QUESTION = "Tom has 5 apples and buys 3 more. How many apples does he have?"
# Raw policy steps: trailing delimiters, a one-step and a four-step solution.
ITEMS = [
    (QUESTION, ["5 + 3 = 8\n\n", "The answer is 8."]),
    ("What is 3 + 4?", ["3 + 4 = 7"]),
    (QUESTION, ["Tom starts with 5 apples.\n\n", "He buys 3 more.\n\n", "5 + 3 = 8\n\n", "The answer is 8."]),
    ("What is 12 * 5?", ["12 * 5 = 60\n\n", "The answer is \\boxed{60}."]),
]


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def stripped(steps):
    return [s.strip() for s in steps]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer(SPECIALS)


@pytest.fixture(scope="module")
def llama3_tok():
    t = build_tiny_tokenizer(SPECIALS)
    t.chat_template = LLAMA3_TEMPLATE
    return t


def tiny_mistral(vocab_size: int, seed: int = 0):
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    return MistralForCausalLM(config).eval()


def tiny_qwen2_config(vocab_size: int, **kw):
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, **kw)


def tiny_qwen_classifier(vocab_size: int, seed: int = 0):
    from transformers import Qwen2ForTokenClassification

    torch.manual_seed(seed)
    return Qwen2ForTokenClassification(tiny_qwen2_config(vocab_size, num_labels=2)).eval()


def tiny_value_model(vocab_size: int, seed: int = 0) -> ValueHeadModel:
    from transformers import Qwen2Model

    torch.manual_seed(seed)
    base = Qwen2Model(tiny_qwen2_config(vocab_size)).eval()
    return ValueHeadModel(base, ValueHead(32)).eval()


def probe_positions(base_model):
    """Hidden state at position t becomes (SLOPE * t, 0, ...): the head's output reveals t."""
    def hook(module, args, output):
        h = torch.zeros_like(output.last_hidden_state)
        h[..., 0] = torch.arange(h.shape[1], dtype=h.dtype) * SLOPE
        return BaseModelOutputWithPast(last_hidden_state=h)

    base_model.register_forward_hook(hook)


def read_channel_zero(linear: torch.nn.Module, row: int) -> None:
    """Make output ``row`` equal hidden channel 0 and every other output 0."""
    with torch.no_grad():
        linear.weight.zero_()
        linear.weight[row, 0] = 1.0
        if getattr(linear, "bias", None) is not None:
            linear.bias.zero_()


def positions_of(ids: list[int], token_id: int) -> list[int]:
    return [i for i, t in enumerate(ids) if t == token_id]


# ------------------------------------------------------------------ reference recipes (model cards)

def math_shepherd_card_text(question, steps):
    body = "\n".join(f"Step {k + 1}: {s} ки" for k, s in enumerate(steps))
    return f"{question} {body}"


def math_shepherd_reference(model, tok, question, steps):
    """The card: logits[:, :, candidates].softmax()[..., 0] where input_id == step_tag_id."""
    candidates = tok.encode("+ -", add_special_tokens=False)
    tag_id = tok.encode("ки")[-1]
    ids = torch.tensor([tok.encode(math_shepherd_card_text(question, steps))])
    with torch.no_grad():
        scores = model(ids).logits[:, :, candidates].softmax(dim=-1)[:, :, 0]
    return scores[ids == tag_id].tolist(), ids.shape[1]


def rlhflow_reference(model, tok, question, steps):
    """prm_evaluate.py: one growing conversation per step, P(+) at the position predicting its
    final "+" (position -3 with Llama 3's template, which ends "+<|eot_id|>")."""
    plus, minus = tok.encode("+")[-1], tok.encode("-")[-1]
    conversation, scores, positions = [], [], []
    for k, step in enumerate(steps):
        conversation.append({"role": "user", "content": f"{question} {step}" if k == 0 else step})
        conversation.append({"role": "assistant", "content": "+"})
        ids = tok.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
        position = max(i for i, t in enumerate(ids) if t == plus) - 1
        if tok.chat_template == LLAMA3_TEMPLATE:
            assert position == len(ids) - 3
        ids = torch.tensor([ids])
        with torch.no_grad():
            logits = model(ids).logits[:, position, [plus, minus]]
        scores.append(logits.softmax(dim=-1)[0, 0].item())
        positions.append(position)
    return scores, positions, ids.shape[1]


def qwen_card_ids(tok, question, steps):
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question},
        {"role": "assistant", "content": "<extra_0>".join(steps) + "<extra_0>"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    return tok.encode(text)


def qwen_reference(model, tok, question, steps):
    """The card's make_step_rewards: softmax over the 2 labels, [:, 1] at <extra_0> tokens."""
    ids = torch.tensor([qwen_card_ids(tok, question, steps)])
    sep = tok.encode("<extra_0>")[0]
    with torch.no_grad():
        probs = model(input_ids=ids).logits.softmax(dim=-1)
    return probs[0][ids[0] == sep][:, 1].tolist(), ids.shape[1]


def skywork_reference_inputs(tok, question, steps):
    """prepare_input: bos + problem + "\\n", then each step's own ids + the "\\n" id, flagged."""
    ids = tok.encode((tok.bos_token or "") + question + "\n", add_special_tokens=False)
    flags = [0] * len(ids)
    nl = tok.encode("\n", add_special_tokens=False)[-1]
    for step in steps:
        piece = tok.encode(step, add_special_tokens=False) + [nl]
        ids += piece
        flags += [0] * (len(piece) - 1) + [1]
    return ids, flags


# ------------------------------------------------------------------ Math-Shepherd

def test_math_shepherd_text_follows_the_model_card(tok):
    prm = MathShepherdPRM.from_model(tiny_mistral(len(tok)), tok)
    enc = prm.encode(QUESTION, ["5 + 3 = 8", "Step 2: The answer is 8."])
    text = tok.decode(enc.input_ids)
    # numbered like the training data; a step that already says "Step 2:" is not renumbered
    assert text == f"{QUESTION} Step 1: 5 + 3 = 8 ки\nStep 2: The answer is 8. ки"
    assert prm.candidate_ids == tok.encode("+ -", add_special_tokens=False)
    assert tok.decode(prm.encode("Q", ["## Step 1: a", "b"]).input_ids) == "Q ## Step 1: a ки\nStep 2: b ки"
    unnumbered = MathShepherdPRM.from_model(tiny_mistral(len(tok)), tok, step_prefix=False)
    assert tok.decode(unnumbered.encode("Q", ["a", "b"]).input_ids) == "Q a ки\nb ки"


def test_math_shepherd_reads_the_step_tag_positions(tok):
    model = tiny_mistral(len(tok))
    probe_positions(model.base_model)
    prm = MathShepherdPRM.from_model(model, tok)
    read_channel_zero(model.get_output_embeddings(), prm.candidate_ids[0])  # logit(+) = SLOPE*t, logit(-) = 0
    out = prm.score(ITEMS)
    for (question, steps), got in zip(ITEMS, out):
        ids = tok.encode(math_shepherd_card_text(question, stripped(steps)))
        tags = positions_of(ids, tok.encode("ки")[-1])
        assert len(tags) == len(steps)
        assert got.scores == pytest.approx([sigmoid(SLOPE * t) for t in tags], abs=1e-6)
        assert got.tokens == len(ids)


def test_math_shepherd_matches_the_card_computation(tok):
    model = tiny_mistral(len(tok), seed=1)
    out = MathShepherdPRM.from_model(model, tok, batch_size=3).score(ITEMS)
    for (question, steps), got in zip(ITEMS, out):
        expected, n_tokens = math_shepherd_reference(model, tok, question, stripped(steps))
        assert got.scores == pytest.approx(expected, abs=1e-5)
        assert got.tokens == n_tokens


def test_math_shepherd_ignores_a_step_tag_written_by_the_policy(tok):
    model = tiny_mistral(len(tok))
    probe_positions(model.base_model)
    prm = MathShepherdPRM.from_model(model, tok)
    read_channel_zero(model.get_output_embeddings(), prm.candidate_ids[0])
    [got] = prm.score([("Q", ["it says ки here", "done"])])
    ids = tok.encode(math_shepherd_card_text("Q", ["it says ки here", "done"]))
    tags = positions_of(ids, tok.encode("ки")[-1])  # three tags; the first is the policy's
    assert got.scores == pytest.approx([sigmoid(SLOPE * t) for t in tags[1:]], abs=1e-6)


def sentencepiece_style_tokenizer():
    """Like Mistral's: BOS added by encode(), spaces folded into the next token ("▁ки", "▁+")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [math_shepherd_card_text(q, stripped(s)) for q, s in ITEMS] + ["+ -"]
    t = Tokenizer(models.BPE(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", behavior="isolated"),
                                               pre_tokenizers.Metaspace()])
    t.decoder = decoders.Metaspace()
    t.train_from_iterator(texts * 4, trainer=trainers.BpeTrainer(vocab_size=2000,
                                                                 special_tokens=["<unk>", "<s>", "</s>"]))
    t.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", t.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


def test_math_shepherd_with_a_sentencepiece_style_tokenizer():
    sp = sentencepiece_style_tokenizer()
    model = tiny_mistral(len(sp))
    probe_positions(model.base_model)
    prm = MathShepherdPRM.from_model(model, sp)
    assert prm.candidate_ids == sp.encode("+ -")[1:]  # the card's formula: "▁+", "▁-"
    assert sp.convert_ids_to_tokens(prm.step_tag_id) == "▁ки"
    read_channel_zero(model.get_output_embeddings(), prm.candidate_ids[0])
    for (question, steps), got in zip(ITEMS, prm.score(ITEMS)):
        ids = sp.encode(math_shepherd_card_text(question, stripped(steps)))
        assert ids[0] == sp.bos_token_id
        tags = positions_of(ids, sp.encode("ки")[-1])
        assert got.scores == pytest.approx([sigmoid(SLOPE * t) for t in tags], abs=1e-6)
        assert got.tokens == len(ids)


# ------------------------------------------------------------------ RLHFlow

def test_rlhflow_conversation_has_one_user_turn_per_step(llama3_tok):
    prm = RLHFlowPRM.from_model(build_tiny_llama(len(llama3_tok)), llama3_tok)
    text = llama3_tok.decode(prm.encode("Q?", ["a = 1", "b = 2"]).input_ids)
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nQ? a = 1<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nb = 2<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n+<|eot_id|>"
    )


def test_rlhflow_reads_the_position_predicting_each_plus(llama3_tok):
    model = build_tiny_llama(len(llama3_tok))
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    probe_positions(model.base_model)
    prm = RLHFlowPRM.from_model(model, llama3_tok)
    read_channel_zero(model.get_output_embeddings(), prm.candidate_ids[0])
    out = prm.score(ITEMS)
    for (question, steps), got in zip(ITEMS, out):
        _, positions, n_tokens = rlhflow_reference(model, llama3_tok, question, stripped(steps))
        assert got.scores == pytest.approx([sigmoid(SLOPE * t) for t in positions], abs=1e-6)
        assert got.tokens == n_tokens


def test_rlhflow_one_pass_matches_the_per_prefix_reference(llama3_tok):
    model = build_tiny_llama(len(llama3_tok), seed=2)
    out = RLHFlowPRM.from_model(model, llama3_tok, batch_size=4).score(ITEMS)
    for (question, steps), got in zip(ITEMS, out):
        expected, _, _ = rlhflow_reference(model, llama3_tok, question, stripped(steps))
        assert got.scores == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------ Qwen2.5-Math-PRM

def test_qwen_prm_reads_every_extra_0(tok):
    model = tiny_qwen_classifier(len(tok))
    probe_positions(model.base_model)
    read_channel_zero(model.score, 1)  # logit(label 1) = SLOPE*t, logit(label 0) = 0
    out = QwenMathPRM.from_model(model, tok).score(ITEMS)
    for (question, steps), got in zip(ITEMS, out):
        ids = qwen_card_ids(tok, question, stripped(steps))
        seps = positions_of(ids, tok.encode("<extra_0>")[0])
        assert len(seps) == len(steps)
        assert got.scores == pytest.approx([sigmoid(SLOPE * t) for t in seps], abs=1e-6)
        assert got.tokens == len(ids)


def test_qwen_prm_matches_the_card_computation(tok):
    model = tiny_qwen_classifier(len(tok), seed=3)
    prm = QwenMathPRM.from_model(model, tok, batch_size=2)
    text = tok.decode(prm.encode("Q?", ["a", "b"]).input_ids)
    assert text == (f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nQ?<|im_end|>\n"
                    "<|im_start|>assistant\na<extra_0>b<extra_0><|im_end|>\n")
    for (question, steps), got in zip(ITEMS, prm.score(ITEMS)):
        expected, _ = qwen_reference(model, tok, question, stripped(steps))
        assert got.scores == pytest.approx(expected, abs=1e-5)


def test_qwen_prm_needs_an_explicit_opt_in_for_remote_code(tmp_path, tok):
    from transformers import Qwen2ForCausalLM

    # A checkpoint whose head transformers' own token classifier cannot fill (as the real
    # Qwen2ForProcessRewardModel's score.0/score.2 layers) is refused, not run with a random head.
    Qwen2ForCausalLM(tiny_qwen2_config(len(tok))).save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    with pytest.raises(RemoteCodeRequiredError, match="trust_remote_code=True"):
        QwenMathPRM(str(tmp_path / "lm"))
    # A checkpoint that is a plain two-label token classifier loads without the flag.
    classifier = tiny_qwen_classifier(len(tok), seed=4)
    classifier.save_pretrained(tmp_path / "cls")
    tok.save_pretrained(tmp_path / "cls")
    prm = load_prm(f"qwen-prm:{tmp_path / 'cls'}", dtype="float32")
    # (the reloaded tokenizer is the folder's own: transformers picks its class from config.json)
    expected, _ = qwen_reference(classifier, prm.tokenizer, QUESTION, ["5 + 3 = 8", "The answer is 8."])
    assert prm.score(ITEMS[:1])[0].scores == pytest.approx(expected, abs=1e-5)


# ------------------------------------------------------------------ Skywork

@pytest.fixture(scope="module")
def skywork_dir(tmp_path_factory, tok):
    """A Skywork-style folder: Qwen2 causal-LM weights with v_head.summary.* in the same safetensors file."""
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("skywork")
    torch.manual_seed(5)
    lm = Qwen2ForCausalLM(tiny_qwen2_config(len(tok))).eval()
    lm.save_pretrained(path)
    tok.save_pretrained(path)
    state = load_file(str(path / "model.safetensors"))
    state["v_head.summary.weight"] = torch.randn(1, 32)
    state["v_head.summary.bias"] = torch.randn(1)
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    return path, lm, state["v_head.summary.weight"], state["v_head.summary.bias"]


def test_skywork_loads_the_value_head_from_the_checkpoint_without_remote_code(skywork_dir):
    path, lm, weight, bias = skywork_dir
    prm = SkyworkPRM(str(path), dtype="float32")
    assert torch.equal(prm.model.v_head.summary.weight, weight)
    assert torch.equal(prm.model.v_head.summary.bias, bias)
    assert torch.equal(prm.model.model.embed_tokens.weight, lm.model.embed_tokens.weight)
    assert prm.name == f"skywork:{path}"


def test_skywork_matches_the_reference_value_head(skywork_dir, tok):
    path, lm, weight, bias = skywork_dir
    prm = load_prm(f"skywork:{path}", dtype="float32", batch_size=3)
    for (question, steps), got in zip(ITEMS, prm.score(ITEMS)):
        ids, flags = skywork_reference_inputs(prm.tokenizer, question, stripped(steps))
        with torch.no_grad():
            hidden = lm(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
        values = (hidden @ weight.T + bias).squeeze(-1)
        expected = [sigmoid(v) for v, f in zip(values.tolist(), flags) if f]
        assert got.scores == pytest.approx(expected, abs=1e-5)
        assert got.tokens == len(ids)


def test_skywork_reads_the_step_token_after_each_step(tok):
    model = tiny_value_model(len(tok))
    probe_positions(model.model)
    read_channel_zero(model.v_head.summary, 0)
    out = SkyworkPRM.from_model(model, tok).score(ITEMS)
    for (question, steps), got in zip(ITEMS, out):
        ids, flags = skywork_reference_inputs(tok, question, stripped(steps))
        assert got.scores == pytest.approx([sigmoid(SLOPE * t) for t, f in enumerate(flags) if f], abs=1e-6)


def test_skywork_without_value_head_weights_is_a_clear_error(tmp_path, tok):
    from transformers import Qwen2ForCausalLM

    Qwen2ForCausalLM(tiny_qwen2_config(len(tok))).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="v_head.summary"):
        SkyworkPRM(str(tmp_path))


# ------------------------------------------------------------------ shared behaviour, every family

def build(family: str, tok, llama3_tok, **options):
    if family == "math-shepherd":
        return MathShepherdPRM.from_model(tiny_mistral(len(tok), seed=7), tok, **options)
    if family == "rlhflow":
        return RLHFlowPRM.from_model(build_tiny_llama(len(llama3_tok), seed=7), llama3_tok, **options)
    if family == "qwen-prm":
        return QwenMathPRM.from_model(tiny_qwen_classifier(len(tok), seed=7), tok, **options)
    torch.manual_seed(7)
    model = tiny_value_model(len(tok), seed=7)
    torch.nn.init.normal_(model.v_head.summary.weight)
    return SkyworkPRM.from_model(model, tok, **options)


FAMILIES = ["math-shepherd", "rlhflow", "qwen-prm", "skywork"]


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_scores_equal_one_at_a_time(family, tok, llama3_tok):
    prm = build(family, tok, llama3_tok, batch_size=3)
    assert isinstance(prm, PRM) and prm.name.startswith(family) and prm.num_parameters > 0
    batched = prm.score(ITEMS)
    prm.batch_size = 1
    single = [prm.score([item])[0] for item in ITEMS]
    for b, s, (_, steps) in zip(batched, single, ITEMS):
        assert len(b.scores) == len(steps)
        assert all(0.0 <= x <= 1.0 for x in b.scores)
        assert b.scores == pytest.approx(s.scores, abs=1e-5)
        assert b.tokens == s.tokens > 0
    # Raw steps with a trailing delimiter score like the stripped ones.
    assert prm.score([(QUESTION, stripped(ITEMS[0][1]))])[0].scores == pytest.approx(batched[0].scores, abs=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_long_inputs_error_or_drop_the_earliest_steps(family, tok, llama3_tok, caplog):
    steps = [f"Step number {k} adds {k} + {k} = {2 * k}." for k in range(1, 9)]
    full = build(family, tok, llama3_tok)
    need = full.score([(QUESTION, steps)])[0].tokens
    limit = need - 40

    strict = build(family, tok, llama3_tok, max_length=limit, truncation="error")
    with pytest.raises(InputTooLongError, match=f"max_length={limit}"):
        strict.score([(QUESTION, steps)])

    left = build(family, tok, llama3_tok, max_length=limit, truncation="left")
    with caplog.at_level(logging.WARNING):
        [got] = left.score([(QUESTION, steps)])
    assert "earliest steps were dropped" in caplog.text
    kept = len(got.scores)
    assert 1 <= kept < len(steps)
    assert got.tokens <= limit
    enc = left.encode(QUESTION, steps[len(steps) - kept:], len(steps) - kept)
    assert got.tokens == len(enc.input_ids)
    assert QUESTION in tok.decode(enc.input_ids)  # the question is kept
    # dropping one more step than needed would have fit too, dropping one fewer would not
    assert len(left.encode(QUESTION, steps[len(steps) - kept - 1:], len(steps) - kept - 1).input_ids) > limit
    if family != "math-shepherd":  # the others do not number steps: same as scoring the tail alone
        tail = full.score([(QUESTION, steps[len(steps) - kept:])])[0].scores
        assert got.scores == pytest.approx(tail, abs=1e-5)
    else:
        assert f"Step {len(steps) - kept + 1}: " in tok.decode(enc.input_ids)

    tiny = build(family, tok, llama3_tok, max_length=8, truncation="left")
    with pytest.raises(InputTooLongError, match="only the last step"):
        tiny.score([(QUESTION, steps)])


@pytest.mark.parametrize("family", FAMILIES)
def test_empty_solutions_and_bad_input(family, tok, llama3_tok):
    prm = build(family, tok, llama3_tok)
    out = prm.score([(QUESTION, []), ITEMS[1]])
    assert out[0] == StepScores(scores=[], tokens=0)
    assert len(out[1].scores) == 1
    assert prm.score([]) == []
    with pytest.raises(TypeError, match="single str"):
        prm.score([(QUESTION, "5 + 3 = 8")])
    with pytest.raises(TypeError, match="question must be a str"):
        prm.score([(None, ["a"])])
    with pytest.raises(ValueError, match="truncation"):
        build(family, tok, llama3_tok, truncation="right")


def test_math_shepherd_loads_from_a_folder_through_the_registry(tmp_path, tok):
    model = tiny_mistral(len(tok), seed=8)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    prm = load_prm(f"math-shepherd:{tmp_path}", dtype="float32")
    assert prm.name == f"math-shepherd:{tmp_path}"
    expected, _ = math_shepherd_reference(model, prm.tokenizer, QUESTION, ["5 + 3 = 8", "The answer is 8."])
    assert prm.score(ITEMS[:1])[0].scores == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_real_tokenizer_and_model_smollm2():
    """The formats on a real BPE tokenizer and chat template (SmolLM2-135M as a stand-in PRM backbone)."""
    from ttsopt.search.engines.models import load_causal_lm

    model, tokenizer = load_causal_lm("smollm2-135m", dtype="float32")
    rlhflow = RLHFlowPRM.from_model(model, tokenizer, batch_size=4)
    out = rlhflow.score(ITEMS)
    for (question, steps), got in zip(ITEMS, out):
        expected, _, n_tokens = rlhflow_reference(model, tokenizer, question, stripped(steps))
        assert got.scores == pytest.approx(expected, abs=1e-4)
        assert got.tokens == n_tokens
    skywork = SkyworkPRM.from_model(ValueHeadModel(model.model, ValueHead(model.config.hidden_size)), tokenizer)
    batched = skywork.score(ITEMS)
    skywork.batch_size = 1
    for item, b in zip(ITEMS, batched):
        assert b.scores == pytest.approx(skywork.score([item])[0].scores, abs=1e-4)


# ------------------------------------------------------------------ the shared skeleton (hf_common.HFPRM)

@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_the_one_skeleton_and_refuses_an_unknown_option(family, tok, llama3_tok):
    from ttsopt.search.prm.hf_common import HFPRM

    prm = build(family, tok, llama3_tok, batch_size=2, max_length=512, truncation="left")
    assert isinstance(prm, HFPRM) and prm.FAMILY == family
    assert (prm.batch_size, prm.max_length, prm.truncation) == (2, 512, "left")
    assert prm.num_parameters == sum(p.numel() for p in prm.model.parameters()) and not prm.model.training
    with pytest.raises(TypeError, match="unexpected keyword argument.*'no_such_option'"):
        build(family, tok, llama3_tok, no_such_option=1)
    with pytest.raises(TypeError, match="trust_remote_code"):  # a loading option means nothing to from_model
        build(family, tok, llama3_tok, trust_remote_code=True)


def test_format_options_reach_the_format_through_both_constructors(tmp_path, tok):
    model = tiny_mistral(len(tok), seed=9)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded = load_prm(f"math-shepherd:{tmp_path}", dtype="float32", step_prefix=False, batch_size=3)
    wrapped = MathShepherdPRM.from_model(model, tok, step_prefix=False)
    assert loaded.step_prefix is False and wrapped.step_prefix is False and loaded.batch_size == 3
    assert "Step 1:" not in tok.decode(loaded.encode("Q?", ["a", "b"]).input_ids)
    assert loaded.score(ITEMS[:1])[0].scores == pytest.approx(wrapped.score(ITEMS[:1])[0].scores, abs=1e-5)
    with pytest.raises(ValueError, match="batch_size"):  # checked before any weight is read
        MathShepherdPRM(str(tmp_path / "missing"), batch_size=0)


def test_the_default_name_is_the_family_and_the_checkpoint(tok, llama3_tok):
    model = tiny_value_model(len(tok))
    model.model.config._name_or_path = "org/base"
    assert SkyworkPRM.from_model(model, tok).name == "skywork:org/base"  # the base model's config names it
    assert SkyworkPRM.from_model(model, tok, name="mine").name == "mine"
    with pytest.raises(TypeError, match="ValueHeadModel"):
        SkyworkPRM.from_model(model.model, tok)
    plain = build_tiny_tokenizer(SPECIALS)
    plain.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        RLHFlowPRM.from_model(build_tiny_llama(len(plain)), plain)
