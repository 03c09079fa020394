"""A sort worker: read input on demand, deal records into bins, stream them to their owners, sort, write.

One process per worker, with its own HTTP endpoint for the bins peers send
it (docs/design.md §6):

1. **Read and shuffle.** Ask the head for a unit of input (a few tracts),
   asking for the next one as soon as the current one starts, so the slowest
   worker finishes at most one unit after the rest. Read the unit's tracts
   with many requests in flight, deal each tract's records into per-bucket
   bins (:func:`apps.minutesort._records.partition`, vectorised), and send
   each full bin to its bucket's owner while reading goes on. At most
   ``bins_in_flight`` bins are in flight to any one receiver (the RTS/CTS
   idea): a slow receiver slows its senders rather than flooding.
2. **Barrier.** When the head has no input left, flush the bins and tell
   every peer; a worker's buckets are complete once every sender said so.
3. **Sort and write.** Compute the sorted order of each owned bucket
   (:func:`apps.minutesort._records.argsort_records`: 8 bytes per record),
   then move the rows into order one output tract at a time and write each
   tract while the next is gathered, many tracts in flight.

Memory: each owned bucket is received straight into one buffer sized from
the head's estimate (overflow goes to extra pieces). The sort adds 8 bytes
a record of order plus the output tracts in flight, not a second bucket:
fresh memory is slow to fault in on this machine (0.25-0.3 GB/s), and a
second bucket-sized buffer cost more than the sort itself. The peak is
about 1.1x the worker's share of the data, plus the interpreter.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import resource
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast
from urllib.parse import parse_qs

import httpx
import numpy as np
import orjson
from fastapi import FastAPI
from fastapi.responses import Response

from apps.minutesort._auth import auth_headers, bins_pool, http_client
from apps.minutesort._protocol import Beat, Finished, Job, Register, Registered, Unit, WorkRequest
from apps.minutesort._records import Records, argsort_records, as_records, partition
from fds.buffers import uninitialized
from fds.client import Client
from fds.errors import BadRequest, Conflict, Unavailable
from fds.httpclient import HTTPPool
from fds.web import bind_socket, create_app, json_response, url_of

__all__ = ["run_worker", "Bucket"]

log = logging.getLogger("fds.minutesort")

RECORD = 100
_RECEIVER_WAIT = 60.0
"""Seconds a peer's bin may wait for this worker to learn the job."""


def anonymous(size: int) -> memoryview:
    """``size`` bytes of anonymous memory, mapped lazily: pages are faulted in as bins land, during the
    read phase, instead of all at once before it."""
    region = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE)  # 2 MiB pages: once memory is warm, faulting it in is 3x faster here
    return memoryview(region)[:size]


def gather_rows(records: Records, order: Any) -> bytearray:
    """``records[order]`` as the bytes of one output tract (a fresh heap buffer glibc recycles)."""
    out = uninitialized(len(order) * RECORD)
    rows = records.reshape(-1).view(f"V{RECORD}")
    np.take(rows, order, out=np.frombuffer(out, dtype=f"V{RECORD}"), mode="clip")
    return out


class Bucket:
    """One owned bucket: bins land in a preallocated buffer; overflow in extra pieces."""

    def __init__(self, expected_records: int) -> None:
        capacity = int(expected_records * 1.1) + 4096
        self.buffer = anonymous(capacity * RECORD)
        self.fill = 0
        self.overflow: list[bytes] = []
        self.records = 0

    def reserve(self, nbytes: int) -> memoryview | None:
        """Room for a bin of ``nbytes`` in the main buffer, or None (the caller keeps it as overflow)."""
        if self.fill + nbytes > len(self.buffer):
            return None
        view = self.buffer[self.fill:self.fill + nbytes]
        self.fill += nbytes
        self.records += nbytes // RECORD
        return view

    def add(self, data: bytes | bytearray | memoryview) -> None:
        view = self.reserve(len(data))
        if view is None:
            self.overflow.append(bytes(data))
            self.records += len(data) // RECORD
        else:
            view[:] = data

    def all_records(self) -> Records:
        """Every record received, as one array (copies only if there was overflow)."""
        main = as_records(self.buffer[:self.fill])
        if not self.overflow:
            return main
        return np.concatenate([main, *(as_records(p) for p in self.overflow)])


