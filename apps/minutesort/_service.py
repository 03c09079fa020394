"""The standing sort worker: a service that takes part in every sort whose head invites it.

``fds-minutesort worker --serve`` (the unit ``fds-minutesort-worker.service``)
listens on two ports: the **API port** (``port``), where a head invites it to
a sort (``POST /v1/sorts``, :class:`apps.minutesort._protocol.Invite`), and
the **data port** (``data_port``), where peers send it bins during a sort.
It runs one sort at a time; an invitation while it is busy gets 409 and says
which sort holds it.

Each sort runs in a **child process** (``fds-minutesort worker --head URL
--job ID``, the same code as a one-shot worker), which inherits the data
port's listening socket, registers with the head, sorts, and exits. A child
per sort rather than the sort in the service's own process, because:

- memory: a worker maps about 1.1x its share of the data in receive
  buffers, and numpy and the allocator keep much of what a sort touched; an
  exiting process returns all of it, so sort N+1 starts from the same
  footprint as sort 1 (and its ``peak_rss_bytes`` report is its own);
- failures: a crash or an out-of-memory kill takes one sort, not the
  service; the service reports it to the head and is idle again;
- state: every sort starts with a fresh event loop and no leftovers.

The cost is starting Python and importing numpy once per sort, about a
second, next to sorts meant to take a minute; and, on a VM whose host backs
memory only when it is first touched, faulting in fresh memory for every
sort. With ``--arena SIZE`` the service keeps that much memory touched (a
memfd, warmed once at start-up) and lends it to each sort process, which
receives its records there (:mod:`apps.minutesort._arena`). Small sorts do not pay it:
``POST /v1/solo`` sorts a blob of up to ``solo_bytes`` in the service's own
process, warm (its fds client keeps the table and its connections), a few
at a time, and answers once the output is durable
(:class:`apps.minutesort._solo.SoloServer`).

The service watches its child (:meth:`WorkerService.poll_once`): when the
child fails, the service tells the head why (a sort process killed by a
signal cannot say it itself), and the child watches the service: if the
service dies, the child stops its sort and tells the head. Either way the
sort fails with a message instead of hanging, and the service is idle for
the next one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

from apps.minutesort._aio import start_server, stop_server
from apps.minutesort._arena import Arena
from apps.minutesort._auth import http_client, secure_service
from apps.minutesort._config import WorkerConfig, arena_bytes, memory_bytes
from apps.minutesort._protocol import JOB_PATTERN, Invite, ServiceStatus, SoloRequest, SoloResult, SortState
from apps.minutesort._solo import SoloServer
from fds.config import ConfigError
from fds.errors import BadRequest, Conflict, NotFound, Unavailable
from fds.web import bind_socket, create_app, json_response, url_of

__all__ = ["WorkerService", "run_service", "service_app"]

log = logging.getLogger("fds.minutesort")

REPORTED_FAILURE = 1
"""A sort process's exit status when its sort failed and it told the head why (or the head told it)."""
_RECENT = 16
_STOP_GRACE = 5.0
"""Seconds a stopped sort process gets after SIGTERM, before SIGKILL."""


@dataclass
class _Sort:
    state: SortState
    proc: subprocess.Popen[bytes]
    stop_sent: float | None = None


