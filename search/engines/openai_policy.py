"""A policy behind any OpenAI-compatible ``/v1/completions`` server (vLLM, SGLang, llama.cpp, ttsopt).

Prompts are rendered here, not on the server, so that a remote policy sees exactly the
text a local one would (chat template through ``tokenizer``, else plain few-shot text).
The plain completions endpoint is used, never chat completions, because a search
continues a *partial* assistant turn step by step.

What the OpenAI API loses and how it is recovered:

* Stop strings are stripped from ``text``. vLLM reports the matched one as
  ``stop_reason`` and SGLang as ``matched_stop``; we append it back (our contract keeps
  it). Without either field we append the stop string when exactly one was sent, or
  else find it from the per-token strings of ``logprobs``; when nothing tells, the
  completion is taken to have ended at EOS (``finish_reason="eos"``, text as returned).
* ``finish_reason`` is only ``"stop"`` or ``"length"``: ``"stop"`` with a matched stop
  string becomes ``"stop"``, without one (the model's EOS) ``"eos"``. The prompt
  format's end markers (a base model starting the next ``Question:``) are sent as extra
  stop strings, then stripped and reported as ``"eos"`` like the local backends do.
* Per-choice token counts come from ttsopt's own server extension, else the length of
  ``logprobs.tokens`` (we ask for ``logprobs=1``), else ``usage.completion_tokens`` when
  there is one choice, else the local tokenizer's count of the text, else a split of
  ``usage.completion_tokens`` in proportion to text length (an estimate; warned once).

Seeds: each prompt gets its own seed (``seed + i * n`` for prompt ``i``) because vLLM
gives every prompt of a request the same seed, so two identical prompts (DVTS starts
several subtrees from one question) would otherwise get identical samples.

What a server lacks is made up for, and said once in the log (``WARNING``), never silently:

* ``n`` ignored (llama-cpp-python's server returns one choice whatever ``n`` is): the missing
  samples are drawn with separate requests, sample ``j`` with seed ``seed + j``; each re-sends the
  prompt, and whether it is processed again is up to the server's prefix cache (llama.cpp keeps
  the last prompt's KV, so a prompt's top-up requests reuse it);
* ``logprobs`` not returned: ``Completion.logprob`` is ``None`` (a probe's log-probability
  features are then missing) and, with several stop strings, which one matched may be unknown;
* a request field the server refuses by name (a 400/422 whose message names ``seed`` or
  ``logprobs``): the field is dropped from this and every later request (without ``seed`` the
  samples are not reproducible).

llama-cpp-python's server also answers any ``model`` name with the one model it loaded and does not
report the model's size: give ``num_parameters`` (in a spec: ``#MODEL?num_parameters=135e6``). It
computes logprobs in Python over the whole vocabulary, which made SmolLM2-135M 3-5x slower there
(22 against 65-135 tokens/s on two cores); ``?logprobs=false`` turns them off where nothing reads
``Completion.logprob`` (the samples stay the same; only logprobs are lost, and a stop string among
several may be reported as EOS).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import httpx

from .continuations import GenerateCall, all_stop_strings, begin_generate
from .prompts import PromptFormat, default_format, plain_format
from ..types import Completion, Generation, SamplingParams

log = logging.getLogger(__name__)

#: A response field that tells which stop string matched (vLLM, SGLang).
_STOP_FIELDS = ("stop_reason", "matched_stop")
#: Exceptions after which a request is worth sending again (the server may be restarting).
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ReadError,
              httpx.WriteError, httpx.RemoteProtocolError)


class OpenAIServerError(RuntimeError):
    """The server answered with an error, or could not be reached after all retries."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class UnknownParameterCount(ValueError):
    """The server does not say how large the model is, and the caller did not either.

    One line: ``reason`` (what went wrong), then ``how`` (what to pass). The registry replaces ``how``
    with the spec's own way (``?num_parameters=...``).
    """

    def __init__(self, reason: str, how: str = "pass num_parameters= (FLOPs are charged per parameter)"):
        super().__init__(f"{reason}; {how}")
        self.reason, self.how = reason, how


