"""The sort's head: starts or invites the workers, answers their requests, watches them, and collects the output.

The head never touches records, except to sample keys for Daytona and to
join the few that straddle units. It:

1. reads the input's layout (:func:`apps.minutesort._layout.inspect_input`),
   and samples keys with ``daytona``;
2. starts the workers, invites standing ones, or waits for remote ones to
   register; from their memory, plans the buckets (how many, who holds
   each, which spill: :mod:`apps.minutesort._budget`) or refuses up front,
   and publishes the job;
3. answers each worker's request for a task from the schedule
   (:mod:`apps.minutesort._schedule`), holding the request until there is
   one: workers never poll;
4. watches the workers: one whose process exits, whose service reports it
   dead, or that falls silent is declared dead, and the schedule gives its
   work to the others;
5. returns the output blobs in key order, deletes what spilled, and (for
   standing workers) waits for them to be idle, so the next sort finds
   them free.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

from apps.minutesort._aio import start_server, stop_server
from apps.minutesort._budget import (
    NotEnoughMemory,
    Plan,
    Settings,
    WorkerMemory,
    default_share,
    mem_available,
    plan_buckets,
)
from apps.minutesort._layout import Layout, inspect_input
from apps.minutesort._protocol import (
    Beat,
    Commit,
    Finished,
    Job,
    Lost,
    Register,
    Registered,
    Sorted,
    Task,
    TaskRequest,
    output_guid,
    spill_guid,
)
from apps.minutesort._records import as_records, sample_boundaries, uniform_boundaries
from apps.minutesort._schedule import Schedule
from apps.minutesort._types import SortFailed, SortOptions, SortResult, WorkerReport
from apps.minutesort._workers import Spawned, StandingWorkers
from fds.client import Blob, Client
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
class _Head:
    """The head's state for one sort; the routes of :func:`_app` and the watch loop work on it."""

    metaserver: str
    layout: Layout
    options: SortOptions
    job_id: str
    sample: np.ndarray | None
    invited: bool
    registered: list[Register] = field(default_factory=list)
    job: Job | None = None
    schedule: Schedule | None = None
    plan: Plan | None = None
    abort: str | None = None
    last_seen: dict[int, float] = field(default_factory=dict)
    reports: dict[int, Finished] = field(default_factory=dict)
    deaths: list[str] = field(default_factory=list)
    waiting: set[int] = field(default_factory=set)
    job_ready: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    read_done_at: float | None = None

    def bump(self) -> None:
        """Wake every request waiting for a change."""
        self.changed.set()
        self.changed = asyncio.Event()

    def fail(self, reason: str) -> None:
        if not self.abort:
            self.abort = reason
        self.job_ready.set()
        self.bump()

    def index(self, worker: int) -> int:
        if not 0 <= worker < len(self.registered):
            raise NotFound(f"no worker {worker} in this sort: {len(self.registered)} of {self.options.workers} have "
                           "registered (indices from 0)", code="unknown_worker")
        self.last_seen[worker] = time.monotonic()
        return worker

    def the_schedule(self) -> Schedule:
        if self.schedule is None:
            raise Conflict("no job yet: every worker must register first", code="not_ready")
        return self.schedule

    def died(self, worker: int, reason: str) -> None:
        schedule = self.schedule
        if schedule is None:
            self.fail(f"worker {worker} died before the sort began: {reason}")
        elif schedule.worker_died(worker, reason):
            log.info("worker %d declared dead: %s", worker, reason)  # in the result: SortResult.deaths
            self.deaths.append(f"worker {worker}: {reason}")
            if schedule.abort:
                self.fail(schedule.abort)
            self.bump()

    def publish(self) -> None:
        """Every worker has registered: plan the buckets and publish the job (or refuse, saying why)."""
        options = self.options
        sharing: dict[str, int] = {}
        for r in self.registered:
            host = urlsplit(r.url).hostname or ""
            sharing[host] = sharing.get(host, 0) + 1
        memory = [WorkerMemory(budget=options.memory or r.budget
                               or default_share(r.available or mem_available(),
                                                 sharing[urlsplit(r.url).hostname or ""]),
                               base=r.base) for r in self.registered]
        settings = Settings(tract_size=self.layout.tract_size, workers=len(memory), unit_tracts=options.unit_tracts,
                            bin_bytes=options.bin_bytes, bins_in_flight=options.bins_in_flight,
                            read_in_flight=options.read_in_flight, write_in_flight=options.write_in_flight)
        if options.record_memory:
            memory = [WorkerMemory(budget=m.budget, base=m.base, records=options.record_memory) for m in memory]
        try:
            plan = plan_buckets(self.layout.length, memory, settings, per_worker=options.buckets_per_worker,
                                spill_all=options.spill_all)
        except NotEnoughMemory as exc:
            self.fail(exc.message)
            return
        settings = plan.settings
        if self.sample is not None:
            boundaries = sample_boundaries(self.sample, plan.buckets)
        else:
            boundaries = uniform_boundaries(plan.buckets)
        self.plan = plan
        self.schedule = Schedule(self.layout, plan, len(memory), unit_tracts=settings.unit_tracts,
                                 static=options.static, on_demand=not options.fixed_buckets)
        self.job = Job(metaserver=self.metaserver, input_blob=self.layout.guid, tracts=self.layout.tracts,
                       tract_size=self.layout.tract_size, stride=self.layout.stride, last=self.layout.last,
                       boundaries=[b.hex() for b in boundaries], workers=[r.url for r in self.registered],
                       capacity=plan.capacity, bucket_bytes=plan.bucket_bytes, bin_bytes=settings.bin_bytes,
                       bins_in_flight=settings.bins_in_flight, read_in_flight=settings.read_in_flight,
                       write_in_flight=settings.write_in_flight, output_prefix=self.job_id[:20],
                       spill_prefix=os.urandom(13).hex(), job_id=self.job_id)
        now = time.monotonic()
        self.last_seen = dict.fromkeys(range(len(self.registered)), now)
        self.job_ready.set()
        self.bump()


