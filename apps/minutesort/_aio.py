"""Running coroutines on uvloop, and serving the sort's HTTP apps inside them, as the fds servers do."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

__all__ = ["run_async", "start_server", "stop_server"]

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


def start_server(app: FastAPI, sock: socket.socket, *, keep_alive: int = 5,
                 server_class: type[uvicorn.Server] | None = None) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve ``app`` on the listening ``sock`` in this event loop (the head, a worker's bins, the worker
    service): uvicorn with httptools, no lifespan, no access log; ``keep_alive`` seconds for idle
    connections (uvicorn's default is 5). Returns the server and the task serving; see :func:`stop_server`."""
    import uvicorn

    server = (server_class or uvicorn.Server)(uvicorn.Config(
        app, loop="none", http="httptools", lifespan="off", access_log=False, log_level="warning",
        timeout_keep_alive=keep_alive, timeout_graceful_shutdown=2))
    return server, asyncio.create_task(server.serve(sockets=[sock]))


async def stop_server(server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
    """Stop a server :func:`start_server` started (in-flight requests get 2 s) and wait until it has."""
    server.should_exit = True
    await asyncio.gather(serving, return_exceptions=True)
