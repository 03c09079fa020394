"""Request authentication: the one dependency every route goes through.

Every FastAPI app built by :func:`fds.web.create_app` installs
:func:`require_auth` as a global dependency, and the tract servers' data port
calls :func:`authenticate_headers` too, so every request of every server
passes through :func:`authenticate_headers` and nowhere else. Today it admits every
request. Adding cluster tokens (signed, expiring, read-only scopes) means
changing this module only: inspect ``request.headers`` here and raise
:class:`fds.errors.Unauthorized`.

:func:`client_headers` is the other half: the headers every fds client and
server-to-server call attaches. Today it adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request

__all__ = ["require_auth", "authenticate_headers", "client_headers"]


async def authenticate_headers(headers: Mapping[str, str]) -> None:
    """Admit a request by its headers, or raise :class:`fds.errors.Unauthorized`. Admits all for now.

    Both the FastAPI apps (through :func:`require_auth`) and the tract
    servers' data port call this, so it is the one place to check tokens.
    """
    return None


async def require_auth(request: Request) -> None:
    """The FastAPI dependency every route of every server goes through."""
    await authenticate_headers(request.headers)


def client_headers() -> dict[str, str]:
    """Credentials to attach to outgoing requests. None are needed yet."""
    return {}
