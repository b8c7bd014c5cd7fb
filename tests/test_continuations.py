"""The continuation cache keeps prompt + completion -> ids only where they decode exactly."""

from ttsopt.search.engines.continuations import ContinuationIds


def decode(ids):
    return "".join({1: "a", 2: "b", 9: ""}[i] for i in ids)  # 9: an end-of-sequence token, decodes to nothing


def test_an_exact_completion_is_kept_under_prompt_plus_completion():
    cache = ContinuationIds()
    cache.remember("Q:", "ab", [5, 6], [1, 2], decode)
    assert cache.get("Q:ab") == [5, 6, 1, 2] and cache.get("Q:") is None


def test_an_empty_completion_never_shadows_the_prompt_itself():
    cache = ContinuationIds()
    cache.remember("Q:", "", [5, 6], [9], decode)
    assert cache.get("Q:") is None and len(cache) == 0


def test_a_completion_cut_inside_a_token_is_not_kept_and_the_oldest_goes_first():
    cache = ContinuationIds(size=1)
    cache.remember("Q:", "x", [5], [1], decode)  # "a" decoded, "x" claimed: no exact ids
    assert len(cache) == 0
    cache.remember("Q:", "a", [5], [1], decode)
    cache.remember("R:", "b", [7], [2], decode)
    assert cache.get("Q:a") is None and cache.get("R:b") == [7, 2]
