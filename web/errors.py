"""The OpenAI error shape, and FastAPI handlers that answer every error in it.

A client gets ``{"error": {"message", "type", "code", ...}}`` for every refusal: HTTP errors
(404 unknown route, 405, 413, ...), validation errors (400, the message naming each field and
what was wrong with it, e.g. ``messages[0].content: expected a string or a list, got a number``)
and JSON that does not parse (400 saying where). A failure inside the server is a 500 with a
generic message and a request id; the exception is logged under that id, never sent: its text
may describe the host (paths, memory, library internals).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any, Iterable

#: HTTP status -> the OpenAI error ``type`` that goes with it
ERROR_KINDS = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError",
               405: "MethodNotAllowedError", 413: "RequestTooLargeError", 415: "UnsupportedMediaTypeError",
               422: "BadRequestError", 429: "RateLimitError", 503: "ServiceUnavailableError"}

#: pydantic's location segments that name a member of a union, not a field (``content.str``)
_UNION_TAG = re.compile(r"^(str|int|float|bool|bytes|none|list|dict|tuple|set|literal|enum|"
                        r"[a-z-]+\[.*\])$", re.IGNORECASE)
_JSON_TYPES = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"),
               (list, "an array"), (dict, "an object"), (type(None), "null"))


def error_response(status: int, message: str, kind: str | None = None, **extra: Any):
    """An OpenAI-shaped error response: ``{"error": {"message", "type", "code", ...}}``."""
    from fastapi.responses import JSONResponse

    kind = kind or ERROR_KINDS.get(status, "HTTPError")
    return JSONResponse(status_code=status,
                        content={"error": {"message": message, "type": kind, "code": status, **extra}})


def internal_error_response(logger: logging.Logger, doing: str, server: str):
    """500 with a generic message and a fresh request id; the current exception is logged under that id.

    Call it inside an ``except`` block.
    """
    request_id = f"req-{uuid.uuid4().hex[:16]}"
    logger.exception("%s: request %s failed", server, request_id)
    return error_response(500, f"internal error while {doing} (request id {request_id}); "
                               "the server's log has the details", "InternalServerError", request_id=request_id)


def _json_type(value: Any) -> str:
    for cls, name in _JSON_TYPES:
        if type(value) is cls:
            return name
    return type(value).__name__


def _where(loc: Iterable[Any]) -> tuple[str, bool]:
    """``("body", "messages", 0, "content", "str")`` -> (``messages[0].content``, True: a union member's tag
    was dropped)."""
    out, tagged = "", False
    for i, part in enumerate(loc):
        if i == 0 and part in ("body", "query", "path", "header", "cookie"):
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _UNION_TAG.match(part) and out:
            tagged = True
        else:
            out += ("." if out else "") + str(part)
    return out or "body", tagged


def validation_message(errors: Iterable[dict]) -> str:
    """One line naming every invalid field, what it should be, and what JSON type it got.

    Errors at one location (a union's members) are joined with "or"; where one member of a union
    got further (a list whose item is wrong), the members that failed at the top are left out.
    Malformed JSON says where.
    """
    rows: list[tuple[str, bool, str, str | None]] = []  # (place, from a union member, message, JSON type got)
    for e in errors:
        if e.get("type") == "json_invalid":
            loc = e.get("loc") or ()
            pos = loc[-1] if loc and isinstance(loc[-1], int) else None
            detail = (e.get("ctx") or {}).get("error") or "JSON decode error"
            return f"body is not valid JSON: {detail}" + (f" at character {pos}" if pos is not None else "")
        place, tagged = _where(e.get("loc") or ())
        msg = str(e.get("msg", "invalid"))
        if place == "body" and isinstance(e.get("input"), (bytes, bytearray)):
            msg = "expected a JSON object; send it with Content-Type: application/json"
        got = _json_type(e["input"]) if e.get("type") != "missing" and "input" in e else None
        rows.append((place, tagged, msg, got))
    places = {r[0] for r in rows}
    deeper = {p for p in places if any(q != p and q.startswith((p + "[", p + ".")) for q in places)}
    by_place: dict[str, list[str]] = {}
    got_at: dict[str, str] = {}
    for place, tagged, msg, got in rows:
        if tagged and place in deeper:
            continue
        msgs = by_place.setdefault(place, [])
        if msg not in msgs:
            msgs.append(msg)
        if got is not None:
            got_at.setdefault(place, got)
    parts = []
    for place, msgs in by_place.items():
        text = f"{place}: {' or '.join(msgs)}"
        if place in got_at and not any(m.startswith("Field required") or "got" in m or "JSON" in m for m in msgs):
            text += f" (got {got_at[place]})"
        parts.append(text)
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app) -> None:
    """Answer FastAPI's HTTP and validation errors in the OpenAI error shape (validation: 400, naming the fields)."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError):
        return error_response(400, validation_message(exc.errors()))


__all__ = ["ERROR_KINDS", "error_response", "install_error_handlers", "internal_error_response",
           "validation_message"]
