"""What the transformers PRM adapters share: the adapter skeleton, input checks, length limits, batching.

Each family (a subclass of :class:`HFPRM`) only says how its checkpoint loads, how one
(question, steps) pair becomes token ids plus one *scoring position* per step
(:class:`Encoded`), and how a padded batch becomes one score per requested position.
Everything else lives here, so that the four families are built, wrapped and scored the
same way and treat long inputs, padding and token counts alike:

* Steps arrive as the policy's raw strings; they are stripped (the step delimiter is
  the policy's, every family brings its own separator).
* One forward pass per batch; every step of a candidate is scored in that single pass
  by reading its position (causal attention makes this equal to scoring each prefix
  alone, which is what the reference code of most families does).
* Batches are padded on the **right**: real tokens keep positions 0..n-1, so neither
  rotary positions nor attention see the padding.
* Too long for ``max_length``: ``truncation="error"`` (the default) raises
  :class:`InputTooLongError`, because the searches need one score per step;
  ``truncation="left"`` keeps the question (and template head) and drops the
  *earliest whole steps* until the input fits. Dropped steps are not read, so they get
  no score: ``StepScores.scores`` then holds one score per *kept* step, aligned to the
  end (``scores[-1]`` is always the last step's), and a warning is logged. If even the
  question plus the last step alone do not fit, it raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence

from ..types import StepScores

log = logging.getLogger(__name__)

TRUNCATION_MODES = ("left", "error")


class InputTooLongError(ValueError):
    """A (question, steps) pair does not fit in the PRM's ``max_length``."""


@dataclass
class Encoded:
    """Token ids of one PRM input and, for each step in order, the index whose output scores it."""

    input_ids: list[int]
    positions: list[int]


#: encode(question, steps, first_step_index) -> Encoded; ``first_step_index`` > 0 when
#: earlier steps were dropped (formats that number their steps keep the original numbers).
EncodeFn = Callable[[str, list[str], int], Encoded]
#: forward(input_ids (B, L), attention_mask (B, L), rows, cols) -> tensor of len(rows) scores in [0, 1]
ForwardFn = Callable[[Any, Any, list[int], list[int]], Any]


def attach(prm, model, tokenizer, *, name: str, batch_size: int, max_length: int, truncation: str) -> None:
    """Set the attributes every HF PRM adapter shares (model in eval mode, sizes, parameter count)."""
    check_options(batch_size, max_length, truncation)
    prm.model = model.eval()
    prm.tokenizer = tokenizer
    prm.name = name
    prm.num_parameters = count_parameters(model)
    prm.batch_size, prm.max_length, prm.truncation = batch_size, max_length, truncation


def check_options(batch_size: int, max_length: int, truncation: str) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}")


def clean_item(item, index: int) -> tuple[str, list[str]]:
    """Validate one ``(question, steps)`` pair and strip its steps."""
    try:
        question, steps = item
    except (TypeError, ValueError):
        raise TypeError(f"item {index}: expected a (question, steps) pair, got {type(item).__name__}") from None
    if not isinstance(question, str):
        raise TypeError(f"item {index}: question must be a str, got {type(question).__name__}")
    if isinstance(steps, str):  # a lone string would be scored character by character
        raise TypeError(f"item {index}: steps must be a sequence of str, got a single str")
    steps = list(steps)
    for j, s in enumerate(steps):
        if not isinstance(s, str):
            raise TypeError(f"item {index}: step {j} must be a str, got {type(s).__name__}")
    return question, [s.strip() for s in steps]


def fit(
    encode: EncodeFn, question: str, steps: list[str], *, max_length: int, truncation: str, label: str
) -> tuple[Encoded, int]:
    """Encode a pair within ``max_length``; returns the encoding and how many leading steps were dropped."""
    enc = encode(question, steps, 0)
    if len(enc.input_ids) <= max_length:
        return enc, 0
    n = len(steps)
    if truncation == "error":
        raise InputTooLongError(
            f"{label}: {len(enc.input_ids)} tokens ({n} steps) exceed max_length={max_length}; "
            "raise max_length or use truncation='left' to drop the earliest steps"
        )
    last = encode(question, steps[n - 1:], n - 1)
    if len(last.input_ids) > max_length:
        raise InputTooLongError(
            f"{label}: even the question with only the last step needs {len(last.input_ids)} tokens "
            f"> max_length={max_length}; no step can be scored faithfully"
        )
    # Fewer steps never make the input longer: binary-search the fewest drops that fit.
    lo, hi, best = 1, n - 1, last
    while lo < hi:
        mid = (lo + hi) // 2
        cand = encode(question, steps[mid:], mid)
        if len(cand.input_ids) <= max_length:
            hi, best = mid, cand
        else:
            lo = mid + 1
    return best, hi  # ``best`` always encodes steps[hi:]


