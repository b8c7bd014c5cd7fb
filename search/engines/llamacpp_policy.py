"""A policy on llama.cpp: prompts prefilled once, samples and beams forked from shared KV.

The CPU engine for sweeps. Compared with the transformers backend (one padded batch
through ``generate``, the prompt prefilled once per sample), it

* prefills each distinct prompt once and forks it into its n samples;
* continues a tree search's kept prefixes from the sequences that produced them (the
  engine keeps finished sequences resident), so a step reads only its own new tokens;
* decodes all active sequences of a wave in one ``llama_decode`` per token.

Sampling happens here, in numpy, from llama.cpp's raw logits: temperature, then top-p,
then one uniform draw per row from a generator seeded by (seed, prompt index, sample
index), so a row's sample does not depend on how rows were grouped into waves. The
log-probability reported is the model's own (before temperature), as vLLM reports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .llamacpp_engine import LlamaCppEngine, resolve_gguf
from .models import PRESETS
from .prompts import PromptFormat, chat_format, plain_format
from .continuations import (ContinuationIds, begin_generate, check_encoded, completions_per_row, fill_greedy,
                            rows_per_prompt)
from .stopping import StopRule
from ..types import Completion, Generation, SamplingParams


ProgressFn = Callable[[int], None]


@dataclass
class _Row:
    prompt: int
    sample: int
    slot: int
    rng: np.random.Generator
    ids: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    logprob: float = 0.0
    end: str | None = None  # "eos", "text" or "length"
    tokens: int = 0


def sample_rows(logits: np.ndarray, params: SamplingParams, uniforms: np.ndarray) -> np.ndarray:
    """One token per row: greedy, or temperature + top-p by inverse CDF at ``uniforms``."""
    if params.greedy:
        return logits.argmax(axis=1)
    return inverse_cdf(sampling_weights(logits, params), uniforms)


def sampling_weights(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """Each row's sampling distribution, unnormalised: ``exp((logits - max) / T)``, zero
    outside the top-p nucleus.

    Step for step the transformers sampler's definition
    (:func:`ttsopt.search.engines.shared_prefix.sampling_weights`, pinned against this in
    tests/test_shared_prefix.py): the smallest set of most probable tokens whose probability
    reaches ``top_p`` (at least the top token), after temperature; ties rank the lower
    token id first, and the mass ranked above a token is summed in float64.
    """
    weights = logits - logits.max(axis=1, keepdims=True)
    weights *= np.float32(1.0 / params.temperature)
    np.exp(weights, out=weights)
    if params.top_p < 1.0:
        weights[~_nucleus(weights, params.top_p)] = 0.0
    return weights


def _nucleus(weights: np.ndarray, top_p: float) -> np.ndarray:
    """Which tokens the top-p nucleus keeps: ranked by weight, those with less than ``top_p``
    of the row's mass ranked above them. It sorts values and cuts at the last kept weight,
    ~2.5x cheaper than ranking tokens with a (stable) argsort."""
    ranked = np.sort(weights, axis=1)[:, ::-1]
    cum = np.cumsum(ranked, axis=1, dtype=np.float64)
    count = 1 + (cum[:, :-1] < top_p * cum[:, -1:]).sum(axis=1)
    cut = ranked[np.arange(len(ranked)), count - 1][:, None]
    kept = weights > cut
    return _take_ties(kept, weights == cut, count - kept.sum(axis=1))


def _take_ties(kept: np.ndarray, tied: np.ndarray, need: np.ndarray) -> np.ndarray:
    """``kept`` plus, per row, the ``need`` lowest-id ``tied`` tokens (the weights equal to
    the cut: the nucleus may take only some of them)."""
    partial = np.flatnonzero(tied.sum(axis=1) > need)
    kept |= tied
    if partial.size:
        some = tied[partial]
        kept[partial] &= ~some | (np.cumsum(some, axis=1) <= need[partial, None])
    return kept


def inverse_cdf(weights: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Per row, the first token whose cumulative weight exceeds ``uniforms`` times the row's
    total, in vocabulary order (the torch sampler's draw for the same uniform); a token
    without weight is never picked, even when the product rounds onto the total."""
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1:]
    pick = (cum <= uniforms[:, None] * total).sum(axis=1)
    last = (cum < total).sum(axis=1)  # the last token that adds weight
    return np.minimum(pick, last)


