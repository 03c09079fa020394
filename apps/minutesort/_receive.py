"""A worker's inbox: the buckets it holds in memory, filled by peers' bins, within its memory for records.

Every bin lands straight in its bucket's buffer (one piece of memory per
bucket, sized for the expected bucket: from the standing worker's warm arena
when it lends one, else fresh memory faulted in as bins land;
:class:`apps.minutesort._arena.Memory`), tagged
with the attempt that sent it. The sort takes only the attempts the head
accepted (:meth:`Receiver.take`): bins of a failed or cancelled attempt, or
of a worker declared dead, are dropped there, wherever they landed.

The receiver never holds more records than its **capacity** (from the
sort's memory plan): a bin that would go over is refused with 507, and its
sender writes it to fds instead (it spills). Buckets are also handed over
whole to another worker that will sort them (``GET /v1/buckets/{b}``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import numpy as np

from apps.minutesort._arena import Memory
from apps.minutesort._gensort import RECORD_SIZE
from apps.minutesort._records import Records, as_records
from fds.errors import FDSError

__all__ = ["Receiver", "answer"]

_CHUNK = 8 << 20
"""A handed-over bucket is sent in pieces of this size (so the transport never copies all of it)."""


async def answer(send: Callable[[dict[str, Any]], Awaitable[None]], status: int, code: str = "",
                 message: str = "") -> None:
    """A response from a bare ASGI app: ``{}``, or the fds error body."""
    body = FDSError(message, code=code).to_body() if message else b"{}"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@dataclass
class _Bucket:
    buffer: memoryview
    fill: int = 0
    extents: list[tuple[int, int, int]] = field(default_factory=list)
    """(attempt, start, length) in ``buffer``; attempt 0: a bin that never arrived whole."""
    overflow: list[tuple[int, bytes]] = field(default_factory=list)

    def held(self) -> int:
        return self.fill + sum(len(data) for _, data in self.overflow)


class Receiver:
    """The buckets this worker holds for one sort."""

    def __init__(self, job_id: str, capacity: int, bucket_bytes: int, max_bin: int,
                 memory: Memory | None = None) -> None:
        self.job_id = job_id
        self.memory = memory or Memory()
        self.capacity = capacity
        self.bucket_bytes = bucket_bytes
        self.max_bin = max_bin
        self.buckets: dict[int, _Bucket] = {}
        self.handed_over: set[int] = set()
        self.held = 0
        self.peak_held = 0
        self.bytes_received = 0

    # -- bins ------------------------------------------------------------------------------------------
    def reserve(self, bucket: int, attempt: int, nbytes: int) -> tuple[memoryview, int, int] | None:
        """Room for a bin: (the view to fill, bucket, extent index); None if it would go over the capacity."""
        if self.held + nbytes > self.capacity:
            return None
        held = self.buckets.get(bucket)
        if held is None:
            size = max(int(self.bucket_bytes * 1.15) // RECORD_SIZE * RECORD_SIZE, nbytes)
            held = self.buckets[bucket] = _Bucket(self.memory.take(min(size, max(self.capacity, nbytes))))
            self.handed_over.discard(bucket)
        self.held += nbytes
        self.peak_held = max(self.peak_held, self.held)
        if held.fill + nbytes <= len(held.buffer):
            start = held.fill
            held.fill += nbytes
            held.extents.append((attempt, start, nbytes))
            return held.buffer[start:start + nbytes], bucket, len(held.extents) - 1
        piece = bytearray(nbytes)
        held.overflow.append((attempt, b""))  # replaced once filled
        return memoryview(piece), bucket, -len(held.overflow)

    def landed(self, bucket: int, index: int, view: memoryview, whole: bool) -> None:
        """The bin reserved at ``index`` has arrived (``whole``), or its sender vanished midway."""
        held = self.buckets[bucket]
        if index < 0:
            attempt = held.overflow[-index - 1][0]
            held.overflow[-index - 1] = (attempt if whole else 0, bytes(view) if whole else b"")
            if not whole:
                self.held -= len(view)
        elif not whole:
            _, start, length = held.extents[index]
            held.extents[index] = (0, start, length)
        if whole:
            self.bytes_received += len(view)

    def add(self, bucket: int, attempt: int, data: memoryview) -> bool:
        """This worker's own records for a bucket it holds; False if they do not fit (spill them)."""
        reserved = self.reserve(bucket, attempt, len(data))
        if reserved is None:
            return False
        view, _, index = reserved
        view[:] = data
        self.landed(bucket, index, view, True)
        return True

    # -- sorting ---------------------------------------------------------------------------------------
    def take(self, bucket: int, accept: set[int]) -> Records:
        """The bucket's records from the accepted attempts, as one array (compacted in place if need be).

        The bucket stays held until :meth:`release`.
        """
        held = self.buckets.get(bucket)
        if held is None:
            return np.empty((0, RECORD_SIZE), dtype=np.uint8)
        write = 0
        kept = []
        for attempt, start, length in held.extents:
            if attempt not in accept:
                continue
            if start != write:
                held.buffer[write:write + length] = held.buffer[start:start + length]  # memmove: write < start
            kept.append((attempt, write, length))
            write += length
        held.extents, held.fill = kept, write
        extra = [data for attempt, data in held.overflow if attempt in accept]
        if not extra:
            return as_records(held.buffer[:write])
        room = len(held.buffer) - write
        if sum(map(len, extra)) <= room:
            for data in extra:
                held.buffer[write:write + len(data)] = data
                write += len(data)
            held.overflow, held.fill = [], write
            return as_records(held.buffer[:write])
        return np.concatenate([as_records(held.buffer[:write]), *(as_records(d) for d in extra)])

    def release(self, bucket: int) -> None:
        """Forget a bucket (sorted, or handed over): its memory goes back to the arena, or to the system."""
        held = self.buckets.pop(bucket, None)
        if held is not None:
            self.held -= held.held()
            self.memory.give(held.buffer)  # fresh memory is unmapped once the last array over it is gone

    # -- HTTP ------------------------------------------------------------------------------------------
    def bins_app(self) -> Callable[..., Awaitable[None]]:
        """A bare ASGI app for ``PUT /v1/bins/{bucket}``: each body goes straight into the bucket's buffer."""

        async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                      send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
            if scope["type"] != "http":
                return
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            job = query.get("job", [""])[0]
            if job != self.job_id:  # a late bin of an earlier sort must not land in this one
                await answer(send, 409, "bad_bin", f"this worker runs sort {self.job_id}, not {job[:64] or '(none)'}")
                return
            path = scope["path"].rstrip("/").rsplit("/", 1)[-1]
            try:
                bucket = int(path)
                attempt = int(query.get("attempt", [""])[0])
                length = int(dict(scope["headers"])[b"content-length"])
            except (KeyError, ValueError):
                await answer(send, 400, "bad_bin", f"bin for bucket {path[:20]!r}: give the bucket number, "
                                                   "?attempt=N and a Content-Length")
                return
            if scope["method"] != "PUT" or length % RECORD_SIZE or bucket < 0 or attempt < 1:
                await answer(send, 400, "bad_bin", "PUT whole 100-byte records to a bucket >= 0, with an attempt >= 1")
                return
            if length > self.max_bin:
                await answer(send, 413, "bad_bin", f"a bin of {length} bytes is over this sort's largest, "
                                                   f"{self.max_bin}")
                return
            reserved = self.reserve(bucket, attempt, length)
            if reserved is None:
                await answer(send, 507, "full", f"this worker holds {self.held} bytes of records, its capacity is "
                                                f"{self.capacity}: write the bin to fds")
                return
            view, _, index = reserved
            pos = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.landed(bucket, index, view, False)
                    return
                chunk = message.get("body", b"")
                if pos + len(chunk) > length:
                    self.landed(bucket, index, view, False)
                    await answer(send, 400, "bad_bin", "the body is longer than its Content-Length")
                    return
                view[pos:pos + len(chunk)] = chunk
                pos += len(chunk)
                if not message.get("more_body"):
                    break
            whole = pos == length
            self.landed(bucket, index, view, whole)
            await answer(send, 200 if whole else 400, "" if whole else "bad_bin",
                         "" if whole else f"the body ended after {pos} of {length} bytes")

        return app

    def hand_over_app(self) -> Callable[..., Awaitable[None]]:
        """A bare ASGI app for ``GET /v1/buckets/{bucket}?accept=A,B``: send a bucket, then forget it."""

        async def app(scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                      send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
            if scope["type"] != "http":
                return
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("job", [""])[0] != self.job_id:
                await answer(send, 409, "wrong_job", f"this worker runs sort {self.job_id}")
                return
            try:
                bucket = int(scope["path"].rstrip("/").rsplit("/", 1)[-1])
                accept = {int(a) for a in query.get("accept", [""])[0].split(",") if a}
            except ValueError:
                await answer(send, 400, "bad_request", "GET /v1/buckets/N?job=ID&accept=A,B,...")
                return
            if bucket in self.handed_over or bucket not in self.buckets:
                await answer(send, 410, "gone", f"bucket {bucket} is not here (handed over, or never held)")
                return
            data = self.take(bucket, accept).reshape(-1).data
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/octet-stream"),
                                    (b"content-length", str(len(data)).encode())]})
            for start in range(0, max(len(data), 1), _CHUNK):
                await send({"type": "http.response.body", "body": bytes(data[start:start + _CHUNK]),
                            "more_body": start + _CHUNK < len(data)})
            self.handed_over.add(bucket)
            self.release(bucket)

        return app
