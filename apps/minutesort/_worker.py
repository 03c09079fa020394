"""A sort worker: asks the head for tasks and does them, until the head says done.

One process per worker, with its own HTTP endpoint for the bins peers send
it and the buckets it hands over (docs/design.md §6). It registers with the
head (its URL, its memory), gets the job, and then asks for one task after
another (the head holds each request until it has one: no polling):

- **read** a unit of input: its tracts with several requests in flight,
  cut into whole records (:class:`apps.minutesort._layout.Stitcher`), dealt
  into buckets (:class:`apps.minutesort._deal.Dealer`); then **commit**:
  the unit's fragments and where each bucket's records went. Two units are
  in progress at a time, so reading never waits for a commit.
- **deal** the records the head joined from fragments, the same way.
- **sort** a bucket: take its records from this worker's memory, or fetch
  them from the worker holding them, or read them back from fds where they
  spilled; compute the order and write the rows in order to a new blob
  (:func:`apps.minutesort._bucketsort.write_sorted`); report the blob.

A failed task is reported and the head gives it to someone (the sort goes
on); a task the head has cancelled (a worker died: the **epoch** went up) is
dropped. An input that is not records aborts the sort: no retry can help.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time
from typing import Any, cast

import httpx
import numpy as np
from fastapi import FastAPI

from apps.minutesort._aio import start_server, stop_server
from apps.minutesort._arena import Memory
from apps.minutesort._auth import auth_headers, bins_pool, http_client
from apps.minutesort._bucketsort import discard_output, write_sorted
from apps.minutesort._budget import SLACK, SORT_EXTRA, mem_available
from apps.minutesort._deal import Dealer, Shuffle
from apps.minutesort._gensort import RECORD_SIZE
from apps.minutesort._layout import Layout, LayoutError, Stitcher
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
)
from apps.minutesort._receive import Receiver, answer
from apps.minutesort._records import Records, as_records
from fds.client import Client
from fds.httpclient import HTTPPool
from fds.web import bind_socket, create_app, url_of

__all__ = ["run_worker", "resident_bytes"]

log = logging.getLogger("fds.minutesort")

_JOB_WAIT = 60.0
"""Seconds a peer's request may wait for this worker to learn the job."""


def resident_bytes() -> int:
    """This process's resident memory now."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_resident_bytes() -> int:
    """This process's peak resident memory (VmHWM: its own, unlike ``ru_maxrss``, which a process started by a
    standing worker inherits from the service across fork and exec)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def minor_faults() -> int:
    """Minor page faults of this process so far (each a page of memory touched for the first time here)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _Cancelled(Exception):
    """The head cancelled this task (a worker died)."""


class _Lost(Exception):
    """The bucket's records in memory are gone: the worker that held them no longer has them."""


async def run_worker(head: str, *, host: str = "127.0.0.1", advertise: str = "", throttle: float = 1.0,
                     job: str = "", sock: socket.socket | None = None, service_pid: int = 0,
                     service_url: str = "", budget: int = 0, arena_fd: int | None = None) -> int:
    """Serve bins, register with the head at ``head``, and do tasks until done. Returns an exit code.

    A worker service (:mod:`apps.minutesort._service`) runs this in a child
    process per sort: it passes the sort's ``job`` id, the listening socket
    for bins (``sock``, bound once by the service), its own pid and URL,
    and its warm arena (``arena_fd``, :mod:`apps.minutesort._arena`), if it
    keeps one; the worker stops if that process dies.
    """
    receiver_ready: asyncio.Future[Receiver] = asyncio.get_running_loop().create_future()
    app: FastAPI = create_app("fds-minutesort worker", "Receives bins of records for the buckets it holds, and "
                              "hands buckets over.", role="minutesort-worker")

    def waiting_for_job(route: str) -> Any:
        async def route_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            # A fast peer may send its first bin before this worker has the job.
            try:
                receiver = await asyncio.wait_for(asyncio.shield(receiver_ready), _JOB_WAIT)
            except TimeoutError:
                await answer(send, 503, "not_ready", "this worker has no job yet; retry")
                return
            await (receiver.bins_app() if route == "bins" else receiver.hand_over_app())(scope, receive, send)

        return route_app

    app.mount("/v1/bins", cast(Any, waiting_for_job("bins")))
    app.mount("/v1/buckets", cast(Any, waiting_for_job("buckets")))
    sock = sock if sock is not None else bind_socket(host, 0)
    url = advertise or url_of(sock, host)
    server, serving = start_server(app, sock, keep_alive=120)
    http = http_client(60.0)
    pool = bins_pool(300.0)
    arena = os.fstat(arena_fd).st_size if arena_fd is not None else 0
    registration = Register(url=url, pid=os.getpid(), job=job, service=service_url, budget=budget,
                            available=mem_available() + arena, base=resident_bytes())
    faults = {"faults_start": minor_faults()}
    try:
        try:
            me, head_throttle, the_job = await _join(head, registration, http)
        except RuntimeError as exc:
            log.error("worker at %s: %s", url, exc)
            return 1
        capacity = the_job.capacity[me]
        memory = Memory(arena_fd)
        memory.prefault(_expected_use(the_job, capacity))
        max_bin = the_job.bin_bytes + the_job.tract_size  # a bin is sent once over bin_bytes
        receiver = Receiver(the_job.job_id, capacity, the_job.bucket_bytes, max_bin=max_bin, memory=memory)
        receiver_ready.set_result(receiver)
        async with Client(the_job.metaserver, max_in_flight=max(the_job.write_in_flight, the_job.read_in_flight)) \
                as fds:
            worker = _Worker(the_job, me, head, registration, http, pool, fds, receiver,
                             max(throttle, head_throttle), service_pid, memory, faults)
            try:
                return await worker.run()
            finally:
                memory.close()
    finally:
        await stop_server(server, serving)
        await http.aclose()
        await pool.aclose()


