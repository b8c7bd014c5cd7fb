"""A byte limit on request bodies, enforced before anything parses them."""

from __future__ import annotations

from .errors import error_response


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is refused with 413 before it is parsed.

    A declared ``Content-Length`` is checked up front; a chunked body is counted as it arrives
    (an ``HTTPException`` raised while FastAPI reads the body reaches the app's handler).
    """

    def __init__(self, app, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.app = app
        self.max_bytes = max_bytes

    def message(self) -> str:
        return f"request body exceeds this server's limit max_body_bytes={self.max_bytes}"

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or ()).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await error_response(413, self.message(), "RequestTooLargeError")(scope, receive, send)
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    from fastapi import HTTPException

                    raise HTTPException(413, self.message())
            return message

        await self.app(scope, counted, send)


__all__ = ["BodyLimit"]
