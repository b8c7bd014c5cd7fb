"""LLM-as-judge PRM: any causal LM asked "Is this step correct?", scored by P(Yes).

This is the PRM that needs no reward-model weights, so it is the embedded default
next to the calculator PRM. For step k of a solution the judge sees the question, the
earlier steps as context and step k, and the prompt ends exactly where the model's
next token is its verdict. The step's score is

    P(yes) / (P(yes) + P(no))

read from the next-token distribution at the last prompt position, where P(yes) sums
the probabilities of every single-token spelling of the verdict in the vocabulary
("Yes", " Yes", "yes", " yes"; likewise for No). Summing the variants makes the score
independent of whether a tokenizer glues a leading space to the answer (a chat model
answers "Yes" right after the assistant header, a base model " Yes" after "Answer:").
Renormalising over the two verdicts ignores how much mass the model puts elsewhere,
which small models do a lot.

With the embedded 135M/270M models the judge is near chance (AUC ~0.5, see docs/results.md,
"The LLM-as-judge PRM has no signal at this size"): it is a correct adapter, not a good
verifier. Its scores are also uncalibrated (Gemma 3 270M answers ~0.85 for almost anything),
so a fixed 0.5 threshold means little; ProcessBench's ``threshold_sweep`` shows what a
threshold does.

Batching is exact in float32 (a step scores the same alone or among others, to 1e-6).
In bfloat16, the CPU default where the CPU supports it, padding changes the rounding
and a score can move by ~0.03 with the batch it lands in; pass ``dtype="float32"``
when scores must be reproducible across batchings. On llama.cpp the engine prefills with
``exact_prefill`` (see :mod:`ttsopt.search.engines.llamacpp_engine`): a verdict does not
depend on the steps it is scored with or on the cached start it reuses, until evictions
fragment the cache. ``engine_options={"exact_prefill": False}`` saves ~20% CPU and lets
verdicts move by up to ~0.1 with the batch and the cache.

Long inputs: a prompt longer than ``max_length`` tokens loses context from the left —
whole earlier steps first, oldest first, and only when not even the step just before
the judged one fits is that step cut from its left. The question and the judged step
are never cut: if they alone do not fit, scoring refuses with ``JudgeInputTooLong``
rather than judge a step it cannot see.
"""

from __future__ import annotations

import inspect
import string
from typing import Sequence

from ..engines.models import PRESETS, count_parameters, load_causal_lm
from ..types import StepScores

#: Fields a custom prompt template may use; ``question`` and ``step`` are required.
PROMPT_FIELDS = ("question", "context", "step")

DEFAULT_PROMPT = (
    "Here is a math problem and a solution in progress. Check only the latest step.\n\n"
    "Problem:\n{question}\n\n"
    "Previous steps:\n{context}\n\n"
    "Latest step:\n{step}\n\n"
    "Is this step correct? Answer Yes or No."
)

#: Appended to the template for base models (no chat template): the verdict follows it.
PLAIN_SUFFIX = "\nAnswer:"

YES_VARIANTS = ("Yes", " Yes", "yes", " yes")
NO_VARIANTS = ("No", " No", "no", " no")

NO_CONTEXT = "(none)"

#: ``judge:llamacpp:SPEC`` runs the judge on llama.cpp instead of transformers.
LLAMACPP_PREFIX = "llamacpp:"
OMITTED_MARKER = "[... earlier steps omitted ...]\n"


class JudgeInputTooLong(ValueError):
    """The question and the judged step alone exceed ``max_length`` tokens."""


def verdict_token_ids(tokenizer, variants: Sequence[str]) -> list[int]:
    """Ids of the variants that are a single token in this vocabulary (others are skipped)."""
    ids: set[int] = set()
    for text in variants:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    return sorted(ids)


def _check_template(prompt: str) -> None:
    fields = {name for _, name, _, _ in string.Formatter().parse(prompt) if name is not None}
    unknown = fields - set(PROMPT_FIELDS)
    if unknown:
        raise ValueError(f"judge prompt has unknown fields {sorted(unknown)}; allowed: {', '.join(PROMPT_FIELDS)}")
    missing = {"question", "step"} - fields
    if missing:
        raise ValueError(f"judge prompt must contain {{question}} and {{step}}; missing {sorted(missing)}")


