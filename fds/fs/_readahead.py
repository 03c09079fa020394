"""Reads of one open ``fds://`` file, tract by tract, with the next tracts already in flight.

pyarrow reads a file it was handed by fsspec one ``read`` at a time, under a lock (its
``PythonFile``): each column chunk, or each of its coalesced ranges of up to 32 MiB, is one
read, so only the few tracts of that range would be in flight at once, never the dozens an
fds client can keep. This reader keeps a window of tract reads ahead of a reader that reads
on: every read that starts where one of the last few ended doubles the window (up to
``max_window`` tracts), so a scan of a whole file soon has ``max_window`` tracts in flight
while each ``read`` still returns only what it asked for. A read elsewhere (a footer, a
column picked out of many) closes the window: nothing is fetched that no one asked for, but
the tracts of that read itself, all at once.

Memory: at most twice ``max_window`` tracts besides those of the read in hand (the farthest
from it are dropped first). Tracts are
fetched from the object as it was when the file was opened (its blob and incarnation).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable

from fds.client import Blob, Client, FDSError, ObjectInfo
from fds.guid import parse_guid

__all__ = ["ReadAhead", "MAX_WINDOW"]

MAX_WINDOW = 16
"""Tracts fetched ahead of a sequential reader, at most (16 tracts of 8 MiB: 128 MiB per open file)."""

SEQUENTIAL_GAP = 64 << 10
"""A read that starts this close after the last one's end still counts as reading on (pyarrow's
coalesced ranges leave small holes)."""


class ReadAhead:
    """Ranges of one object; runs on the filesystem's event loop."""

    def __init__(self, client: Client, info: ObjectInfo, tract_size: int, *, max_window: int = MAX_WINDOW) -> None:
        self._info = info
        self._blob = Blob(client, parse_guid(info.blob), info.incarnation)
        self._tract_size = tract_size
        self._tracts = -(-info.size // tract_size)
        self._max_window = max_window
        self._window = 0
        self._ends: deque[int] = deque(maxlen=8)
        self._fetches: dict[int, asyncio.Task[bytes | bytearray]] = {}
        self.fetched = 0
        """Tract reads started (for tests and figures)."""

    async def read(self, start: int, end: int) -> bytes | bytearray:
        """Bytes ``start..end-1`` (within the object); a bytearray from 1 MiB up (not copied again: pyarrow
        takes any buffer)."""
        if start >= end:
            return b""
        size = self._tract_size
        first, last = start // size, (end - 1) // size
        # pyarrow's threads take turns on the file, so two scans may interleave: reading on from any recent read
        if any(0 <= start - e <= SEQUENTIAL_GAP for e in self._ends):
            self._window = min(max(2 * self._window, 2), self._max_window)
        else:
            self._window = 0
        self._ends.append(end)
        ahead = range(last + 1, min(last + 1 + self._window, self._tracts))
        self._start(range(first, last + 1))
        self._start(ahead)
        self._bound(first, last)
        pieces = await asyncio.gather(*(self._fetches[i] for i in range(first, last + 1)))
        out = bytearray(end - start)
        for index, data in zip(range(first, last + 1), pieces, strict=True):
            base = index * size
            expected = min(size, self._info.size - base)
            if len(data) != expected:
                raise FDSError(f"object {self._info.key!r}: tract {index} holds {len(data)} bytes, not {expected}; "
                               "its blob was changed through the tract API", code="length_mismatch")
            lo, hi = max(start - base, 0), min(end - base, len(data))
            out[base + lo - start:base + hi - start] = memoryview(data)[lo:hi]
        for index in range(first, last):  # read whole: a sequential reader will not come back for them
            self._fetches.pop(index, None)
        return bytes(out) if len(out) < 1 << 20 else out

    def _start(self, indices: Iterable[int]) -> None:
        for index in indices:
            if index not in self._fetches:
                task = asyncio.ensure_future(self._blob.read_tract(index))
                task.add_done_callback(_retrieve)
                self._fetches[index] = task
                self.fetched += 1

    def _bound(self, first: int, last: int) -> None:
        """Keep at most twice the window besides this read's tracts: drop those farthest from it."""
        spare = [i for i in self._fetches if not first <= i <= last]
        excess = len(spare) - 2 * self._max_window
        if excess > 0:
            for index in sorted(spare, key=lambda i: i - last if i > last else (last - i) * 4)[-excess:]:
                self._fetches.pop(index).cancel()

    async def close(self) -> None:
        """Cancel the reads still ahead."""
        tasks = list(self._fetches.values())
        self._fetches.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _retrieve(task: asyncio.Task[bytes | bytearray]) -> None:
    """Mark a dropped read's failure as seen (a read that needs the tract gets it from the task anyway)."""
    if not task.cancelled():
        task.exception()
