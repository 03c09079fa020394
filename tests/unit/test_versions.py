"""Tract versions and the hybrid logical clock (fds.versions), and how a store orders writes by them."""

from __future__ import annotations

from pathlib import Path

import pytest
import rocksdict

from fds.errors import Conflict, Superseded
from fds.guid import new_guid
from fds.tractserver._store import TractStore
from fds.versions import ZERO, HybridClock, TractVersion


def test_versions_order_by_stamp_then_writer_and_round_trip() -> None:
    assert TractVersion(5, 1) < TractVersion(5, 2) < TractVersion(6, 0)
    assert ZERO < TractVersion(0, 1)
    assert TractVersion.parse(str(TractVersion(1796278449504161000, 77))) == TractVersion(1796278449504161000, 77)
    for bad in ("", "12", "a.b", "1.-2", f"{2**63}.1"):
        with pytest.raises(ValueError):
            TractVersion.parse(bad)


def test_the_clock_never_goes_back_and_moves_past_what_it_sees() -> None:
    clock = HybridClock(writer=9)
    seen = [clock.next() for _ in range(1000)]
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert all(v.writer == 9 for v in seen)
    ahead = TractVersion(seen[-1].stamp + 10**12, 3)  # another writer an hour... or 17 minutes ahead
    clock.observe(ahead)
    assert clock.next() > ahead
    clock.observe(TractVersion(1, 1))  # older: changes nothing
    assert clock.next() > ahead
    assert HybridClock().writer != HybridClock().writer


def test_a_store_keeps_only_newer_versions(tmp_path: Path) -> None:
    store = TractStore(tmp_path, direct_io=False)
    guid = new_guid()
    try:
        first = store.write(guid, 0, b"first", 1, TractVersion(100, 1))
        assert first is not None and first.version == TractVersion(100, 1)
        with pytest.raises(Superseded) as older:
            store.write(guid, 0, b"older", 1, TractVersion(99, 7))
        assert older.value.details == {"stamp": 100, "writer": 1}
        assert store.write(guid, 0, b"first", 1, TractVersion(100, 1)) == first  # a retry: idempotent
        with pytest.raises(Conflict) as clash:
            store.write(guid, 0, b"other", 1, TractVersion(100, 1))
        assert clash.value.code == "version_conflict"
        # Copies never raise: older or equal ones are skipped.
        assert store.write(guid, 0, b"older", 1, TractVersion(99, 7), copy=True) is None
        assert store.write(guid, 0, b"first", 1, TractVersion(100, 1), copy=True) is None
        newer = store.write(guid, 0, b"newer", 1, TractVersion(100, 2), copy=True)
        assert newer is not None and bytes(store.read(guid, 0, 1)[0]) == b"newer"
        # Without a version the server assigns one newer than the stored one.
        own = store.write(guid, 0, b"unversioned", 1)
        assert own is not None and own.version > TractVersion(100, 2) and own.writer == 0
        # The same bytes under a newer version: adopt the version, no copy.
        assert store.restamp(guid, 0, 1, TractVersion(own.stamp + 5, 4), own.checksum)
        entry = store.entry(guid, 0, 1)
        assert entry is not None and entry.version == TractVersion(own.stamp + 5, 4)
        assert entry.generation == own.generation
        assert not store.restamp(guid, 0, 1, TractVersion(own.stamp + 9, 4), own.checksum + 1)
        # A repair replaces whatever the version, if the generation is still the bad one.
        assert store.write(guid, 0, b"repaired", 1, TractVersion(1, 1), copy=True, replace=entry.generation + 1) is None
        repaired = store.write(guid, 0, b"repaired", 1, TractVersion(1, 1), copy=True, replace=entry.generation)
        assert repaired is not None and bytes(store.read(guid, 0, 1)[0]) == b"repaired"
    finally:
        store.close()


def test_index_entries_from_before_versions_read_as_version_zero(tmp_path: Path) -> None:
    store = TractStore(tmp_path, direct_io=False)
    guid = new_guid()
    entry = store.write(guid, 3, b"old", 1, TractVersion(50, 5))
    assert entry is not None
    store.close()
    db = rocksdict.Rdict(str(tmp_path / "index.rocksdb"), rocksdict.Options(raw_mode=True))
    key = b"t" + guid + (1).to_bytes(8, "big") + (3).to_bytes(8, "big")
    db.put(key, db.get(key)[:32])  # the four-field entry of earlier releases
    db.close()
    store = TractStore(tmp_path, direct_io=False)
    try:
        old = store.entry(guid, 3, 1)
        assert old is not None and old.version == ZERO and old.length == 3
        assert bytes(store.read(guid, 3, 1)[0]) == b"old"
        assert store.write(guid, 3, b"new", 1, TractVersion(1, 1)) is not None
    finally:
        store.close()
