"""The OpenAI-compatible service in front of a :class:`~ttsopt.selector.router.Router`.

Models (:mod:`ttsopt.serve.routers`): every pair of the router is its own model. With one pair
(or ``--pair``) the model id is the router's name (``router/PAIR`` is accepted too); with several,
``router/PAIR`` each (e.g. ``router/smollm2-135m+calc``), and a request must name one. A pair's
models load on its first request.

Endpoints (every POST body may carry one budget field, see :mod:`ttsopt.serve.schemas`:
``budget`` = N generations, ``budget_tokens``, ``budget_flops`` or ``target_accuracy``):

* ``POST /v1/chat/completions`` -- OpenAI's chat API. ``model`` is a served model id (404
  naming the served ones otherwise; omitted: the served one when there is one, else a 400
  listing them); the question is the last ``user``
  message; the answer is ``choices[0].message.content``; ``usage`` counts the policy's real
  tokens (``prompt_tokens``: the prompt tokens it processed, ``completion_tokens``: every token it
  generated, probe included); the extra ``ttsopt`` field holds ``decision`` (the chosen strategy,
  every candidate's predicted accuracy and expected compute, the features and the probe),
  ``compute`` (actually spent: prompt, generated and PRM tokens, FLOPs), ``answer``,
  ``seconds``, ``batch_size`` (questions in the router call that solved it) and, with
  ``include_trace: true``, the search ``trace``. ``stream: true`` and ``n != 1`` are 400s.
* ``POST /v1/route`` -- ``{"question": ...}`` or ``{"questions": [...]}`` -> ``decision`` or
  ``decisions`` (no search is run; a probe may be).
* ``POST /v1/solve`` -- the same -> ``solution`` or ``solutions`` (answer, decision, trace,
  compute); ``include_trace: false`` drops the traces.
* ``GET /v1/models`` (one entry per served model, with its pair), ``GET /healthz`` (always open, no model
  work), ``GET /metrics`` (Prometheus text: requests by route and status, latency, strategy
  chosen, tokens and FLOPs spent, batch sizes, questions waiting).

With an API key (``ServeSettings.api_key``, ``--api-key`` or ``$TTSOPT_API_KEY``) every route
but ``/healthz`` demands ``Authorization: Bearer <key>`` (401 otherwise; compared in constant
time). Bounds (:class:`~ttsopt.serve.settings.ServeSettings`) are checked before any model work
and refused with a 4xx naming the bound and its value; a full queue is a 503. A failure inside the
router answers 500 with a generic message and a request id and is logged here under that id --
never a stack trace -- and the next request is served as usual. Requests are solved in
micro-batches on one worker thread (:mod:`ttsopt.serve.batching`); a client that disconnects
before its batch starts is dropped from it (status 499 in the metrics).
"""

# No ``from __future__ import annotations``: FastAPI must see the request model classes, not strings.
import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from ttsopt.web import BodyLimit, error_response, install_error_handlers, internal_error_response

from .batching import MicroBatcher, QueueFull
from .metrics import MetricsMiddleware, ServeMetrics
from .routers import ModelRefusal, ServedRouters
from .schemas import ChatRequest, QuestionsRequest, RequestError, budget_of, question_and_field
from .settings import ServeSettings

log = logging.getLogger(__name__)

#: routes that answer without an API key
OPEN_PATHS = frozenset({"/healthz"})
#: what a dropped request is counted as (nginx's "client closed request")
CLIENT_CLOSED = 499


