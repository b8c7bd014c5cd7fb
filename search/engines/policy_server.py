"""Serve any Policy over an OpenAI-compatible ``/v1/completions`` endpoint.

A CPU box can lend its embedded model to other machines, and ``OpenAIPolicy`` can be
tested against a real server on loopback. The server speaks vLLM's dialect:

* the matched stop string is stripped from ``text`` and reported as ``stop_reason``
  (a Policy keeps it at the end of ``Completion.text``; the OpenAI API does not);
  ``finish_reason`` is ``"stop"`` for a stop string or EOS, ``"length"`` otherwise;
* choices are numbered prompt-major (``index = prompt * n + j``), and ``usage``
  counts every prompt once;
* a Policy reports token *counts*, not token strings, so ``logprobs`` is ``null``
  even when asked for (inventing token strings would mislead a client). Instead every
  choice carries a ``ttsopt`` object with the exact ``tokens`` generated, the summed
  ``logprob`` (or null) and the prompt's ``prompt_tokens`` and ``prefill_tokens``;
  ``OpenAIPolicy`` reads it,
  other clients ignore it;
* ``/v1/models`` reports the parameter count the way llama.cpp does (``meta.n_params``).

``generate`` calls are serialised (a local model is not thread-safe and gains nothing
from interleaving); a request with many prompts becomes one batched ``generate`` call,
so clients should send prompts together (``OpenAIPolicy(prompts_per_request=...)``).

Because calls are serialised, one oversized request would hold the model for every other
client, so a request is bounded (:class:`ServerLimits`: ``n``, ``max_tokens``, prompts,
samples per request, body bytes); a request past a bound is refused with a 4xx that names
the bound and its value. A failure inside the model answers 500 with a generic message and a
request id, and the exception is logged here with that id: its text may describe the host
(paths, memory, library internals) and is no business of a remote client. The error shape,
the body limit and the background server are ``ttsopt.web``'s (shared with ``ttsopt serve``).
"""

# No ``from __future__ import annotations``: FastAPI must see the request model class
# defined inside create_app, not a string it cannot resolve.
import logging
import threading
import time
import uuid
from dataclasses import dataclass, fields
from typing import Any

from ttsopt.web import (BackgroundServer, BodyLimit, error_response, install_error_handlers,
                        internal_error_response, start_background)