def _number(index: int, text: str) -> str:
    return f"Step {index + 1}: {text}"


#: Verdicts remembered per judge (a few MB): more than a sweep chunk's tree search revisits.
MEMO_SIZE = 200_000


class JudgePRM:
    """Scores each step with an instruct or base LM's P(Yes) to "Is this step correct?".

    ``prompt`` is a ``str.format`` template with ``{question}``, ``{context}`` (the
    earlier steps, numbered) and ``{step}``; for a chat model it becomes the user
    turn, for a base model it is the whole text followed by ``"\\nAnswer:"``.
    ``chat=None`` uses the chat template when the tokenizer has one (for a preset,
    only when the preset is an instruct model).
    ``batch_size`` step prompts go through the model per forward pass.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str = "cpu",
        dtype: str = "auto",
        batch_size: int = 16,
        max_length: int = 2048,
        prompt: str | None = None,
        chat: bool | None = None,
        name: str | None = None,
        engine_options: dict | None = None,
    ) -> None:
        if model.startswith(LLAMACPP_PREFIX):
            self._setup_llamacpp(model[len(LLAMACPP_PREFIX):], batch_size=batch_size, max_length=max_length,
                                 prompt=prompt, chat=chat, name=name or f"judge:{model}",
                                 engine_options=engine_options or {})
            return
        lm, tokenizer = load_causal_lm(model, device=device, dtype=dtype)
        if chat is None and model in PRESETS:
            # A base preset is judged with plain text even if its tokenizer carries a template.
            chat = PRESETS[model].chat and bool(getattr(tokenizer, "chat_template", None))
        self._setup(lm, tokenizer, batch_size=batch_size, max_length=max_length, prompt=prompt,
                    chat=chat, name=name or f"judge:{model}")

    @classmethod
    def from_model(
        cls,
        model,
        tokenizer,
        *,
        batch_size: int = 16,
        max_length: int = 2048,
        prompt: str | None = None,
        chat: bool | None = None,
        name: str = "judge",
    ) -> "JudgePRM":
        """Wrap an already-loaded (model, tokenizer), e.g. the policy's own, as a judge."""
        self = cls.__new__(cls)
        self._setup(model, tokenizer, batch_size=batch_size, max_length=max_length, prompt=prompt,
                    chat=chat, name=name)
        return self

    def _check_options(self, batch_size: int, max_length: int, prompt: str | None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {max_length}")
        self.prompt = DEFAULT_PROMPT if prompt is None else prompt
        _check_template(self.prompt)

    def _setup(self, model, tokenizer, *, batch_size, max_length, prompt, chat, name) -> None:
        self._check_options(batch_size, max_length, prompt)
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat and not has_template:
            raise ValueError("chat=True needs a tokenizer with a chat template")
        self.chat = has_template if chat is None else chat
        self.model = model
        self.tokenizer = tokenizer
        self.engine = None
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = name
        self.num_parameters = count_parameters(model)
        self.yes_ids = verdict_token_ids(tokenizer, YES_VARIANTS)
        self.no_ids = verdict_token_ids(tokenizer, NO_VARIANTS)
        if not self.yes_ids or not self.no_ids:
            raise ValueError(
                f"tokenizer has no single-token verdict: yes ids {self.yes_ids} from {YES_VARIANTS}, "
                f"no ids {self.no_ids} from {NO_VARIANTS}; a judge needs both"
            )
        self._pad_id = next(
            (i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0
        )
        params = inspect.signature(model.forward).parameters
        # Only the last position's logits are read; with a 262k vocabulary (Gemma)
        # materialising all of them would dominate memory.
        self._last_only = "logits_to_keep" in params

    memo_size: int = MEMO_SIZE

    # ---- prompts -------------------------------------------------------------

    def _render(self, question: str, context: str, step: str) -> list[int]:
        body = self.prompt.format(question=question, context=context, step=step)
        if self.chat:
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
            )
            # The template already holds any BOS the model expects.
            return self._encode(text, special=False)
        return self._encode(body + PLAIN_SUFFIX, special=True)

    def _encode(self, text: str, *, special: bool) -> list[int]:
        """Token ids; ``special`` adds what the tokenizer adds by default (BOS)."""
        if self.engine is not None:
            return self.engine.tokenize(text, add_bos=special and self.engine.add_bos, special=True)
        return list(self.tokenizer(text, add_special_tokens=special)["input_ids"])

    def prompt_ids(self, question: str, steps: Sequence[str], k: int) -> list[int]:
        """Token ids of the prompt that judges ``steps[k]``, truncated to ``max_length``."""
        question = question.strip()
        clean = [s.strip() for s in steps]
        step = _number(k, clean[k])
        earlier = [_number(i, s) for i, s in enumerate(clean[:k])]
        full = self._render(question, "\n\n".join(earlier) or NO_CONTEXT, step)
        if len(full) <= self.max_length:
            return full

        def fits(context: str) -> list[int] | None:
            ids = self._render(question, OMITTED_MARKER + context, step)
            return ids if len(ids) <= self.max_length else None

        bare = fits("")
        if bare is None:
            raise JudgeInputTooLong(
                f"the question and step {k + 1} alone take {len(self._render(question, '', step))} tokens "
                f"with the judge prompt, over max_length={self.max_length}; raise max_length or shorten them"
            )
        # Drop whole earlier steps, oldest first: smallest start index that fits.
        lo, hi, best = 0, len(earlier), bare  # invariant: earlier[hi:] fits
        while lo < hi:
            mid = (lo + hi) // 2
            ids = fits("\n\n".join(earlier[mid:]))
            if ids is None:
                lo = mid + 1
            else:
                hi, best = mid, ids
        if hi < len(earlier):
            return best
        # Not even the previous step fits whole: keep as much of its end as fits.
        tail = earlier[-1]
        lo, hi = 0, len(tail)  # invariant: tail[hi:] fits
        while lo < hi:
            mid = (lo + hi) // 2
            ids = fits(tail[mid:])
            if ids is None:
                lo = mid + 1
            else:
                hi, best = mid, ids
        return best

    def prompt_text(self, question: str, steps: Sequence[str], k: int) -> str:
        """The prompt for ``steps[k]`` as text (for inspection and tests)."""
        ids = self.prompt_ids(question, steps, k)
        return self.engine.detokenize(ids) if self.engine is not None else self.tokenizer.decode(ids)

    # ---- scoring -------------------------------------------------------------

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[StepScores]:
        """Score every step of every item; all prompts are built first, then batched by length.

        A step's verdict depends only on the question and the steps up to it, so verdicts
        are remembered (``memo_size`` of them): a tree search re-scores every earlier step of
        each kept beam at every depth, and those come from the memo. ``StepScores.tokens``
        still counts every prompt read (the algorithm's PRM cost, as the paper counts it),
        memo or not, so compute figures do not depend on the engine.
        """
        memo = self._memo()
        prompts: list[list[int]] = []
        keys: list[tuple] = []
        slots: list[tuple[int, int, tuple]] = []  # (item, step, memo key)
        pending: set[tuple] = set()
        out = [StepScores(scores=[], tokens=0) for _ in items]
        for i, (question, steps) in enumerate(items):
            if not isinstance(question, str) or isinstance(steps, str):
                raise TypeError(f"item {i}: expected (question: str, steps: list[str]), got {type(question).__name__}, "
                                f"{type(steps).__name__}")
            for k in range(len(steps)):
                key = (question, tuple(steps[:k + 1]))
                slots.append((i, k, key))
                if key in memo or key in pending:
                    continue
                pending.add(key)
                try:
                    prompts.append(self.prompt_ids(question, steps, k))
                except JudgeInputTooLong as e:
                    raise JudgeInputTooLong(f"item {i}: {e}") from None
                keys.append(key)
        for key, ids, score in zip(keys, prompts, self.score_prompts(prompts)):
            memo[key] = (score, len(ids))
            memo.move_to_end(key)
        for i, _, key in slots:
            score, n_tokens = memo[key]
            memo.move_to_end(key)
            out[i].scores.append(score)
            out[i].tokens += n_tokens
        while len(memo) > self.memo_size:
            memo.popitem(last=False)
        return out

    def _memo(self):
        memo = getattr(self, "_verdicts", None)
        if memo is None:
            from collections import OrderedDict

            memo = self._verdicts = OrderedDict()
        return memo

    def score_prompts(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        """P(yes)/(P(yes)+P(no)) after each token-id prompt, in order.

        Prompts are sorted by length so each batch pads little; batches are left-padded
        so every prompt's last real token sits at the final position, and positions are
        counted from each prompt's first real token so padding does not shift them.
        """
        if self.engine is not None:
            return self._score_prompts_llamacpp(prompts)
        import torch

        order = sorted(range(len(prompts)), key=lambda j: len(prompts[j]), reverse=True)
        scores = [0.0] * len(prompts)
        device = next(self.model.parameters()).device
        yes = torch.tensor(self.yes_ids, device=device)
        no = torch.tensor(self.no_ids, device=device)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                width = max(len(prompts[j]) for j in chunk)
                ids = torch.full((len(chunk), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, j in enumerate(chunk):
                    n = len(prompts[j])
                    if n == 0:
                        raise ValueError("cannot score an empty prompt")
                    ids[row, width - n:] = torch.as_tensor(list(prompts[j]), dtype=torch.long)
                    mask[row, width - n:] = 1
                position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
                kwargs = {"input_ids": ids.to(device), "attention_mask": mask.to(device),
                          "position_ids": position_ids.to(device), "use_cache": False}
                if self._last_only:
                    kwargs["logits_to_keep"] = 1
                logits = self.model(**kwargs).logits[:, -1, :].float()
                margin = torch.logsumexp(logits[:, yes], -1) - torch.logsumexp(logits[:, no], -1)
                for row, value in zip(chunk, torch.sigmoid(margin).tolist()):
                    scores[row] = float(value)
        return scores

    # ---- llama.cpp -----------------------------------------------------------

    def reset_cache(self) -> None:
        """Forget remembered verdicts and (llama.cpp) cached prompt prefixes: start cold."""
        self._memo().clear()
        if self.engine is not None:
            self.engine.clear()

    def _setup_llamacpp(self, spec: str, *, batch_size, max_length, prompt, chat, name, engine_options) -> None:
        """The same judge on llama.cpp: the prompts of a solution's steps share their start
        (question, earlier steps), and the engine prefills a shared start once."""
        from ..engines.llamacpp_engine import LlamaCppEngine, resolve_gguf
        from ..engines.models import load_tokenizer

        options = dict(engine_options)
        engine = LlamaCppEngine(resolve_gguf(spec, options.pop("requantize", "auto")), **options)
        if chat is None:
            chat = PRESETS[spec].chat if spec in PRESETS else False
        tokenizer = load_tokenizer(spec) if chat else None
        self._check_options(batch_size, max_length, prompt)
        if chat and not getattr(tokenizer, "chat_template", None):
            raise ValueError("chat=True needs a tokenizer with a chat template")
        self.chat = bool(chat)
        self.model = None
        self.tokenizer = tokenizer
        self.engine = engine
        # prompts per prefill call: each holds a sequence slot and its cells until scored
        self.batch_size = min(max(batch_size, 64), engine.n_seq_max // 2)
        self.max_length = max_length
        self.name = name
        self.num_parameters = engine.num_parameters

        def single(variants):
            ids = set()
            for text in variants:
                enc = engine.tokenize(text, add_bos=False, special=False)
                if len(enc) == 1:
                    ids.add(int(enc[0]))
            return sorted(ids)

        self.yes_ids, self.no_ids = single(YES_VARIANTS), single(NO_VARIANTS)
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"vocabulary has no single-token verdict: yes {self.yes_ids}, no {self.no_ids}")

    def _score_prompts_llamacpp(self, prompts: Sequence[Sequence[int]]) -> list[float]:
        import numpy as np

        # Sorted, so prompts sharing a start land in the same prefill call.
        order = sorted(range(len(prompts)), key=lambda j: list(prompts[j]))
        scores = [0.0] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            slots, logits, _ = self.engine.prefill([prompts[j] for j in chunk])
            self.engine.release(slots)
            m = logits.max(axis=1, keepdims=True)
            e = np.exp(logits - m)
            yes = e[:, self.yes_ids].sum(axis=1)
            no = e[:, self.no_ids].sum(axis=1)
            for j, y, n in zip(chunk, yes.tolist(), no.tolist()):
                scores[j] = float(y / (y + n)) if y + n > 0 else 0.5
        return scores


__all__ = ["JudgePRM", "JudgeInputTooLong", "DEFAULT_PROMPT", "verdict_token_ids", "YES_VARIANTS", "NO_VARIANTS"]
