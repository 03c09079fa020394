"""Running the S3 app on its port: in this process, or in ``workers`` processes forked to share the socket.

The S3 server keeps no state of its own (access keys and multipart uploads are records in the cluster), so
several processes can serve one port: the parent binds the socket, forks the workers (before any event loop
or thread exists), and the kernel hands each connection to whichever worker accepts it first, an idle one
more often than a busy one. Each worker is a whole server (uvicorn, as :func:`fds.web.serve` runs it). The
parent only supervises: it writes the ready file once every worker serves, restarts a worker that dies, and
passes SIGTERM on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from fds import logs
from fds.web import serve, url_of

__all__ = ["serve_s3"]

log = logging.getLogger("fds.s3")


def serve_s3(app: FastAPI, sock: socket.socket, *, ready_file: str | None = None, workers: int = 1) -> None:
    """Serve the S3 app on ``sock`` (bound and listening) with ``workers`` processes, until SIGINT/SIGTERM.

    ``ready_file``, if given, is written (atomically) with the server's URL once every worker accepts
    connections: launchers and tests wait for it.
    """
    if workers <= 1:
        serve(app, sock, ready_file=ready_file)
        return
    logs.setup("s3")

    def announce() -> None:
        if ready_file:
            from fds.durable import write_durably

            write_durably(ready_file, url_of(sock, sock.getsockname()[0]).encode())

    _Supervisor(app, sock, workers).run(announce)


def _die_with_parent() -> None:
    """Have the kernel send this worker SIGTERM if the parent dies (a killed parent leaves no worker serving)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux/glibc: a parent killed with SIGKILL leaves its workers to the service manager
    if os.getppid() == 1:  # the parent died before prctl took hold
        os._exit(1)


class _Supervisor:
    """The parent of ``workers`` forked worker processes serving one socket."""

    def __init__(self, app: FastAPI, sock: socket.socket, workers: int) -> None:
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
                _die_with_parent()

                def ready() -> None:
                    os.write(w, b"1")
                    os.close(w)

                serve(self.app, self.sock, on_ready=ready)
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