def _log_softmax_at(logits: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=1))
    return logits[np.arange(len(tokens)), tokens] - lse


class LlamaCppPolicy:
    """The ``Policy`` protocol on llama.cpp (llama-cpp-python), CPU-first.

    ``model`` is a preset name or a ``.gguf`` path (``requantize``: see
    :func:`~ttsopt.search.engines.llamacpp_engine.resolve_gguf`). ``max_active`` sequences decode
    together (a wave); more samples than that run in several waves, each reusing the
    prompt already in the cache. Engine options (``n_ctx``, ``n_seq_max``,
    ``n_threads``, ``extra_buffers``) go to :class:`LlamaCppEngine`.
    """

    def __init__(self, model: str, *, prompt_format: PromptFormat | None = None, name: str | None = None,
                 logprobs: bool = True, max_active: int = 64, engine: LlamaCppEngine | None = None,
                 requantize: str | None = "auto", **engine_options) -> None:
        if max_active < 1:
            raise ValueError(f"max_active must be >= 1, got {max_active}")
        path = resolve_gguf(model, requantize) if engine is None else engine.path
        self.engine = engine or LlamaCppEngine(path, **engine_options)
        if max_active > self.engine.n_seq_max // 2:
            max_active = max(1, self.engine.n_seq_max // 2)  # leave room for resident prefixes
        self.name = name or (model if model in PRESETS else path.stem)
        self.num_parameters = self.engine.num_parameters
        self.logprobs = logprobs
        self.max_active = max_active
        self._tokenizer = None
        self._spec = model
        if prompt_format is None:
            chat = PRESETS[model].chat if model in PRESETS else self._gguf_has_chat_template()
            prompt_format = chat_format() if chat else plain_format()
        self.prompt_format = prompt_format
        self._continuations = ContinuationIds()
        bos = self.engine.piece(self.engine.bos_id).decode("utf-8", "replace") if self.engine.add_bos else ""
        self._bos_text = bos
        #: tokens prefilled and reused over this policy's life (engine-efficiency figures)
        self.prefill_stats = {"prefilled": 0, "reused": 0}

    def reset_cache(self) -> None:
        """Forget every cached prefix (KV and continuation ids): the next call starts cold."""
        self.engine.clear()
        self._continuations.clear()

    def _gguf_has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    @property
    def tokenizer(self):
        """The HF tokenizer, loaded on first use: only a chat template needs it."""
        if self._tokenizer is None:
            from .models import load_tokenizer

            self._tokenizer = load_tokenizer(self._spec)
        return self._tokenizer

    def format_prompt(self, question: str) -> str:
        return self.prompt_format.render(question, self.tokenizer if self.prompt_format.chat else None)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt; a prompt that extends an earlier completion gets the ids
        that were generated, not a re-tokenisation (see ``TransformersPolicy.encode_prompt``)."""
        cached = self._continuations.get(prompt)
        if cached is not None:
            return cached
        add_bos = self.engine.add_bos and not (self._bos_text and prompt.startswith(self._bos_text))
        return self.engine.tokenize(prompt, add_bos=add_bos, special=True)

    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 progress: ProgressFn | None = None) -> list[Generation]:
        call = begin_generate(prompts, params, self.prompt_format.end_markers)
        if call.empty:
            return []
        prompts = call.prompts
        encoded = [self.encode_prompt(p) for p in prompts]
        check_encoded(encoded)
        copies = rows_per_prompt(params)
        # (prompt, first sample, count) pieces packed into waves of at most max_active rows
        pieces = [(p, j, min(self.max_active, copies - j))
                  for p in range(len(prompts)) for j in range(0, copies, self.max_active)]
        waves: list[list[tuple[int, int, int]]] = [[]]
        for piece in pieces:
            if sum(c for _, _, c in waves[-1]) + piece[2] > self.max_active:
                waves.append([])
            waves[-1].append(piece)
        results: dict[tuple[int, int], Completion] = {}
        prefilled = [0] * len(prompts)
        for wave in waves:
            rows = self._run_wave(wave, encoded, params, prefilled)
            for row in rows:
                results[(row.prompt, row.sample)] = self._finish(row, prompts[row.prompt], encoded[row.prompt], params)
            if progress is not None:
                progress(len(rows) * completions_per_row(params))
        out = []
        for p in range(len(prompts)):
            mine = fill_greedy([results[(p, j)] for j in range(copies)], params)
            out.append(Generation(prompt_tokens=len(encoded[p]), completions=mine, prefill_tokens=prefilled[p]))
        return out

    def _run_wave(self, wave, encoded, params: SamplingParams, prefilled: list[int]) -> list[_Row]:
        engine = self.engine
        slots, logits, stats = engine.prefill([encoded[p] for p, _, _ in wave])
        self.prefill_stats["prefilled"] += stats.prefilled
        self.prefill_stats["reused"] += stats.reused
        for (p, _, _), fed in zip(wave, stats.per_request):
            prefilled[p] += fed
        rows: list[_Row] = []
        first_logits_of_row: list[int] = []
        held = list(slots)
        for k, ((p, j0, count), slot) in enumerate(zip(wave, slots)):
            extra = engine.fork(slot, count - 1, keep=held) if count > 1 else []
            held += extra
            for j, s in enumerate([slot, *extra]):
                seed = None if params.seed is None else [params.seed, p, j0 + j]
                rows.append(_Row(prompt=p, sample=j0 + j, slot=s, rng=np.random.default_rng(seed)))
                first_logits_of_row.append(k)
        rule = StopRule.for_call(params, self.prompt_format.end_markers)
        current = logits[first_logits_of_row]
        active = rows
        try:
            while active:
                uniforms = np.array([r.rng.random() for r in active]) if not params.greedy else np.zeros(len(active))
                tokens = sample_rows(current, params, uniforms)
                lps = _log_softmax_at(current, tokens) if self.logprobs else None
                still = []
                for i, (row, tok) in enumerate(zip(active, tokens.tolist())):
                    row.tokens += 1
                    if lps is not None:
                        row.logprob += float(lps[i])
                    if engine.is_eog(tok):
                        row.end = "eos"
                        continue
                    row.ids.append(tok)
                    row.text += engine.piece(tok)
                    if rule.markers and rule.seen_in(bytes(row.text[-rule.window:]).decode("utf-8", "ignore")):
                        row.end = "text"
                    elif row.tokens >= params.max_tokens:
                        row.end = "length"
                    else:
                        still.append(row)
                active = still
                if active:
                    current = engine.step([r.slot for r in active], [r.ids[-1] for r in active])
        finally:
            engine.release(held)
        return rows

    def _finish(self, row: _Row, prompt: str, prompt_ids: list[int], params: SamplingParams) -> Completion:
        # a row that saw a marker split by invalid UTF-8 bytes keeps its text (TextEnd.unmatched)
        text, reason, _ = StopRule.for_call(params, self.prompt_format.end_markers).finish(
            bytes(row.text).decode("utf-8", "replace"), row.end)
        self._remember(prompt, text, prompt_ids, row.ids)
        return Completion(text=text, tokens=row.tokens, finish_reason=reason,
                          logprob=row.logprob if self.logprobs else None)

    def _remember(self, prompt: str, completion: str, prompt_ids: list[int], generated: list[int]) -> None:
        self._continuations.remember(prompt, completion, prompt_ids, generated, self.engine.detokenize)

    def __repr__(self) -> str:
        return f"LlamaCppPolicy(name={self.name!r}, params={self.num_parameters:,}, engine={self.engine!r})"


__all__ = ["LlamaCppPolicy", "sample_rows", "sampling_weights", "inverse_cdf"]
