"""Running coroutines on uvloop, as the fds servers do."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run_async"]

T = TypeVar("T")


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed.

    uvloop's transports send large bodies without first copying them into a
    Python-level buffer; on the stdlib loop a profile of a sort worker spent
    ~15% of its time in the transport's write path.
    """
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)
