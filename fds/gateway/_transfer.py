"""Moving whole blobs between an HTTP body and tracts, with bounded memory.

The gateway does not use :meth:`fds.client.Blob.write_stream` or
:meth:`fds.client.Blob.iter_bytes` directly: both size their window of
tracts in flight by the client's process-wide ``max_in_flight``, and a
gateway serving many requests at once wants its own, smaller bound per
request (:attr:`fds.config.GatewayConfig.max_in_flight`). Memory per request
is then at most about ``window + 1`` tracts, however large the blob.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Coroutine
from typing import Any

from fds.client import Blob, FDSError
from fds.errors import BadRequest

__all__ = ["upload", "download"]


class _Window:
    """Run tract writes with at most ``limit`` in flight; the first failure wins."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: set[asyncio.Task[None]] = set()

    def _reap(self, done: set[asyncio.Task[None]]) -> None:
        for task in done:
            task.result()  # raises the write's error, if any

    async def submit(self, write: Coroutine[Any, Any, None]) -> None:
        """Start ``write``, first waiting for a free slot (which holds back the reader)."""
        finished = {t for t in self._running if t.done()}
        self._running -= finished
        self._reap(finished)
        while len(self._running) >= self._limit:
            done, self._running = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            self._reap(done)
        self._running.add(asyncio.ensure_future(write))

    async def drain(self) -> None:
        while self._running:
            done, self._running = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            self._reap(done)

    async def cancel(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()


async def upload(blob: Blob, chunks: AsyncIterable[bytes], *, tract_size: int, window: int,
                 length: int | None) -> int:
    """Write ``chunks`` into the empty ``blob`` from tract 0 and record its byte length.

    With a known ``length`` (the request's ``Content-Length``) the blob is
    extended once up front; otherwise by one tract as each tract fills.
    Each full tract is written while the next one is read, with at most
    ``window`` writes in flight. Returns the number of bytes written.
    Raises :class:`BadRequest` if the body is shorter or longer than ``length``.
    """
    writes = _Window(window)
    total = 0
    index = 0
    if length is not None and length > 0:
        await blob.extend(-(-length // tract_size))

    def next_size() -> int:
        return tract_size if length is None else min(tract_size, length - total)

    async def flush(data: bytearray) -> None:
        nonlocal index
        number = index if length is not None else await blob.extend(1)
        index += 1
        await writes.submit(blob.write_tract(number, data))

    try:
        buf = bytearray(next_size())
        filled = 0
        async for chunk in chunks:
            view = memoryview(chunk)
            while view:
                if length is not None and total + len(view) > length:
                    raise BadRequest(f"request body is longer than its Content-Length of {length} bytes",
                                     code="body_length_mismatch")
                take = min(len(buf) - filled, len(view))
                buf[filled:filled + take] = view[:take]
                filled += take
                total += take
                view = view[take:]
                if filled == len(buf):
                    await flush(buf)
                    buf, filled = bytearray(next_size()), 0
        if length is not None and total != length:
            raise BadRequest(f"request body ended after {total} of {length} bytes", code="body_length_mismatch")
        if filled:
            await flush(buf[:filled] if filled != len(buf) else buf)
        await writes.drain()
    finally:
        await writes.cancel()
    await blob.set_length(total)
    return total


async def download(blob: Blob, *, start: int, end: int | None, tracts: int, tract_size: int,
                   window: int) -> AsyncIterator[memoryview]:
    """The blob's bytes ``start..end-1``, reading up to ``window`` tracts ahead.

    ``end`` is ``None`` for a blob without a recorded length: then all
    ``tracts`` are sent as stored, concatenated. With a length, every tract
    must hold exactly the bytes the length implies, or the stream stops with
    an error rather than send a body that disagrees with its ``Content-Length``.
    """
    if end is None:
        async for _, data in blob.read_tracts(range(tracts), window=window):
            yield memoryview(data)  # Starlette sends bytes and memoryviews, not bytearrays
        return
    if start >= end:
        return
    first, last = start // tract_size, (end - 1) // tract_size
    async for index, data in blob.read_tracts(range(first, last + 1), window=window):
        base = index * tract_size
        expected = min(tract_size, end - base) if index == last else tract_size
        if len(data) < expected:
            raise FDSError(f"blob {blob.guid}: tract {index} holds {len(data)} bytes where its recorded length "
                           f"implies at least {expected}; the blob was changed through the tract API",
                           code="length_mismatch")
        lo, hi = max(start - base, 0), min(end - base, len(data))
        yield memoryview(data)[lo:hi]
