"""The sort's head: hands out input on demand, watches the workers, and collects the output.

The head never touches records, except to sample keys for Daytona. It:

1. checks the input (it exists, and its last tract is whole records) and
   picks bucket boundaries: uniform over the key space (Indy), or from a
   sample of keys read from random tracts (Daytona, ``--daytona``);
2. starts the workers, invites standing ones (``worker_urls``: each runs
   ``fds-minutesort worker --serve``, :mod:`apps.minutesort._service`), or
   waits for remote ones to register; once all have registered, publishes
   the job;
3. hands out **units** of a few tracts to whichever worker asks next, so a
   slow worker simply takes fewer (``static=True`` splits the input into
   fixed equal ranges up front instead, for comparison);
4. fails the run with a clear message if a worker dies or goes silent,
   rather than hang;
5. collects each worker's output blobs and returns them in key order; a
   standing worker is told to drop a sort that failed, and the head waits
   (briefly) for each to be idle again, so the next sort finds it free.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import httpx
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from apps.minutesort._auth import http_client
from apps.minutesort._gensort import RECORD_SIZE
from apps.minutesort._protocol import Beat, Finished, Invite, Job, Register, Registered, SortState, Unit, WorkRequest
from apps.minutesort._records import as_records, sample_boundaries, uniform_boundaries
from apps.minutesort._types import SortFailed, SortOptions, SortResult, WorkerReport
from fds.client import Client
from fds.errors import BadRequest, Conflict, FDSError, NotFound, Unavailable
from fds.guid import parse_guid
from fds.web import bind_socket, create_app, json_response, url_of

__all__ = ["run_sort"]

log = logging.getLogger("fds.minutesort")

class Aborted(FDSError):
    """410: the sort was aborted; the message says why."""

    status = 410
    default_code = "aborted"


@dataclass
class _State:
    job: Job | None = None
    expected: int = 0
    job_id: str = ""
    invited: bool = False
    """Standing workers were invited: only processes started for this job may register."""
    registered: list[Register] = field(default_factory=list)
    next_tract: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)
    """Static mode: each worker's [next, end) of tracts."""
    tracts_given: list[int] = field(default_factory=list)
    done: set[int] = field(default_factory=set)
    finished: dict[int, Finished] = field(default_factory=dict)
    last_seen: dict[int, float] = field(default_factory=dict)
    abort: str | None = None
    other_reasons: list[str] = field(default_factory=list)
    all_finished: asyncio.Event = field(default_factory=asyncio.Event)
    shuffle_done_at: float | None = None


