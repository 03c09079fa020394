"""MinuteSort servers as real processes, for the fuzz and regression tests: a head waiting for its
workers, and a worker waiting for a task (given its job by :class:`StandInHead`)."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request

from apps.minutesort._protocol import Job, Task
from tests.support.clusters import SMALL_TRACT
from tests.support.processes import stop_process

MS = [sys.executable, "-m", "apps.minutesort.cli"]
JOB = "fa" * 12


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 15 s; by PID, as every test process is stopped."""
    stop_process(proc, 15)


def start_head(metaserver: str, input_blob: str, directory: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A real ``fds-minutesort sort --remote-workers`` head for 2 workers, serving; (process, URL, log)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = directory / "head.log"
    with open(log, "wb") as out:
        # Records memory set outright: fuzzed registrations (any base, any budget) cannot make the plan refuse.
        proc = subprocess.Popen([*MS, "sort", input_blob, "--remote-workers", "--workers", "2", "--port", str(port),
                                 "--silence-timeout", "3600", "--record-memory", "64MB", "--quiet",
                                 "--metaserver", metaserver],
                                cwd=directory, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_up(url, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, url, log


class StandInHead:
    """Just enough of a head for one real worker process: it gives the worker a job with one bucket and no
    input, and holds the worker's request for a task until :meth:`sort` is called, so the worker waits,
    serving its routes (bins, bucket hand-overs), for as long as a test likes."""

    def __init__(self, metaserver: str, input_blob: str) -> None:
        self.metaserver = metaserver
        self.input_blob = input_blob
        self.worker_url = ""
        self.at_barrier = threading.Event()
        self._sort: dict[str, Any] | None = None
        self._sorted = threading.Event()
        self.sorted: dict[str, Any] | None = None
        self.finished: dict[str, Any] | None = None
        self.aborts: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def sort(self, accept: list[int], expected: int) -> None:
        """Give the worker its task: sort bucket 0, from the bins of the ``accept`` attempts (``expected`` records)."""
        self._sort = Task(kind="sort", attempt=99, bucket=0, source=0, accept=accept, expected=expected).model_dump()

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/workers")
        async def register(request: Request) -> dict[str, Any]:
            self.worker_url = (await request.json())["url"]
            return {"index": 0, "throttle": 1.0}

        @app.get("/v1/job")
        async def job() -> dict[str, Any]:
            return Job(metaserver=self.metaserver, input_blob=self.input_blob, tracts=2, tract_size=SMALL_TRACT,
                       stride=SMALL_TRACT - SMALL_TRACT % 100, last=1000, boundaries=[], workers=[self.worker_url],
                       capacity=[64 << 20], bucket_bytes=1 << 20, bin_bytes=1 << 20, bins_in_flight=2,
                       read_in_flight=4, write_in_flight=4, output_prefix="ab" * 10, spill_prefix="cd" * 13,
                       job_id=JOB).model_dump()

        @app.post("/v1/tasks")
        async def tasks() -> dict[str, Any]:
            self.at_barrier.set()
            for _ in range(200):  # held, as a real head holds it, until there is something to do
                if self.sorted is not None:
                    return Task(kind="done").model_dump()
                if self._sort is not None and not self._sorted.is_set():
                    self._sorted.set()
                    return self._sort
                await asyncio.sleep(0.05)
            return Task(kind="wait").model_dump()

        @app.post("/v1/sorted")
        async def sorted_(request: Request) -> dict[str, Any]:
            self.sorted = await request.json()
            return {"accepted": True}

        @app.post("/v1/workers/{index}/beat")
        async def beat(index: int) -> dict[str, Any]:
            return {"abort": None, "epoch": 0}

        @app.post("/v1/workers/{index}/finished")
        async def finished(index: int, request: Request) -> dict[str, Any]:
            self.finished = await request.json()
            return {}

        @app.post("/v1/abort")
        async def abort(request: Request) -> dict[str, Any]:
            self.aborts.append(str(await request.body()))
            return {}

        @app.post("/v1/lost")
        async def lost(request: Request) -> dict[str, Any]:
            self.aborts.append(str(await request.body()))
            return {}

        return app

    def __enter__(self) -> StandInHead:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the stand-in head did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