async def _answer(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, code: str = "",
                  message: str = "") -> None:
    """A response from a bare ASGI app: ``{}``, or the fds error body."""
    body = orjson.dumps({"error": {"code": code, "message": message}}) if message else b"{}"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class _Receiver:
    """The worker's inbox: owned buckets and which senders are done."""

    def __init__(self, buckets: dict[int, int], senders: int, job_id: str = "", max_bin: int = 1 << 30) -> None:
        self.buckets = {b: Bucket(n) for b, n in buckets.items()}
        self.senders = senders
        self.job_id = job_id
        self.max_bin = max_bin  # the largest bin a sender sends: a larger one is refused, not allocated
        self.done: set[int] = set()
        self.complete = asyncio.Event()
        self.bytes_received = 0
        if not senders:
            self.complete.set()

    def sender_done(self, sender: int) -> None:
        self.done.add(sender)
        if len(self.done) >= self.senders:
            self.complete.set()

    def sender_done_for(self, job: str, sender: int) -> None:
        """``sender`` has sent every bin of sort ``job``; refuses a notice meant for another sort."""
        if self.job_id and job != self.job_id:
            raise Conflict(f"this worker runs sort {self.job_id}, not {job or '(none)'}", code="wrong_job")
        if not 0 <= sender < self.senders:  # it would count towards the barrier, and end it early
            raise BadRequest(f"no sender {sender} in this sort: senders are 0 to {self.senders - 1}")
        self.sender_done(sender)

    def bins_app(self) -> Callable[..., Awaitable[None]]:
        """A bare ASGI app for ``PUT /v1/bins/{bucket}``: each body goes straight into the bucket's buffer."""

        async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                      send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
            if scope["type"] != "http":
                return

            async def answer(status: int, message: str = "") -> None:
                await _answer(send, status, "bad_bin", message)

            job = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("job", [""])[0]
            if self.job_id and job != self.job_id:  # a late bin of an earlier sort must not land in this one
                await answer(409, f"this worker runs sort {self.job_id}, not {job[:64] or '(none)'}")
                return
            path = scope["path"].rstrip("/").rsplit("/", 1)[-1]
            headers = dict(scope["headers"])
            try:
                bucket = self.buckets[int(path)]
                length = int(headers[b"content-length"])
            except (KeyError, ValueError):
                await answer(400, f"no owned bucket {path[:20]!r} here, or no Content-Length")
                return
            if scope["method"] != "PUT" or length % RECORD:
                await answer(400, "PUT whole 100-byte records")
                return
            if length > self.max_bin:
                await answer(413, f"a bin of {length} bytes is over this sort's largest, {self.max_bin}")
                return
            view = bucket.reserve(length)
            target = memoryview(bytearray(length)) if view is None else view
            pos = 0
            while True:
                message = await receive()
                chunk = message.get("body", b"")
                target[pos:pos + len(chunk)] = chunk
                pos += len(chunk)
                if not message.get("more_body"):
                    break
            if view is None:
                bucket.overflow.append(bytes(target))
                bucket.records += length // RECORD
            self.bytes_received += length
            await answer(200)

        return app


