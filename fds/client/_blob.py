"""A handle on one blob: tract I/O and the bulk helpers built on it."""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, BinaryIO

from fds.errors import BadRequest, FDSError, PastEnd
from fds.guid import format_guid
from fds.models import BlobInfo, ExtendResult

if TYPE_CHECKING:
    from fds.client._client import Client

__all__ = ["Blob", "Progress"]

Progress = Callable[[int], None]
"""Called with the number of bytes each finished tract moved."""

TractData = bytes | bytearray | memoryview


class Blob:
    """A blob in the cluster, by GUID. Cheap to create; holds no state but its name.

    All I/O is whole tracts (docs/design.md §1). Tract ``i`` may be written
    once the blob has more than ``i`` tracts: :meth:`extend` first.
    """

    def __init__(self, client: Client, guid: bytes, incarnation: int) -> None:
        self._client = client
        self.raw = guid
        self.guid = format_guid(guid)
        self.incarnation = incarnation
        """Which creation of this GUID the handle names: after a delete and re-create, old handles fail."""

    def __repr__(self) -> str:
        return f"Blob({self.guid!r})"

    # -- metadata ------------------------------------------------------------
    async def stat(self) -> BlobInfo:
        """Size in tracts, byte length if recorded, creation time."""
        return await self._client.stat(self.raw)

    async def size(self) -> int:
        """The number of tracts (FDS's GetBlobSize)."""
        return (await self.stat()).tracts

    async def extend(self, count: int = 1) -> int:
        """Add ``count`` tracts atomically; returns the first of them.

        Concurrent callers each get their own range: this is how many
        writers append to one blob without coordinating.
        """
        if count < 1:
            raise BadRequest(f"extend by at least 1 tract, not {count}")
        result = ExtendResult.model_validate(await self._client._meta("POST", self.raw, "/extend", {"count": count}))
        return result.first

    async def set_length(self, length: int) -> None:
        """Record the byte length of a blob written as a stream (all tracts full but the last)."""
        await self._client._meta("PATCH", self.raw, "", {"length": length})

    # -- single tracts -----------------------------------------------------------
    async def write_tract(self, index: int, data: TractData) -> None:
        """Write tract ``index`` to every replica; returns once all have it durably."""
        await self._client._write_tract(self.raw, self.incarnation, index, data)

    async def read_tract(self, index: int) -> bytes | bytearray:
        """Read tract ``index`` from one replica (failing over to the others)."""
        return await self._client._read_tract(self.raw, self.incarnation, index)

    # -- many tracts -------------------------------------------------------------
    async def write_tracts(self, items: Iterable[tuple[int, TractData]] | AsyncIterable[tuple[int, TractData]],
                           *, progress: Progress | None = None) -> int:
        """Write many tracts with up to ``max_in_flight`` requests outstanding; returns the count."""

        async def jobs() -> AsyncIterator[Awaitable[int]]:
            if isinstance(items, AsyncIterable):
                async for index, data in items:
                    yield self._write_counted(index, data, progress)
            else:
                for index, data in items:
                    yield self._write_counted(index, data, progress)

        return len(await _bounded(jobs(), self._client.max_in_flight))

    async def _write_counted(self, index: int, data: TractData, progress: Progress | None) -> int:
        await self.write_tract(index, data)
        if progress is not None:
            progress(len(data))
        return index

    async def read_tracts(self, indices: Iterable[int], *,
                          window: int | None = None) -> AsyncIterator[tuple[int, bytes | bytearray]]:
        """Yield ``(index, data)`` in the order given, keeping ``window`` reads in flight."""
        window = window or self._client.max_in_flight
        source = iter(indices)
        pending: deque[tuple[int, asyncio.Task[bytes | bytearray]]] = deque()

        def refill() -> None:
            while len(pending) < window:
                index = next(source, None)
                if index is None:
                    return
                pending.append((index, asyncio.ensure_future(self.read_tract(index))))

        refill()
        try:
            while pending:
                index, task = pending.popleft()
                data = await task
                refill()
                yield index, data
        finally:
            for _, task in pending:
                task.cancel()
            await asyncio.gather(*(t for _, t in pending), return_exceptions=True)

    # -- whole files and streams ---------------------------------------------------
    async def write_from(self, source: str | os.PathLike[str] | BinaryIO, *,
                         progress: Progress | None = None) -> BlobInfo:
        """Stream a file (path or binary file object) into this blob from tract 0.

        Extends the blob to fit, writes every tract, and records the byte
        length. Memory stays at about ``max_in_flight`` tracts.
        """
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                return await self.write_from(fh, progress=progress)
        table = await self._client.table()
        tract_size = table.tract_size
        try:
            size = os.fstat(source.fileno()).st_size - source.tell()
        except (OSError, AttributeError, ValueError):
            return await self.write_stream(_file_chunks(source, tract_size), progress=progress)
        need = -(-size // tract_size)
        have = await self.size()
        if have > need:
            raise BadRequest(f"blob {self.guid} already has {have} tracts, more than the {need} this file needs; "
                             "write into a new blob")
        if need > have:
            await self.extend(need - have)

        async def items() -> AsyncIterator[tuple[int, bytes]]:
            for index in range(need):
                chunk = await asyncio.to_thread(source.read, tract_size)
                if len(chunk) != min(tract_size, size - index * tract_size):
                    raise FDSError(f"file changed size while being read (tract {index})")
                yield index, chunk

        await self.write_tracts(items(), progress=progress)
        await self.set_length(size)
        return await self.stat()

    async def write_stream(self, chunks: AsyncIterable[bytes], *, progress: Progress | None = None) -> BlobInfo:
        """Write a stream of unknown length: tracts are cut at the tract size and extended one by one."""
        if await self.size() != 0:
            raise BadRequest(f"blob {self.guid} is not empty; a stream of unknown length needs an empty blob")
        tract_size = (await self._client.table()).tract_size
        total = 0

        async def items() -> AsyncIterator[tuple[int, bytes]]:
            nonlocal total
            buf = bytearray()
            index = 0
            async for chunk in chunks:
                buf += chunk
                while len(buf) >= tract_size:
                    piece = bytes(buf[:tract_size])
                    del buf[:tract_size]
                    index = await self.extend(1)
                    total += len(piece)
                    yield index, piece
            if buf:
                index = await self.extend(1)
                total += len(buf)
                yield index, bytes(buf)

        await self.write_tracts(items(), progress=progress)
        await self.set_length(total)
        return await self.stat()

    async def read_into(self, sink: str | os.PathLike[str] | BinaryIO, *,
                        progress: Progress | None = None) -> int:
        """Stream the whole blob, tract after tract, into a file; returns bytes written."""
        if isinstance(sink, (str, os.PathLike)):
            with open(sink, "wb") as fh:
                return await self.read_into(fh, progress=progress)
        written = 0
        async for chunk in self.iter_bytes():
            await asyncio.to_thread(sink.write, chunk)
            written += len(chunk)
            if progress is not None:
                progress(len(chunk))
        return written

    async def iter_bytes(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes | bytearray | memoryview]:
        """The blob's bytes ``start..end-1`` (whole blob by default), in order, as they arrive.

        Byte ranges need a recorded length (a blob written as a stream);
        the whole blob can always be read as its tracts concatenated.
        """
        info = await self.stat()
        if start == 0 and end is None:
            async for _, data in self.read_tracts(range(info.tracts)):
                yield data
            return
        if info.length is None:
            raise BadRequest(f"blob {self.guid} has no recorded byte length (it was not written as a stream), "
                             "so byte ranges are undefined; read whole tracts instead")
        end = info.length if end is None else min(end, info.length)
        if not 0 <= start <= end:
            raise PastEnd(f"byte range {start}-{end} is outside blob {self.guid} of {info.length} bytes")
        if start == end:
            return
        tract_size = (await self._client.table()).tract_size
        first, last = start // tract_size, (end - 1) // tract_size
        async for index, data in self.read_tracts(range(first, last + 1)):
            base = index * tract_size
            lo = max(start - base, 0)
            hi = min(end - base, len(data))
            yield memoryview(data)[lo:hi] if (lo, hi) != (0, len(data)) else data


async def _file_chunks(source: BinaryIO, size: int) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.to_thread(source.read, size)
        if not chunk:
            return
        yield chunk


async def _bounded(jobs: AsyncIterator[Awaitable[int]], limit: int) -> list[int]:
    """Run awaitables from ``jobs`` with at most ``limit`` running; fail fast on the first error."""
    running: set[asyncio.Future[int]] = set()
    results: list[int] = []
    try:
        async for job in jobs:
            running.add(asyncio.ensure_future(job))
            if len(running) >= limit:
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                results.extend(task.result() for task in done)
        while running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            results.extend(task.result() for task in done)
    finally:
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
    return results