class OpenAIPolicy:
    """Policy protocol over HTTP. See the module docstring for what is recovered how.

    ``prompts_per_request`` > 1 sends several prompts in one request with one seed: use
    it with ttsopt's own server (``search.policy_server``), which batches them into one
    ``generate`` call, but not with vLLM, which would sample identical prompts alike.
    ``num_parameters`` (for FLOPs) is asked of ``/v1/models`` on first use when not
    given (llama.cpp and ttsopt report it; vLLM and SGLang do not); if the server does
    not say, reading it is an error naming ``num_parameters=``: FLOPs of 0 would make the
    model look free on every budget axis.
    ``extra_body`` is merged into every request last (server-specific fields). For
    example vLLM adds the tokenizer's BOS to a prompt whose chat template already
    starts with one (Llama 3); ``extra_body={"add_special_tokens": False}`` stops that.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        tokenizer: str | None = None,
        prompt_format: PromptFormat | None = None,
        num_parameters: int | None = None,
        timeout_s: float = 600,
        max_concurrency: int = 8,
        name: str | None = None,
        prompts_per_request: int = 1,
        logprobs: bool = True,
        max_retries: int = 4,
        retry_backoff_s: float = 0.5,
        extra_body: dict[str, Any] | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_concurrency < 1 or prompts_per_request < 1 or max_retries < 0:
            raise ValueError("max_concurrency and prompts_per_request must be >= 1, max_retries >= 0")
        self.base_url = _api_root(base_url)
        self.model = model
        self.name = name or f"openai:{model}"
        self.max_concurrency = max_concurrency
        self.prompts_per_request = prompts_per_request
        self.logprobs = logprobs
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.extra_body = dict(extra_body or {})
        self.tokenizer = load_tokenizer(tokenizer) if tokenizer else None
        if prompt_format is None:
            prompt_format = default_format(self.tokenizer) if self.tokenizer is not None else plain_format()
        if prompt_format.chat and self.tokenizer is None:
            raise ValueError("a chat prompt format needs tokenizer= (a local path or preset with a chat template)")
        self.prompt_format = prompt_format
        if num_parameters is not None:
            if isinstance(num_parameters, bool) or not isinstance(num_parameters, (int, float)) \
                    or num_parameters != num_parameters or num_parameters <= 0 or int(num_parameters) != num_parameters:
                raise ValueError(f"num_parameters must be a positive whole number, got {num_parameters!r}")
            num_parameters = int(num_parameters)
        self._num_parameters = num_parameters
        self._lock = threading.Lock()
        self._warned_split = False
        #: what this server was found to lack (a warning was logged when each was found)
        self.degraded: set[str] = set()
        #: request fields this server refused by name, dropped from every request since
        self._dropped: set[str] = set()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=timeout_s, headers=headers,
            limits=httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency),
        )

    # -- Policy protocol -------------------------------------------------------------

    @property
    def num_parameters(self) -> int:
        with self._lock:
            if self._num_parameters is None:
                self._num_parameters = self._parameters_from_server()
            return self._num_parameters

    def format_prompt(self, question: str) -> str:
        return self.prompt_format.render(question, self.tokenizer)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        call = begin_generate(prompts, params, self.prompt_format.end_markers)
        if call.empty:
            return []
        prompts = call.prompts
        k = self.prompts_per_request
        starts = list(range(0, len(prompts), k))
        if len(starts) == 1:
            chunks = [self._generate_chunk(call, prompts, 0)]
        else:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(starts))) as pool:
                chunks = list(pool.map(lambda s: self._generate_chunk(call, prompts[s:s + k], s), starts))
        return [g for chunk in chunks for g in chunk]

    # -- plumbing --------------------------------------------------------------------

    def models(self) -> list[dict]:
        """The server's ``/v1/models`` entries (one attempt: this is metadata, not work)."""
        return self._request("GET", "/v1/models", retries=0).get("data", [])

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> "OpenAIPolicy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _generate_chunk(self, call: GenerateCall, prompts: list[str], start: int) -> list[Generation]:
        """One request for ``prompts``; tops up choices when a server ignores ``n``."""
        params, stops = call.params, call.stops
        single = len(prompts) == 1
        seed = call.seed(start)
        body = self._body(prompts[0] if single else prompts, params, stops, params.n, seed)
        gens = self._parse(self._complete(body), len(prompts), params)
        if single:
            gen = gens[0]
            if 0 < len(gen.completions) < params.n:
                self._degrade("n", "%s returned %d choice(s) for n=%d: it ignores n; drawing the other samples "
                              "with separate requests (seed + j for sample j; each re-sends the prompt)",
                              self.base_url, len(gen.completions), params.n)
            while len(gen.completions) < params.n:  # e.g. a llama.cpp server that returns one choice
                have = len(gen.completions)
                more = None if seed is None else seed + have
                body = self._body(prompts[0], params, stops, params.n - have, more)
                extra = self._parse(self._complete(body), 1, params, allow_short=True)[0]
                if not extra.completions:
                    raise OpenAIServerError(f"{self.base_url} returned no choices for a prompt")
                gen.completions += extra.completions
            del gen.completions[params.n:]
        elif any(len(g.completions) != params.n for g in gens):
            raise OpenAIServerError(
                f"{self.base_url} returned fewer than n={params.n} choices for some prompts of a batched "
                "request; use prompts_per_request=1 with this server"
            )
        return gens

    def _body(self, prompt, params: SamplingParams, stops: list[str], n: int, seed: int | None) -> dict:
        body: dict[str, Any] = {
            "model": self.model, "prompt": prompt, "n": n, "temperature": params.temperature,
            "top_p": params.top_p, "max_tokens": params.max_tokens, "stream": False,
        }
        if stops:
            body["stop"] = stops
        if seed is not None:
            body["seed"] = seed
        if self.logprobs:
            body["logprobs"] = 1
        body.update(self.extra_body)
        for name in self._dropped:
            body.pop(name, None)
        return body

    def _complete(self, body: dict) -> dict:
        """POST /v1/completions; a 400/422 that names an optional field drops it (logged) and retries."""
        while True:
            try:
                return self._request("POST", "/v1/completions", body)
            except OpenAIServerError as e:
                field = _refused_field(e, body)
                if field is None:
                    raise
                with self._lock:
                    self._dropped.add(field)
                self._degrade(field, "%s refused the request field %r (%s); sending requests without it from now "
                              "on%s", self.base_url, field, _one_line(e)[:200], _DROP_EFFECT[field])
                body = {k: v for k, v in body.items() if k != field}

    def _degrade(self, feature: str, message: str, *args: Any) -> None:
        """Log, once per feature, what this server lacks and what is done instead."""
        with self._lock:
            if feature in self.degraded:
                return
            self.degraded.add(feature)
        log.warning(message, *args)

    def _parse(self, response: dict, n_prompts: int, params: SamplingParams, allow_short: bool = False):
        count = None
        if self.tokenizer is not None:
            tok = self.tokenizer
            count = lambda text: len(tok.encode(text, add_special_tokens=False))  # noqa: E731
        gens, estimated = completions_from_response(
            response, n_prompts=n_prompts, n=params.n, stop=params.stop,
            end_markers=self.prompt_format.end_markers, count_tokens=count, allow_short=allow_short,
        )
        ours = any(isinstance(c, dict) and "ttsopt" in c for c in response.get("choices") or [])  # exact already
        if self.logprobs and not ours and "logprobs" not in self._dropped and any(
                c.logprob is None and c.tokens > 0 for g in gens for c in g.completions):
            self._degrade("logprobs", "%s returned no logprobs though asked: Completion.logprob is None (the probes' "
                          "log-probability features will be missing) and, with several stop strings, which one "
                          "matched may not be known", self.base_url)
        if estimated and not self._warned_split:
            self._warned_split = True
            log.warning("%s reports no per-choice token counts; splitting usage.completion_tokens by text "
                        "length (pass tokenizer= for exact counts)", self.base_url)
        return gens

    def _request(self, method: str, path: str, body: dict | None = None, retries: int | None = None) -> dict:
        """Send with retries on connection errors, 429 and 5xx; fail at once on other 4xx."""
        url = self.base_url + path
        retries = self.max_retries if retries is None else retries
        error: Exception | None = None
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(min(self.retry_backoff_s * 2 ** (attempt - 1), 30.0))
            try:
                r = self._client.request(method, url, json=body)
            except _RETRYABLE as e:
                error = OpenAIServerError(f"could not reach {url}: {type(e).__name__}: {e}")
                continue
            if r.status_code < 400:
                try:
                    return r.json()
                except ValueError as e:
                    raise OpenAIServerError(f"{url} answered with non-JSON: {r.text[:200]!r}") from e
            message = f"{method} {url} -> HTTP {r.status_code}: {_error_message(r)}"
            if r.status_code == 429 or r.status_code >= 500:
                error = OpenAIServerError(message, r.status_code)
                log.warning("%s (attempt %d of %d)", message, attempt + 1, retries + 1)
                continue
            raise OpenAIServerError(message, r.status_code)
        assert error is not None
        raise OpenAIServerError(f"{error} (gave up after {retries + 1} attempts)",
                                getattr(error, "status_code", None)) from error

    def _parameters_from_server(self) -> int:
        try:
            entries = self.models()
        except OpenAIServerError as e:
            raise UnknownParameterCount(f"could not ask {self.base_url} for the parameter count of {self.model!r} "
                                        f"({_one_line(e)}; is the server running?)") from e
        if not isinstance(entries, list):
            entries = []
        for entry in entries:
            if isinstance(entry, dict) and (entry.get("id") == self.model or len(entries) == 1):
                found = parameters_from_model_entry(entry)
                if found:
                    return found
        served = ", ".join(repr(e.get("id")) for e in entries[:5] if isinstance(e, dict))
        raise UnknownParameterCount(f"{self.base_url} does not report the parameter count of {self.model!r} "
                                    f"(its /v1/models lists {served or 'nothing'})")


