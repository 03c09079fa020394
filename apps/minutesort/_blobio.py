"""Records in fds blobs: input generation and ordered reading.

A record blob holds whole 100-byte records: every tract but the last holds
``tract_size // 100`` of them (8,388,600 bytes of an 8 MiB tract), so a
worker can take any tract and deal its records without looking at another.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, ProcessPoolExecutor

import numpy as np

from apps.minutesort._gensort import RECORD_SIZE, generate_into
from apps.minutesort._valsort import checksum
from fds.buffers import uninitialized
from fds.client import Blob, Client

__all__ = ["records_per_tract", "generate_blob", "iter_record_tracts"]


def records_per_tract(tract_size: int) -> int:
    """How many whole records one tract holds."""
    return tract_size // RECORD_SIZE


def _generate_tract(start: int, count: int, ascii: bool, skew: bool, with_checksum: bool) -> tuple[bytearray, int]:
    buf = uninitialized(count * RECORD_SIZE)
    records = np.frombuffer(buf, np.uint8).reshape(count, RECORD_SIZE)
    generate_into(records, start, ascii=ascii, skew=skew)
    return buf, checksum(records) if with_checksum else 0


async def generate_blob(client: Client, count: int, *, start: int = 0, ascii: bool = False, skew: bool = False,
                        guid: str | None = None, workers: int = 2,
                        progress: Callable[[int], None] | None = None,
                        checksums: list[int] | None = None) -> Blob:
    """Write records ``start .. start+count-1`` of gensort's sequence into a new blob.

    Tracts are generated in ``workers`` processes (generation is CPU work)
    while earlier tracts are being written, with a bounded number waiting.
    With ``checksums``, each tract's valsort checksum is appended to it (the
    generator computes it while the records are in cache).
    """
    if count < 0:
        raise ValueError(f"record count must be 0 or more, not {count}")
    table = await client.table()
    per_tract = records_per_tract(table.tract_size)
    tracts = -(-count // per_tract)
    blob = await client.create_blob(guid)
    if tracts:
        await blob.extend(tracts)
    loop = asyncio.get_running_loop()
    executor: Executor = ProcessPoolExecutor(max_workers=max(1, workers))

    async def items() -> AsyncIterator[tuple[int, bytearray]]:
        pending: deque[tuple[int, asyncio.Future[tuple[bytearray, int]]]] = deque()
        next_tract = 0
        while next_tract < tracts or pending:
            while next_tract < tracts and len(pending) < 2 * max(1, workers):
                first = next_tract * per_tract
                n = min(per_tract, count - first)
                future = loop.run_in_executor(executor, _generate_tract, start + first, n, ascii, skew,
                                              checksums is not None)
                pending.append((next_tract, future))
                next_tract += 1
            index, future = pending.popleft()
            data, crc = await future
            if checksums is not None:
                checksums.append(crc)
            yield index, data

    try:
        await blob.write_tracts(items(), progress=progress)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return blob


async def iter_record_tracts(blob: Blob) -> AsyncIterator[bytes | bytearray]:
    """A record blob's tracts in order, each a whole number of records."""
    async for index, data in blob.read_tracts(range(await blob.size())):
        if len(data) % RECORD_SIZE:
            raise ValueError(f"tract {index} of blob {blob.guid} holds {len(data)} bytes, not whole "
                             f"{RECORD_SIZE}-byte records; is this a record blob?")
        yield data
