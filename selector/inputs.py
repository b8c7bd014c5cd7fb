"""The router's model inputs online: the per-pair static block, the question block, embeddings, probes.

The LightGBM model reads, per (question, strategy), the question's columns (``txt_*`` text
statistics, ``emb_*`` the MiniLM embedding through the artifact's PCA, ``probe_*`` a live probe's
statistics where the artifact uses probes) followed by the pair's and the strategy's descriptors. The
second half does not depend on the question, so it is built once per router (:class:`Catalogue`)
and tiled under each question's block: a decision costs one small matrix, not a pandas frame
(:func:`model_frame` is that frame, kept as the reference the fast path must equal).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ttsopt.data.problem import question_key

from .features import TEXT_COLUMNS, strategy_descriptor
from .pipeline import CATEGORICAL, PAIR_FEATURES, PROBE_FEATURES, STRATEGY_FEATURES
from .records import RouterError
from .rows import RAW_EMB_PREFIX, candidate_frame, text_matrix

#: Methods whose N samples are i.i.d. draws of one pool, so a probe's samples can be among them.
REUSING_METHODS = ("majority", "best_of_n")


def check_questions(questions: Sequence[str]) -> list[str]:
    """The questions as a list, refusing one bare string (a list of characters) and empty questions."""
    if isinstance(questions, str):
        raise RouterError("questions must be a list of strings, got one string (use route() for one)")
    out = list(questions)
    for i, q in enumerate(out):
        if not isinstance(q, str) or not q.strip():
            raise RouterError(f"question {i} must be a non-empty string, got {q!r:.80}")
    return out


# --------------------------------------------------------------------------- probes


@dataclass
class LiveProbe:
    """A live probe of one question: the samples (kept for reuse by the pooled strategies), its
    ``probe_*`` row with its cost, and the seed it was drawn with."""

    samples: Any  # selector.probe.Probe
    row: dict[str, float]
    seed: int

    def to_dict(self, k: int) -> dict[str, Any]:
        """The decision's record of the probe (what a client sees of it)."""
        p = self.samples
        gen = sum(s.tokens for s in p.samples[:k])
        return {"k": k, "seed": self.seed, "answers": [s.answer for s in p.samples[:k]],
                "tokens": self.row["probe_cost_tokens"], "flops": self.row["probe_cost_flops"],
                "prompt_tokens": p.prompt_tokens, "generated_tokens": gen,
                "prm_tokens": sum(p.prm_tokens[:k]) if p.prm_tokens is not None else 0,
                "samples": [{**s.to_dict(), "step_scores": (p.step_scores[i] if p.step_scores is not None else None)}
                            for i, s in enumerate(p.samples[:k])]}


def draw_probes(policy: Any, prm: Any, questions: Sequence[str], *, k: int, settings: Mapping[str, Any],
                seed: int, lock: Any) -> list[LiveProbe]:
    """One batched probe of ``k`` samples per question, scored by the PRM, with the sweep's sampling
    settings and a seed of the batch (as the sweep seeds per chunk), under the model ``lock``."""
    from ttsopt.search.methods import derive_seed

    from .probe import probe_row, probe_seed, sample_probe, score_probe

    probe = settings.get("probe") or {}
    drawn_seed = probe_seed(seed, int(probe.get("seed") or 0), derive_seed(0, *map(question_key, questions)))
    with lock:
        drawn = sample_probe(policy, questions, k, temperature=float(settings["temperature"]),
                             max_tokens=int(settings["max_tokens"]), seed=drawn_seed)
        scored = score_probe(prm, questions, drawn)
    return [LiveProbe(p, probe_row(p, k), drawn_seed) for p in scored]


# --------------------------------------------------------------------------- the per-pair block


