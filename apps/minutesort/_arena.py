"""Warm memory for sorts: an arena a standing worker keeps touched and lends to each sort process.

On a virtual machine whose host backs a guest page only when it is first
touched, and takes freed pages back, fresh memory is the slowest thing a
sort does: 2 GiB of new anonymous memory took 2.8 s to fault in here, while
the same 2 GiB of a memfd that another process had already touched mapped in
0.4 s and then took writes at 8-12 GB/s (docs/benchmarks.md, "Warm memory").
A standing worker runs each sort in a fresh child process (which returns all
its memory at exit), so every sort would pay that tax again.

- :class:`Arena` (the service): a memfd of ``--arena`` bytes, touched once
  in a background thread at start-up (``MADV_POPULATE_WRITE`` through a
  mapping it then drops: the pages stay in the memfd), passed to each sort
  process (``pass_fds``).
- :class:`Memory` (a sort process): where it takes its large buffers. With
  an arena it maps the memfd shared, prefaults the part this sort will use
  in a thread, and hands out page-aligned pieces (first fit), taking them
  back when a bucket is done; when the arena has no room, a piece is fresh
  anonymous memory instead. Without an arena every piece is fresh. Either
  way it keeps the buffers one sort reuses from bucket to bucket: the order
  (8 bytes a record) and the output tracts in flight, which were taken
  fresh per bucket and per tract before.

An arena's pages count against a sort's memory budget like any other: the
sort places its records there instead of in new memory, never beside it.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Arena", "Memory", "anonymous", "PAGE"]

PAGE = mmap.PAGESIZE
_MADV_POPULATE_WRITE = 23
"""Linux 5.14+: fault pages in writable, as a write would, without changing their contents."""
_STEP = 64 << 20
"""Bytes prefaulted per call: a stop request is seen between steps."""

_libc = ctypes.CDLL(None, use_errno=True)  # ctypes releases the GIL around the call
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.madvise.restype = ctypes.c_int


def anonymous(size: int) -> memoryview:
    """``size`` bytes of fresh anonymous memory, mapped lazily: pages are faulted in as they are written."""
    region = mmap.mmap(-1, max(size, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        region.madvise(mmap.MADV_HUGEPAGE)  # 2 MiB pages: once memory is warm, faulting it in is 3x faster here
    return memoryview(region)[:size]


def _round(size: int) -> int:
    return -(-max(size, 1) // PAGE) * PAGE


def _populate(region: mmap.mmap, size: int, stop: threading.Event | None = None,
              done: list[int] | None = None) -> bool:
    """Fault in the first ``size`` bytes of a shared mapping; False if this kernel cannot prefault."""
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    for start in range(0, min(size, len(region)), _STEP):
        if stop is not None and stop.is_set():
            return True
        length = min(_STEP, size - start)
        if _libc.madvise(ctypes.c_void_p(base + start), length, _MADV_POPULATE_WRITE) != 0:
            return False
        if done is not None:
            done[0] = start + length
    return True


class Arena:
    """The service's side: a memfd of ``size`` bytes, warmed once, lent to each sort process by its fd."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("an arena has a positive size")
        self.size = _round(size)
        self.fd = os.memfd_create("fds-minutesort-arena", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)
        self._warmed = [0]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def warm_bytes(self) -> int:
        """Bytes touched so far (the arena is warm once this is its size)."""
        return self._warmed[0]

    def warm(self) -> threading.Thread:
        """Touch every page in a background thread, without changing any (a sort may already be using it)."""
        def run() -> None:
            region = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED)
            try:
                if not _populate(region, self.size, self._stop, self._warmed):
                    # No MADV_POPULATE_WRITE: a read of each page allocates it too (a memfd has no shared zero
                    # page), and never changes what a sort wrote there.
                    pages = np.frombuffer(region, dtype=np.uint8)[::PAGE]
                    for start in range(0, len(pages), _STEP // PAGE):
                        if self._stop.is_set():
                            break
                        int(pages[start:start + _STEP // PAGE].max())
                        self._warmed[0] = min(self.size, (start + _STEP // PAGE) * PAGE)
                    del pages
            finally:
                region.close()

        self._thread = threading.Thread(target=run, name="arena-warm", daemon=True)
        self._thread.start()
        return self._thread

    def close(self) -> None:
        """Stop warming and let the memory go (once no sort process holds the fd either)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        os.close(self.fd)


class Memory:
    """A sort process's large buffers: pieces of its service's arena while there is room, else fresh memory."""

    def __init__(self, arena_fd: int | None = None) -> None:
        self.size = 0
        self._region: mmap.mmap | None = None
        self._free: list[tuple[int, int]] = []
        self._pieces: dict[int, tuple[memoryview, int, int]] = {}
        self._stop = threading.Event()
        self._warming: threading.Thread | None = None
        self._order: npt.NDArray[np.uint64] | None = None
        self._order_view: memoryview | None = None
        self._tracts: list[memoryview] = []
        self.arena_bytes = 0
        """Bytes of pieces placed in the arena (all pieces, over the sort)."""
        self.fresh_bytes = 0
        """Bytes of pieces that had to be fresh memory."""
        if arena_fd is not None:
            self.size = os.fstat(arena_fd).st_size
            self._region = mmap.mmap(arena_fd, self.size, flags=mmap.MAP_SHARED)
            self._free = [(0, self.size)]

    def prefault(self, size: int) -> None:
        """Map the first ``size`` bytes of the arena in a thread (cheaper than a fault per page as data lands)."""
        if self._region is None or size <= 0 or self._warming is not None:
            return
        region = self._region
        self._warming = threading.Thread(target=_populate, args=(region, min(size, self.size), self._stop),
                                         name="arena-prefault", daemon=True)
        self._warming.start()

    def take(self, size: int) -> memoryview:
        """``size`` writable bytes: from the arena if a free piece fits (first fit), else fresh."""
        if self._region is not None:
            need = _round(size)
            for i, (start, length) in enumerate(self._free):
                if length >= need:
                    if length == need:
                        del self._free[i]
                    else:
                        self._free[i] = (start + need, length - need)
                    view = memoryview(self._region)[start:start + size]
                    self._pieces[id(view)] = (view, start, need)
                    self.arena_bytes += size
                    return view
        self.fresh_bytes += size
        return anonymous(size)

    def give(self, view: memoryview) -> None:
        """A piece :meth:`take` gave is no longer used (fresh memory goes back to the system once unreferenced)."""
        piece = self._pieces.pop(id(view), None)
        if piece is None:
            return
        _, start, length = piece
        self._free.append((start, length))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for begin, size in self._free:
            if merged and merged[-1][0] + merged[-1][1] == begin:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((begin, size))
        self._free = merged

    def order(self, count: int) -> npt.NDArray[np.uint64]:
        """A uint64 array of ``count`` for a bucket's order, reused from bucket to bucket."""
        if self._order is None or len(self._order) < count:
            if self._order_view is not None:
                self._order = None
                self.give(self._order_view)
            self._order_view = self.take(int(count * 1.15 + 1024) * 8)  # room for the next, slightly larger bucket
            self._order = np.frombuffer(self._order_view, dtype=np.uint64)
        return self._order[:count]

    def tracts(self, count: int, size: int) -> list[memoryview]:
        """``count`` buffers of ``size`` bytes for output tracts in flight, reused from bucket to bucket."""
        if self._tracts and len(self._tracts[0]) != size:
            for view in self._tracts:
                self.give(view)
            self._tracts = []
        while len(self._tracts) < count:
            self._tracts.append(self.take(size))
        return self._tracts[:count]

    def report(self) -> dict[str, Any]:
        return {"arena_bytes": self.size, "placed_in_arena": self.arena_bytes, "placed_fresh": self.fresh_bytes}

    def close(self) -> None:
        """Stop prefaulting (the mapping goes with the process)."""
        self._stop.set()
        if self._warming is not None:
            self._warming.join()
