"""A policy backed by a transformers causal LM (CPU or GPU; presets, HF folders, GGUF files).

Everything goes through ``model.generate`` in batches of left-padded rows. Two small
hooks ride along with it, because ``generate`` alone does not report what the
strategies need:

* a stopping criterion that watches each row's *generated* text (never the prompt, so a
  prompt ending in the step delimiter does not stop the first token) for stop strings
  and the prompt format's end markers, and records per row when and why it finished;
* a logits processor, placed before the temperature/top-p warpers, that reads the raw
  model logits so ``Completion.logprob`` is the log-probability under the model itself
  (as vLLM reports it), without keeping every step's logits around as
  ``output_logits=True`` would (steps x rows x vocab floats: gigabytes at bs32).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .models import PRESETS, count_parameters, load_causal_lm
from .prompts import PromptFormat, default_format
from .shared_prefix import inverse_cdf_draw as _inverse_cdf_draw, sampling_weights
from .continuations import (ContinuationIds, begin_generate, check_encoded, completions_per_row, fill_greedy,
                            rows_per_prompt)
from .stopping import StopRule
from ..types import Completion, Generation, SamplingParams

log = logging.getLogger(__name__)


#: Called after each batch with the number of completions it produced (``tqdm.update`` fits).
ProgressFn = Callable[[int], None]


def _apply_thread_env() -> None:
    """Honour ``TTSOPT_NUM_THREADS``; otherwise torch's own default (and OMP_NUM_THREADS) stands."""
    value = os.environ.get("TTSOPT_NUM_THREADS")
    if not value:
        return
    import torch

    try:
        threads = int(value)
    except ValueError as e:
        raise ValueError(f"TTSOPT_NUM_THREADS must be a positive integer, got {value!r}") from e
    if threads < 1:
        raise ValueError(f"TTSOPT_NUM_THREADS must be a positive integer, got {value!r}")
    torch.set_num_threads(threads)


def _default_name(spec: str) -> str:
    if spec in PRESETS:
        return spec
    path = Path(spec)
    return path.stem if path.suffix == ".gguf" else (path.name or spec)