@dataclass
class Catalogue:
    """What the model's input and the costs need of a pair's catalogue, precomputed as numpy arrays.

    ``static`` is the ``(n_strategies, n_columns - q_width)`` block of pair and strategy descriptors;
    ``reusable`` marks the strategies that take a probe's samples as part of their N, and
    ``per_sample_tokens`` / ``per_sample_flops`` what each of their samples still costs to generate
    and (Best-of-N) score."""

    keys: list[str]
    strategies: list[Any]  # search.strategy.Strategy
    n: np.ndarray
    tokens: np.ndarray
    flops: np.ndarray
    columns: list[str]
    n_emb: int
    probe_cols: list[str]
    q_width: int
    static: np.ndarray
    reusable: np.ndarray
    per_sample_tokens: np.ndarray
    per_sample_flops: np.ndarray

    @property
    def question_columns(self) -> list[str]:
        """The names of a question block's columns (``emb_j`` after the PCA)."""
        return [*TEXT_COLUMNS, *(f"emb_{j}" for j in range(self.n_emb)), *self.probe_cols]


def category_code(pipeline: Any, column: str, value: Any) -> float:
    """A categorical value as LightGBM's category code; unseen: NaN, the missing value, as the pandas
    path encodes it."""
    cats = pipeline.categories[column]
    try:
        return float(cats.index(str(value)))
    except ValueError:
        return math.nan


def prepare_catalogue(entry: Mapping[str, Any], pipeline: Any, *, reuse_probe: bool,
                      policy_params: int | None, prm_params: int | None) -> Catalogue:
    """The parts of the model's input that do not depend on the question, and the per-sample costs a
    reusing strategy still pays (from the catalogue's split of generated and PRM tokens, where it has it)."""
    from ttsopt.search.strategy import Strategy

    rows = entry["strategies"]
    keys = [s["key"] for s in rows]
    strategies = [Strategy.from_key(k) for k in keys]
    n = np.array([s["n"] for s in rows], dtype=np.int64)
    columns = pipeline.columns
    n_emb = pipeline.pca.n_components if pipeline.pca is not None else 0
    probe_cols = list(PROBE_FEATURES) if pipeline.probes else []
    q_width = len(TEXT_COLUMNS) + n_emb + len(probe_cols)
    desc = entry["descriptors"]
    described = [*PAIR_FEATURES, *STRATEGY_FEATURES]
    if columns[q_width:] != described:
        raise RouterError(f"the feature pipeline's columns after the question's ({columns[q_width:]}) are not "
                          f"the pair and strategy descriptors ({described})")
    static = np.empty((len(keys), len(columns) - q_width))
    for i, key in enumerate(keys):
        values = {**desc, **strategy_descriptor(key)}
        for j, c in enumerate(described):
            static[i, j] = category_code(pipeline, c, values[c]) if c in CATEGORICAL else float(values[c])
    split = all(k in s for s in rows for k in ("generated_tokens", "prm_tokens"))
    reusable = np.array([reuse_probe and split and bool(pipeline.probes) and st.method in REUSING_METHODS
                         for st in strategies], dtype=bool)
    if split:
        uses = np.array([st.uses_prm for st in strategies], dtype=float)
        gen = np.array([s["generated_tokens"] for s in rows], dtype=float) / n
        prm_t = np.array([s["prm_tokens"] for s in rows], dtype=float) * uses / n
        per_tokens = gen + prm_t
        per_flops = 2.0 * (policy_params or 0) * gen + 2.0 * (prm_params or 0) * prm_t
    else:
        per_tokens = per_flops = np.zeros(len(keys))
    return Catalogue(keys=keys, strategies=strategies, n=n,
                     tokens=np.array([s["tokens"] for s in rows], dtype=float),
                     flops=np.array([s["flops"] for s in rows], dtype=float), columns=columns, n_emb=n_emb,
                     probe_cols=probe_cols, q_width=q_width, static=static, reusable=reusable,
                     per_sample_tokens=per_tokens, per_sample_flops=per_flops)


# --------------------------------------------------------------------------- embeddings