class BearerAuth:
    """ASGI middleware: every path but ``open_paths`` needs ``Authorization: Bearer <key>``.

    Both sides are hashed before the constant-time compare, so neither the key's content nor its
    length leaks through timing.
    """

    def __init__(self, app, api_key: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app = app
        self.expected = hashlib.sha256(b"Bearer " + api_key.encode()).digest()
        self.open_paths = open_paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope.get("path") not in self.open_paths:
            given = dict(scope.get("headers") or ()).get(b"authorization", b"")
            if not hmac.compare_digest(hashlib.sha256(given).digest(), self.expected):
                response = error_response(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                                          "AuthenticationError")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _is_router_error(exc: BaseException) -> bool:
    try:
        from ttsopt.selector.records import RouterError
    except ImportError:  # pragma: no cover - the router module is part of the package
        return False
    return isinstance(exc, RouterError)


async def _client_gone(request) -> None:
    """Returns when the client disconnects (the body has been read: only ``http.disconnect`` is left)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def create_app(router: Any, settings: ServeSettings | None = None, **setting_values: Any):
    """A FastAPI app serving ``router`` under ``settings`` (or its fields as keywords).

    ``router``: a :class:`~ttsopt.serve.routers.ServedRouters` (every pair of a router, each its own
    model: :func:`~ttsopt.serve.routers.load_served`), or one router object (anything with the
    Router's ``name``, ``pair``, ``route_many`` and ``solve_many``), served as its one model.
    The API key falls back to ``$TTSOPT_API_KEY``. The app's metrics registry is its own
    (``app.state.metrics.registry``); ``app.state.batcher`` is the micro-batcher.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    from ttsopt.selector.router import CASCADE_MODES

    if settings is not None and setting_values:
        raise TypeError("pass settings=ServeSettings(...) or its fields as keywords, not both")
    settings = (settings or ServeSettings(**setting_values)).with_env()
    served = ServedRouters.of(router)
    metrics = ServeMetrics.create()

    def run(key, payloads):
        # key: (op, model id, budget or cascade mode). solve: one call for every budget (solve_many takes
        # one budget per question and batches the questions whose strategies coincide, whatever budget
        # chose them); route: one call per budget. Each model (pair) has its own calls.
        op, model, extra = key
        _, target = served.resolve(model)
        if op == "solve":
            questions = [q for q, _ in payloads]
            budgets = [b for _, b in payloads]
            same = all(b == budgets[0] for b in budgets)
            return target.solve_many(questions, budgets[0] if same else budgets, cascade=extra)
        return target.route_many(list(payloads), extra)

    batcher = MicroBatcher(run, window_s=settings.batch_window_s, max_batch=settings.max_batch,
                           max_queue=settings.max_queue,
                           on_batch=lambda key, size: metrics.batch_size.labels(key[0]).observe(size))
    metrics.waiting.set_function(lambda: batcher.waiting)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title=f"ttsopt router service ({served.name})", lifespan=lifespan)
    app.state.settings = replace(settings, api_key="***" if settings.api_key else None)
    app.state.metrics = metrics
    app.state.batcher = batcher
    app.state.router = router
    app.state.served = served
    install_error_handlers(app)

    def check_model(model: str | None) -> str:
        """The model id the request is for (ModelRefusal: unknown, or none named where several are served)."""
        return served.resolve(model)[0]

    def check_questions(questions: list[str]) -> None:
        refusal = settings.count_refusal(len(questions))
        if refusal is None:
            for i, q in enumerate(questions):
                refusal = settings.question_refusal(q, "question" if len(questions) == 1 else f"questions[{i}]")
                if refusal is not None:
                    break
        if refusal is not None:
            raise RequestError(refusal)

    async def compute(request, op: str, model: str, questions: list[str], budget, cascade: bool | str | None = None):
        """Submit the questions and wait for them, or for the client to leave (then None)."""
        if cascade and op != "solve":
            raise RequestError("cascade=true runs the CoT and its check before choosing: use /v1/solve or "
                               "/v1/chat/completions")
        if cascade and cascade is not True and cascade not in CASCADE_MODES:
            raise RequestError(f"cascade must be true, false or one of {', '.join(CASCADE_MODES)}, got {cascade!r}")
        # None: the deployed default; False: the argmax; True: the router's default cascade mode
        solve_key = ("solve", model, cascade)
        key, payloads = (solve_key, [(q, budget) for q in questions]) if op == "solve" else \
            (("route", model, budget), list(questions))
        try:
            futures = batcher.submit(key, payloads)
        except QueueFull as e:
            raise _Refusal(503, str(e), "ServiceUnavailableError") from None
        everything = asyncio.gather(*futures, return_exceptions=True)
        gone = asyncio.ensure_future(_client_gone(request))
        try:
            done, _ = await asyncio.wait({everything, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not everything.done():  # the client left (or this handler was cancelled): drop its work
                for f in futures:
                    f.cancel()
        if everything not in done:
            return None
        outcomes = everything.result()
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, BaseException):
                where = "" if len(questions) == 1 else f"questions[{i}]: "
                if isinstance(outcome, RequestError) or _is_router_error(outcome):
                    raise RequestError(where + str(outcome))
                raise _Failed(outcome)
        return outcomes

    async def compute_questions(request, op: str, body: QuestionsRequest) -> tuple[list | None, bool, str]:
        """What /v1/route and /v1/solve share: check the model, the questions and the budget, then
        :func:`compute` (outcomes None: the client left); ``single``: the body gave one question, not a
        list; and the model id that answers."""
        model = check_model(body.model)
        questions, single = _questions(body)
        check_questions(questions)
        budget = budget_of(body, settings)
        return await compute(request, op, model, questions, budget, body.cascade), single, model

    def answer_errors(handler):
        """Turn this module's refusals and failures into the OpenAI error shape."""
        import functools

        @functools.wraps(handler)
        async def wrapped(*args, **kwargs):
            try:
                return await handler(*args, **kwargs)
            except (_Refusal, ModelRefusal) as e:
                return error_response(e.status, e.message, e.kind)
            except RequestError as e:
                return error_response(400, str(e))
            except _Failed as e:
                try:
                    raise e.original
                except BaseException:
                    return internal_error_response(log, "routing or solving", "ttsopt serve")
            except Exception:
                return internal_error_response(log, "answering", "ttsopt serve")

        return wrapped

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "model": served.name} if served.single else \
            {"status": "ok", "model": served.name, "models": served.listed}

    @app.get("/metrics")
    async def metrics_text():
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    @app.get("/v1/models")
    async def models():
        now = int(time.time())
        if served.single:
            one = served.routers[served.pairs[0]]
            return {"object": "list", "data": [{
                "id": served.name, "object": "model", "created": now, "owned_by": "ttsopt",
                "meta": {"pairs": list(getattr(one, "pairs", []) or []), "pair": served.pairs[0]},
            }]}
        return {"object": "list", "data": [{
            "id": served.model_id(p), "object": "model", "created": now, "owned_by": "ttsopt",
            "meta": {"router": served.name, "pair": p, "pairs": served.pairs},
        } for p in served.pairs]}

    @app.post("/v1/chat/completions")
    @answer_errors
    async def chat_completions(body: ChatRequest, request: Request):
        model = check_model(body.model)
        if body.stream:
            raise RequestError("stream=true is not supported by this server: the answer is known only once the "
                               "search ends; send stream=false")
        if body.n != 1:
            raise RequestError(f"n={body.n} is not supported: this server returns one answer per question (n=1)")
        question, where = question_and_field(body.messages)
        refusal = settings.question_refusal(question, where)
        if refusal is not None:
            raise RequestError(refusal)
        budget = budget_of(body, settings)
        outcomes = await compute(request, "solve", model, [question], budget, body.cascade)
        if outcomes is None:
            return error_response(CLIENT_CLOSED, "client closed the request", "ClientClosedRequest")
        solution, info = outcomes[0]
        return chat_response(model, solution, info, include_trace=body.include_trace, metrics=metrics)

    @app.post("/v1/route")
    @answer_errors
    async def route(body: QuestionsRequest, request: Request):
        outcomes, single, model = await compute_questions(request, "route", body)
        if outcomes is None:
            return error_response(CLIENT_CLOSED, "client closed the request", "ClientClosedRequest")
        decisions = []
        for decision, _info in outcomes:
            metrics.observe_decision(decision)
            decisions.append(decision.to_dict())
        head = {"object": "ttsopt.route", "model": model}
        return {**head, "decision": decisions[0]} if single else {**head, "decisions": decisions}

    @app.post("/v1/solve")
    @answer_errors
    async def solve(body: QuestionsRequest, request: Request):
        outcomes, single, model = await compute_questions(request, "solve", body)
        if outcomes is None:
            return error_response(CLIENT_CLOSED, "client closed the request", "ClientClosedRequest")
        solutions = []
        for solution, info in outcomes:
            metrics.observe_decision(solution.decision)
            metrics.observe_compute(solution.compute)
            metrics.observe_cascade(getattr(solution, "trace", None))
            d = solution.to_dict()
            if not body.include_trace:
                d.pop("trace", None)
            d["batch_size"] = info.size
            solutions.append(d)
        head = {"object": "ttsopt.solve", "model": model}
        return {**head, "solution": solutions[0]} if single else {**head, "solutions": solutions}

    routes = {r.path for r in app.routes if hasattr(r, "path")}
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.api_key:
        app.add_middleware(BearerAuth, api_key=settings.api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes)  # outermost: sees every answer
    return app


def _questions(body: QuestionsRequest) -> tuple[list[str], bool]:
    if (body.question is None) == (body.questions is None):
        raise RequestError("give exactly one of question (a string) or questions (a list of strings)")
    if body.question is not None:
        return [body.question], True
    return list(body.questions), False


def chat_response(model: str, solution: Any, info: Any, *, include_trace: bool = False,
                  metrics: ServeMetrics | None = None) -> dict[str, Any]:
    """The ``chat.completion`` body for one solution (see the module docstring)."""
    d = solution.to_dict()
    trace = d.pop("trace", None)
    compute = dict(solution.compute)
    if metrics is not None:
        metrics.observe_decision(solution.decision)
        metrics.observe_compute(compute)
        metrics.observe_cascade(getattr(solution, "trace", None))
    prompt = int(compute.get("prompt_tokens", 0) or 0)
    completion = int(compute.get("generated_tokens", 0) or 0)
    extra = {"answer": solution.answer, "decision": d.get("decision"), "compute": compute,
             "seconds": solution.seconds, "batch_size": info.size}
    if include_trace:
        extra["trace"] = trace
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": solution.answer or ""},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        "ttsopt": extra,
    }


class _Refusal(Exception):
    def __init__(self, status: int, message: str, kind: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


class _Failed(Exception):
    """A question's own exception from the worker (a 500: logged, never echoed)."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(type(original).__name__)
        self.original = original




def serve_in_background(router: Any, host: str = "127.0.0.1", port: int = 0, **setting_values: Any):
    """``create_app(router)`` under uvicorn in a thread of this process (tests, benchmarks, notebooks);
    ``port=0`` picks a free port. Returns a ``BackgroundServer`` (``.url``, ``.stop()``, a context manager)."""
    from ttsopt.web import start_background

    return start_background(create_app(router, **setting_values), host=host, port=port, name="ttsopt-serve")


def run_server(router: Any, settings: ServeSettings) -> None:
    """Serve ``router`` (a ``ServedRouters`` or one router) under ``settings`` until interrupted (``ttsopt serve``)."""
    import uvicorn

    settings = settings.with_env()
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        log.warning("serving on %s without an API key: anyone who can reach this port can use the models",
                    settings.host)
    uvicorn.run(create_app(router, settings), host=settings.host, port=settings.port, log_level="info")


__all__ = ["create_app", "chat_response", "serve_in_background", "run_server", "BearerAuth", "OPEN_PATHS"]