def _app(head: _Head, throttles: dict[int, float]) -> FastAPI:
    app = create_app("fds-minutesort head", "Hands out tasks and collects the sorted output.", role="minutesort-head")

    @app.post("/v1/workers", tags=["sort"], summary="A worker registers.")
    async def register(req: Register) -> Response:
        if head.invited and req.job != head.job_id:
            raise Conflict(f"this head runs sort {head.job_id}, not {req.job or '(none)'}: it takes only the "
                           "workers it invited", code="wrong_job")
        if len(head.registered) >= head.options.workers:
            raise BadRequest(f"this sort already has its {head.options.workers} workers")
        head.registered.append(req)
        index = len(head.registered) - 1
        head.last_seen[index] = time.monotonic()
        if len(head.registered) == head.options.workers:
            head.publish()
        return json_response(Registered(index=index, throttle=throttles.get(index, 1.0)))

    @app.get("/v1/job", tags=["sort"], summary="The job, once every worker has registered (503 until then).")
    async def job(wait: float = 0.0) -> Response:
        if not head.job_ready.is_set() and wait > 0:
            try:
                await asyncio.wait_for(head.job_ready.wait(), min(wait, 60.0))
            except TimeoutError:
                pass
        if head.abort:
            raise Aborted(head.abort)
        if head.job is None:
            raise Unavailable("waiting for workers to register", code="not_ready")
        return json_response(head.job)

    @app.post("/v1/tasks", tags=["sort"], summary="The worker's next task (held until there is one).")
    async def task(req: TaskRequest) -> Response:
        worker = head.index(req.worker)
        deadline = time.monotonic() + req.wait
        while True:
            if head.abort:
                return json_response(Task(kind="abort", reason=head.abort))
            schedule = head.the_schedule()
            next_task = schedule.next_task(worker)
            if next_task is not None:
                return json_response(next_task)
            head.waiting.add(worker)
            stuck = schedule.stuck(head.waiting)
            if stuck:
                head.fail(stuck)
                continue
            try:
                await asyncio.wait_for(head.changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return json_response(Task(kind="wait", epoch=schedule.epoch))
            finally:
                head.waiting.discard(worker)
                head.last_seen[worker] = time.monotonic()

    @app.post("/v1/commits", tags=["sort"], summary="A read or deal task is over.")
    async def commit(report: Commit) -> Response:
        head.index(report.worker)
        try:
            accepted = head.the_schedule().commit(report)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        _after_change(head)
        return json_response({"accepted": accepted})

    @app.post("/v1/sorted", tags=["sort"], summary="A sort task is over.")
    async def sorted_(report: Sorted) -> Response:
        head.index(report.worker)
        if report.output:
            parse_guid(report.output)
        accepted = head.the_schedule().sorted(report)
        _after_change(head)
        return json_response({"accepted": accepted})

    @app.post("/v1/workers/{index}/beat", tags=["sort"], summary="Liveness; says the epoch and whether aborted.")
    async def beat(index: int) -> Response:
        head.index(index)
        return json_response(Beat(abort=head.abort, epoch=head.schedule.epoch if head.schedule else 0))

    @app.post("/v1/workers/{index}/finished", tags=["sort"], summary="The worker's report, as it exits.")
    async def finished(index: int, report: Finished) -> Response:
        if report.worker != head.index(index):
            raise BadRequest(f"the report of worker {index} must say worker {index}, not {report.worker}")
        head.reports[index] = report
        head.bump()
        return json_response({})

    @app.post("/v1/lost", tags=["sort"], summary="A worker process is gone (its service, or itself, says so).")
    async def lost(report: Lost) -> Response:
        for index, r in enumerate(head.registered):
            if (report.url and r.url == report.url) or (report.pid and r.pid == report.pid):
                head.died(index, report.reason or "reported lost")
                return json_response({})
        if head.schedule is None and head.invited:  # a standing worker's process died before registering
            head.fail(report.reason or "a standing worker's process died")
            return json_response({})
        raise NotFound(f"no worker with URL {report.url!r} or pid {report.pid} in this sort", code="unknown_worker")

    @app.get("/v1/status", tags=["sort"], summary="Where the sort is: workers, units read, buckets sorted.")
    async def status() -> Response:
        schedule = head.schedule
        sorting = {} if schedule is None else {
            str(a.bucket): a.worker for a in schedule.active.values() if a.kind == "sort"}
        reading = {} if schedule is None else {
            str(a.unit): a.worker for a in schedule.active.values() if a.kind != "sort"}
        return json_response({
            "job": head.job_id, "abort": head.abort, "epoch": schedule.epoch if schedule else 0,
            "workers": [{"index": i, "url": r.url, "pid": r.pid, "alive": schedule.alive(i) if schedule else True,
                         "buckets_sorted": schedule.state[i].buckets_sorted if schedule else 0}
                        for i, r in enumerate(head.registered)],
            "units": schedule.units if schedule else 0,
            "units_complete": schedule.units_complete() if schedule else 0,
            "buckets": schedule.buckets if schedule else 0, "buckets_done": len(schedule.done) if schedule else 0,
            "reading": reading, "sorting": sorting, "deaths": head.deaths})

    @app.post("/v1/abort", tags=["sort"], summary="A failure no retry can fix; the run stops with its reason.")
    async def abort(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:  # not JSON, or not UTF-8
            body = None
        if not isinstance(body, dict):
            raise BadRequest('send a JSON object: {"reason": "what went wrong"}')
        head.fail(str(body.get("reason", "a worker aborted the run"))[:2000])
        return json_response({})

    return app


def _after_change(head: _Head) -> None:
    schedule = head.the_schedule()
    if schedule.abort:
        head.fail(schedule.abort)
    if head.read_done_at is None and schedule.units_complete() == schedule.units:
        head.read_done_at = time.perf_counter()
    head.bump()


async def _sample(blob: Blob, layout: Layout, options: SortOptions) -> np.ndarray:
    """Keys from ``sample_tracts`` random tracts (Daytona)."""
    rng = random.Random(options.seed)
    chosen = sorted(rng.sample(range(layout.tracts), min(layout.tracts, options.sample_tracts)))
    keys = []
    async for index, data in blob.read_tracts(chosen):
        skip = layout.skip(index)
        whole = (len(data) - skip) // 100 * 100
        if whole <= 0:
            continue
        records = as_records(memoryview(data)[skip:skip + whole])
        pick = np.random.default_rng(rng.randrange(1 << 30)).choice(
            len(records), size=min(len(records), options.sample_per_tract), replace=False)
        keys.append(np.ascontiguousarray(records[np.sort(pick), :10]))
    return np.concatenate(keys) if keys else np.empty((0, 10), dtype=np.uint8)


async def run_sort(metaserver: str, input_blob: str, options: SortOptions, *,
                   progress: Callable[[str, int, int], None] | None = None) -> SortResult:
    """Sort ``input_blob`` with ``options.workers`` workers; returns the output blobs in key order."""
    if options.worker_urls:
        options = replace(options, workers=len(options.worker_urls), spawn=False)
    if options.workers < 1:
        raise BadRequest("a sort needs at least one worker")
    started = time.perf_counter()
    phases: dict[str, float] = {}
    async with Client(metaserver) as client:
        blob, layout = await inspect_input(client, input_blob)
        sample = await _sample(blob, layout, options) if options.daytona else None
    if options.solo_bytes and layout.length <= options.solo_bytes and not options.worker_urls and options.spawn:
        from apps.minutesort._solo import solo_sort

        return await solo_sort(metaserver, layout, started)
    phases["plan"] = time.perf_counter() - started
    job_id = os.urandom(12).hex()
    head = _Head(metaserver=metaserver, layout=layout, options=options, job_id=job_id, sample=sample,
                 invited=bool(options.worker_urls))
    # The slow worker is chosen by registration index, so "worker 0" in reports is the slow one.
    throttles = {options.slow_worker: options.slow_factor} if options.slow_worker is not None else {}
    sock = bind_socket(options.host, options.port)
    head_url = options.advertise_url.rstrip("/") or url_of(sock, options.host)
    server, serving = start_server(_app(head, throttles), sock, keep_alive=120)
    spawned: Spawned | None = None
    standing = StandingWorkers(options.worker_urls, head_url, job_id) if options.worker_urls else None
    succeeded = False
    try:
        if standing is not None:
            refused = await standing.invite()
            if refused:
                head.fail(refused)
        elif options.spawn:
            spawned = Spawned(options.workers, head_url, options.host)
        else:
            log.info("head at %s: waiting for %d workers (`fds-minutesort worker --head %s`)",
                     head_url, options.workers, head_url)
        shuffle_started = time.perf_counter()
        await _watch(head, spawned, shuffle_started, progress)
        if head.abort:
            also = f" (workers lost on the way: {'; '.join(head.deaths)})" if head.deaths else ""
            raise SortFailed(f"sort failed: {head.abort}{also}")
        finished_at = time.perf_counter()
        read_done = head.read_done_at or finished_at
        phases["read_shuffle"] = read_done - shuffle_started
        phases["sort_write"] = finished_at - read_done
        await _await_reports(head, spawned)
        succeeded = True
    finally:
        if head.abort:
            await asyncio.sleep(0.6)  # the workers hear it from their next beat
        if spawned is not None:
            await asyncio.to_thread(spawned.stop)
        if standing is not None:
            await (standing.wait_idle() if succeeded else standing.cancel())
        await stop_server(server, serving)
        await _clean_up(metaserver, head, succeeded)
    schedule = head.the_schedule()
    assert head.plan is not None
    outputs = [schedule.done[b][0] for b in range(schedule.buckets)]
    bucket_records = [schedule.done[b][1] for b in range(schedule.buckets)]
    if sum(bucket_records) != layout.records:
        raise SortFailed(f"sort lost records: read {layout.records}, wrote {sum(bucket_records)}")
    reports = []
    for i in range(len(head.registered)):
        r = head.reports.get(i)
        reports.append(WorkerReport(worker=i, alive=schedule.alive(i), tracts_read=r.tracts_read if r else 0,
                                    bytes_received=r.bytes_received if r else 0,
                                    peak_rss_bytes=r.peak_rss_bytes if r else 0, seconds=r.seconds if r else {},
                                    peak_records_bytes=r.peak_records_bytes if r else 0,
                                    capacity=head.plan.capacity[i],
                                    tracts_given=schedule.state[i].tracts_given,
                                    buckets_sorted=schedule.state[i].buckets_sorted, memory=r.memory if r else {}))
    mode = ("daytona" if options.daytona else "indy") + (" static" if options.static else "") \
        + (" fixed-buckets" if options.fixed_buckets else "")
    return SortResult(input_blob=layout.guid, output_blobs=outputs, records=layout.records,
                      bytes=layout.length, seconds=time.perf_counter() - started, phases=phases, workers=reports,
                      bucket_records=bucket_records, mode=mode,
                      spilled_bytes=_spilled_bytes(schedule), deaths=head.deaths,
                      lineage_units=schedule.lineage_units)


def _spilled_bytes(schedule: Schedule) -> int:
    return sum(count for d in schedule.deliveries.values() for _, count in d.pieces) * 100


async def _watch(head: _Head, spawned: Spawned | None, shuffle_started: float,
                 progress: Callable[[str, int, int], None] | None) -> None:
    """Until the sort is done or aborted: watch for dead and silent workers, and report progress."""
    options = head.options
    while not head.abort:
        schedule = head.schedule
        if schedule is not None and schedule.finished:
            return
        if schedule is None and time.perf_counter() - shuffle_started > options.register_timeout:
            head.fail(f"only {len(head.registered)} of {options.workers} workers registered within "
                      f"{options.register_timeout:.0f} s")
            return
        if spawned is not None:
            for pid, code in spawned.exited():
                index = next((i for i, r in enumerate(head.registered) if r.pid == pid), None)
                finished = index is not None and index in head.reports
                if finished:
                    continue
                if index is None:
                    head.fail(f"worker process {pid} exited with status {code} before registering")
                elif schedule is not None and schedule.alive(index):
                    head.died(index, f"its process (pid {pid}) exited with status {code}")
                elif schedule is None:
                    head.fail(f"worker process {pid} exited with status {code} before the sort began")
        if schedule is not None:
            now = time.monotonic()
            for index, seen in list(head.last_seen.items()):
                if schedule.alive(index) and now - seen > options.silence_timeout and index not in head.reports:
                    who = head.registered[index].service or head.registered[index].url
                    head.died(index, f"silent for {now - seen:.0f} s ({who})")
            if progress is not None:
                if schedule.units_complete() < schedule.units:
                    progress("read", schedule.units_complete(), schedule.units)
                else:
                    progress("sort", len(schedule.done), schedule.buckets)
        await asyncio.sleep(0.05)


async def _await_reports(head: _Head, spawned: Spawned | None, timeout: float = 10.0) -> None:
    """Wait (briefly) for each live worker's final report, and for spawned workers to exit."""
    schedule = head.the_schedule()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(i in head.reports for i in range(len(head.registered)) if schedule.alive(i)):
            break
        await asyncio.sleep(0.02)
    if spawned is not None:
        await asyncio.to_thread(spawned.wait, max(0.0, deadline - time.monotonic()))


async def _clean_up(metaserver: str, head: _Head, succeeded: bool) -> None:
    """Delete the spill blobs, and outputs of sort attempts that were stopped midway (or of a failed sort)."""
    schedule, job = head.schedule, head.job
    if schedule is None or job is None:
        return
    guids = {spill_guid(job.spill_prefix, b) for (_, b), d in schedule.deliveries.items() if d.pieces}
    guids |= {spill_guid(job.spill_prefix, b) for b in range(schedule.buckets) if schedule.plan.homes[b] < 0}
    guids |= {output_guid(job.output_prefix, b, a) for b, a in schedule.cancelled_sorts}
    if not succeeded:
        guids |= {output for output, _ in schedule.done.values()}
    if not guids:
        return
    async with Client(metaserver) as client:
        slots = asyncio.Semaphore(16)

        async def delete(guid: str) -> None:
            async with slots:
                try:
                    await client.delete_blob(guid)
                except FDSError:
                    pass  # never created, or already gone

        await asyncio.gather(*(delete(g) for g in guids))