def score_batched(
    items: Sequence[tuple[str, Sequence[str]]],
    *,
    encode: EncodeFn,
    forward: ForwardFn,
    batch_size: int,
    max_length: int,
    truncation: str,
    pad_id: int,
    device,
    name: str,
) -> list[StepScores]:
    """The shared body of every adapter's ``score``: fit, batch by length, one pass per batch."""
    import torch

    encoded: list[tuple[Encoded, int] | None] = []
    for i, item in enumerate(items):
        question, steps = clean_item(item, i)
        if not steps:
            encoded.append(None)
            continue
        enc, dropped = fit(encode, question, steps, max_length=max_length, truncation=truncation,
                           label=f"{name}, item {i}")
        if len(enc.positions) != len(steps) - dropped:
            raise RuntimeError(f"{name}: {len(enc.positions)} scoring positions for {len(steps) - dropped} steps")
        encoded.append((enc, dropped))

    truncated = [i for i, e in enumerate(encoded) if e is not None and e[1] > 0]
    if truncated:
        log.warning(
            "%s: %d of %d inputs exceed max_length=%d; their earliest steps were dropped and are not "
            "scored (items %s)", name, len(truncated), len(encoded), max_length, truncated[:10],
        )

    results: list[StepScores] = [StepScores(scores=[], tokens=0) for _ in encoded]
    todo = sorted((i for i, e in enumerate(encoded) if e is not None),
                  key=lambda i: len(encoded[i][0].input_ids), reverse=True)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        encs = [encoded[i][0] for i in chunk]
        width = max(len(e.input_ids) for e in encs)
        ids = torch.full((len(encs), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(encs), width), dtype=torch.long)
        rows: list[int] = []
        cols: list[int] = []
        for b, e in enumerate(encs):
            ids[b, :len(e.input_ids)] = torch.tensor(e.input_ids, dtype=torch.long)
            mask[b, :len(e.input_ids)] = 1
            rows += [b] * len(e.positions)
            cols += e.positions
        with torch.inference_mode():
            flat = forward(ids.to(device), mask.to(device), rows, cols).float().cpu().tolist()
        k = 0
        for i, e in zip(chunk, encs):
            results[i] = StepScores(scores=flat[k:k + len(e.positions)], tokens=len(e.input_ids))
            k += len(e.positions)
    return results


# ---------------------------------------------------------------- the adapter skeleton

