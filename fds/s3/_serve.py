"""Running the S3 app on its port: the app's lifespan, :mod:`fds.s3._http`'s protocol on a bound socket, and
``workers`` processes forked to share that socket.

The S3 server keeps no state of its own (access keys and multipart uploads are records in the cluster), so
several processes can serve one port: the parent binds the socket, forks the workers (before any event loop
or thread exists), and the kernel hands each connection to whichever worker accepts it first, an idle one
more often than a busy one. The parent only supervises: it writes the ready file once every worker serves,
restarts a worker that dies, and passes SIGTERM on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from fds import logs, tls
from fds.buffers import tune_allocator
from fds.s3._http import Connections
from fds.web import url_of
from fds.web._types import ASGIApp, Message

__all__ = ["serve_s3"]

log = logging.getLogger("fds.s3")

_GRACE = 5.0
"""Seconds requests in progress get to finish at shutdown."""


class _Lifespan:
    """The ASGI lifespan protocol, for the app's start-up (its fds client) and shutdown."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._started: asyncio.Future[None] = loop.create_future()
        self._stopped: asyncio.Future[None] = loop.create_future()
        self._task: asyncio.Task[None] | None = None

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._inbox.get, self._send)
        except BaseException as exc:
            for future in (self._started, self._stopped):
                if not future.done():
                    future.set_exception(RuntimeError(f"the app's lifespan failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        future = self._started if kind.startswith("lifespan.startup") else self._stopped
        if future.done():
            return
        if kind.endswith(".failed"):
            future.set_exception(RuntimeError(message.get("message") or kind))
        else:
            future.set_result(None)

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        await self._started

    async def shutdown(self) -> None:
        await self._inbox.put({"type": "lifespan.shutdown"})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(self._stopped), _GRACE)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task


async def _serve_one(app: ASGIApp, sock: socket.socket, ready: Callable[[], None]) -> None:
    """Serve on ``sock`` in this process until SIGINT or SIGTERM; ``ready`` once connections are accepted."""
    loop = asyncio.get_running_loop()
    lifespan = _Lifespan(app)
    await lifespan.startup()
    connections = Connections(app, lifespan.state, tls.scheme())
    server = await loop.create_server(connections.protocol, sock=sock, ssl=tls.server_context(), backlog=2048)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    ready()
    await stop.wait()
    server.close()
    await connections.shutdown(_GRACE)
    await lifespan.shutdown()


def _run_worker(app: ASGIApp, sock: socket.socket, ready: Callable[[], None]) -> None:
    import uvloop

    uvloop.run(_serve_one(app, sock, ready))


def serve_s3(app: ASGIApp, sock: socket.socket, *, ready_file: str | None = None, workers: int = 1) -> None:
    """Serve the S3 app on ``sock`` (bound and listening) with ``workers`` processes, until SIGINT/SIGTERM.

    ``ready_file``, if given, is written (atomically) with the server's URL once every worker accepts
    connections: launchers and tests wait for it.
    """
    tune_allocator()
    logs.setup("s3")

    def announce() -> None:
        if ready_file:
            from fds.durable import write_durably

            write_durably(ready_file, url_of(sock, sock.getsockname()[0]).encode())

    if workers <= 1:
        _run_worker(app, sock, announce)
        return
    _Supervisor(app, sock, workers).run(announce)


class _Supervisor:
    """The parent of ``workers`` forked worker processes serving one socket."""

    def __init__(self, app: ASGIApp, sock: socket.socket, workers: int) -> None:
        self.app = app
        self.sock = sock
        self.workers = workers
        self.children: dict[int, float] = {}
        """Worker PIDs and when each started."""
        self.stopping = False

    def _fork(self) -> tuple[int, int]:
        """Start one worker; its PID and the read end of a pipe it writes one byte to once it serves."""
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(r)
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)

                def ready() -> None:
                    os.write(w, b"1")
                    os.close(w)

                _run_worker(self.app, self.sock, ready)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                log.exception("fds s3 worker %d failed", os.getpid())
            finally:
                os._exit(code)
        os.close(w)
        self.children[pid] = time.monotonic()
        return pid, r

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def run(self, announce: Callable[[], None]) -> None:
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        pipes = dict(self._fork() for _ in range(self.workers))
        waiting = set(pipes.values())
        while waiting and not self.stopping:
            readable, _, _ = select.select(list(waiting), [], [], 1.0)
            for fd in readable:
                if not os.read(fd, 1):  # the worker died before serving
                    self._stop(0, None)
                    log.error("fds s3: a worker exited before it served; stopping")
                waiting.discard(fd)
                os.close(fd)
            for pid in list(self.children):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done:
                    del self.children[pid]
                    self._stop(0, None)
        for fd in waiting:
            os.close(fd)
        if not self.stopping:
            announce()
            log.info("fds s3: %d workers serving %s", self.workers, url_of(self.sock, self.sock.getsockname()[0]))
        failures = 0
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            started = self.children.pop(pid, time.monotonic())
            if self.stopping:
                continue
            failures = failures + 1 if time.monotonic() - started < 10 else 0
            if failures > 5:
                log.error("fds s3: workers keep dying at start; stopping")
                self._stop(0, None)
                continue
            log.warning("fds s3: worker %d exited (status %d); starting another", pid, status)
            _, r = self._fork()
            os.close(r)
        if not self.stopping:
            raise SystemExit(1)
