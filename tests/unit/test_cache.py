"""The tract cache: bounded, generation-checked, and never serving a replaced tract."""

from __future__ import annotations

import uuid
from pathlib import Path

from fds.durable import aligned_buffer
from fds.tractserver import TractStore
from fds.tractserver._cache import TractCache


def test_lru_bound_and_generation() -> None:
    cache = TractCache(capacity=300)
    owners = [bytearray(100) for _ in range(4)]
    for i, owner in enumerate(owners):
        cache.put(b"k%d" % i, 1, memoryview(owner), owner)
    assert cache.bytes == 300
    assert cache.get(b"k0", 1) is None  # evicted, least recently used
    assert cache.get(b"k1", 2) is None  # wrong generation: never served
    assert cache.get(b"k1", 1) is not None
    assert not cache.owns(owners[0]) and cache.owns(owners[1])
    cache.drop(b"k1")
    assert not cache.owns(owners[1]) and cache.bytes == 200


def test_short_views_count_their_whole_buffer() -> None:
    cache = TractCache(capacity=1000)
    big = bytearray(800)
    cache.put(b"a", 1, memoryview(big)[:10], big)
    assert cache.bytes == 800


def test_store_serves_new_generation_after_overwrite_and_forgets_deleted(tmp_path: Path) -> None:
    store = TractStore(tmp_path, cache_bytes=64 * 1024 * 1024)
    guid = uuid.uuid4().bytes
    buf = aligned_buffer(8192)
    buf[:8192] = b"a" * 8192
    store.write(guid, 0, memoryview(buf)[:8192])
    assert store.cache.owns(buf)  # the request buffer now backs the cached tract
    assert bytes(store.read(guid, 0)[0]) == b"a" * 8192
    store.write(guid, 0, b"b" * 10)
    assert bytes(store.read(guid, 0)[0]) == b"b" * 10
    assert store.cache.hits >= 1
    store.delete_tracts(guid, 0)
    assert store.cache.bytes == 0
    store.close()