class HFPRM:
    """The skeleton of a transformers PRM adapter: load a checkpoint (``__init__``) or wrap a loaded
    model (:meth:`from_model`), then :meth:`score` in batches (:func:`score_batched`).

    A family sets :attr:`FAMILY` (the spec prefix and the name's), :attr:`OPTIONS` (its own format
    options and their defaults, accepted by both constructors), :attr:`LOAD_OPTIONS` (options of
    loading only, e.g. ``trust_remote_code``), and implements :meth:`encode` and :meth:`_forward`;
    where the defaults do not fit, :meth:`load` (default: a causal LM and its tokenizer),
    :meth:`_check_model` (refuse a model or tokenizer the format cannot use) and :meth:`_configure`
    (set up the format from the options, once the shared attributes are set).
    """

    FAMILY: str = ""
    OPTIONS: ClassVar[dict[str, Any]] = {}
    LOAD_OPTIONS: ClassVar[dict[str, Any]] = {}
    # set by :func:`attach`
    model: Any
    tokenizer: Any
    name: str
    num_parameters: int
    batch_size: int
    max_length: int
    truncation: str

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "auto", batch_size: int = 8,
                 max_length: int = 4096, truncation: str = "error", **options: Any):
        """Load ``model`` (a folder or hub name) on ``device`` in ``dtype``; ``options``: the family's
        :attr:`OPTIONS` and :attr:`LOAD_OPTIONS`."""
        loading, fmt = self._options(options, loading=True)
        check_options(batch_size, max_length, truncation)  # before any weight is read
        lm, tokenizer = self.load(model, device=device, dtype=dtype, **loading)
        self._setup(lm, tokenizer, name=f"{self.FAMILY}:{model}", batch_size=batch_size, max_length=max_length,
                    truncation=truncation, **fmt)

    @classmethod
    def from_model(cls, model, tokenizer, *, name: str | None = None, batch_size: int = 8, max_length: int = 4096,
                   truncation: str = "error", **options: Any):
        """Wrap an already-loaded model and its tokenizer (tests, custom loading); ``options``: the
        family's :attr:`OPTIONS`."""
        _, fmt = cls._options(options, loading=False)
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name=name or model_label(cls.FAMILY, cls._label_model(model)),
                    batch_size=batch_size, max_length=max_length, truncation=truncation, **fmt)
        return self

    @classmethod
    def _options(cls, options: dict[str, Any], *, loading: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        """(loading options, format options), each with its defaults; an unknown name is a TypeError."""
        known = {**cls.OPTIONS, **(cls.LOAD_OPTIONS if loading else {})}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"{cls.__name__}: unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                            f"its options are {', '.join(sorted(known)) or 'none'}")
        loads = {k: options.get(k, v) for k, v in cls.LOAD_OPTIONS.items()} if loading else {}
        return loads, {k: options.get(k, v) for k, v in cls.OPTIONS.items()}

    @classmethod
    def load(cls, model: str, *, device: str, dtype: str, **options: Any) -> tuple[Any, Any]:
        """(model, tokenizer) of a checkpoint: by default a causal LM (``load_causal_lm``)."""
        from ..engines.models import load_causal_lm

        return load_causal_lm(model, device=device, dtype=dtype)

    @classmethod
    def _label_model(cls, model):
        """The module whose config names the checkpoint (for the default ``name``)."""
        return model

    def _setup(self, model, tokenizer, *, name: str, batch_size: int, max_length: int, truncation: str,
               **options: Any) -> None:
        self._check_model(model, tokenizer, name)
        attach(self, model, tokenizer, name=name, batch_size=batch_size, max_length=max_length, truncation=truncation)
        self._configure(**options)

    def _check_model(self, model, tokenizer, name: str) -> None:
        """Refuse a model or tokenizer this format cannot use (before anything is set)."""

    def _configure(self, **options: Any) -> None:
        """Set up the format from its options (the model, tokenizer and sizes are set)."""

    def encode(self, question: str, steps: list[str], first_step: int = 0) -> Encoded:
        raise NotImplementedError

    def _forward(self, input_ids, attention_mask, rows: list[int], cols: list[int]):
        raise NotImplementedError

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """One score in [0, 1] per step of each (question, steps) pair; see the module docstring for long
        inputs."""
        return score_batched(items, encode=self.encode, forward=self._forward, batch_size=self.batch_size,
                             max_length=self.max_length, truncation=self.truncation,
                             pad_id=pad_id_of(self.tokenizer), device=model_device(self.model), name=self.name)


# ---------------------------------------------------------------- text formats

#: Private-use code points: no question or step contains them, and no chat template trims them.
_SENTINEL = "\ue000PRM{}\ue001"


def render_with_markers(render: Callable[[list[str]], str], n: int, marker: str) -> tuple[str, list[int]]:
    """Render a text with ``n`` step markers and report where each marker starts.

    ``render`` gets placeholder strings to put where the markers go (the text may pass
    through a chat template, which is free to add text around them); they are then
    replaced by ``marker`` and their character offsets in the final text are returned.
    """
    placeholders = [_SENTINEL.format(k) for k in range(n)]
    text = render(placeholders)
    out: list[str] = []
    starts: list[int] = []
    pos = 0
    length = 0
    for p in placeholders:
        idx = text.find(p, pos)
        if idx < 0:
            raise ValueError(f"the template dropped or reordered step marker {p!r}; cannot locate the steps")
        out.append(text[pos:idx])
        length += idx - pos
        starts.append(length)
        out.append(marker)
        length += len(marker)
        pos = idx + len(p)
    out.append(text[pos:])
    final = "".join(out)
    if "\ue000PRM" in final:
        raise ValueError("the input contains a reserved step-marker character (U+E000)")
    return final, starts


def encode_marked_text(
    tokenizer, text: str, char_starts: list[int], marker_len: int, marker_id: int, *,
    add_special_tokens: bool, shift: int = 0,
) -> Encoded:
    """Tokenize ``text`` once and turn marker offsets into token positions.

    The marker must come out as exactly the token ``marker_id`` (checked: a marker merged
    with its neighbours would put the score on the wrong token). ``shift`` moves the
    scoring position relative to the marker token (-1: the position that *predicts* it).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("PRM adapters need a fast (Rust) tokenizer to locate step markers by character offsets")
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    positions = []
    for s in char_starts:
        first = enc.char_to_token(s)
        last = enc.char_to_token(s + marker_len - 1)
        if first is None or first != last or ids[first] != marker_id:
            got = None if first is None else tokenizer.convert_ids_to_tokens(ids[first])
            raise ValueError(
                f"step marker at character {s} did not tokenize to the single token id {marker_id} "
                f"(got {got!r}); the scores would be read at the wrong position"
            )
        pos = first + shift
        if not 0 <= pos < len(ids):
            raise ValueError(f"scoring position {pos} outside the input of {len(ids)} tokens")
        positions.append(pos)
    return Encoded(input_ids=ids, positions=positions)


def single_token_id(tokenizer, text: str, *, what: str) -> int:
    """The id ``text`` encodes to on its own, as the reference code takes it (``encode(text)[-1]``)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"{what} {text!r} encodes to no token")
    return ids[-1]