class _Shuffler:
    """Deals records into bins and sends full bins to their owners, bounded per receiver."""

    def __init__(self, job: Job, me: int, receiver: _Receiver, pool: HTTPPool) -> None:
        self.job = job
        self.me = me
        self.receiver = receiver
        self.pool = pool
        self.boundaries = [bytes.fromhex(b) for b in job.boundaries]
        self.pending: dict[int, list[Records]] = {b: [] for b in range(len(job.owners))}
        self.pending_bytes = dict.fromkeys(self.pending, 0)
        self.slots = {w: asyncio.Semaphore(job.bins_in_flight) for w in range(len(job.workers))}
        self.sends: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.sent_bytes = 0

    async def deal(self, data: bytes | bytearray | memoryview) -> None:
        if self.failure is not None:
            raise self.failure
        for bucket, records in enumerate(partition(as_records(data), self.boundaries)):
            if not len(records):
                continue
            self.pending[bucket].append(records)
            self.pending_bytes[bucket] += records.nbytes
            if self.pending_bytes[bucket] >= self.job.bin_bytes:
                await self._flush(bucket)

    async def _flush(self, bucket: int) -> None:
        pieces = self.pending[bucket]
        if not pieces:
            return
        self.pending[bucket], self.pending_bytes[bucket] = [], 0
        owner = self.job.owners[bucket]
        if owner == self.me:  # our own bucket: no network
            for piece in pieces:
                self.receiver.buckets[bucket].add(piece.reshape(-1).data)
            return
        body = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        await self.slots[owner].acquire()  # blocks dealing while this receiver has enough in flight
        task = asyncio.create_task(self._send(owner, bucket, body))
        self.sends.add(task)
        task.add_done_callback(self.sends.discard)

    async def _send(self, owner: int, bucket: int, body: Records) -> None:
        try:
            resp = await self.pool.request(
                "PUT", f"{self.job.workers[owner]}/v1/bins/{bucket}?sender={self.me}&job={self.job.job_id}",
                body=body.reshape(-1).data, headers=auth_headers())
            if resp.status != 200:
                raise RuntimeError(f"worker {owner} refused a bin: {resp.status} {bytes(resp.body)[:200]!r}")
            self.sent_bytes += body.nbytes
        except BaseException as exc:  # noqa: BLE001 - kept and raised by the dealing loop
            if self.failure is None:
                self.failure = RuntimeError(f"cannot send a bin to worker {owner} at {self.job.workers[owner]}: "
                                            f"{exc}")
        finally:
            self.slots[owner].release()

    async def finish(self) -> None:
        for bucket in self.pending:
            await self._flush(bucket)
        while self.sends:
            await asyncio.gather(*list(self.sends))
        if self.failure is not None:
            raise self.failure


async def run_worker(head: str, *, host: str = "127.0.0.1", advertise: str = "", throttle: float = 1.0,
                     job: str = "", sock: socket.socket | None = None, service_pid: int = 0,
                     service_url: str = "") -> int:
    """Serve bins, register with the head at ``head``, and do the work. Returns an exit code.

    A worker service (:mod:`apps.minutesort._service`) runs this in a child
    process per sort: it passes the sort's ``job`` id, the listening socket
    for bins (``sock``, bound once by the service), its own pid and URL;
    the worker stops the sort if that process dies.
    """
    import uvicorn

    receiver_ready: asyncio.Future[_Receiver] = asyncio.get_running_loop().create_future()
    app: FastAPI = create_app("fds-minutesort worker", "Receives bins of records for the buckets it owns.",
                              role="minutesort-worker")

    @app.post("/v1/senders/{sender}/done", tags=["sort"], summary="A sender has sent every bin it will send.")
    async def sender_done(sender: int, job: str = "") -> Response:
        try:
            receiver = await asyncio.wait_for(asyncio.shield(receiver_ready), _RECEIVER_WAIT)
        except TimeoutError:
            raise Unavailable("this worker has no job yet; retry", code="not_ready") from None
        receiver.sender_done_for(job, sender)
        return json_response({})

    async def bins(scope: dict[str, Any], receive: Any, send: Any) -> None:
        # A fast peer may send its first bin before this worker has fetched the job.
        try:
            receiver = await asyncio.wait_for(asyncio.shield(receiver_ready), _RECEIVER_WAIT)
        except TimeoutError:
            await _answer(send, 503, "not_ready", "this worker has no job yet; retry")
            return
        await receiver.bins_app()(scope, receive, send)

    app.mount("/v1/bins", cast(Any, bins))
    sock = sock if sock is not None else bind_socket(host, 0)
    url = advertise or url_of(sock, host)
    server = uvicorn.Server(uvicorn.Config(app, loop="none", http="httptools", lifespan="off", access_log=False,
                                           log_level="warning", timeout_keep_alive=120, timeout_graceful_shutdown=2))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    http = http_client(60.0)
    pool = bins_pool(120.0)
    try:
        return await _work(head, Register(url=url, pid=os.getpid(), job=job, service=service_url), http, pool,
                           receiver_ready, throttle, service_pid)
    finally:
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        await http.aclose()
        await pool.aclose()