class WorkerService:
    """One sort at a time, each in a child process; the routes of :func:`service_app` call these methods."""

    def __init__(self, url: str, data_url: str, data_sock: socket.socket, *,
                 command: list[str] | None = None, child_flags: list[str] | None = None,
                 solo: SoloServer | None = None, arena: Arena | None = None) -> None:
        self.url = url
        self.arena = arena
        """Warm memory lent to each sort process, if any."""
        self.solo = solo or SoloServer("", max_bytes=0)
        """Small sorts, in this process."""
        self.data_url = data_url
        self.data_sock = data_sock
        self.command = command or [sys.executable, "-m", "apps.minutesort.cli"]
        """How to run ``fds-minutesort`` (the child per sort)."""
        self.child_flags = child_flags or []
        self.current: _Sort | None = None
        self.recent: collections.deque[SortState] = collections.deque(maxlen=_RECENT)
        self.sorts = 0
        self.stopping = False
        self._notices: set[asyncio.Task[None]] = set()

    # -- what the routes call ---------------------------------------------------------------------
    def start(self, invite: Invite) -> SortState:
        """Start a child for the invited sort; :class:`Conflict` (409) if another sort holds this worker."""
        if self.stopping:
            raise Unavailable("this worker service is stopping", code="stopping")
        if self.current is not None:
            held = self.current.state
            if held.job == invite.job and held.head == invite.head:
                return held  # the same invitation again (a retry): already running
            raise Conflict(f"busy with sort {held.job} for head {held.head} (for {time.time() - held.started:.0f} s); "
                           "a worker takes one sort at a time: invite it once that sort ends", code="busy",
                           job=held.job, head=held.head)
        fds = [self.data_sock.fileno(), *([self.arena.fd] if self.arena else [])]
        proc = subprocess.Popen(
            [*self.command, "worker", "--head", invite.head, "--job", invite.job,
             "--listen-fd", str(self.data_sock.fileno()), "--advertise-url", self.data_url,
             "--service-pid", str(os.getpid()), "--service-url", self.url, *self.child_flags,
             *(["--arena-fd", str(self.arena.fd)] if self.arena else [])],
            stdin=subprocess.DEVNULL, pass_fds=fds, start_new_session=True)
        state = SortState(job=invite.job, head=invite.head, pid=proc.pid, state="running", started=time.time())
        self.current = _Sort(state, proc)
        self.sorts += 1
        log.info("sort %s for head %s: started worker process %d", invite.job, invite.head, proc.pid)
        return state

    def find(self, job: str) -> SortState:
        if self.current is not None and self.current.state.job == job:
            return self.current.state
        for state in self.recent:
            if state.job == job:
                return state
        raise NotFound(f"no sort {job} on this worker (it keeps the last {_RECENT})", code="no_such_sort")

    def cancel(self, job: str) -> SortState:
        """Stop the child of sort ``job`` (SIGTERM, then SIGKILL); the head gave up on the sort."""
        if self.current is None or self.current.state.job != job:
            return self.find(job)  # already over: nothing to stop
        self._stop_child(self.current, "cancelled by its head")
        return self.current.state

    def status(self) -> ServiceStatus:
        return ServiceStatus(url=self.url, data_url=self.data_url,
                             state="stopping" if self.stopping else "busy" if self.current else "idle",
                             current=self.current.state if self.current else None,
                             recent=list(reversed(self.recent)), sorts=self.sorts, solo_sorts=self.solo.sorts,
                             arena_bytes=self.arena.size if self.arena else 0,
                             arena_warm_bytes=self.arena.warm_bytes if self.arena else 0)

    # -- the watcher ------------------------------------------------------------------------------
    def poll_once(self) -> SortState | None:
        """Reap the current child if it has exited (and escalate a stop); returns the ended sort, if one did."""
        sort = self.current
        if sort is None:
            return None
        code = sort.proc.poll()
        if code is None:
            if sort.stop_sent is not None and time.monotonic() - sort.stop_sent > _STOP_GRACE:
                sort.proc.kill()
            return None
        state = sort.state
        state.ended, state.exit_status = time.time(), code
        if state.state == "running":
            state.state = "done" if code == 0 else "failed"
        if code != 0:
            how = f"was killed by {_signal_name(-code)}" if code < 0 else f"exited with status {code}"
            state.message = state.message or f"the sort process (pid {sort.proc.pid}) {how}"
            if state.state == "failed" and code != REPORTED_FAILURE:
                # Killed by a signal, or crashed: it could not tell the head itself.
                self._tell_head(state, f"standing worker {self.url}: {state.message}")
        log.log(logging.INFO if code == 0 else logging.WARNING, "sort %s: %s", state.job,
                state.message or "done")
        self.recent.append(state)
        self.current = None
        return state

    async def watch(self, interval: float = 0.1) -> None:
        """:meth:`poll_once`, forever."""
        while True:
            self.poll_once()
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        """Stop taking sorts; stop the current one (its head is told), and wait for its process."""
        self.stopping = True
        if self.current is not None:
            self._stop_child(self.current, "stopped: its worker service is shutting down")
            self._tell_head(self.current.state, f"standing worker {self.url} is shutting down")
        while self.current is not None:
            self.poll_once()
            await asyncio.sleep(0.05)
        if self._notices:
            await asyncio.wait(self._notices, timeout=5)

    def _stop_child(self, sort: _Sort, why: str) -> None:
        if sort.stop_sent is None and sort.proc.poll() is None:
            sort.proc.send_signal(signal.SIGTERM)
            sort.stop_sent = time.monotonic()
        sort.state.state, sort.state.message = "cancelled", why

    def _tell_head(self, state: SortState, reason: str) -> None:
        async def post() -> None:
            try:
                async with http_client(5.0) as http:
                    await http.post(f"{state.head}/v1/lost", json={"pid": state.pid, "reason": reason})
            except httpx.HTTPError as exc:
                log.warning("could not tell the head %s that sort %s failed: %s", state.head, state.job, exc)

        task = asyncio.get_running_loop().create_task(post())
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def service_app(service: WorkerService) -> FastAPI:
    app = create_app("fds-minutesort worker service",
                     "A standing MinuteSort worker: takes part in one sort at a time, when a head invites it.",
                     role="minutesort-worker")

    @app.post("/v1/sorts", tags=["sorts"], status_code=202, response_model=SortState,
              summary="Take part in a sort (409 while busy with another).")
    async def invite(body: Invite) -> Response:
        return json_response(service.start(body), status=202)

    @app.get("/v1/sorts/{job}", tags=["sorts"], response_model=SortState, summary="A sort's state here.")
    async def sort_state(job: str) -> Response:
        return json_response(service.find(_job_id(job)))

    @app.delete("/v1/sorts/{job}", tags=["sorts"], response_model=SortState,
                summary="Stop this worker's part in a sort.")
    async def cancel(job: str) -> Response:
        return json_response(service.cancel(_job_id(job)))

    @app.post("/v1/solo", tags=["sorts"], response_model=SoloResult,
              summary="Sort a small blob here and now; the answer comes once the output is durable.")
    async def solo(body: SoloRequest) -> Response:
        blob, records, seconds = await service.solo.sort(body.input_blob, body.output_blob)
        return json_response(SoloResult(input_blob=body.input_blob, output_blob=blob.guid, records=records,
                                        seconds={k: round(v, 4) for k, v in seconds.items()}))

    @app.get("/v1/status", tags=["sorts"], response_model=ServiceStatus, summary="Idle or busy, and recent sorts.")
    async def status() -> Response:
        return json_response(service.status())

    return app


