"""Any ASGI app under uvicorn in a daemon thread of this process (tests, notebooks, benchmarks)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any


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


def start_background(app, host: str = "127.0.0.1", port: int = 0, timeout_s: float = 30.0,
                     name: str = "http-server", lifespan: str = "off") -> BackgroundServer:
    """Run ``app`` with uvicorn in a thread; ``port=0`` picks a free port. Returns once it listens."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True, name=name)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"server on {host}:{port} did not start within {timeout_s} s")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return BackgroundServer(url=f"http://{host}:{bound}", server=server, thread=thread)


__all__ = ["BackgroundServer", "start_background"]
