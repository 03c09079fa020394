"""Request authentication: the one dependency every route goes through.

Every FastAPI app built by :func:`fds.web.create_app` installs
:func:`require_auth` as a global dependency, so each route of every server
passes through this function and nowhere else. Today it admits every
request. Adding cluster tokens (signed, expiring, read-only scopes) means
changing this module only: inspect ``request.headers`` here and raise
:class:`fds.errors.Unauthorized`.

:func:`client_headers` is the other half: the headers every fds client and
server-to-server call attaches. Today it adds nothing.
"""

from __future__ import annotations

from fastapi import Request

__all__ = ["require_auth", "client_headers"]


async def require_auth(request: Request) -> None:
    """Admit the request, or raise :class:`fds.errors.Unauthorized`. Admits all for now."""
    return None


def client_headers() -> dict[str, str]:
    """Credentials to attach to outgoing requests. None are needed yet."""
    return {}