# -- pure helpers (unit-tested without a server) ---------------------------------------

#: optional request fields a server may refuse by name, and what dropping each costs
_DROP_EFFECT = {
    "seed": ": samples are no longer reproducible",
    "logprobs": ": Completion.logprob is None and a stop string among several may not be told from EOS",
}


def _refused_field(error: "OpenAIServerError", body: dict) -> str | None:
    """The optional field a 400/422 names (``seed`` or ``logprobs``), if the body sent it. (A server that
    cannot do ``n`` ignores it, and the choices are topped up; a 400 naming ``n`` is a limit, kept.)"""
    if error.status_code not in (400, 422):
        return None
    text = str(error).lower()
    for name in _DROP_EFFECT:
        if name in body and re.search(rf"(?<![a-z_]){name}(?![a-z_])", text.split("->", 1)[-1]):
            return name
    return None


def settle_stop(text: str, matched: str | None, stop: Sequence[str], end_markers: Sequence[str],
                included: bool) -> tuple[str, str]:
    """(text, finish_reason) of a completion that stopped, given the matched stop string.

    ``included`` says whether ``text`` already ends with ``matched`` (vLLM's
    ``include_stop_str_in_output``) or had it stripped (the OpenAI API). A caller's stop
    string is kept and reported as ``"stop"``; an end marker is removed and reported as
    ``"eos"``; no match means the model's EOS.
    """
    if matched is None:
        return text, "eos"
    if matched in stop:
        return (text if included and text.endswith(matched) else text + matched), "stop"
    if matched in end_markers:
        return (text[: -len(matched)] if included and text.endswith(matched) else text), "eos"
    # A string we never sent (a server-side default stop): the model ended, keep the text.
    return text, "eos"


