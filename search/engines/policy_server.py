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
"""

# No ``from __future__ import annotations``: FastAPI must see the request model class
# defined inside create_app, not a string it cannot resolve.
import asyncio
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..types import Policy, SamplingParams


def create_app(policy: Policy, *, model_name: str | None = None):
    """A FastAPI app serving ``policy`` as model ``model_name`` (default ``policy.name``)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from pydantic import BaseModel, ConfigDict

    served = model_name or policy.name
    lock = threading.Lock()
    app = FastAPI(title=f"ttsopt policy server ({served})")

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

    def error(status: int, message: str, kind: str = "BadRequestError") -> JSONResponse:
        return JSONResponse(status_code=status,
                            content={"error": {"message": message, "type": kind, "code": status}})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}"
                 for e in exc.errors()]
        return error(400, "; ".join(parts))

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
        try:
            params = SamplingParams(n=req.n, temperature=req.temperature, top_p=req.top_p,
                                    max_tokens=req.max_tokens, stop=tuple(_as_list(req.stop)), seed=req.seed)
        except ValueError as e:
            return error(400, str(e))
        with lock:
            try:
                generations = policy.generate(prompts, params)
            except ValueError as e:
                return error(400, str(e))
            except Exception as e:  # the model failed: the client may retry
                return error(500, f"{type(e).__name__}: {e}", "InternalServerError")
        return completion_response(served, generations, params)

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


@dataclass
class BackgroundServer:
    """A uvicorn server running in a daemon thread; ``url`` is its base URL."""

    url: str
    server: Any
    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_background(app, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0) -> BackgroundServer:
    """Run ``app`` (any ASGI app) with uvicorn in a thread; ``port=0`` picks a free port."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True, name="policy-server")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"policy server on {host}:{port} did not start within {timeout_s} s")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return BackgroundServer(url=f"http://{host}:{bound}", server=server, thread=thread)


def serve_in_background(policy: Policy, host: str = "127.0.0.1", port: int = 0, **app_kwargs) -> BackgroundServer:
    """``create_app(policy)`` served from a thread of this process (tests, notebooks)."""
    return start_background(create_app(policy, **app_kwargs), host=host, port=port)


def serve(policy: Policy, host: str = "127.0.0.1", port: int = 8000, *, model_name: str | None = None) -> None:
    """Serve ``policy`` until interrupted. Bind ``0.0.0.0`` only on a trusted network: there is no auth."""
    import uvicorn

    uvicorn.run(create_app(policy, model_name=model_name), host=host, port=port, log_level="info")


__all__ = ["create_app", "completion_response", "serve", "serve_in_background", "start_background",
           "BackgroundServer"]
