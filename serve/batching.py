"""The micro-batching window: questions that arrive together share one router call.

The search code batches across problems (strategies that coincide run as one batched search
call), so questions solved by one ``router.solve_many`` share engine calls that separate
``solve`` calls would each make (what that buys: benchmarks/serve_load.py). The :class:`MicroBatcher` collects the questions that arrive within ``window_s`` of the
first one of a batch -- and every question that queued while the models were busy with the
previous batch -- and hands them to ``run`` in groups that share a key (the app's keys: every
solve shares one, since ``solve_many`` takes a budget per question; a route's key is its budget),
at most ``max_batch`` questions per call. A window of 0 merges nothing across requests: each
request's own questions are one call, one request after another (the baseline the window is
measured against in benchmarks/serve_load.py).

Model calls are blocking CPU work, so ``run`` executes on one worker thread (one call at a time
on the models), never on the event loop, which stays free to accept requests, answer
``/healthz`` and ``/metrics``, and notice disconnects.

A question whose future was cancelled before its batch started (its client went away) is
dropped from the batch; one that is already running cannot be interrupted and its result is
discarded. When a call for several questions raises, its questions are retried one at a time,
so only the question that fails gets the exception.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

log = logging.getLogger(__name__)

#: run(key, payloads) -> one result per payload, in order (blocking; on the worker thread)
RunBatch = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class QueueFull(RuntimeError):
    """More questions wait than the server admits (``max_queue``): answered 503."""


@dataclass
class _Item:
    key: Hashable
    payload: Any
    future: asyncio.Future
    request: object  # the request it came with (window 0 merges nothing across requests)
    arrived: float = field(default_factory=time.monotonic)


@dataclass
class BatchInfo:
    """What a question's result came with: the size of the call that computed it."""

    size: int
    retried_alone: bool = False


class MicroBatcher:
    """Collects questions on the event loop and runs them in batches on one worker thread.

    ``submit(key, payloads)`` queues one request's questions and returns one future per question,
    resolving to ``(result, BatchInfo)`` or raising that question's own exception. ``on_batch(key,
    size)`` is called for every router call (metrics). With ``window_s == 0`` nothing is merged
    across requests: each request's questions are one call (the one-request-at-a-time baseline).
    """

    def __init__(self, run: RunBatch, *, window_s: float, max_batch: int, max_queue: int,
                 on_batch: Callable[[Hashable, int], None] | None = None) -> None:
        if window_s < 0 or max_batch < 1 or max_queue < 1:
            raise ValueError("window_s must be >= 0, max_batch and max_queue >= 1")
        self.run = run
        self.window_s = window_s
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="ttsopt-models")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: deque[_Item] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._waiting = 0

    @property
    def waiting(self) -> int:
        """Questions submitted and not yet resolved (queued, or in the running call)."""
        return self._waiting

    def submit(self, key: Hashable, payloads: Sequence[Any]) -> list[asyncio.Future]:
        """Queue one request's questions; call from the event loop. Raises QueueFull past ``max_queue``."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new loop (a test client's): fresh state on it
            self._loop, self._wake, self._pending, self._task = loop, asyncio.Event(), deque(), None
        if self._waiting + len(payloads) > self.max_queue:
            raise QueueFull(f"{self._waiting} questions are waiting, this server's limit max_queue={self.max_queue}; "
                            "retry later")
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve(), name="ttsopt-batcher")
        request = object()
        items = [_Item(key, p, loop.create_future(), request) for p in payloads]
        for item in items:
            self._waiting += 1
            item.future.add_done_callback(self._resolved)
        self._pending.extend(items)
        self._wake.set()
        return [i.future for i in items]

    def _resolved(self, _future: asyncio.Future) -> None:
        self._waiting -= 1

    async def _next_batch(self) -> list[_Item]:
        pending, wake = self._pending, self._wake
        while not pending:
            wake.clear()
            await wake.wait()
        first = pending[0]
        if self.window_s == 0:  # one request at a time: its own questions only
            batch = []
            while pending and pending[0].request is first.request:
                batch.append(pending.popleft())
            return batch
        deadline = first.arrived + self.window_s
        while len(pending) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), left)
            except asyncio.TimeoutError:
                break
        return [pending.popleft() for _ in range(min(self.max_batch, len(pending)))]

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            groups: dict[Hashable, list[_Item]] = defaultdict(list)
            for item in batch:
                if not item.future.done():  # a cancelled question (its client left) is dropped here
                    groups[item.key].append(item)
            for key, items in groups.items():
                items = [i for i in items if not i.future.done()]
                if not items:
                    continue
                try:
                    outcomes = await loop.run_in_executor(self._executor, self._run_group, key,
                                                          [i.payload for i in items])
                except Exception as e:  # the batching itself broke: every member gets the error
                    log.exception("batch of %d failed outside the router", len(items))
                    outcomes = [(e, None)] * len(items)
                for item, (value, info) in zip(items, outcomes):
                    if item.future.done():  # the client left while its call ran: nothing to deliver
                        continue
                    if isinstance(value, BaseException) and info is None:
                        item.future.set_exception(value)
                    else:
                        item.future.set_result((value, info))

    def _run_group(self, key: Hashable, payloads: list[Any]) -> list[tuple[Any, BatchInfo | None]]:
        """On the worker thread: one call for the group; on failure, each payload alone."""
        if self.on_batch is not None:
            self.on_batch(key, len(payloads))
        try:
            results = list(self.run(key, payloads))
            if len(results) != len(payloads):
                raise RuntimeError(f"the router returned {len(results)} results for {len(payloads)} questions")
            return [(r, BatchInfo(len(payloads))) for r in results]
        except Exception as e:
            if len(payloads) == 1:
                return [(e, None)]
            log.warning("a batch of %d questions failed (%s); retrying them one at a time", len(payloads),
                        type(e).__name__)
        out: list[tuple[Any, BatchInfo | None]] = []
        for payload in payloads:
            if self.on_batch is not None:
                self.on_batch(key, 1)
            try:
                out.append((self.run(key, [payload])[0], BatchInfo(1, retried_alone=True)))
            except Exception as e:
                out.append((e, None))
        return out

    def close(self) -> None:
        """Stop the batching task and the worker thread (a running call finishes first)."""
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._executor.shutdown(wait=False, cancel_futures=True)


__all__ = ["BatchInfo", "MicroBatcher", "QueueFull", "RunBatch"]
