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
from collections.abc import Callable

__all__ = ["TractCache"]


class TractCache:
    """LRU of ``key -> (generation, data)`` holding at most ``capacity`` bytes. Thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[bytes, tuple[int, memoryview, object]] = OrderedDict()
        self._owners: dict[int, int] = {}
        self._lock = threading.Lock()
        self.on_evict: Callable[[object], None] | None = None
        """Called with a dropped entry's owner once no cached tract views it (to recycle buffers)."""

    def get(self, key: bytes, generation: int) -> memoryview | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != generation:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1][:]  # a view of its own: eviction releases only the cache's

    def put(self, key: bytes, generation: int, data: memoryview, owner: object) -> None:
        """Keep ``data`` (a view of ``owner``'s memory) for ``key`` at ``generation``."""
        if len(data) > self.capacity:
            return
        with self._lock:
            self._drop(key)
            self._items[key] = (generation, data, owner)
            self._owners[id(owner)] = self._owners.get(id(owner), 0) + 1
            self.bytes += _footprint(data)
            while self.bytes > self.capacity:
                oldest = next(iter(self._items))
                self._drop(oldest)

    def drop(self, key: bytes) -> None:
        with self._lock:
            self._drop(key)

    def owns(self, owner: object) -> bool:
        """Whether a cached tract still views ``owner``'s memory (so it must not be reused)."""
        with self._lock:
            return id(owner) in self._owners

    def _drop(self, key: bytes) -> None:
        item = self._items.pop(key, None)
        if item is None:
            return
        self.bytes -= _footprint(item[1])
        count = self._owners[id(item[2])] - 1
        if count:
            self._owners[id(item[2])] = count
            return
        del self._owners[id(item[2])]
        item[1].release()
        if self.on_evict is not None:
            self.on_evict(item[2])


def _footprint(data: memoryview) -> int:
    """The memory a cached view keeps alive: its whole underlying buffer."""
    return max(len(data), len(memoryview(data.obj)) if data.obj is not None else 0)
