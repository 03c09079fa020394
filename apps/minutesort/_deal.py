"""Dealing one unit's records into buckets: bins to each bucket's home worker, or to fds when it spills.

One :class:`Dealer` per task (an attempt). Records are split by key range
(:func:`apps.minutesort._records.partition`, vectorised) and held per
bucket until a bin's worth, then sent to the bucket's home with the
attempt's id; at most ``bins_in_flight`` bins go to one receiver at a time
(the RTS/CTS idea: a slow receiver slows its senders rather than flooding).
A bucket homed here goes straight into this worker's own receiver.

A bucket that spills (its home is -1, or its home answered 507: its
memory for records is full) has its bin written to fds instead, as one
tract appended to the bucket's spill blob (``extend`` gives each writer its
own tract, so every worker appends at once without coordinating). The
task's :meth:`Dealer.finish` returns, per bucket, how many records went to
the home's memory and which tracts went to fds: the commit the head
records. Nothing is flushed across tasks, so each bin belongs to exactly
one attempt.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from apps.minutesort._auth import auth_headers
from apps.minutesort._protocol import Job, Part, Task, spill_guid
from apps.minutesort._receive import Receiver
from apps.minutesort._records import Records, as_records, partition
from fds.client import Blob, BlobExists, BlobNotFound, Client
from fds.httpclient import HTTPPool

__all__ = ["Dealer", "Shuffle", "SpillBlobs"]

Bytes = bytes | bytearray | memoryview


class SpillBlobs:
    """Each spilling bucket's blob in fds (created by whoever needs it first), and appending pieces to it."""

    def __init__(self, fds: Client, prefix: str, writes: int) -> None:
        self.fds = fds
        self.prefix = prefix
        self._blobs: dict[int, asyncio.Task[Blob]] = {}
        self._writes = asyncio.Semaphore(max(1, writes))
        self.bytes_written = 0

    def blob(self, bucket: int) -> asyncio.Task[Blob]:
        if bucket not in self._blobs:
            self._blobs[bucket] = asyncio.ensure_future(self._open(spill_guid(self.prefix, bucket)))
        return self._blobs[bucket]

    async def _open(self, guid: str) -> Blob:
        try:
            return await self.fds.open_blob(guid)
        except BlobNotFound:
            try:
                return await self.fds.create_blob(guid)
            except BlobExists:  # another worker created it meanwhile
                return await self.fds.open_blob(guid)

    async def append(self, bucket: int, data: Bytes) -> int:
        """Write ``data`` as a new tract of the bucket's spill blob; returns the tract's index."""
        blob = await self.blob(bucket)
        async with self._writes:
            index = await blob.extend(1)
            await blob.write_tract(index, data)
        self.bytes_written += len(data)
        return index


@dataclass
class Shuffle:
    """What the dealers of one worker's tasks share, for the whole sort: made once, by :meth:`start`."""

    job: Job
    me: int
    """This worker's index."""
    receiver: Receiver
    """This worker's own receiver: buckets homed here go straight into it."""
    pool: HTTPPool
    spills: SpillBlobs
    slots: dict[int, asyncio.Semaphore]
    """Bins in flight to each worker: ``bins_in_flight`` at most."""
    full: set[int] = field(default_factory=set)
    """Buckets whose home answered 507 (the worker clears it when the epoch goes up: buckets have new homes)."""

    @classmethod
    def start(cls, job: Job, me: int, receiver: Receiver, pool: HTTPPool, fds: Client) -> Shuffle:
        return cls(job, me, receiver, pool, SpillBlobs(fds, job.spill_prefix, job.write_in_flight),
                   {w: asyncio.Semaphore(job.bins_in_flight) for w in range(len(job.workers))})