async def _post(http: httpx.AsyncClient, url: str, model: Any = None) -> dict[str, Any]:
    resp = await http.post(url, content=model.model_dump_json() if model is not None else b"",
                           headers={"content-type": "application/json"})
    if resp.status_code != 200:
        raise RuntimeError(f"{url}: {resp.status_code} {resp.text[:300]}")
    result: dict[str, Any] = resp.json()
    return result


async def _join(head: str, me: Register, http: httpx.AsyncClient) -> tuple[int, float, Job]:
    """Register with the head and wait for the job: (this worker's index, its throttle, the job)."""
    deadline = time.monotonic() + 120
    while True:  # the head may still be starting (remote workers are started independently)
        try:
            registered = Registered.model_validate(
                await _post(http, f"{head}/v1/workers", me))
            break
        except httpx.TransportError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach the head at {head}: {exc}") from None
            await asyncio.sleep(0.2)
    while True:  # the job is fixed once every worker has registered
        try:
            resp = await http.get(f"{head}/v1/job")
        except httpx.TransportError as exc:
            raise RuntimeError(f"lost the head at {head} while waiting for the job: {exc}") from None
        if resp.status_code == 200:
            return registered.index, registered.throttle, Job.model_validate_json(resp.content)
        if resp.status_code != 503:  # the head gave up on this sort before it began
            raise RuntimeError(f"the head at {head} has no job for this worker: {resp.status_code} {resp.text[:300]}")
        await asyncio.sleep(0.05)


async def _work(head: str, registration: Register, http: httpx.AsyncClient, pool: HTTPPool,
                receiver_ready: asyncio.Future[_Receiver], throttle: float, service_pid: int) -> int:
    try:
        me, head_throttle, job = await _join(head, registration, http)
    except RuntimeError as exc:
        log.error("worker at %s: %s", registration.url, exc)
        return 1
    throttle = max(throttle, head_throttle)
    owned = {b: job.expected_records[b] for b, owner in enumerate(job.owners) if owner == me}
    receiver = _Receiver(owned, senders=len(job.workers), job_id=job.job_id,
                         max_bin=job.bin_bytes + job.tract_size)  # a bin is flushed once over bin_bytes
    receiver_ready.set_result(receiver)
    aborted: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def tell_head(reason: str) -> None:
        log.error(reason)
        try:
            await http.post(f"{head}/v1/abort", json={"reason": reason})
        except httpx.HTTPError:
            pass

    async def beat() -> None:
        while True:
            await asyncio.sleep(0.5)
            if service_pid and os.getppid() != service_pid:
                # The standing worker this process sorts for is gone (killed, crashed): the sort cannot
                # count on this worker any more, and nobody would collect this process.
                reason = (f"worker {me} (standing worker {registration.service or registration.url}): its service "
                          f"(pid {service_pid}) died mid-sort")
                await tell_head(reason)
                aborted.set_result(reason)
                return
            try:
                answer = Beat.model_validate(await _post(http, f"{head}/v1/workers/{me}/beat"))
            except (httpx.HTTPError, RuntimeError) as exc:
                answer = Beat(abort=f"lost the head at {head}: {exc}")
            if answer.abort and not aborted.done():
                aborted.set_result(answer.abort)
                return

    beating = asyncio.create_task(beat())
    main = asyncio.create_task(_sort(job, me, http, pool, receiver, head, throttle))
    try:
        waiting: set[asyncio.Future[Any]] = {main, aborted}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if aborted.done():
            main.cancel()
            log.error("worker %d: run aborted: %s", me, aborted.result())
            return 1
        try:
            main.result()
        except Exception as exc:  # noqa: BLE001 - every failure stops the run with its reason
            await tell_head(f"worker {me}: {type(exc).__name__}: {exc}")
            return 1
        return 0
    finally:
        beating.cancel()
        await asyncio.gather(beating, main, return_exceptions=True)


