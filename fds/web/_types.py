"""The ASGI types the middleware here is written against, named once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Scope", "Message", "Receive", "Send", "ASGIApp"]

Scope = MutableMapping[str, Any]
"""A connection's scope: ``type``, ``method``, ``path``, ``headers``, ..."""
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
