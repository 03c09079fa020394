"""Request ids and request logging on the server side (the ids themselves are :mod:`fds.logs`).

Every server takes the caller's ``X-Request-Id`` (or makes one), keeps it in
:data:`fds.logs.request_id` while it serves the request, echoes it in its
answer, and logs the request's outcome with it: 5xx at ERROR, 4xx at INFO,
everything at DEBUG. The FastAPI apps do that in :class:`RequestIdMiddleware`;
the tract servers' data port calls :func:`log_request` itself.
"""

from __future__ import annotations

import logging
import time

from fds.logs import HEADER, request_id, valid_request_id
from fds.web._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["RequestIdMiddleware", "log_request"]

_access = logging.getLogger("fds.access")
_HEADER_BYTES = HEADER.encode()


def log_request(method: str, path: str, status: int, seconds: float, rid: str) -> None:
    """One line for a request: 5xx at ERROR, 4xx at INFO, the rest at DEBUG."""
    level = logging.ERROR if status >= 500 else logging.INFO if status >= 400 else logging.DEBUG
    if _access.isEnabledFor(level):
        _access.log(level, "%s %s %d", method, path, status, extra={
            "request_id": rid, "fields": {"method": method, "path": path, "status": status,
                                          "ms": round(seconds * 1000, 2)}})


class RequestIdMiddleware:
    """ASGI middleware: take or make the request id, echo it, and log the request's outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope["headers"] if k == _HEADER_BYTES), None)
        rid = valid_request_id(given)
        token = request_id.set(rid)
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (_HEADER_BYTES, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log_request(scope["method"], scope["path"], status, time.perf_counter() - start, rid)
            request_id.reset(token)
