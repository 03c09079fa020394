"""MinuteSort servers as real processes, for the fuzz and regression tests: a head waiting for its
workers, and a worker waiting at its barrier (given its job by :class:`StandInHead`)."""

from __future__ import annotations

import signal
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

from apps.minutesort._protocol import Job
from tests.support.clusters import SMALL_TRACT

MS = [sys.executable, "-m", "apps.minutesort.cli"]
JOB = "fa" * 12
PEERS = 64
"""Senders in the stand-in job: the worker waits for 63 of them, which only a test sends."""


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
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_head(metaserver: str, input_blob: str, directory: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A real ``fds-minutesort sort --remote-workers`` head for 2 workers, serving; (process, URL, log)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = directory / "head.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*MS, "sort", input_blob, "--remote-workers", "--workers", "2", "--port", str(port),
                                 "--silence-timeout", "3600", "--quiet", "--metaserver", metaserver],
                                cwd=directory, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        wait_up(url, proc, log)
    except BaseException:
        stop(proc)
        raise
    return proc, url, log


class StandInHead:
    """Just enough of a head for one real worker process: it gives the worker a job in which the worker
    owns the only bucket and waits for ``PEERS - 1`` senders that never come, and no input to read."""

    def __init__(self, metaserver: str, input_blob: str) -> None:
        self.metaserver = metaserver
        self.input_blob = input_blob
        self.worker_url = ""
        self.at_barrier = threading.Event()
        self.finished: dict[str, Any] | None = None
        self.aborts: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/workers")
        async def register(request: Request) -> dict[str, Any]:
            self.worker_url = (await request.json())["url"]
            return {"index": 0, "throttle": 1.0}

        @app.get("/v1/job")
        async def job() -> dict[str, Any]:
            return Job(metaserver=self.metaserver, input_blob=self.input_blob, tracts=2, tract_size=SMALL_TRACT,
                       boundaries=[], owners=[0], workers=[self.worker_url] * PEERS, expected_records=[1000],
                       bin_bytes=1 << 20, bins_in_flight=2, read_in_flight=4, write_in_flight=4,
                       job_id=JOB).model_dump()

        @app.post("/v1/work")
        async def work() -> dict[str, Any]:
            return {"first": 0, "count": 0}

        @app.post("/v1/workers/{index}/beat")
        async def beat(index: int) -> dict[str, Any]:
            return {"abort": None}

        @app.post("/v1/workers/{index}/done")
        async def done(index: int) -> dict[str, Any]:
            self.at_barrier.set()
            return {}

        @app.post("/v1/workers/{index}/finished")
        async def finished(index: int, request: Request) -> dict[str, Any]:
            self.finished = await request.json()
            return {}

        @app.post("/v1/abort")
        async def abort(request: Request) -> dict[str, Any]:
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
