"""Small sorts in one process: read the whole blob, sort it in memory, write it; no workers, no shuffle.

For inputs small enough (megabytes), starting worker processes, shuffling
and coordinating cost far more than the sort itself. :func:`sort_blob`
does it all with one fds client: it creates the output blob while the
input is read, computes the order, and writes the output tracts with many
in flight. A standing worker service runs it in its own process for each
``POST /v1/solo`` (warm: its client keeps the table and its connections),
and :func:`apps.minutesort.sort` runs it in the caller's process when the
input is at most ``solo_bytes``.
"""

from __future__ import annotations

import asyncio
import time

from apps.minutesort._arena import anonymous
from apps.minutesort._bucketsort import discard_output, write_sorted
from apps.minutesort._gensort import RECORD_SIZE
from apps.minutesort._layout import Layout
from apps.minutesort._records import as_records
from apps.minutesort._types import SortResult, WorkerReport
from fds.client import Blob, BlobInfo, Client
from fds.errors import BadRequest, Conflict, FDSError
from fds.guid import parse_guid

__all__ = ["sort_blob", "solo_sort", "SoloServer", "TooLarge"]


async def sort_blob(fds: Client, input_blob: str, output: str | None = None, *,
                    info: BlobInfo | None = None) -> tuple[Blob, int, dict[str, float]]:
    """Sort the records of ``input_blob`` into a new blob (named ``output``, else random).

    Returns the output blob, the record count, and the seconds of each step.
    The blob may hold records across tract boundaries (any layout whose
    tracts all hold the same number of bytes but the last).
    """
    times: dict[str, float] = {}
    started = time.perf_counter()
    if info is None:
        info = await fds.stat(input_blob)
    source = Blob(fds, parse_guid(input_blob), info.incarnation)
    tract_size = (await fds.table()).tract_size
    per_tract = tract_size // RECORD_SIZE
    # The output's tracts, when the input's size says so: then it is created and extended while the input
    # is read, and only the writes are left after the sort.
    known = -(-info.length // RECORD_SIZE // per_tract) if info.length is not None else 1 if info.tracts == 1 else 0

    async def create(extend: asyncio.Future[int]) -> Blob:
        blob = await fds.create_blob(output)
        if await extend:
            await blob.extend(extend.result())
        return blob

    extend: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    if known:
        extend.set_result(known)
    created = asyncio.ensure_future(create(extend))
    try:
        stride = tract_size if info.length is not None else 0
        capacity = info.length if info.length is not None else info.tracts * tract_size
        buffer = anonymous(capacity) if capacity > 1 << 20 else memoryview(bytearray(capacity))
        filled = 0
        async for index, data in source.read_tracts(range(info.tracts)):
            if index == 0 and not stride:
                stride = len(data)
                if stride == per_tract * RECORD_SIZE and not extend.done():
                    known = info.tracts  # whole records per tract, as the output holds them: as many tracts
                    extend.set_result(known)
            want_full = index < info.tracts - 1
            if want_full and len(data) != stride:
                raise BadRequest(f"tract {index} of blob {input_blob} holds {len(data)} bytes, but tract 0 holds "
                                 f"{stride}: not one stream of records", code="not_records")
            start = index * stride
            buffer[start:start + len(data)] = data
            filled = start + len(data)
        if filled % RECORD_SIZE or (info.length is not None and filled != info.length):
            raise BadRequest(f"blob {input_blob} holds {filled} bytes, not a whole number of {RECORD_SIZE}-byte "
                             "records", code="not_records")
        times["read"] = time.perf_counter() - started
        if not extend.done():
            extend.set_result(0)  # extended after the sort
        records = as_records(buffer[:filled])
        blob = await created
        if known and known != -(-len(records) // per_tract):
            raise BadRequest(f"blob {input_blob} holds {len(records)} records, not what its length says",
                             code="not_records")
        await write_sorted(fds, records, None, tract_size, times, output=blob, extended=bool(known))
    except BaseException:
        if not extend.done():
            extend.set_result(0)
        created.cancel()
        if created.done() and not created.cancelled() and created.exception() is None:
            await discard_output(fds, created.result().guid)
        raise
    times["total"] = time.perf_counter() - started
    return blob, len(records), times


async def solo_sort(metaserver: str, layout: Layout, started: float) -> SortResult:
    """:func:`sort_blob` as a whole sort's result (one output blob, no workers)."""
    async with Client(metaserver) as fds:
        blob, records, times = await sort_blob(fds, layout.guid)
    return SortResult(input_blob=layout.guid, output_blobs=[blob.guid], records=records,
                      bytes=records * RECORD_SIZE, seconds=time.perf_counter() - started,
                      phases={"solo": times["total"]},
                      workers=[WorkerReport(worker=0, alive=True, tracts_read=layout.tracts, bytes_received=0,
                                            peak_rss_bytes=0, seconds=times, tracts_given=layout.tracts,
                                            buckets_sorted=1)],
                      bucket_records=[records], mode="solo")


class SoloServer:
    """Small sorts served by a standing worker in its own process: one warm fds client, a few at a time."""

    def __init__(self, metaserver: str, *, max_bytes: int, concurrent: int = 2) -> None:
        self.metaserver = metaserver
        self.max_bytes = max_bytes
        self._slots = asyncio.Semaphore(max(1, concurrent))
        self._client: Client | None = None
        self.sorts = 0

    async def sort(self, input_blob: str, output: str | None) -> tuple[Blob, int, dict[str, float]]:
        """Sort ``input_blob`` here; :class:`TooLarge` (413) above ``max_bytes``, saying what to do instead."""
        if not self.metaserver:
            raise Conflict("this standing worker has no metaserver set (metaserver in its config, or "
                           "--metaserver), so it cannot sort on its own", code="no_metaserver")
        if self._client is None:
            self._client = Client(self.metaserver)
        info = await self._client.stat(input_blob)
        size = info.length if info.length is not None else info.tracts * (await self._client.table()).tract_size
        if size > self.max_bytes:
            raise TooLarge(f"blob {input_blob} holds up to {size} bytes, more than this worker sorts alone "
                           f"({self.max_bytes}): sort it with workers (`fds-minutesort sort --worker-urls`)")
        async with self._slots:
            result = await sort_blob(self._client, input_blob, output, info=info)
        self.sorts += 1
        return result

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class TooLarge(FDSError):
    """413: the blob is too large to sort in one process; the message says what to do instead."""

    status = 413
    default_code = "too_large"