class EmbeddingCache:
    """Raw question embeddings, least recently used out: questions repeat in production traffic, and the
    encoder is the slowest part of a decision without a probe. ``size`` 0 turns it off."""

    def __init__(self, size: int) -> None:
        self.size = int(size)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, questions: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> np.ndarray:
        """``(n, d)`` embeddings, encoding (one call) only the questions the cache lacks."""
        with self._lock:
            todo = [q for q in dict.fromkeys(questions) if q not in self._cache]
        fresh = dict(zip(todo, encode(todo))) if todo else {}
        if self.size:
            with self._lock:
                self._cache.update(fresh)
                found = {q: self._cache[q] for q in questions}
                for q in found:  # most recently used last
                    self._cache.move_to_end(q)
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
        else:
            found = fresh
        return np.stack([found[q] for q in questions])


def encode_checked(embedder: Any, texts: Sequence[str], input_dim: int) -> np.ndarray:
    """The embedder's vectors, refused when their width is not what the artifact's PCA was fitted on
    (another encoder than the trained one would be read silently as garbage)."""
    try:
        fresh = embedder.encode(list(texts))
    except ImportError as e:
        raise RouterError(f"the question encoder is not available: {e}") from e
    if fresh.shape[1] != input_dim:
        raise RouterError(f"the encoder gives {fresh.shape[1]}-d vectors; this router's PCA takes "
                          f"{input_dim}-d ones (another encoder than the one it was trained with)")
    return fresh


# --------------------------------------------------------------------------- blocks


def text_block(pipeline: Any, questions: Sequence[str], raw: np.ndarray | None) -> np.ndarray:
    """txt_* then emb_* (the PCA of ``raw``): the columns that need no probe."""
    parts = [text_matrix(questions)]
    if pipeline.pca is not None and pipeline.pca.n_components:
        parts.append(pipeline.pca.transform(raw))
    return np.hstack(parts)


def question_block(pipeline: Any, cat: Catalogue, questions: Sequence[str], raw: np.ndarray | None,
                   probes: Sequence[LiveProbe] | None) -> np.ndarray:
    """``(n_questions, q_width)``: txt_*, emb_*, probe_* in the pipeline's column order."""
    parts = [text_block(pipeline, questions, raw)]
    if cat.probe_cols:
        parts.append(np.array([[p.row[c] for c in cat.probe_cols] for p in probes], dtype=float))
    return np.hstack(parts)


def model_inputs(cat: Catalogue, block: np.ndarray) -> np.ndarray:
    """``(n_questions * n_strategies, n_columns)`` float64 rows in the pipeline's column order,
    categoricals as their category codes (what LightGBM makes of the pandas frame)."""
    q, s = block.shape[0], len(cat.keys)
    x = np.empty((q * s, len(cat.columns)))
    x[:, :cat.q_width] = np.repeat(block, s, axis=0)
    x[:, cat.q_width:] = np.tile(cat.static, (q, 1))
    return x


def model_frame(pipeline: Any, entry: Mapping[str, Any], keys: Sequence[str], question: str,
                raw: np.ndarray | None, probe_row: Mapping[str, float] | None):
    """The pandas path for one question: the offline table's columns for it (``selector/rows.py``), through
    :meth:`FeaturePipeline.transform`, exactly as training saw them. Slower; kept as the reference."""
    cols: dict[str, Any] = dict(zip(TEXT_COLUMNS, text_matrix([question])[0]))
    if raw is not None:
        cols.update({f"{RAW_EMB_PREFIX}{i}": v for i, v in enumerate(raw)})
    if probe_row is not None:
        cols.update({c: probe_row[c] for c in PROBE_FEATURES})
    return pipeline.transform(candidate_frame(cols, entry["descriptors"], list(keys)))


__all__ = ["Catalogue", "EmbeddingCache", "LiveProbe", "REUSING_METHODS", "category_code", "check_questions",
           "draw_probes", "encode_checked", "model_frame", "model_inputs", "prepare_catalogue", "question_block",
           "text_block"]
