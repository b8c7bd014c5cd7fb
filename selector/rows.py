"""A question's model-input columns: the functions the offline table and the online router share.

The selector learns from rows ``(pair, problem, strategy)`` built offline by
``train/fit/table.py``; the router must build exactly those columns for a question it has never
seen (and that has no id). Both go through the functions here, so a change to a descriptor or a
text statistic changes both sides at once:

- :func:`question_columns`: ``txt_*`` (:func:`~ttsopt.selector.features.text_stats`, what
  ``problem_features`` writes into ``features.parquet``) and ``raw_emb_*`` (the encoder's vectors
  as float32, as :meth:`~ttsopt.selector.features.Embedder.embed` caches and stores them);
- :func:`pair_columns`: the ``policy_*`` / ``prm_*`` descriptors of a pair;
- :func:`strategy_columns`: the ``strategy_*`` descriptors of catalogue keys;
- :func:`candidate_frame`: one question's columns crossed with a pair and its strategies, the
  frame :meth:`~ttsopt.selector.pipeline.FeaturePipeline.transform` reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from .features import TEXT_COLUMNS, Embedder, policy_descriptor, prm_descriptor, strategy_descriptor, text_stats

if TYPE_CHECKING:
    import pandas as pd

RAW_EMB_PREFIX = "raw_emb_"


def text_matrix(questions: Sequence[str]) -> np.ndarray:
    """``(n, len(TEXT_COLUMNS))`` float64: the ``txt_*`` statistics of each question, in column order."""
    return np.array([[float(v) for v in text_stats(q).values()] for q in questions], dtype=np.float64).reshape(
        len(questions), len(TEXT_COLUMNS))


def embedding_matrix(questions: Sequence[str], embedder: Embedder) -> np.ndarray:
    """``(n, d)`` float32 raw embeddings, through :meth:`Embedder.encode` (the dtype the offline cache stores)."""
    return embedder.encode(list(questions))


def question_columns(questions: Sequence[str], embedder: Embedder | None = None) -> "pd.DataFrame":
    """One row per question: ``txt_*`` and, with an embedder, ``raw_emb_0..d-1`` (the offline features' columns)."""
    import pandas as pd

    frame = pd.DataFrame(text_matrix(questions), columns=list(TEXT_COLUMNS))
    if embedder is not None:
        raw = embedding_matrix(questions, embedder)
        emb = pd.DataFrame(raw, columns=[f"{RAW_EMB_PREFIX}{i}" for i in range(raw.shape[1])])
        frame = pd.concat([frame, emb], axis=1)
    return frame


def pair_columns(policy: str, prm: str | None, policy_params: int, prm_params: int) -> dict[str, Any]:
    """Every ``policy_*`` and ``prm_*`` descriptor of a pair (names, families, parameter counts and logs)."""
    return {**policy_descriptor(policy, policy_params), **prm_descriptor(prm, prm_params)}


def strategy_columns(keys: Sequence[str]) -> "pd.DataFrame":
    """One row per catalogue key: ``strategy`` and its ``strategy_*`` descriptors."""
    import pandas as pd

    return pd.DataFrame([{"strategy": k, **strategy_descriptor(k)} for k in keys])


def candidate_frame(question: Mapping[str, Any], pair: Mapping[str, Any], strategies: Sequence[str]) -> "pd.DataFrame":
    """One row per strategy: the question's columns (``txt_*``, ``raw_emb_*``, ``probe_*``), the pair's
    descriptors and the strategy's; what ``FeaturePipeline.transform`` takes for one question."""
    import pandas as pd

    frame = strategy_columns(strategies)
    constant = pd.DataFrame({name: [value] * len(frame) for name, value in {**question, **pair}.items()},
                            index=frame.index)
    return pd.concat([frame, constant], axis=1)


__all__ = ["RAW_EMB_PREFIX", "candidate_frame", "embedding_matrix", "pair_columns", "question_columns",
           "strategy_columns", "text_matrix"]
