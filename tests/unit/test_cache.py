"""The tract cache: bounded, generation-checked, and never serving a replaced tract."""

from __future__ import annotations

import uuid
from pathlib import Path

from fds.buffers import aligned
from fds.tractserver import TractStore
from fds.tractserver._cache import TractCache


def test_lru_bound_and_generation() -> None:
    cache = TractCache(capacity=300)
    for i in range(4):
        cache.put(b"k%d" % i, 1, memoryview(bytearray([i]) * 100))
    assert cache.bytes == 300
    assert cache.get(b"k0", 1) is None  # evicted, least recently used
    assert cache.get(b"k1", 2) is None  # wrong generation: never served
    assert bytes(cache.get(b"k1", 1) or b"") == b"\x01" * 100
    cache.drop(b"k1")
    assert cache.bytes == 200


def test_short_views_count_their_whole_buffer() -> None:
    cache = TractCache(capacity=1000)
    big = bytearray(800)
    cache.put(b"a", 1, memoryview(big)[:10])
    assert cache.bytes == 800


def test_store_serves_new_generation_after_overwrite_and_forgets_deleted(tmp_path: Path) -> None:
    store = TractStore(tmp_path, cache_bytes=64 * 1024 * 1024)
    guid = uuid.uuid4().bytes
    buf = aligned(8192)
    buf[:] = b"a" * 8192
    store.write(guid, 0, buf)
    assert store.cache.bytes >= 8192  # the request buffer itself backs the cached tract
    assert bytes(store.read(guid, 0)[0]) == b"a" * 8192
    store.write(guid, 0, b"b" * 10)
    assert bytes(store.read(guid, 0)[0]) == b"b" * 10
    assert store.cache.hits >= 1
    store.delete_tracts(guid, 0)
    assert store.cache.bytes == 0
    store.close()
