"""A bounded in-memory cache of recently written and read tracts.

Tract data goes to disk with O_DIRECT (see :mod:`fds.durable`), so the kernel's
page cache never holds it. Like Ceph's BlueStore, which also bypasses the page
cache, the tract server can keep its own instead (``--cache-bytes``; off by
default: docs/benchmarks.md has the measured trade-off): an LRU of whole tracts,
keyed by tract and checked against the index's generation, so an overwritten
or deleted tract is never served from it. Every hit is still verified against
the index checksum before it is served.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["TractCache"]


class TractCache:
    """LRU of ``key -> (generation, data)`` holding at most ``capacity`` bytes. Thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[bytes, tuple[int, memoryview]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes, generation: int) -> memoryview | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != generation:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: bytes, generation: int, data: memoryview) -> None:
        """Keep ``data`` for ``key`` at ``generation``; it must not be written to afterwards."""
        if len(data) > self.capacity:
            return
        with self._lock:
            self._drop(key)
            self._items[key] = (generation, data)
            self.bytes += _footprint(data)
            while self.bytes > self.capacity:
                oldest = next(iter(self._items))
                self._drop(oldest)

    def drop(self, key: bytes) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        item = self._items.pop(key, None)
        if item is None:
            return
        self.bytes -= _footprint(item[1])


def _footprint(data: memoryview) -> int:
    """The memory a cached view keeps alive: its whole underlying buffer."""
    return max(len(data), len(memoryview(data.obj)) if data.obj is not None else 0)