def _eos_ids(model, tokenizer) -> list[int]:
    """Every id that ends a sequence: the tokenizer's EOS and the generation config's (often a list)."""
    ids: list[int] = []
    for value in (getattr(model.generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer and the model's generation config define no EOS token")
    return ids


@dataclass
class _RowEnd:
    tokens: int
    reason: str  # "eos" (EOS token), "text" (a stop string or end marker), "length"


class _Tracker:
    """Per-row bookkeeping for one ``generate`` call: finish step, finish cause, summed logprob."""

    def __init__(self, tokenizer, prompt_len: int, rows: int, eos_ids: list[int],
                 rule: StopRule, want_logprobs: bool, device):
        import torch

        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.eos = torch.tensor(eos_ids, device=device)
        self.rule = rule
        self.ends: list[_RowEnd | None] = [None] * rows
        self.want_logprobs = want_logprobs
        self.logprob = torch.zeros(rows, dtype=torch.float64, device=device)
        self._step_logprobs = None

    # called by the logits processor, before warpers, with float32 raw logits
    def see_logits(self, scores) -> None:
        if self.want_logprobs:
            import torch

            self._step_logprobs = torch.log_softmax(scores, dim=-1)

    # called by the stopping criterion after the step's token was appended
    def see_token(self, input_ids):
        import torch

        active = [r for r, e in enumerate(self.ends) if e is None]
        gen_len = input_ids.shape[1] - self.prompt_len
        last = input_ids[:, -1]
        if self.want_logprobs and self._step_logprobs is not None and active:
            lp = self._step_logprobs.gather(1, last[:, None])[:, 0].double()
            idx = torch.tensor(active, device=lp.device)
            self.logprob[idx] += lp[idx]
            self._step_logprobs = None
        is_eos = torch.isin(last, self.eos).tolist()
        check_text = []
        for r in active:
            if is_eos[r]:
                self.ends[r] = _RowEnd(gen_len, "eos")
            elif self.rule.markers:
                check_text.append(r)
        if check_text:
            start = max(self.prompt_len, input_ids.shape[1] - self.rule.window)
            tails = _decode_batch(self.tokenizer, input_ids[check_text, start:].tolist())
            for r, tail in zip(check_text, tails):
                if self.rule.seen_in(tail):
                    self.ends[r] = _RowEnd(gen_len, "text")
        return torch.tensor([e is not None for e in self.ends], device=input_ids.device)


def _decode_batch(tokenizer, rows: list[list[int]]) -> list[str]:
    """Decode without special tokens or space clean-up; the Rust batch call when there is one.

    It runs every decoding step, and ``batch_decode`` costs a Python round trip per row.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.decode_batch(rows, skip_special_tokens=True)
    return tokenizer.batch_decode(rows, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def _hooks(tracker: _Tracker):
    """The tracker wrapped as the two hook types ``generate`` accepts (imported lazily with torch)."""
    from transformers import LogitsProcessor, StoppingCriteria

    class _RawLogprobs(LogitsProcessor):
        def __call__(self, input_ids, scores):
            tracker.see_logits(scores)
            return scores

    class _TextStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return tracker.see_token(input_ids)

    return _RawLogprobs(), _TextStop()


def _sample_tokens(logits, params: SamplingParams, logprobs: bool = False, work=None):
    """Temperature, then top-p (the smallest head reaching ``top_p``), then one draw per row:
    the warpers ``generate`` applies with this policy's generation config (top_k=0), as
    defined once for both local engines (:func:`.shared_prefix.sampling_weights`).
    Returns the tokens and, with ``logprobs``, each token's log-probability under the raw
    (untempered) logits, else None.

    The draw is an inverse-CDF lookup (one uniform per row) rather than ``torch.multinomial``:
    the same distribution, but ``multinomial`` on CPU took ~60 ms a step over SmolLM2's 49k
    vocabulary at 128 rows, more than the model's linear layers. The passes over the
    (rows x vocab) logits are what a step pays here, so they are kept few and in place;
    ``work``, a float32 buffer of at least the logits' shape, saves allocating (and
    page-faulting in, ~10 ms at 256 x 49k) a fresh one per step.
    """
    import torch

    x = logits.float()
    top = x.amax(-1, keepdim=True)
    out = None if work is None else work[:x.shape[0], :x.shape[1]]
    weights = sampling_weights(x, params.temperature, params.top_p, top=top, out=out)
    tok = _inverse_cdf_draw(weights)
    if not logprobs:
        return tok, None
    if params.temperature == 1.0 and params.top_p >= 1.0:
        norm = weights.sum(-1)
    else:  # the draw is done with the weights: their buffer can hold the untempered ones
        norm = torch.sub(x, top, out=weights).exp_().sum(-1)
    return tok, x.gather(1, tok[:, None])[:, 0] - top[:, 0] - norm.log()


class TransformersPolicy:
    """The ``Policy`` protocol on top of ``transformers`` ``generate``.

    ``model`` is a preset name, a local HF folder, a ``.gguf`` file or a cached hub name.
    ``logprobs=False`` skips the per-step log-softmax and reports ``logprob=None``.
    Use :meth:`from_loaded` to wrap a model that is already in memory (tests; a judge PRM
    sharing the policy's weights).
    """

    def __init__(self, model: str, *, device: str = "cpu", dtype: str = "auto",
                 prompt_format: PromptFormat | None = None, batch_size: int = 32,
                 name: str | None = None, logprobs: bool = True, shared_prefix: bool = True,
                 shared_rows: int = 256):
        if not isinstance(model, str):
            raise TypeError(f"model must be a spec string; use TransformersPolicy.from_loaded for objects, got {type(model)}")
        _apply_thread_env()
        with _no_progress_bars():
            hf_model, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
        self._setup(hf_model, tokenizer, name=name or _default_name(model),
                    prompt_format=prompt_format, batch_size=batch_size, logprobs=logprobs,
                    shared_prefix=shared_prefix, shared_rows=shared_rows)

    @classmethod
    def from_loaded(cls, model, tokenizer, *, name: str = "transformers",
                    prompt_format: PromptFormat | None = None, batch_size: int = 32,
                    logprobs: bool = True, shared_prefix: bool = True, shared_rows: int = 256) -> "TransformersPolicy":
        """Wrap an already-loaded (model, tokenizer); the model is used as is (device, dtype, eval mode)."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, name=name, prompt_format=prompt_format, batch_size=batch_size,
                    logprobs=logprobs, shared_prefix=shared_prefix, shared_rows=shared_rows)
        return self

    def _setup(self, model, tokenizer, *, name: str, prompt_format: PromptFormat | None, batch_size: int,
               logprobs: bool, shared_prefix: bool = True, shared_rows: int = 256) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        #: report Completion.logprob (one log_softmax over the vocabulary per step; <2% of a step
        #: at SmolLM2 size, see benchmarks/generation_speed.py --compare-logprobs)
        self.logprobs = logprobs
        self.num_parameters = count_parameters(model)
        #: sample n > 1 completions per prompt over one shared copy of the prompt's KV
        #: (search/engines/shared_prefix.py); ``shared_rows`` samples decode together
        self.shared_prefix = shared_prefix
        self.shared_rows = shared_rows
        self._continuations = ContinuationIds()
        self._last_ids: list[list[int]] = []
        self.prompt_format = prompt_format if prompt_format is not None else default_format(tokenizer)
        self.eos_token_ids = _eos_ids(model, tokenizer)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        # Prompts are tokenised without special tokens (a rendered chat template already has
        # them), but a tokenizer that normally prepends BOS (Gemma) still needs it on plain text.
        bos = tokenizer.bos_token_id
        probe = tokenizer("1").input_ids
        self._prepend_bos = bos is not None and len(probe) > 0 and probe[0] == bos

    @property
    def device(self):
        return next(self.model.parameters()).device

    def format_prompt(self, question: str) -> str:
        return self.prompt_format.render(question, self.tokenizer)

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of a prompt exactly as ``generate`` feeds them (no special tokens added but BOS).

        A prompt that is an earlier prompt plus one of its completions (the next step of a
        tree search) gets the token ids that were actually generated, not a re-tokenisation:
        SmolLM2 writes a blank line as two "\n" tokens, but the text re-tokenises to one
        "\n\n" token, the token its few-shot examples use *between* steps, and after it the
        model copies the example's next step instead of finishing the solution.
        """
        cached = self._continuations.get(prompt)
        if cached is not None:
            return cached
        ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        if self._prepend_bos and not prompt.startswith(self.tokenizer.bos_token or "\0"):
            ids = [self.tokenizer.bos_token_id, *ids]
        return ids

    def generate(self, prompts: Sequence[str], params: SamplingParams,
                 progress: ProgressFn | None = None) -> list[Generation]:
        """Sample ``params.n`` completions per prompt; greedy (temperature 0) computes one and copies it."""
        call = begin_generate(prompts, params, self.prompt_format.end_markers)
        if call.empty:
            return []
        prompts = call.prompts
        encoded = [self.encode_prompt(p) for p in prompts]
        check_encoded(encoded)
        copies = rows_per_prompt(params)
        if copies > 1 and self.shared_prefix and self._can_share(encoded, params):
            return self._generate_shared(prompts, encoded, params, progress)
        rows = [p for p in range(len(prompts)) for _ in range(copies)]
        # Longest prompts first, so each batch pads as little as possible.
        rows_order = sorted(range(len(rows)), key=lambda r: -len(encoded[rows[r]]))
        results: list[Completion | None] = [None] * len(rows)
        with self._seeded(params.seed):
            for start in range(0, len(rows_order), self.batch_size):
                chunk = rows_order[start:start + self.batch_size]
                self._last_ids = []
                done = self._generate_batch([encoded[rows[r]] for r in chunk], params)
                for r, completion, ids in zip(chunk, done, self._last_ids):
                    results[r] = completion
                    self._remember(prompts[rows[r]], completion.text, encoded[rows[r]], ids)
                if progress is not None:
                    progress(len(chunk) * completions_per_row(params))
        generations = []
        for p in range(len(prompts)):
            mine = fill_greedy(results[p * copies:(p + 1) * copies], params)
            generations.append(Generation(
                prompt_tokens=len(encoded[p]), completions=mine, prefill_tokens=copies * len(encoded[p]),
            ))
        return generations

    def _remember(self, prompt: str, completion: str, prompt_ids: list[int], generated: list[int]) -> None:
        self._continuations.remember(prompt, completion, prompt_ids, generated,
                                     lambda ids: _decode_batch(self.tokenizer, [ids])[0])

    @contextmanager
    def _seeded(self, seed: int | None):
        """Seed torch for one call without disturbing the caller's global RNG state."""
        import torch

        if seed is None:
            yield
            return
        device = self.device
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
            torch.manual_seed(seed)
            yield

    def _generation_config(self, params: SamplingParams):
        from transformers import GenerationConfig

        # Every knob is set explicitly: unset fields would be filled from the model's own
        # generation config and transformers' defaults (top_k=50), changing the sampler.
        common = dict(
            max_new_tokens=params.max_tokens, min_new_tokens=0, num_beams=1, num_return_sequences=1,
            eos_token_id=self.eos_token_ids, pad_token_id=self.pad_token_id, use_cache=True,
            repetition_penalty=1.0, no_repeat_ngram_size=0, return_dict_in_generate=False,
        )
        if params.greedy:
            return GenerationConfig(do_sample=False, **common)
        extra = {}
        if getattr(self.model.generation_config, "min_p", None) is not None:
            extra["min_p"] = 0.0
        return GenerationConfig(
            do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0,
            typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, **extra, **common,
        )

    def _generate_batch(self, encoded: list[list[int]], params: SamplingParams) -> list[Completion]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        device = self.device
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(encoded), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for i, ids in enumerate(encoded):  # left padding: every row's last token is at the same column
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            attention_mask[i, width - len(ids):] = 1
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)

        rule = StopRule.for_call(params, self.prompt_format.end_markers)
        tracker = _Tracker(self.tokenizer, width, len(encoded), self.eos_token_ids,
                           rule, want_logprobs=self.logprobs, device=device)
        processor, criterion = _hooks(tracker)
        with torch.inference_mode(), _quiet_transformers():
            sequences = self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask,
                generation_config=self._generation_config(params),
                logits_processor=LogitsProcessorList([processor] if self.logprobs else []),
                stopping_criteria=StoppingCriteriaList([criterion]),
            )
        generated = sequences[:, width:].tolist()
        # A row nothing stopped ran for every step (max_tokens, or fewer if the context ran out).
        ends = [end or _RowEnd(len(generated[row]), "length") for row, end in enumerate(tracker.ends)]
        out, ids = self._finish_rows(generated, ends, tracker.logprob.tolist(), rule)
        self._last_ids.extend(ids)
        return out

    def _finish_rows(self, generated: list[list[int]], ends: list[_RowEnd], logprobs: list[float],
                     rule: StopRule) -> tuple[list[Completion], list[list[int]]]:
        """Completions (text cut at the first stop/end marker) and the generated ids behind each."""
        kept = [generated[row][:end.tokens - (end.reason == "eos")] for row, end in enumerate(ends)]
        texts = _decode_batch(self.tokenizer, kept)
        out = []
        for row, (end, text) in enumerate(zip(ends, texts)):
            finished = rule.finish(text, end.reason)
            if finished.unmatched:  # decoding the window and the whole row disagreed; the text is kept
                log.warning("stop text seen while generating but not in the decoded row: %r", text[-80:])
            out.append(Completion(text=finished.text, tokens=end.tokens, finish_reason=finished.reason,
                                  logprob=logprobs[row] if self.logprobs else None))
        return out, kept

    # ---- n samples of a prompt over one shared prefix (search/engines/shared_prefix.py) -------------

    def _can_share(self, encoded: list[list[int]], params: SamplingParams) -> bool:
        from . import shared_prefix

        return shared_prefix.supports(self.model, max(len(e) for e in encoded), params.max_tokens)

    def _generate_shared(self, prompts: list[str], encoded: list[list[int]], params: SamplingParams,
                         progress: ProgressFn | None) -> list[Generation]:
        """Each prompt prefilled once; its n samples decode against that one copy of its KV.

        Up to ``shared_rows`` rows decode together; as a prompt's samples finish, the next
        prompts (longest first) are admitted in their place (continuous batching).
        """
        import torch

        from . import shared_prefix as sp

        copies = params.n
        pending = sorted(range(len(prompts)), key=lambda p: -len(encoded[p]))[::-1]  # pop() = longest
        capacity = max(copies, min(self.shared_rows, len(prompts) * copies))
        rule = StopRule.for_call(params, self.prompt_format.end_markers)
        eos = torch.tensor(self.eos_token_ids, device=self.device)
        gen: list[list[int]] = [[] for _ in range(len(prompts) * copies)]  # row id = prompt * copies + sample
        ends: list[_RowEnd | None] = [None] * len(gen)
        logprob = [0.0] * len(gen)
        reported = 0
        batch = sp.SharedBatch(self.model, capacity, params.max_tokens, self.pad_token_id)

        def admit(room: int):
            take = [pending.pop() for _ in range(min(len(pending), room // copies))]
            return batch.admit([encoded[p] for p in take], copies, [p * copies + j for p in take for j in range(copies)])

        with self._seeded(params.seed), torch.inference_mode(), _quiet_transformers():
            logits = admit(capacity)
            work = torch.empty(capacity, logits.shape[1], device=logits.device)
            while batch.rows:
                tok, lp = _sample_tokens(logits, params, self.logprobs, work)
                lp = lp.tolist() if lp is not None else None
                is_eos = torch.isin(tok, eos).tolist()
                check = []
                for i, (r, t) in enumerate(zip(batch.owner, tok.tolist())):
                    if ends[r] is not None:
                        continue
                    gen[r].append(t)
                    if lp is not None:
                        logprob[r] += lp[i]
                    if is_eos[i]:
                        ends[r] = _RowEnd(len(gen[r]), "eos")
                    elif rule.markers:
                        check.append(r)
                if check:
                    tails = _decode_batch(self.tokenizer, [gen[r][-rule.window:] for r in check])
                    for r, tail in zip(check, tails):
                        if rule.seen_in(tail):
                            ends[r] = _RowEnd(len(gen[r]), "text")
                for r in batch.owner:
                    if ends[r] is None and len(gen[r]) == params.max_tokens:
                        ends[r] = _RowEnd(len(gen[r]), "length")
                alive = [i for i, r in enumerate(batch.owner) if ends[r] is None]
                if progress is not None:
                    ended = sum(e is not None for e in ends)
                    if ended > reported:
                        progress(ended - reported)
                        reported = ended
                # Drop finished rows once they are a quarter of the batch, or to make room for the
                # next prompt: a finished row left in costs its share of a step, a compaction copies
                # every live row's cache (compacting at every finished row took 5% at 128 rows).
                admitting = bool(pending) and capacity - len(alive) >= copies
                if not alive or admitting or 4 * (batch.rows - len(alive)) >= batch.rows:
                    batch.keep(alive)
                    tok = tok[torch.tensor(alive, dtype=torch.long, device=tok.device)]
                logits = batch.step(tok) if batch.rows else None
                if admitting:
                    fresh = admit(capacity - batch.rows)
                    logits = fresh if logits is None else torch.cat([logits, fresh])
        # every row has ended: a row leaves the batch only once it has, and the loop runs until none is left
        completions, ids = self._finish_rows(gen, ends, logprob, rule)
        out = []
        for p in range(len(prompts)):
            mine = slice(p * copies, (p + 1) * copies)
            for c, g in zip(completions[mine], ids[mine]):
                self._remember(prompts[p], c.text, encoded[p], g)
            out.append(Generation(prompt_tokens=len(encoded[p]), completions=completions[mine],
                                  prefill_tokens=len(encoded[p])))
        return out

    def __repr__(self) -> str:
        return f"TransformersPolicy(name={self.name!r}, params={self.num_parameters:,}, device={self.device})"


@contextmanager
def _no_progress_bars():
    """Loading weights draws a tqdm bar; progress reporting is the caller's business."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def _quiet_transformers():
    """transformers logs per-call advice (e.g. about generation flags) that is noise inside a sweep."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(before)


__all__ = ["TransformersPolicy", "ProgressFn"]