class Dealer:
    """Deals one task's records; :meth:`finish` flushes them and says where each bucket's records went."""

    def __init__(self, shuffle: Shuffle, task: Task) -> None:
        self.shuffle = shuffle
        self.task = task
        self.boundaries = [bytes.fromhex(b) for b in shuffle.job.boundaries]
        self.only = set(task.only) if task.only is not None else None
        self.pending: dict[int, list[Records]] = defaultdict(list)
        self.pending_bytes: dict[int, int] = defaultdict(int)
        self.parts: dict[int, Part] = {}
        self.sends: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None
        self.sent_bytes = 0

    def _part(self, bucket: int) -> Part:
        if bucket not in self.parts:
            self.parts[bucket] = Part()
        return self.parts[bucket]

    async def deal(self, data: Bytes) -> None:
        if self.failure is not None:
            raise self.failure
        records = as_records(data)
        groups = partition(records, self.boundaries) if self.boundaries else [records]
        for bucket, group in enumerate(groups):
            if not len(group) or (self.only is not None and bucket not in self.only):
                continue
            self.pending[bucket].append(group)
            self.pending_bytes[bucket] += group.nbytes
            if self.pending_bytes[bucket] >= self.shuffle.job.bin_bytes:
                await self._flush(bucket)

    async def _flush(self, bucket: int) -> None:
        pieces = self.pending.pop(bucket, [])
        self.pending_bytes.pop(bucket, None)
        if not pieces:
            return
        home = self.task.homes[bucket]
        if home == self.shuffle.me and bucket not in self.shuffle.full:
            left: list[Records] = []
            for piece in pieces:
                if not left and self.shuffle.receiver.add(bucket, self.task.attempt, piece.reshape(-1).data):
                    self._part(bucket).home_records += len(piece)
                else:
                    left.append(piece)
            if not left:
                return
            self.shuffle.full.add(bucket)
            pieces = left
        body = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
        if home < 0 or bucket in self.shuffle.full:
            self._start(self._spill(bucket, body))
            return
        await self.shuffle.slots[home].acquire()  # blocks dealing while this receiver has enough in flight
        self._start(self._send(home, bucket, body))

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self.sends.add(task)
        task.add_done_callback(self.sends.discard)

    async def _send(self, home: int, bucket: int, body: Records) -> None:
        try:
            job = self.shuffle.job
            url = (f"{job.workers[home]}/v1/bins/{bucket}?job={job.job_id}&attempt={self.task.attempt}"
                   f"&sender={self.shuffle.me}")
            resp = await self.shuffle.pool.request("PUT", url, body=body.reshape(-1).data, headers=auth_headers())
            if resp.status == 200:
                self._part(bucket).home_records += len(body)
                self.sent_bytes += body.nbytes
            elif resp.status == 507:  # its memory for records is full: this bucket spills from now on
                self.shuffle.full.add(bucket)
                await self._spill(bucket, body)
            else:
                raise RuntimeError(f"worker {home} refused a bin: {resp.status} {bytes(resp.body)[:200]!r}")
        except BaseException as exc:  # noqa: BLE001 - kept and raised by the dealing loop
            if self.failure is None:
                self.failure = RuntimeError(f"cannot send a bin to worker {home} at {self.shuffle.job.workers[home]}: "
                                            f"{exc}")
        finally:
            self.shuffle.slots[home].release()

    async def _spill(self, bucket: int, body: Records) -> None:
        try:
            tract = await self.shuffle.spills.append(bucket, body.reshape(-1).data)
            self._part(bucket).pieces.append((tract, len(body)))
        except BaseException as exc:  # noqa: BLE001 - kept and raised by the dealing loop
            if self.failure is None:
                self.failure = RuntimeError(f"cannot write bucket {bucket}'s bin to fds: {exc}")

    async def finish(self) -> dict[int, Part]:
        """Flush every bucket, wait for every bin to be taken; the task's parts (raises if a bin was not)."""
        for bucket in list(self.pending):
            await self._flush(bucket)
        while self.sends:
            await asyncio.gather(*list(self.sends))
        if self.failure is not None:
            raise self.failure
        return self.parts

    async def cancel(self) -> None:
        """Drop everything in flight (the task no longer counts)."""
        for task in list(self.sends):
            task.cancel()
        await asyncio.gather(*list(self.sends), return_exceptions=True)
        self.pending.clear()
