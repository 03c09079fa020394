"""Authentication on the FastAPI apps: every request passes :func:`fds.auth.check` before routing.

The checks themselves (tokens, scopes, the cache of verified tokens) are
:mod:`fds.auth`, which the tract servers' data port calls directly. Here is
what only a web app needs: refusing with the fds error body and a
``WWW-Authenticate`` challenge, and the browser login, where a status page
opened once with ``?token=T`` keeps T in an HttpOnly cookie.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

from fds.auth import admitted_until, check
from fds.errors import FDSError
from fds.web._types import ASGIApp, Receive, Scope, Send

__all__ = ["AuthMiddleware"]

_PAGES = frozenset({"/", "/status"})
"""Web pages a browser may open with ``?token=``, once, to be given the token as a cookie."""


class AuthMiddleware:
    """ASGI middleware: every HTTP request passes :func:`fds.auth.check` before any route (docs and 404s too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                if scope["method"] == "GET" and scope["path"] in _PAGES and b"token=" in scope["query_string"]:
                    await self._login(scope, send)
                    return
                headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
                check(scope["method"], scope["path"], headers)
            except FDSError as exc:
                extra = [(b"www-authenticate", b'Bearer realm="fds"')] if exc.status == 401 else []
                body = exc.to_body()
                await send({"type": "http.response.start", "status": exc.status,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()), *extra]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    @staticmethod
    async def _login(scope: Scope, send: Send) -> None:
        """``GET /status?token=T``: check T, keep it in an HttpOnly cookie, and send the browser to the
        page without the token in its address bar (or history)."""
        token = parse_qs(scope["query_string"].decode("latin-1")).get("token", [""])[0]
        expires = admitted_until(token)
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        cookie = (f"fds_token={token}; Path=/; HttpOnly; SameSite=Strict; "
                  f"Max-Age={max(0, expires - int(time.time()))}{secure}")
        await send({"type": "http.response.start", "status": 303,
                    "headers": [(b"location", scope["path"].encode()), (b"set-cookie", cookie.encode()),
                                (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