def _job_id(text: str) -> str:
    if not re.fullmatch(JOB_PATTERN, text):
        raise BadRequest(f"job ids are 8-64 lowercase hex digits, got {text[:80]!r}")
    return text


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: :func:`run_service` stops the current sort first, then
    the server (uvicorn would re-raise the signal once it has stopped, ending the process too early)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_service(config: WorkerConfig, *, ready_file: str | None = None) -> int:
    """Serve until SIGTERM or SIGINT; then stop the current sort, if any, and return 0.

    :class:`fds.config.ConfigError` if the arena cannot be made (checked by
    :func:`apps.minutesort._config.check_worker_config` first).
    """
    child_flags = secure_service(config.secret_file, config.insecure)
    if memory_bytes(config):
        child_flags += ["--memory", str(memory_bytes(config))]
    size = arena_bytes(config, available=0)  # the host's share was checked with the rest of the config
    try:
        arena = Arena(size) if size else None
    except OSError as exc:
        raise ConfigError(f"cannot keep an arena of {size / 1e9:.2f} GB: {exc}") from None
    try:
        return await _serve(config, child_flags, arena, ready_file)
    finally:
        if arena is not None:
            arena.close()


async def _serve(config: WorkerConfig, child_flags: list[str], arena: Arena | None, ready_file: str | None) -> int:
    control = bind_socket(config.host, config.port)
    data = bind_socket(config.host, config.data_port)
    url = config.advertise_url.rstrip("/") or url_of(control, config.host)
    data_url = config.advertise_data_url.rstrip("/") or url_of(data, config.host)
    service = WorkerService(url, data_url, data, child_flags=child_flags,
                            solo=SoloServer(config.metaserver, max_bytes=config.solo_bytes), arena=arena)
    if arena is not None:
        arena.warm()  # in a thread: the service serves meanwhile (a sort may start on a partly warm arena)
    server, serving = start_server(service_app(service), control, server_class=_Server)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watching = asyncio.create_task(service.watch())
    try:
        while not server.started:
            if serving.done():
                await serving
                return 1
            await asyncio.sleep(0.01)
        print(f"fds-minutesort worker service at {url} (bins at {data_url}), pid {os.getpid()}"
              + (f", warming an arena of {arena.size / 1e9:.2f} GB" if arena else "") + ": waiting for sorts",
              file=sys.stderr, flush=True)
        if ready_file:
            from fds.durable import write_durably

            write_durably(ready_file, url.encode())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        await service.stop()
        await service.solo.aclose()
        return 0
    finally:
        await stop_server(server, serving)
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        data.close()
        control.close()