def _expected_use(job: Job, capacity: int) -> int:
    """Bytes of large buffers this worker will likely take: its share of the records (as received, with slack),
    a bucket's order, and the output tracts in flight."""
    buckets = len(job.boundaries) + 1
    share = job.bucket_bytes * buckets / max(1, len(job.workers))
    records = min(capacity, int(share * SLACK))
    return records + int(SORT_EXTRA * job.bucket_bytes * SLACK) + (job.write_in_flight + 1) * job.tract_size


async def _post(http: httpx.AsyncClient, url: str, model: Any = None, *, timeout: float | None = None) -> Any:
    resp = await http.post(url, content=model.model_dump_json() if model is not None else b"",
                           headers={"content-type": "application/json"},
                           timeout=timeout if timeout is not None else http.timeout)
    if resp.status_code != 200:
        raise RuntimeError(f"{url}: {resp.status_code} {resp.text[:300]}")
    return resp.json()


async def _join(head: str, me: Register, http: httpx.AsyncClient) -> tuple[int, float, Job]:
    """Register with the head and wait for the job: (this worker's index, its throttle, the job)."""
    deadline = time.monotonic() + 120
    while True:  # the head may still be starting (remote workers are started independently)
        try:
            registered = Registered.model_validate(await _post(http, f"{head}/v1/workers", me))
            break
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach the head at {head}: {exc}") from None
            await asyncio.sleep(0.2)
    while True:  # the head holds the request until every worker has registered
        try:
            resp = await http.get(f"{head}/v1/job", params={"wait": 20}, timeout=40)
        except httpx.TransportError as exc:
            raise RuntimeError(f"lost the head at {head} while waiting for the job: {exc}") from None
        if resp.status_code == 200:
            return registered.index, registered.throttle, Job.model_validate_json(resp.content)
        if resp.status_code != 503:  # the head gave up on this sort before it began
            raise RuntimeError(f"the head at {head} has no job for this worker: {resp.status_code} {resp.text[:300]}")


