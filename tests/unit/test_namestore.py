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


def test_inline_bytes_are_kept_beside_the_record_and_never_listed(tmp_path: Path) -> None:
    """An inline object's bytes go under their own key, in the record's batch and tagged with its (epoch, seq):
    get and a row's listing carry them, listing pages never do; tombstones, renames away and a blob object
    in its place drop them, and replacing a blob object by an inline one queues the blob."""
    import orjson

    store = TractStore(tmp_path, direct_io=False)
    try:
        names = NameStore(store)
        blob = new_guid()
        small = bytes(range(256)) * 64
        inline = _rec("i", 1).model_copy(update={"data": small, "size": len(small), "incarnation": 0})
        assert names.apply_changes([[_rec("b", 1, blob)], [inline], [_rec("gone", 1).model_copy(
            update={"data": b"x", "incarnation": 0})]], grace=1.0) == [True, True, True]
        assert names.get(NS, "i") == (inline, False)
        assert names.get(NS, "i", data=False) == (inline.model_copy(update={"data": None}), False)
        names.mark_committed([inline])
        assert names.get(NS, "i") == (inline, True)  # marking keeps the bytes and the inline flag
        page = names.listing(NS)  # "gone" and "b" are in doubt: replicated with their bytes, "i" is not
        assert {r.key: r.data for r in page.in_doubt} == {"b": None, "gone": b"x"}
        for listed in (page.objects, [orjson.loads(r) for r in names.listing(NS, raw=True).raw]):
            assert [o["key"] for o in listed] == ["b", "gone", "i"]
            assert all("data" not in o for o in listed) and listed[2]["blob"] == ""
        assert {r.key: r.data for r in names.records_where(lambda ns: ns == NS)} == {"b": None, "gone": b"x",
                                                                                      "i": small}
        # blob -> inline: the blob is queued; inline -> tombstone and inline -> blob: the bytes go
        over = _rec("b", 2).model_copy(update={"data": b"now inline", "incarnation": 0})
        assert names.apply([over], grace=1.0, all_newer=False)
        assert [r.blob for r in names.retiring()] == [blob] and names.referenced(NS, blob) is None
        assert names.apply([_rec("gone", 2).model_copy(update={"deleted": True})], grace=1.0, all_newer=False)
        assert names.apply([_rec("i", 2, new_guid())], grace=1.0, all_newer=False)
        assert names.get(NS, "b") == (over, False)
        got_gone, got_i = names.get(NS, "gone"), names.get(NS, "i")
        assert got_gone is not None and got_gone[0].deleted and got_gone[0].data is None
        assert got_i is not None and got_i[0].data is None and got_i[0].blob
        assert sorted(k for k in store._db.keys() if bytes(k[:1]) == b"d") == [b"d" + NS + b"b"]
        names.drop_namespace(NS)
        assert not [k for k in store._db.keys() if bytes(k[:1]) in b"dnrq"]
    finally:
        store.close()