# ---------------------------------------------------------------- model outputs

def index_tensors(rows: list[int], cols: list[int], device):
    import torch

    return (torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor(cols, dtype=torch.long, device=device))


def lm_candidate_probs(model, input_ids, attention_mask, rows, cols, candidate_ids: list[int]):
    """P(candidate_ids[0]) among the candidates, from a causal LM's next-token logits at (rows, cols).

    Runs the decoder once and applies the LM head only at the scoring positions: the
    full (batch, length, vocab) logits of a 128k-vocab model would not fit in memory.
    Equal to ``model(...).logits`` for heads without logit scaling (Llama, Mistral).
    """
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
    r, c = index_tensors(rows, cols, hidden.device)
    logits = model.get_output_embeddings()(hidden[r, c])
    return logits[:, candidate_ids].float().softmax(dim=-1)[:, 0]


# ---------------------------------------------------------------- loading

def pad_id_of(tokenizer) -> int:
    """Right padding is masked out and never read, so any id works; prefer the tokenizer's own."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    return 0


def torch_dtype(dtype: str, device: str):
    from ..engines.models import _dtype, default_dtype

    return _dtype(default_dtype(device) if dtype == "auto" else dtype)


def load_tokenizer(model: str, **kwargs):
    from transformers import AutoTokenizer

    from ..engines.models import resolve_model_dir

    folder, gguf = resolve_model_dir(model)
    if gguf is not None:
        raise ValueError(f"PRM adapters load HF folders or hub names, not GGUF files: {model!r}")
    return AutoTokenizer.from_pretrained(str(folder), **kwargs), str(folder)


def model_device(model):
    try:
        return next(model.parameters()).device
    except StopIteration:
        import torch

        return torch.device("cpu")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def model_label(family: str, model) -> str:
    """``family:name_or_path`` of an in-memory model, for ``PRM.name``."""
    config = getattr(model, "config", None)
    ref = getattr(config, "_name_or_path", "") or type(model).__name__
    return f"{family}:{ref}"


__all__ = [
    "HFPRM", "TRUNCATION_MODES", "Encoded", "InputTooLongError", "check_options", "clean_item", "encode_marked_text",
    "fit", "index_tensors", "lm_candidate_probs", "load_tokenizer", "render_with_markers", "score_batched",
    "single_token_id",
]
