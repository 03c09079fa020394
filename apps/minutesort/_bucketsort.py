"""Sort records held in memory and write them to a new blob: the last step of every sort, big or small.

The order is computed first (:func:`apps.minutesort._records.argsort_records`:
8 bytes a record); then the rows are moved into order one output tract at a
time, each tract written while the next is gathered, with many writes in
flight. No second copy of the records is ever made: fresh memory is slow
to fault in on this machine (0.25-0.4 GB/s), and a second bucket-sized
buffer cost more than the sort itself. For the same reason the tracts in
flight are a fixed set of buffers, each refilled once its write is done,
and a worker passes its :class:`apps.minutesort._arena.Memory` so that the
order and those buffers are reused from bucket to bucket (and come from
its service's warm arena, when it has one).

Output tracts hold whole records (``tract_size // 100`` of them), as
``fds-minutesort gen`` writes its input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from apps.minutesort._arena import Memory
from apps.minutesort._gensort import RECORD_SIZE
from apps.minutesort._records import Records, argsort_records
from fds.buffers import uninitialized
from fds.client import Blob, Client

__all__ = ["gather_rows", "write_sorted", "discard_output"]

Buffer = bytearray | memoryview


def gather_rows(records: Records, order: Any, out: Buffer | None = None) -> Buffer:
    """``records[order]`` as the bytes of one output tract, into ``out`` (else a fresh heap buffer)."""
    if out is None:
        out = uninitialized(len(order) * RECORD_SIZE)
    rows = records.reshape(-1).view(f"V{RECORD_SIZE}")
    np.take(rows, order, out=np.frombuffer(out, dtype=f"V{RECORD_SIZE}", count=len(order)), mode="clip")
    return out


async def write_sorted(fds: Client, records: Records, guid: str | None, tract_size: int,
                       times: dict[str, float] | None = None, output: Blob | None = None,
                       pace: float = 1.0, extended: bool = False, memory: Memory | None = None) -> Blob:
    """Sort ``records`` and write them, in order, into a new blob named ``guid`` (or into ``output``).

    ``times`` gets the seconds spent computing the order (``sort``) and
    moving and writing the rows (``gather_write``) added to it. ``pace``
    above 1 makes every step that many times slower (straggler experiments).
    ``extended``: ``output`` has its tracts already. ``memory``: where the
    order and the tract buffers come from, kept for the next call.
    """
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    per_tract = tract_size // RECORD_SIZE
    tracts = -(-len(records) // per_tract)

    async def prepare(blob: Blob | None) -> Blob:
        if blob is None:
            blob = await fds.create_blob(guid)
        if tracts and not extended:
            await blob.extend(tracts)
        return blob

    preparing = asyncio.ensure_future(prepare(output))  # the output blob is made ready while the order is computed
    try:
        scratch = memory.order(len(records)) if memory is not None and len(records) > 1 else None
        if len(records) > 50_000:
            order = await loop.run_in_executor(None, argsort_records, records, scratch)
        else:  # a few milliseconds at most: not worth a thread hand-off
            order = argsort_records(records, scratch) if len(records) > 1 else np.arange(len(records), dtype=np.intp)
    except BaseException:
        preparing.cancel()
        raise
    if pace > 1.0:
        await asyncio.sleep((pace - 1.0) * (time.perf_counter() - started))
    sorted_at = time.perf_counter()
    output = await preparing
    if tracts and pace > 1.0:
        for t in range(tracts):  # a deliberately slow worker writes one tract at a time, and waits after each
            began = time.perf_counter()
            await output.write_tract(t, gather_rows(records, order[t * per_tract:(t + 1) * per_tract]))
            await asyncio.sleep((pace - 1.0) * (time.perf_counter() - began))
    elif tracts:
        count = min(tracts, fds.max_in_flight + 1)
        size = min(len(records), per_tract) * RECORD_SIZE
        buffers: Sequence[Buffer] = (memory.tracts(count, size) if memory is not None
                                     else [uninitialized(size) for _ in range(count)])
        await _write_in_order(output, records, order, per_tract, tracts, buffers)
    if times is not None:
        times["sort"] = times.get("sort", 0.0) + sorted_at - started
        times["gather_write"] = times.get("gather_write", 0.0) + time.perf_counter() - sorted_at
    return output


async def _write_in_order(output: Blob, records: Records, order: Any, per_tract: int, tracts: int,
                          buffers: Sequence[Buffer]) -> None:
    """Gather each output tract into a free buffer and write it; a buffer is free again once its write is done.

    As many writes in flight as there are buffers, less the one being
    gathered; the first failed write fails the rest.
    """
    loop = asyncio.get_running_loop()
    free: list[Buffer] = list(buffers)
    running: set[asyncio.Task[None]] = set()

    async def write(t: int, buffer: Buffer, nbytes: int) -> None:
        try:
            await output.write_tract(t, memoryview(buffer)[:nbytes])
        finally:
            free.append(buffer)

    async def settle(wait_for: Any) -> None:
        nonlocal running
        done, running = await asyncio.wait(running, return_when=wait_for)
        for task in done:
            task.result()

    try:
        for t in range(tracts):
            while not free:
                await settle(asyncio.FIRST_COMPLETED)
            buffer = free.pop()
            piece = order[t * per_tract:(t + 1) * per_tract]
            if len(piece) < 20_000:
                gather_rows(records, piece, buffer)
            else:  # rows are moved into order in a thread while earlier tracts are written
                await loop.run_in_executor(None, gather_rows, records, piece, buffer)
            running.add(asyncio.ensure_future(write(t, buffer, len(piece) * RECORD_SIZE)))
        while running:
            await settle(asyncio.FIRST_EXCEPTION)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)


async def discard_output(fds: Client, guid: str) -> None:
    """Delete an output blob that will not be used (a failed or superseded sort of a bucket), if it can.

    Best effort: the caller's own error (or the head's answer) is what to report, and the head deletes
    leftover outputs at the end of the sort too.
    """
    try:
        await fds.delete_blob(guid)
    except Exception:  # noqa: BLE001 - best effort, as said
        pass