from ..types import Policy, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of the served policy.

    The defaults admit what a sweep sends (budgets up to the paper's 256 samples, full
    solutions of a few thousand tokens) and refuse what would hold the model for minutes.
    """

    #: samples per prompt (the request's ``n``)
    max_n: int = 256
    #: tokens generated per sample (the request's ``max_tokens``)
    max_tokens: int = 4096
    #: prompts in one request
    max_prompts: int = 256
    #: prompts x n: the rows one request makes the model decode
    max_samples: int = 4096
    #: bytes of the request body (prompts are text; 8 MiB is thousands of few-shot prompts)
    max_body_bytes: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{f.name} must be a positive integer, got {value!r}")

    def refusal(self, n: int, max_tokens: int, prompts: int) -> str | None:
        """Why a request of ``prompts`` prompts x ``n`` samples x ``max_tokens`` is refused, or None."""
        for asked, value, bound, limit in (("n", n, "max_n", self.max_n),
                                           ("max_tokens", max_tokens, "max_tokens", self.max_tokens),
                                           ("prompts", prompts, "max_prompts", self.max_prompts)):
            if value > limit:
                return f"{asked}={value} exceeds this server's limit {bound}={limit}"
        if prompts * n > self.max_samples:
            return (f"{prompts} prompts x n={n} = {prompts * n} samples exceeds this server's limit "
                    f"max_samples={self.max_samples}; send fewer prompts per request")
        return None


def create_app(policy: Policy, *, model_name: str | None = None, limits: ServerLimits | None = None,
               **limit_values: int):
    """A FastAPI app serving ``policy`` as model ``model_name`` (default ``policy.name``).

    Bounds come from ``limits`` or from its fields as keywords (``max_n=16``, ...); the
    defaults are :class:`ServerLimits`'s.
    """
    from fastapi import FastAPI
    from pydantic import BaseModel, ConfigDict

    if limits is not None and limit_values:
        raise TypeError("pass limits=ServerLimits(...) or its fields as keywords, not both")
    limits = limits or ServerLimits(**limit_values)
    served = model_name or policy.name
    lock = threading.Lock()
    app = FastAPI(title=f"ttsopt policy server ({served})")
    app.state.limits = limits
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    class CompletionRequest(BaseModel):
        # Unknown OpenAI fields (echo, user, ...) are accepted and ignored, as vLLM does.
        model_config = ConfigDict(extra="ignore")
        model: str | None = None
        prompt: str | list[str]
        n: int = 1
        stop: str | list[str] | None = None
        temperature: float = 1.0  # the OpenAI API's defaults
        top_p: float = 1.0
        max_tokens: int = 16
        seed: int | None = None
        logprobs: int | None = None
        stream: bool = False

    error = error_response

    def internal_error():
        return internal_error_response(log, "generating", "policy server")

    install_error_handlers(app)

    # Metadata endpoints are async so that they answer even while every worker thread
    # waits for the model.
    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": served, "object": "model", "created": int(time.time()), "owned_by": "ttsopt",
            "meta": {"n_params": int(policy.num_parameters)},
        }]}

    @app.post("/v1/completions")
    def completions(req: CompletionRequest):
        if req.model is not None and req.model != served:
            return error(404, f"model {req.model!r} is not served here; this server serves {served!r}",
                         "NotFoundError")
        if req.stream:
            return error(400, "stream=true is not supported by this server")
        prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
        if not prompts:
            return error(400, "prompt must not be empty")
        refusal = limits.refusal(req.n, req.max_tokens, len(prompts))
        if refusal is not None:
            return error(400, refusal)
        try:
            params = SamplingParams(n=req.n, temperature=req.temperature, top_p=req.top_p,
                                    max_tokens=req.max_tokens, stop=tuple(_as_list(req.stop)), seed=req.seed)
        except ValueError as e:
            return error(400, str(e))
        with lock:
            try:
                generations = policy.generate(prompts, params)
            except ValueError as e:  # the policy's own argument checks: the client's to fix
                return error(400, str(e))
            except Exception:  # the model failed: the client may retry; the details stay here
                return internal_error()
        try:
            return completion_response(served, generations, params)
        except Exception:  # a policy that broke its contract (a Generation of the wrong shape)
            return internal_error()

    return app


def completion_response(model: str, generations, params: SamplingParams) -> dict[str, Any]:
    """vLLM-shaped ``/v1/completions`` body for a Policy's generations (see module docstring)."""
    choices = []
    for p, gen in enumerate(generations):
        for j, c in enumerate(gen.completions):
            text, reason, matched = _openai_finish(c.text, c.finish_reason, params.stop)
            choices.append({
                "index": p * params.n + j, "text": text, "logprobs": None,
                "finish_reason": reason, "stop_reason": matched,
                "ttsopt": {"tokens": c.tokens, "logprob": c.logprob, "prompt_tokens": gen.prompt_tokens,
                           "prefill_tokens": gen.prefill_tokens},
            })
    prompt_tokens = sum(g.prompt_tokens for g in generations)
    completion_tokens = sum(g.generated_tokens for g in generations)
    return {
        "id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
        "model": model, "choices": choices,
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _openai_finish(text: str, finish_reason: str, stop) -> tuple[str, str, str | None]:
    """Our (text-with-stop, stop|eos|length) -> OpenAI's (text-without-stop, stop|length, stop_reason)."""
    if finish_reason == "length":
        return text, "length", None
    if finish_reason == "stop":
        matched = max((s for s in stop if s and text.endswith(s)), key=len, default=None)
        if matched is not None:
            return text[: -len(matched)], "stop", matched
    return text, "stop", None


def _as_list(stop) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def serve_in_background(policy: Policy, host: str = "127.0.0.1", port: int = 0, **app_kwargs) -> BackgroundServer:
    """``create_app(policy)`` served from a thread of this process (tests, notebooks)."""
    return start_background(create_app(policy, **app_kwargs), host=host, port=port, name="policy-server")


def serve(policy: Policy, host: str = "127.0.0.1", port: int = 8000, *, model_name: str | None = None,
          **limits: Any) -> None:
    """Serve ``policy`` until interrupted (``limits``: see :func:`create_app`).
    Bind ``0.0.0.0`` only on a trusted network: there is no auth."""
    import uvicorn

    uvicorn.run(create_app(policy, model_name=model_name, **limits), host=host, port=port, log_level="info")


# ``start_background`` and ``BackgroundServer`` stay importable from here (they are ttsopt.web's).
__all__ = ["create_app", "completion_response", "serve", "serve_in_background", "start_background",
           "BackgroundServer", "ServerLimits"]