def completions_from_response(
    response: dict, *, n_prompts: int, n: int, stop: Sequence[str], end_markers: Sequence[str],
    count_tokens=None, allow_short: bool = False,
) -> tuple[list[Generation], bool]:
    """Turn a ``/v1/completions`` response into one Generation per prompt.

    Returns the generations and whether any token count had to be estimated.
    Choices are grouped by ``index // n`` (vLLM numbers them prompt-major).
    """
    choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
    usage = response.get("usage") or {}
    if not allow_short and len(choices) > n_prompts * n:
        raise OpenAIServerError(f"server returned {len(choices)} choices for {n_prompts} prompts x n={n}")
    groups: list[list[dict]] = [[] for _ in range(n_prompts)]
    for pos, choice in enumerate(choices):
        idx = choice.get("index", pos)
        groups[min(idx // n, n_prompts - 1) if n_prompts > 1 else 0].append(choice)

    estimated = False
    parsed: list[list[tuple[str, str, int | None, float | None]]] = []
    for group in groups:
        parsed.append([_parse_choice(c, stop, end_markers) for c in group])
    # Fill in token counts that the choices did not carry.
    total = usage.get("completion_tokens")
    missing = [(g, i) for g, group in enumerate(parsed) for i, p in enumerate(group) if p[2] is None]
    if missing:
        if len(choices) == 1 and total is not None:
            g, i = missing[0]
            parsed[g][i] = (*parsed[g][i][:2], int(total), parsed[g][i][3])
        elif count_tokens is not None:
            for g, i in missing:
                parsed[g][i] = (*parsed[g][i][:2], count_tokens(parsed[g][i][0]), parsed[g][i][3])
        else:
            known = sum(p[2] for group in parsed for p in group if p[2] is not None)
            left = max(int(total or 0) - known, 0)
            lengths = [max(len(parsed[g][i][0]), 1) for g, i in missing]
            shares = _split(left, lengths)
            for (g, i), share in zip(missing, shares):
                parsed[g][i] = (*parsed[g][i][:2], share, parsed[g][i][3])
            estimated = True

    prompt_total = usage.get("prompt_tokens")
    gens = []
    for group, raw in zip(parsed, groups):
        ext = [c.get("ttsopt") or {} for c in raw]
        prompt_tokens = next((e["prompt_tokens"] for e in ext if "prompt_tokens" in e), None)
        if prompt_tokens is None:
            prompt_tokens = int(prompt_total or 0) // max(n_prompts, 1)
        prefill = next((e["prefill_tokens"] for e in ext if e.get("prefill_tokens") is not None), None)
        comps = [Completion(text=t, tokens=int(k), finish_reason=f, logprob=lp) for t, f, k, lp in group]
        gens.append(Generation(prompt_tokens=int(prompt_tokens), completions=comps, prefill_tokens=prefill))
    return gens, estimated


def _parse_choice(choice: dict, stop: Sequence[str], end_markers: Sequence[str]):
    """(text, finish_reason, tokens or None, logprob or None) of one choice."""
    text = choice.get("text") or ""
    ext = choice.get("ttsopt") or {}
    lp = choice.get("logprobs") or {}
    token_strings = lp.get("tokens") if isinstance(lp, dict) else None
    token_logprobs = lp.get("token_logprobs") if isinstance(lp, dict) else None
    content = lp.get("content") if isinstance(lp, dict) else None  # llama.cpp / chat-shaped logprobs
    if token_strings is None and isinstance(content, list):
        token_strings = [c.get("token", "") for c in content]
        token_logprobs = [c.get("logprob") for c in content]

    tokens = ext.get("tokens")
    if tokens is None and token_strings is not None:
        tokens = len(token_strings)
    if tokens is None and isinstance(choice.get("token_ids"), list):
        tokens = len(choice["token_ids"])
    logprob = ext.get("logprob")
    if logprob is None and token_logprobs:
        logprob = float(sum(x for x in token_logprobs if x is not None))

    reason = choice.get("finish_reason")
    if reason == "length":
        return text, "length", tokens, logprob
    if reason not in ("stop", "eos", None):
        raise OpenAIServerError(f"unexpected finish_reason {reason!r} in choice {choice.get('index')}")
    sent = all_stop_strings(stop, end_markers)
    field = next((f for f in _STOP_FIELDS if f in choice), None)
    if field is not None:
        matched = choice[field] if isinstance(choice[field], str) else None  # an int is a stop *token*: EOS-like
        text, finish = settle_stop(text, matched, stop, end_markers, included=False)  # the API strips it
        return text, finish, tokens, logprob
    return (*_guess_stop(text, sent, stop, end_markers, token_strings), tokens, logprob)


def _guess_stop(text, sent, stop, end_markers, token_strings):
    """Best effort when the server does not say which stop string matched (see module docstring)."""
    if len(sent) == 1 and not end_markers:
        return text + sent[0], "stop"
    if token_strings:
        tail = "".join(token_strings)
        tail = tail[len(text):] if tail.startswith(text) else ""
        for s in sorted(sent, key=len, reverse=True):
            if tail.startswith(s):
                return settle_stop(text, s, stop, end_markers, included=False)
    return text, "eos"


def _split(total: int, weights: list[int]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights`` that sum to ``total``."""
    wsum = sum(weights)
    shares = [total * w // wsum for w in weights]
    for i in sorted(range(len(weights)), key=lambda i: -weights[i])[: total - sum(shares)]:
        shares[i] += 1
    return shares


def parameters_from_model_entry(entry: dict) -> int | None:
    """Parameter count from a ``/v1/models`` entry: llama.cpp's ``meta.n_params`` or ``num_parameters``."""
    meta = entry.get("meta") or {}
    for value in (meta.get("n_params"), entry.get("num_parameters")):
        if isinstance(value, (int, float)) and value > 0:
            return int(value)
    return None


def load_tokenizer(spec: str):
    """A local tokenizer (folder, ``.gguf`` file or preset), never downloaded."""
    from transformers import AutoTokenizer

    from .models import PRESETS, cache_dir, resolve_model_dir

    folder, gguf_file = resolve_model_dir(spec)
    if gguf_file is not None:
        cached = cache_dir() / "hf" / Path(gguf_file).stem  # models.load_causal_lm's de-quantised copy
        if (cached / "tokenizer_config.json").exists():
            folder, gguf_file = cached, None
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except OSError as e:
        known = ", ".join(PRESETS)
        raise ValueError(f"no local tokenizer at {spec!r} (a folder, a .gguf file or a preset: {known})") from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _api_root(base_url: str) -> str:
    """``http://h:8000``, ``http://h:8000/`` and ``http://h:8000/v1`` all mean the same server."""
    url = base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _error_message(r: httpx.Response) -> str:
    """The server's own words: OpenAI/vLLM ``error.message``, vLLM's old ``message``, FastAPI's ``detail``."""
    try:
        data = r.json()
    except ValueError:
        return r.text[:500] or r.reason_phrase
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        for key in ("message", "detail"):
            if data.get(key):
                return str(data[key])
    return str(data)[:500]


__all__ = [
    "OpenAIPolicy", "OpenAIServerError", "UnknownParameterCount", "all_stop_strings", "settle_stop", "completions_from_response",
    "parameters_from_model_entry", "load_tokenizer",
]