class _Worker:
    """One worker's part in one sort: the task loop and the tasks."""

    def __init__(self, job: Job, me: int, head: str, registration: Register, http: httpx.AsyncClient,
                 pool: HTTPPool, fds: Client, receiver: Receiver, throttle: float, service_pid: int,
                 memory: Memory, faults: dict[str, int]) -> None:
        self.job = job
        self.me = me
        self.head = head
        self.registration = registration
        self.http = http
        self.pool = pool
        self.fds = fds
        self.receiver = receiver
        self.throttle = throttle
        self.service_pid = service_pid
        self.memory = memory
        self.faults = faults
        self.faults["faults_read_deal"] = minor_faults()  # made differences in _finished
        self.layout = Layout(guid=job.input_blob, tracts=job.tracts, stride=job.stride, last=job.last,
                             tract_size=job.tract_size)
        self.shuffle = Shuffle.start(job, me, receiver, pool, fds)
        self.epoch = 0
        self.aborted: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.times: dict[str, float] = {"read_deal": 0.0, "sort": 0.0, "gather_write": 0.0, "fetch": 0.0}
        self.tracts_read = 0

    async def run(self) -> int:
        beating = asyncio.create_task(self._beat())
        try:
            return await self._loop()
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)

    async def _loop(self) -> int:
        input_blob = await self.fds.open_blob(self.job.input_blob)
        units: set[asyncio.Task[None]] = set()
        asking: asyncio.Task[Task] | None = None
        try:
            while True:
                if asking is None and len(units) < 2:
                    asking = asyncio.create_task(self._ask())
                waiting: set[asyncio.Future[Any]] = {*units, self.aborted}
                if asking is not None:
                    waiting.add(asking)
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if self.aborted.done():
                    log.error("worker %d: the sort was aborted: %s", self.me, self.aborted.result())
                    return 1
                for unit in [u for u in units if u.done()]:
                    units.discard(unit)
                    unit.result()  # a crash in the task machinery itself ends the worker
                if asking is None or not asking.done():
                    continue
                task, asking = asking.result(), None
                if task.kind in ("read", "deal"):
                    units.add(asyncio.create_task(self._unit(input_blob, task)))
                elif task.kind == "sort":
                    await asyncio.gather(*units)
                    units.clear()
                    self.faults.setdefault("faults_sort_write", minor_faults())
                    await self._sort(task)
                elif task.kind == "done":
                    await self._finished()
                    return 0
                elif task.kind == "abort":
                    log.error("worker %d: %s", self.me, task.reason)
                    return 1
        finally:
            for pending in [*units, *([asking] if asking else [])]:
                pending.cancel()
            await asyncio.gather(*units, *([asking] if asking else []), return_exceptions=True)

    async def _ask(self) -> Task:
        while True:
            try:
                task = Task.model_validate(await _post(self.http, f"{self.head}/v1/tasks",
                                                       TaskRequest(worker=self.me, wait=10), timeout=30))
            except httpx.TransportError as exc:
                raise RuntimeError(f"lost the head at {self.head}: {exc}") from None
            if task.kind != "wait":
                self._see_epoch(task.epoch)
                return task

    def _see_epoch(self, epoch: int) -> None:
        if epoch > self.epoch:
            self.epoch = epoch
            self.shuffle.full.clear()  # buckets have new homes

    async def _beat(self) -> None:
        while not self.aborted.done():
            await asyncio.sleep(0.5)
            if self.service_pid and os.getppid() != self.service_pid:
                # The standing worker this process sorts for is gone (killed, crashed): stop, and say so,
                # so the head gives this worker's part to the others at once.
                reason = (f"worker {self.me} (standing worker {self.registration.service}): its service "
                          f"(pid {self.service_pid}) died mid-sort")
                await self._tell_lost(reason)
                self.aborted.set_result(reason)
                return
            try:
                beat = Beat.model_validate(await _post(self.http, f"{self.head}/v1/workers/{self.me}/beat"))
            except (httpx.HTTPError, RuntimeError) as exc:
                beat = Beat(abort=f"lost the head at {self.head}: {exc}")
            self._see_epoch(beat.epoch)
            if beat.abort and not self.aborted.done():
                self.aborted.set_result(beat.abort)

    async def _tell_lost(self, reason: str) -> None:
        log.error(reason)
        try:
            await self.http.post(f"{self.head}/v1/lost", content=Lost(url=self.registration.url, pid=os.getpid(),
                                                                    reason=reason).model_dump_json(),
                                 headers={"content-type": "application/json"})
        except httpx.HTTPError:
            pass

    # -- read and deal ---------------------------------------------------------------------------------
    async def _unit(self, input_blob: Any, task: Task) -> None:
        started = time.perf_counter()
        dealer = Dealer(self.shuffle, task)
        head = tail = b""
        try:
            if task.kind == "read":
                stitcher = Stitcher(task.skip)
                tracts = range(task.first, task.first + task.count)
                last = time.perf_counter()
                async for index, data in input_blob.read_tracts(tracts, window=self.job.read_in_flight):
                    self.layout.check_tract(index, data)
                    for records in stitcher.feed(data):
                        await dealer.deal(records)
                    self.tracts_read += 1
                    last = await self._pace(last)
                    if self.epoch > task.epoch:
                        raise _Cancelled
                head, tail = stitcher.head, stitcher.tail
            else:
                await dealer.deal(bytes.fromhex(task.records))
            parts = await dealer.finish()
            if self.epoch > task.epoch:
                raise _Cancelled
            report = Commit(worker=self.me, attempt=task.attempt, head=head.hex(), tail=tail.hex(), parts=parts)
        except _Cancelled:
            await dealer.cancel()
            return
        except LayoutError as exc:  # the input is not what its layout says: no retry can help
            await dealer.cancel()
            await self._abort(str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - the head gives the unit to someone, this worker included
            await dealer.cancel()
            log.info("worker %d: unit %d failed: %s", self.me, task.unit, exc)  # the head gives it to another
            report = Commit(worker=self.me, attempt=task.attempt, failed=f"worker {self.me}: {exc}")
        self.times["read_deal"] += time.perf_counter() - started
        await _post(self.http, f"{self.head}/v1/commits", report)

    async def _abort(self, reason: str) -> None:
        try:
            await self.http.post(f"{self.head}/v1/abort", json={"reason": reason})
        except httpx.HTTPError:
            pass

    async def _pace(self, since: float) -> float:
        """A deliberately slow worker (straggler experiments) sleeps as long again as it worked since ``since``,
        (throttle - 1) times; returns now."""
        if self.throttle > 1.0:
            await asyncio.sleep((self.throttle - 1.0) * (time.perf_counter() - since))
        return time.perf_counter()

    # -- sort ------------------------------------------------------------------------------------------
    async def _sort(self, task: Task) -> None:
        started = time.perf_counter()
        guid = output_guid(self.job.output_prefix, task.bucket, task.attempt)
        report = Sorted(worker=self.me, attempt=task.attempt, bucket=task.bucket)
        written = False
        taken: memoryview | None = None
        try:
            records, taken = await self._gather(task)
            if len(records) != task.expected:
                raise RuntimeError(f"bucket {task.bucket}: {len(records)} records here, but {task.expected} were "
                                   "delivered")
            self.times["fetch"] += time.perf_counter() - started
            written = True
            await write_sorted(self.fds, records, guid, self.job.tract_size, self.times, pace=self.throttle,
                               memory=self.memory)
            report.output, report.records = guid, len(records)
            del records
            self.receiver.release(task.bucket)
            if taken is not None:
                self.memory.give(taken)
        except _Lost as exc:
            report.failed, report.lost = str(exc), True
        except Exception as exc:  # noqa: BLE001 - the head gives the bucket to someone
            log.info("worker %d: bucket %d failed: %s", self.me, task.bucket, exc)  # the head gives it to another
            report.failed, report.lost = f"worker {self.me}: {exc}", task.source not in (-1, self.me)
            if written:
                await discard_output(self.fds, guid)
        answer = await _post(self.http, f"{self.head}/v1/sorted", report)
        if not answer.get("accepted", True) and report.output:
            await discard_output(self.fds, guid)  # the head gave the bucket to another worker meanwhile

    async def _gather(self, task: Task) -> tuple[Records, memoryview | None]:
        """The bucket's records in one array: from memory here or at a peer, and from fds where they spilled;
        and the buffer taken for them, if one was (the caller gives it back once they are written)."""
        if task.source == self.me:
            resident = self.receiver.take(task.bucket, set(task.accept))
        elif task.source >= 0:
            resident = await self._fetch(task)
        else:
            resident = np.empty((0, RECORD_SIZE), dtype=np.uint8)
        if not task.pieces:
            return resident, None
        taken = self.memory.take(task.expected * RECORD_SIZE)
        records = as_records(taken)
        flat = records.reshape(-1)
        at = resident.nbytes
        flat[:at] = resident.reshape(-1)
        del resident
        self.receiver.release(task.bucket)
        blob = await self.shuffle.spills.blob(task.bucket)
        async for _, data in blob.read_tracts(task.pieces, window=self.job.read_in_flight):
            if at + len(data) > len(flat):
                raise RuntimeError(f"bucket {task.bucket}: its spilled pieces hold more than {task.expected} records")
            flat[at:at + len(data)] = np.frombuffer(data, dtype=np.uint8)
            at += len(data)
        return records[:at // RECORD_SIZE], taken

    async def _fetch(self, task: Task) -> Records:
        """The bucket's records from the worker holding them (it forgets them once sent)."""
        url = (f"{self.job.workers[task.source]}/v1/buckets/{task.bucket}?job={self.job.job_id}"
               f"&accept={','.join(map(str, task.accept))}")
        try:
            resp = await self.pool.request("GET", url, headers=auth_headers())
        except OSError as exc:
            raise _Lost(f"cannot fetch bucket {task.bucket} from worker {task.source}: {exc}") from None
        if resp.status == 410:
            raise _Lost(f"worker {task.source} no longer holds bucket {task.bucket}")
        if resp.status != 200:
            raise RuntimeError(f"worker {task.source} did not hand over bucket {task.bucket}: {resp.status} "
                               f"{bytes(resp.body)[:200]!r}")
        return as_records(resp.body)

    async def _finished(self) -> None:
        peak = peak_resident_bytes()
        marks = [self.faults.get(k, 0) for k in ("faults_read_deal", "faults_sort_write")] + [minor_faults()]
        marks[1] = marks[1] or marks[2]  # no bucket sorted here
        memory = {"faults_start": self.faults["faults_start"], "faults_read_deal": marks[1] - marks[0],
                  "faults_sort_write": marks[2] - marks[1], **self.memory.report()}
        await _post(self.http, f"{self.head}/v1/workers/{self.me}/finished", Finished(
            worker=self.me, tracts_read=self.tracts_read, bytes_received=self.receiver.bytes_received,
            peak_rss_bytes=peak, peak_records_bytes=self.receiver.peak_held,
            seconds={k: round(v, 3) for k, v in self.times.items()}, memory=memory))
