"""Prometheus metrics of one app, on the app's own ``CollectorRegistry``.

A registry per app (not prometheus-client's global one) lets a process hold several apps --
tests create many -- without "Duplicated timeseries" errors, and ``/metrics`` shows this app's
series only. Route labels are the route templates, never raw paths, so a scanner probing random
URLs cannot blow up the label cardinality (an unknown path counts as ``other``).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

#: request latency buckets (seconds): a route decision takes ~ms, a solve with real models seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass
class ServeMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    strategy: Counter
    tokens: Counter
    flops: Counter
    batch_size: Histogram
    waiting: Gauge
    cascade: Counter

    @classmethod
    def create(cls) -> "ServeMetrics":
        r = CollectorRegistry(auto_describe=True)
        return cls(
            registry=r,
            requests=Counter("ttsopt_requests", "HTTP requests by route and status code", ["route", "status"],
                             registry=r),
            latency=Histogram("ttsopt_request_seconds", "HTTP request latency by route", ["route"],
                              buckets=LATENCY_BUCKETS, registry=r),
            strategy=Counter("ttsopt_strategy_chosen", "decisions by chosen strategy (none: nothing fits)",
                             ["strategy"], registry=r),
            tokens=Counter("ttsopt_tokens", "tokens actually spent solving, by kind (prompt, generated, prm)",
                           ["kind"], registry=r),
            flops=Counter("ttsopt_flops", "FLOPs actually spent solving", registry=r),
            batch_size=Histogram("ttsopt_batch_size", "questions per router call, by operation", ["op"],
                                 buckets=BATCH_BUCKETS, registry=r),
            waiting=Gauge("ttsopt_questions_waiting", "questions queued or running on the models", registry=r),
            cascade=Counter("ttsopt_cascade", "verify-first solves by outcome (kept: the checked CoT answered; "
                            "escalated; declined: the check failed and the router kept the CoT)", ["outcome"],
                            registry=r),
        )

    def observe_decision(self, decision) -> None:
        self.strategy.labels(decision.strategy or "none").inc()

    def observe_compute(self, compute: dict) -> None:
        for kind, key in (("prompt", "prompt_tokens"), ("generated", "generated_tokens"), ("prm", "prm_tokens")):
            value = compute.get(key)
            if value:
                self.tokens.labels(kind).inc(float(value))
        if compute.get("flops"):
            self.flops.inc(float(compute["flops"]))

    def observe_cascade(self, trace: dict | None) -> None:
        c = (trace or {}).get("cascade")
        if c is None:
            return
        if c.get("kept_first_answer") is False or "escalation" in (trace or {}):
            self.cascade.labels("escalated").inc()
        elif "router_declined" in c:
            self.cascade.labels("declined").inc()
        else:
            self.cascade.labels("kept").inc()

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """ASGI middleware: counts every HTTP request by route template and status, and times it."""

    def __init__(self, app, metrics: ServeMetrics, routes: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        import time

        path = scope.get("path", "")
        route = path if path in self.routes else "other"
        status = {"code": 500}
        started = time.perf_counter()

        async def send_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)


__all__ = ["ServeMetrics", "MetricsMiddleware", "LATENCY_BUCKETS", "BATCH_BUCKETS"]