async def _sort(job: Job, me: int, http: httpx.AsyncClient, pool: HTTPPool, receiver: _Receiver, head: str,
                throttle: float) -> None:
    times: dict[str, float] = {}
    started = time.perf_counter()
    shuffler = _Shuffler(job, me, receiver, pool)
    tracts_read = 0
    async with Client(job.metaserver, max_in_flight=job.write_in_flight) as fds:
        blob = await fds.open_blob(job.input_blob)

        async def next_unit() -> Unit:
            return Unit.model_validate(await _post(http, f"{head}/v1/work", WorkRequest(worker=me)))

        upcoming = asyncio.create_task(next_unit())
        while True:
            unit = await upcoming
            if unit.abort:
                raise RuntimeError(unit.abort)
            if not unit.count:
                break
            upcoming = asyncio.create_task(next_unit())  # ask for the next while this one is read
            unit_started = time.perf_counter()
            async for index, data in blob.read_tracts(range(unit.first, unit.first + unit.count)):
                if len(data) % RECORD:
                    raise ValueError(f"input tract {index} holds {len(data)} bytes, not whole {RECORD}-byte "
                                     "records: sort inputs written by `fds-minutesort gen` (each tract holds whole "
                                     "records)")
                await shuffler.deal(data)
                tracts_read += 1
            if throttle > 1.0:  # a deliberately slow worker, for the straggler experiment
                await asyncio.sleep((throttle - 1.0) * (time.perf_counter() - unit_started))
        await shuffler.finish()
        for peer, peer_url in enumerate(job.workers):
            if peer == me:
                receiver.sender_done(me)
            else:
                resp = await http.post(f"{peer_url}/v1/senders/{me}/done", params={"job": job.job_id})
                if resp.status_code != 200:
                    raise RuntimeError(f"worker {peer} did not take the end-of-bins notice: {resp.text[:200]}")
        await _post(http, f"{head}/v1/workers/{me}/done")
        times["read_shuffle"] = time.perf_counter() - started
        await receiver.complete.wait()
        times["barrier_wait"] = time.perf_counter() - started - times["read_shuffle"]

        outputs: dict[int, str] = {}
        records: dict[int, int] = {}
        sort_seconds = write_seconds = 0.0
        per_tract = job.tract_size // RECORD
        loop = asyncio.get_running_loop()
        for bucket_index, bucket in sorted(receiver.buckets.items()):
            t0 = time.perf_counter()
            received = bucket.all_records()
            order = await loop.run_in_executor(None, argsort_records, received)
            t1 = time.perf_counter()
            sort_seconds += t1 - t0
            name = f"{job.output_prefix}{bucket_index:08x}" if job.output_prefix else None
            output = await fds.create_blob(name)
            tracts = -(-len(received) // per_tract)

            async def gathered(rows: Records = received, order: Any = order,
                               tracts: int = tracts) -> AsyncIterator[tuple[int, bytearray]]:
                # Move the rows into sorted order one output tract at a time, while earlier tracts are
                # written: no second bucket-sized buffer, and the gather overlaps the writes.
                for t in range(tracts):
                    piece = order[t * per_tract:(t + 1) * per_tract]
                    yield t, await loop.run_in_executor(None, gather_rows, rows, piece)

            if tracts:
                await output.extend(tracts)
                await output.write_tracts(gathered())
            write_seconds += time.perf_counter() - t1
            outputs[bucket_index] = output.guid
            records[bucket_index] = len(received)
            del received, order
        times["sort"] = sort_seconds  # the argsort; the row moves are part of "write"
        times["gather_write"] = write_seconds
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    await _post(http, f"{head}/v1/workers/{me}/finished", Finished(
        worker=me, buckets=outputs, records=records, tracts_read=tracts_read,
        bytes_received=receiver.bytes_received, peak_rss_bytes=peak, seconds=times))