def _app(state: _State, make_job: Callable[[list[Register]], Job], static: bool, unit: int,
         throttles: dict[int, float]) -> FastAPI:
    app = create_app("fds-minutesort head", "Hands out input on demand and collects the sorted output.",
                     role="minutesort-head")

    def registered(index: int) -> int:
        """``index`` if a worker registered under it; otherwise 404 (it would count towards the barrier)."""
        if not 0 <= index < len(state.registered):
            raise NotFound(f"no worker {index} in this sort: {len(state.registered)} of {state.expected} have "
                           "registered (indices from 0)", code="unknown_worker")
        return index

    def the_job() -> Job:
        if state.job is None:
            raise Conflict("no job yet: every worker must register first (GET /v1/job answers 503 until then)",
                           code="not_ready")
        return state.job

    @app.post("/v1/workers", tags=["sort"], summary="A worker registers.")
    async def register(req: Register) -> Response:
        if state.invited and req.job != state.job_id:
            raise Conflict(f"this head runs sort {state.job_id}, not {req.job or '(none)'}: it takes only the "
                           "workers it invited", code="wrong_job")
        if len(state.registered) >= state.expected:
            raise BadRequest(f"this sort already has its {state.expected} workers")
        state.registered.append(req)
        index = len(state.registered) - 1
        state.last_seen[index] = time.monotonic()
        if len(state.registered) == state.expected:
            state.job = make_job(state.registered)
            state.tracts_given = [0] * state.expected
            tracts = state.job.tracts
            bounds = [tracts * i // state.expected for i in range(state.expected + 1)]
            state.ranges = [(bounds[i], bounds[i + 1]) for i in range(state.expected)]
        return json_response(Registered(index=index, throttle=throttles.get(index, 1.0)))

    @app.get("/v1/job", tags=["sort"], summary="The job, once every worker has registered (503 before).")
    async def job() -> Response:
        if state.abort:
            raise Aborted(state.abort)
        if state.job is None:
            raise Unavailable("waiting for workers", code="not_ready")
        return json_response(state.job)

    @app.post("/v1/work", tags=["sort"], summary="The next unit of input for this worker.")
    async def work(req: WorkRequest) -> Response:
        if state.abort:
            return json_response(Unit(abort=state.abort))
        job = the_job()
        state.last_seen[registered(req.worker)] = time.monotonic()
        if static:
            start, end = state.ranges[req.worker]
            count = min(unit, end - start)
            state.ranges[req.worker] = (start + count, end)
        else:
            start = state.next_tract
            count = min(unit, job.tracts - start)
            state.next_tract += count
        state.tracts_given[req.worker] += count
        return json_response(Unit(first=start, count=count))

    @app.post("/v1/workers/{index}/beat", tags=["sort"], summary="Liveness; says whether the run was aborted.")
    async def beat(index: int) -> Response:
        state.last_seen[registered(index)] = time.monotonic()
        return json_response(Beat(abort=state.abort))

    @app.post("/v1/workers/{index}/done", tags=["sort"], summary="This worker has read and sent its input.")
    async def done(index: int) -> Response:
        state.done.add(registered(index))
        if len(state.done) == state.expected:
            state.shuffle_done_at = time.perf_counter()
        return json_response({})

    @app.post("/v1/workers/{index}/finished", tags=["sort"], summary="This worker's buckets are written.")
    async def finished(index: int, report: Finished) -> Response:
        owned = {b for b, owner in enumerate(the_job().owners) if owner == registered(index)}
        if report.worker != index or set(report.buckets) != owned or set(report.records) != owned:
            raise BadRequest(f"worker {index} owns buckets {sorted(owned)}: its report must be for worker {index} "
                             f"and name each of them in buckets and records, not {sorted(report.buckets)}")
        for guid in report.buckets.values():
            parse_guid(guid)
        state.finished[index] = report
        if len(state.finished) == state.expected:
            state.all_finished.set()
        return json_response({})

    @app.post("/v1/abort", tags=["sort"], summary="A worker saw a failure; the run stops with its reason.")
    async def abort(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:  # not JSON, or not UTF-8
            body = None
        if not isinstance(body, dict):
            raise BadRequest('send a JSON object: {"reason": "what went wrong"}')
        reason = str(body.get("reason", "a worker aborted the run"))[:2000]
        if not state.abort:
            state.abort = reason
        elif len(state.other_reasons) < 3 and reason != state.abort:
            state.other_reasons.append(reason)  # what else went wrong, for the message
        state.all_finished.set()
        return json_response({})

    return app


class _StandingWorkers:
    """The standing workers a sort invites (``fds-minutesort worker --serve``), one sort process each."""

    def __init__(self, urls: list[str], head_url: str, job_id: str) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self.invite_body = Invite(head=head_url, job=job_id)
        self.job_id = job_id
        self.accepted: list[str] = []

    async def invite(self) -> str | None:
        """Invite them all at once; returns why the sort cannot go ahead (one refused, or is unreachable)."""
        async with http_client(10.0) as http:
            answers = await asyncio.gather(*(self._invite(http, url) for url in self.urls))
        refusals = [answer for answer in answers if answer]
        return "; ".join(refusals) if refusals else None

    async def _invite(self, http: httpx.AsyncClient, url: str) -> str | None:
        try:
            resp = await http.post(f"{url}/v1/sorts", content=self.invite_body.model_dump_json(),
                                   headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            return f"cannot reach the standing worker at {url}: {exc or type(exc).__name__}"
        if resp.status_code == 202:
            self.accepted.append(url)
            return None
        return f"the standing worker at {url} refused the sort ({resp.status_code}): {_error_text(resp)}"

    async def cancel(self) -> None:
        """Tell the workers that took the sort to drop it (best effort: one may be dead)."""
        async with http_client(5.0) as http:
            await asyncio.gather(*(http.delete(f"{url}/v1/sorts/{self.job_id}") for url in self.accepted),
                                 return_exceptions=True)

    async def wait_idle(self, timeout: float = 15.0) -> None:
        """Wait until each worker's sort process has exited, so a sort started next finds it free."""
        deadline = time.monotonic() + timeout
        async with http_client(5.0) as http:
            for url in self.accepted:
                while time.monotonic() < deadline:
                    try:
                        resp = await http.get(f"{url}/v1/sorts/{self.job_id}")
                        if resp.status_code != 200 or SortState.model_validate_json(resp.content).state != "running":
                            break
                    except httpx.HTTPError:
                        break
                    await asyncio.sleep(0.05)
                else:
                    log.warning("standing worker %s still runs sort %s after %.0f s", url, self.job_id, timeout)


def _error_text(resp: httpx.Response) -> str:
    """The message of an fds error body, else the start of the body."""
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


async def _inspect_input(client: Client, guid: str) -> tuple[int, int, int]:
    """(tracts, records, tract size) of a record blob; refuses what the sort cannot take."""
    blob = await client.open_blob(guid)
    info = await blob.stat()
    table = await client.table()
    if info.tracts == 0:
        raise BadRequest(f"blob {guid} is empty: nothing to sort")
    if info.length is not None and info.length % RECORD_SIZE:
        raise BadRequest(f"blob {guid} holds {info.length} bytes, not a whole number of {RECORD_SIZE}-byte records")
    last = await blob.read_tract(info.tracts - 1)
    per_tract = table.tract_size // RECORD_SIZE
    if len(last) % RECORD_SIZE:
        raise BadRequest(f"blob {guid} is not a record blob: its last tract holds {len(last)} bytes, not a whole "
                         f"number of {RECORD_SIZE}-byte records (write sort inputs with `fds-minutesort gen`)")
    return info.tracts, (info.tracts - 1) * per_tract + len(last) // RECORD_SIZE, table.tract_size


async def _sample(client: Client, guid: str, tracts: int, options: SortOptions) -> np.ndarray:
    """Keys from ``sample_tracts`` random tracts (Daytona)."""
    rng = random.Random(options.seed)
    chosen = sorted(rng.sample(range(tracts), min(tracts, options.sample_tracts)))
    blob = await client.open_blob(guid)
    keys = []
    async for _, data in blob.read_tracts(chosen):
        records = as_records(data)
        pick = np.random.default_rng(rng.randrange(1 << 30)).choice(
            len(records), size=min(len(records), options.sample_per_tract), replace=False)
        keys.append(np.ascontiguousarray(records[np.sort(pick), :10]))
    return np.concatenate(keys)


async def run_sort(metaserver: str, input_blob: str, options: SortOptions, *,
                   progress: Callable[[str, int, int], None] | None = None) -> SortResult:
    """Sort ``input_blob`` with ``options.workers`` workers; returns the output blobs in key order."""
    import uvicorn

    if options.worker_urls:
        options = replace(options, workers=len(options.worker_urls), spawn=False)
    if options.workers < 1:
        raise BadRequest("a sort needs at least one worker")
    started = time.perf_counter()
    phases: dict[str, float] = {}
    async with Client(metaserver) as client:
        tracts, records, tract_size = await _inspect_input(client, input_blob)
        buckets = options.workers
        if options.daytona:
            sample = await _sample(client, input_blob, tracts, options)
            boundaries = sample_boundaries(sample, buckets)
        else:
            boundaries = uniform_boundaries(buckets)
    phases["plan"] = time.perf_counter() - started
    prefix = os.urandom(12).hex()  # names the output blobs and, as the job id, the sort

    def make_job(registered: list[Register]) -> Job:
        return Job(metaserver=metaserver, input_blob=input_blob, tracts=tracts, tract_size=tract_size,
                   boundaries=[b.hex() for b in boundaries], owners=list(range(buckets)),
                   workers=[r.url for r in registered],
                   expected_records=[-(-records // buckets)] * buckets, bin_bytes=options.bin_bytes,
                   bins_in_flight=options.bins_in_flight, read_in_flight=options.read_in_flight,
                   write_in_flight=options.write_in_flight, output_prefix=prefix, job_id=prefix)

    state = _State(expected=options.workers, job_id=prefix, invited=bool(options.worker_urls))
    # The slow worker is chosen by registration index, so "worker 0" in reports is the slow one.
    throttles = {options.slow_worker: options.slow_factor} if options.slow_worker is not None else {}
    app = _app(state, make_job, options.static, max(1, options.unit_tracts), throttles)
    sock = bind_socket(options.host, options.port)
    head_url = options.advertise_url.rstrip("/") or url_of(sock, options.host)
    server = uvicorn.Server(uvicorn.Config(app, loop="none", http="httptools", lifespan="off", access_log=False,
                                           log_level="warning", timeout_graceful_shutdown=2))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    children: list[subprocess.Popen[bytes]] = []
    standing = _StandingWorkers(options.worker_urls, head_url, prefix) if options.worker_urls else None
    succeeded = False
    try:
        if standing is not None:
            state.abort = await standing.invite()
        elif options.spawn:
            for _ in range(options.workers):
                children.append(subprocess.Popen(
                    [sys.executable, "-m", "apps.minutesort.cli", "worker", "--head", head_url,
                     "--host", options.host],
                    stdin=subprocess.DEVNULL, start_new_session=True))
        else:
            log.info("head at %s: waiting for %d workers (`fds-minutesort worker --head %s`)",
                     head_url, options.workers, head_url)
        shuffle_started = time.perf_counter()
        while not state.all_finished.is_set() and not state.abort:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for i, child in enumerate(children):
                code = child.poll()
                if code is not None and i not in state.finished and code != 0 and not state.abort:
                    state.abort = f"worker process {child.pid} exited with status {code} before finishing"
                elif code is not None and code != 0 and not state.abort:
                    state.abort = f"worker process {child.pid} exited with status {code}"
            if state.job is None and time.perf_counter() - shuffle_started > options.register_timeout:
                state.abort = (f"only {len(state.registered)} of {options.workers} workers registered within "
                               f"{options.register_timeout:.0f} s")
            if state.job is not None:
                for i, seen in state.last_seen.items():
                    if i not in state.finished and now - seen > options.silence_timeout and not state.abort:
                        who = state.registered[i].service or state.registered[i].url
                        state.abort = f"worker {i} ({who}) silent for {now - seen:.0f} s"
            if state.abort:
                break
            if progress is not None and state.job is not None:
                progress("read", state.next_tract if not options.static else sum(state.tracts_given), tracts)
        if state.abort:
            await asyncio.sleep(1.0)  # let the workers hear it from their next beat
            also = f" (also: {'; '.join(state.other_reasons)})" if state.other_reasons else ""
            raise SortFailed(f"sort failed: {state.abort}{also}")
        finished_at = time.perf_counter()
        phases["read_shuffle"] = (state.shuffle_done_at or finished_at) - shuffle_started
        phases["sort_write"] = finished_at - (state.shuffle_done_at or finished_at)
        for child in children:
            child.wait(30)
        succeeded = True
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if standing is not None:
            await (standing.wait_idle() if succeeded else standing.cancel())
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
    outputs: dict[int, str] = {}
    bucket_records: dict[int, int] = {}
    for report in state.finished.values():
        outputs.update(report.buckets)
        bucket_records.update(report.records)
    ordered = [outputs[b] for b in range(buckets)]
    total = sum(bucket_records.values())
    if total != records:
        raise SortFailed(f"sort lost records: read {records}, wrote {total}")
    return SortResult(
        input_blob=input_blob, output_blobs=ordered, records=records, bytes=records * RECORD_SIZE,
        seconds=time.perf_counter() - started, phases=phases,
        workers=[WorkerReport(worker=r.worker, tracts_read=r.tracts_read, bytes_received=r.bytes_received,
                              peak_rss_bytes=r.peak_rss_bytes, seconds=r.seconds, tracts_given=state.tracts_given[i])
                 for i, r in sorted(state.finished.items())],
        bucket_records=[bucket_records[b] for b in range(buckets)],
        mode=("daytona" if options.daytona else "indy") + (" static" if options.static else ""))
