"""The primary's log of name changes, several at once (a group commit): one write, each change whole or not at all."""

from __future__ import annotations

from pathlib import Path

from fds.guid import format_guid, new_guid
from fds.models import NameRecord
from fds.tractserver._namestore import NameStore
from fds.tractserver._store import TractStore

NS = new_guid()


def _rec(key: str, seq: int, blob: bytes | None = None, epoch: int = 1) -> NameRecord:
    return NameRecord(ns=format_guid(NS), key=key, seq=seq, epoch=epoch, mtime=100.0,
                      blob=format_guid(blob) if blob else "", incarnation=1, size=1)


def test_group_of_changes_is_stored_change_by_change(tmp_path: Path) -> None:
    store = TractStore(tmp_path, direct_io=False)
    try:
        names = NameStore(store)
        old_blob, new_blob, other = new_guid(), new_guid(), new_guid()
        assert names.apply_changes([[_rec("a", 1, old_blob)]], grace=10.0) == [True]
        ok = names.apply_changes([
            [_rec("a", 2, new_blob)],               # replaces a's blob: the old one is queued
            [_rec("b", 1, other), _rec("a", 1)],    # a rename-like pair, one record not newer: none stored
            [_rec("c", 1, other)],
            [_rec("a", 2, other)],                  # not newer than the change before it in this group
        ], grace=10.0)
        assert ok == [True, False, True, False]
        got_a = names.get(NS, "a")
        assert got_a is not None and got_a[0].blob == format_guid(new_blob) and not got_a[1]
        assert names.get(NS, "b") is None
        assert names.referenced(NS, new_blob) == "a" and names.referenced(NS, old_blob) is None
        assert names.referenced(NS, other) == "c"
        assert [(r.blob, r.due_ms) for r in names.retiring()] == [(old_blob, 110_000)]
        names.mark_committed([_rec("a", 2, new_blob), _rec("c", 1, other), _rec("b", 7)])
        assert names.get(NS, "a") == (_rec("a", 2, new_blob), True)
        assert names.get(NS, "b") is None  # marking never creates a record
        page = names.listing(NS)
        assert [o["key"] for o in page.objects] == ["a", "c"] and not page.in_doubt
    finally:
        store.close()


def test_raw_listing_is_the_parsed_listing(tmp_path: Path) -> None:
    """Listing pages are cut from the stored JSON where that is safe; they must say exactly what parsing says,
    for records with and without user metadata, and keys and values that look like the cut's markers."""
    import orjson

    store = TractStore(tmp_path, direct_io=False)
    try:
        names = NameStore(store)
        records = [
            _rec("plain", 1, new_guid()),
            _rec('quote"s "meta":{},"seq": and \\ slashes', 1, new_guid()),
            _rec("with-meta", 1, new_guid()).model_copy(update={"meta": {"a": '"meta":{},"seq":', "seq": "}"}}),
            _rec("typed", 1, new_guid()).model_copy(update={"content_type": 'text/plain; x="meta":{}', "etag": "e"}),
            _rec("üñí/ключ", 1, new_guid()),
        ]
        assert names.apply_changes([[r] for r in records], grace=1.0) == [True] * len(records)
        names.mark_committed(records)
        parsed = names.listing(NS)
        raw = names.listing(NS, raw=True)
        assert not raw.objects and len(raw.raw) == len(records) == len(parsed.objects)
        assert [orjson.loads(r) for r in raw.raw] == parsed.objects
        assert raw.next == parsed.next
        first = names.listing(NS, raw=True, limit=2)
        assert first.next == parsed.objects[1]["key"] and len(first.raw) == 2
    finally:
        store.close()
