"""Large buffers without the costs Python adds by default.

- :func:`uninitialized` makes a ``bytearray`` without zero-filling it:
  ``bytearray(n)`` spends ~0.6 ms clearing 8 MiB that a socket or disk read
  overwrites at once.
- :func:`aligned` gives a view whose start is aligned for O_DIRECT, with room
  after it to pad the I/O to whole blocks (:func:`padded`). It lives in heap
  memory, which glibc recycles from request to request once
  :func:`tune_allocator` has fixed its thresholds: no page faults, no mmap
  churn, no pool to manage.
- :func:`tune_allocator` (also :func:`fds.tune_allocator`) is that fix. It
  changes the whole process, so nothing calls it behind a caller's back:
  servers (:func:`fds.web.serve`), the ``fds`` and ``fds-minutesort``
  commands and the benchmarks call it at start-up; a program of your own
  that moves many tracts should too.
"""

from __future__ import annotations

import ctypes

__all__ = ["ALIGN", "uninitialized", "aligned", "padded", "is_aligned", "tune_allocator"]

ALIGN = 4096
"""Alignment of O_DIRECT buffers, lengths and offsets (the disk's physical block size or more)."""

_from_string_and_size = ctypes.pythonapi.PyByteArray_FromStringAndSize
_from_string_and_size.restype = ctypes.py_object
_from_string_and_size.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t]


def uninitialized(size: int) -> bytearray:
    """A ``bytearray`` of ``size`` bytes whose contents are whatever the allocator had."""
    result: bytearray = _from_string_and_size(None, size)
    return result


def _address(view: memoryview | bytearray) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


def aligned(size: int) -> memoryview:
    """A writable view of ``size`` bytes starting on an :data:`ALIGN` boundary, paddable to whole blocks."""
    blocks = -(-size // ALIGN) * ALIGN
    store = uninitialized(max(blocks, ALIGN) + ALIGN)
    offset = -_address(store) % ALIGN
    return memoryview(store)[offset:offset + size]


def padded(view: memoryview) -> memoryview:
    """The block-padded extent of a view made by :func:`aligned` (same start, length rounded up)."""
    store = view.obj
    assert isinstance(store, bytearray), "padded() takes views made by aligned()"
    offset = _address(view) - _address(store)
    blocks = -(-len(view) // ALIGN) * ALIGN
    return memoryview(store)[offset:offset + blocks]


def is_aligned(view: object) -> bool:
    """Whether ``view`` was made by :func:`aligned` (or is laid out as if it had been)."""
    if not isinstance(view, memoryview) or not isinstance(view.obj, bytearray) or view.readonly or not len(view):
        return False  # an empty view has no address to align (ctypes refuses it); it needs no O_DIRECT
    start = _address(view)
    end_room = _address(view.obj) + len(view.obj) - start
    return start % ALIGN == 0 and end_room >= -(-len(view) // ALIGN) * ALIGN


def tune_allocator() -> None:
    """Keep glibc from returning and re-faulting memory for every large body (process-wide).

    Until a large mmapped block has been freed once, glibc's mmap and trim
    thresholds stay low, and each 8 MiB body costs thousands of page faults.
    Fixing the thresholds (mmap at 32 MiB, trim at 256 MiB) doubled a bare
    server's PUT rate and a client's GET rate here (docs/benchmarks.md). The
    price: up to 256 MiB freed memory the process keeps instead of returning
    it to the system. Safe to call more than once; a no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
