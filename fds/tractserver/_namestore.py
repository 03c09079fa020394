"""Name records on one disk: a bucket's keys in the tract server's RocksDB, in key order.

Layout (in the same RocksDB as the tract index, :mod:`fds.tractserver._store`)::

    n<ns:16><key UTF-8>             -> epoch, seq (8 B BE each), flags (1 B), NameRecord JSON (without data)
    d<ns:16><key UTF-8>             -> epoch, seq (8 B BE each), an inline object's bytes
    r<ns:16><blob:16>               -> key UTF-8: which name refers to the blob (derived)
    q<ns:16><due ms:8 BE><blob:16>  -> incarnation (8 B BE): a replaced blob, deleted once due (derived)

``ns`` is the namespace GUID (:func:`fds.names.bucket_guid`, or the catalogue's). Keys sort
by their UTF-8 bytes, so listing a bucket in order is one iterator from a seek: no merge,
nothing in memory but the page. Key ``""`` is the bucket's own record. Flags: 1 deleted (a
tombstone, kept so a holder that missed the delete cannot bring the name back), 2 committed
(this primary saw every holder store the record; never replicated: a holder stores 0), 4 inline
(the object's bytes are under ``d``, written in the same batch as the record and tagged with its
``(epoch, seq)``; kept apart so that listing, which reads only ``n``, never reads them).

The reference index (``r``) and the queue of replaced blobs (``q``) are derived: every holder
updates them in the same write batch as the records, from the change it applies, so a new
primary has its predecessor's queue.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import rocksdict

from fds.guid import parse_guid
from fds.models import NameRecord
from fds.tractserver._store import TractStore

__all__ = ["NameStore", "Page", "Retiring"]

_NAME = b"n"
_DATA = b"d"
_REF = b"r"
_QUEUE = b"q"
_HEAD = struct.Struct(">QQB")
_TAG = struct.Struct(">QQ")
_DELETED = 1
_COMMITTED = 2
_INLINE = 4
_LOCKS = 64
_LISTED = ("key", "size", "etag", "mtime", "content_type", "meta", "blob", "incarnation")


def _name_key(ns: bytes, key: str) -> bytes:
    return _NAME + ns + key.encode()


def _data_key(ns: bytes, key: str) -> bytes:
    return _DATA + ns + key.encode()


def _inline(record: NameRecord) -> bool:
    return record.data is not None and not record.deleted


def _encode(record: NameRecord) -> bytes:
    """The stored value of a record as a holder stores it (not committed); its data goes under ``d``."""
    flags = (_DELETED if record.deleted else 0) | (_INLINE if _inline(record) else 0)
    return _HEAD.pack(record.epoch, record.seq, flags) + record.model_dump_json(exclude={"data"}).encode()


_KEY_FIELD = b'"key":'
_NO_META = b'"meta":{}'
_NO_META_END = _NO_META + b',"seq":'


def _listed_json(value: bytes, head: int) -> bytes | None:
    """The listed fields of a stored record as JSON, cut from its bytes: NameRecord's JSON has ``ns`` first,
    then the listed fields in order (``key`` .. ``meta``), then ``seq``. Only for records without user
    metadata (an unescaped ``"meta":{},"seq":`` cannot occur inside a JSON string); None otherwise."""
    start = value.find(_KEY_FIELD, head)
    end = value.find(_NO_META_END, start)
    if start < 0 or end < 0:
        return None
    return b"{" + value[start:end + len(_NO_META)] + b"}"


def _next_prefix(prefix: bytes) -> bytes:
    """The first byte string after every string that starts with ``prefix`` (``prefix`` + 0xff won't do
    for GUIDs, whose bytes may be 0xff)."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else b"\xff" * (len(prefix) + 1)


@dataclass
class Page:
    """One page of a listing: live objects as dicts of ObjectInfo's fields, common prefixes, where the next page
    starts after, and the in-doubt records met (the caller replicates them, then lists again)."""

    objects: list[dict[str, Any]] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    """With ``raw=True``: the objects as JSON, not dicts."""
    prefixes: list[str] = field(default_factory=list)
    next: str | None = None
    in_doubt: list[NameRecord] = field(default_factory=list)


@dataclass(frozen=True)
class Retiring:
    """A replaced blob waiting in a namespace's queue."""

    ns: bytes
    due_ms: int
    blob: bytes
    incarnation: int

    @property
    def key(self) -> bytes:
        return _QUEUE + self.ns + self.due_ms.to_bytes(8, "big") + self.blob


class NameStore:
    """The name records of every namespace whose row this server holds. Methods block."""

    def __init__(self, store: TractStore) -> None:
        self._db = store._db
        self._sync = store._sync
        self._locks = [threading.Lock() for _ in range(_LOCKS)]

    def _lock(self, ns: bytes) -> threading.Lock:
        return self._locks[hash(ns) % _LOCKS]

    # -- one record --------------------------------------------------------------
    def get(self, ns: bytes, key: str, *, data: bool = True) -> tuple[NameRecord, bool] | None:
        """The record stored under ``key`` (with an inline object's bytes, unless ``data`` is False) and whether it
        is marked committed; None if there is none."""
        for _attempt in range(1000):
            raw = self._db.get(_name_key(ns, key))
            if raw is None:
                return None
            epoch, seq, flags = _HEAD.unpack_from(raw)
            record = NameRecord.model_validate_json(raw[_HEAD.size:])
            if not (data and flags & _INLINE):
                return record, bool(flags & _COMMITTED)
            stored = self._db.get(_data_key(ns, key))
            if stored is not None and _TAG.unpack_from(stored) == (epoch, seq):
                record.data = bytes(stored[_TAG.size:])
                return record, bool(flags & _COMMITTED)
            # a newer record and its bytes were written between the two reads (one batch): read both again
        raise RuntimeError(f"the inline bytes of name {key!r} never match its record")

    def _with_data(self, ns: bytes, record: NameRecord, flags: int) -> NameRecord:
        """``record`` (parsed from a listing) with its inline bytes, as :meth:`get` reads it."""
        if not flags & _INLINE:
            return record
        found = self.get(ns, record.key)
        return found[0] if found is not None else record

    def apply(self, records: Sequence[NameRecord], *, grace: float, all_newer: bool) -> bool:
        """Store the records of one change that are newer by ``(epoch, seq)`` than the stored ones, with the
        reference index and the queue of replaced blobs, in one synced write.

        ``all_newer`` (the primary's log): store nothing unless every record is newer; returns whether it
        stored them. A holder stores the newer ones (records of many changes may come at once); returns
        whether any was. Blobs the change stops naming are queued for deletion ``grace`` seconds after it.
        """
        if all_newer:
            return self.apply_changes([records], grace=grace)[0]
        ns = parse_guid(records[0].ns)
        with self._lock(ns):
            batch = rocksdict.WriteBatch(raw_mode=True)
            stored = self._stage(batch, ns, records, {}, grace=grace, all_newer=False)
            if stored:
                self._db.write(batch, self._sync)
            return stored

    def apply_changes(self, changes: Sequence[Sequence[NameRecord]], *, grace: float) -> list[bool]:
        """The primary's log of several changes to one namespace (a group commit): each change's records are
        stored only if every one is newer than the stored (or earlier in ``changes``) one; all in one synced
        write. Returns, per change, whether it was stored."""
        ns = parse_guid(changes[0][0].ns)
        current: dict[str, NameRecord | None] = {}
        with self._lock(ns):
            batch = rocksdict.WriteBatch(raw_mode=True)
            out = [self._stage(batch, ns, records, current, grace=grace, all_newer=True) for records in changes]
            if any(out):
                self._db.write(batch, self._sync)
            return out

    def _stage(self, batch: rocksdict.WriteBatch, ns: bytes, records: Sequence[NameRecord],
               current: dict[str, NameRecord | None], *, grace: float, all_newer: bool) -> bool:
        """Add one change's newer records to ``batch``; ``current`` holds the records staged so far (by key)."""
        olds = []
        for r in records:
            if r.key not in current:
                found = self.get(ns, r.key)
                current[r.key] = found[0] if found else None
            olds.append(current[r.key])
        fresh = [(r, o) for r, o in zip(records, olds, strict=True) if o is None or (r.epoch, r.seq) > (o.epoch, o.seq)]
        if not fresh or (all_newer and len(fresh) != len(records)):
            return False
        named = {r.blob for r, _ in fresh if r.blob and not r.deleted}
        for record, old in fresh:
            current[record.key] = record
            batch.put(_name_key(ns, record.key), _encode(record))
            if _inline(record):
                assert record.data is not None
                batch.put(_data_key(ns, record.key), _TAG.pack(record.epoch, record.seq) + record.data)
            elif old is not None and _inline(old):
                batch.delete(_data_key(ns, record.key))
            if old is not None and old.blob and not old.deleted and old.blob not in named:
                blob = parse_guid(old.blob)
                due = int((record.mtime + grace) * 1000)
                batch.delete(_REF + ns + blob)
                batch.put(Retiring(ns, due, blob, old.incarnation).key, old.incarnation.to_bytes(8, "big"))
            if record.blob and not record.deleted:
                batch.put(_REF + ns + parse_guid(record.blob), record.key.encode())
        return True

    def mark_committed(self, records: Sequence[NameRecord]) -> None:
        """Note that ``records`` are on every holder (not synced: a lost mark costs one more replication)."""
        if not records:
            return
        ns = parse_guid(records[0].ns)
        assert all(r.ns == records[0].ns for r in records)
        with self._lock(ns):
            batch = rocksdict.WriteBatch(raw_mode=True)
            for record in records:
                raw = self._db.get(_name_key(ns, record.key))
                if raw is not None and _HEAD.unpack_from(raw)[:2] == (record.epoch, record.seq):
                    marked = bytearray(raw)  # the stored record as it is (its inline flag too), marked
                    marked[_HEAD.size - 1] |= _COMMITTED
                    batch.put(_name_key(ns, record.key), bytes(marked))
            self._db.write(batch)

    def referenced(self, ns: bytes, blob: bytes) -> str | None:
        """The key that names ``blob`` in namespace ``ns``, if one does."""
        raw = self._db.get(_REF + ns + blob)
        return None if raw is None else bytes(raw).decode()

    # -- listing -------------------------------------------------------------------
    def listing(self, ns: bytes, *, prefix: str = "", after: str = "", delimiter: str = "", limit: int = 1000,
                with_deleted: bool = False, raw: bool = False) -> Page:
        """Up to ``limit`` live names (objects and common prefixes) of ``ns`` that start with ``prefix`` and
        sort after ``after``, in order; never key ``""`` (the bucket's own record). With ``raw``, objects come
        as JSON (``Page.raw``) cut from the stored records without parsing them where that is safe."""
        page = Page()
        base = _NAME + ns
        start = base + prefix.encode()
        after_key = base + after.encode() if after else b""
        delim = delimiter.encode()
        it = self._db.iter()
        it.seek(max(start, after_key + b"\x00") if after_key else start)
        last = ""
        count = 0
        objects, skip, head = page.objects, _DELETED if not with_deleted else 0, _HEAD.size
        while it.valid():
            raw_key = it.key()
            if not raw_key.startswith(start):
                break
            value = it.value()
            flags = value[head - 1]
            if flags & skip or len(raw_key) == len(base):  # tombstones; the bucket's own record
                it.next()
                continue
            if delim:
                key_bytes = raw_key[len(base):]
                cut = key_bytes.find(delim, len(start) - len(base))
                if cut >= 0:  # rolls up into a common prefix
                    common = base + key_bytes[:cut + len(delim)]
                    it.seek(common + b"\xff")  # past every key under it (UTF-8 has no 0xff byte)
                    if after_key and common <= after_key and not (after_key.startswith(common)
                                                                  and after_key != common):
                        continue  # listed on an earlier page
                    if count == limit:
                        page.next = last
                        break
                    last = common[len(base):].decode()
                    page.prefixes.append(last)
                    count += 1
                    continue
            if count == limit:
                page.next = last
                break
            if raw and flags & _COMMITTED and (fragment := _listed_json(value, head)) is not None:
                page.raw.append(fragment)
                last = raw_key[len(base):].decode()
            else:
                record = orjson.loads(memoryview(value)[head:])
                if not flags & _COMMITTED:  # replicated by the caller: with its inline bytes
                    page.in_doubt.append(self._with_data(ns, NameRecord.model_validate(record), flags))
                listed = {name: record[name] for name in _LISTED}
                if raw:
                    page.raw.append(orjson.dumps(listed))
                else:
                    objects.append(listed)
                last = record["key"]
            count += 1
            it.next()
        return page

    def records_where(self, keep: Callable[[bytes], bool]) -> list[NameRecord]:
        """Every name record (tombstones too) of the namespaces ``keep(ns)`` accepts: a row's listing."""
        out: list[NameRecord] = []
        it = self._db.iter()
        it.seek(_NAME)
        while it.valid():
            raw_key = bytes(it.key())
            if not raw_key.startswith(_NAME):
                break
            ns = raw_key[1:17]
            if not keep(ns):
                it.seek(_NAME + _next_prefix(ns))
                continue
            value = bytes(it.value())
            out.append(self._with_data(ns, NameRecord.model_validate_json(value[_HEAD.size:]), value[_HEAD.size - 1]))
            it.next()
        return out

    def namespaces(self) -> Iterator[bytes]:
        """Every namespace GUID with records here, each once."""
        it = self._db.iter()
        it.seek(_NAME)
        while it.valid():
            raw_key = bytes(it.key())
            if not raw_key.startswith(_NAME):
                break
            ns = raw_key[1:17]
            yield ns
            it.seek(_NAME + _next_prefix(ns))

    def drop_namespace(self, ns: bytes) -> None:
        """Forget a namespace whose row this server no longer holds: its records, index and queue."""
        with self._lock(ns):
            batch = rocksdict.WriteBatch(raw_mode=True)
            for prefix in (_NAME, _DATA, _REF, _QUEUE):
                batch.delete_range(prefix + ns, prefix + _next_prefix(ns))
            self._db.write(batch, self._sync)

    # -- the queue of replaced blobs --------------------------------------------------
    def retiring(self, now_ms: int | None = None) -> list[Retiring]:
        """Queued blobs of every namespace here, those due by ``now_ms`` only if it is given."""
        out: list[Retiring] = []
        it = self._db.iter()
        it.seek(_QUEUE)
        while it.valid():
            raw_key = bytes(it.key())
            if not raw_key.startswith(_QUEUE):
                break
            ns, due = raw_key[1:17], int.from_bytes(raw_key[17:25], "big")
            if now_ms is not None and due > now_ms:
                it.seek(_QUEUE + _next_prefix(ns))  # the rest of this namespace is due later
                continue
            out.append(Retiring(ns, due, raw_key[25:41], int.from_bytes(bytes(it.value()), "big")))
            it.next()
        return out

    def dequeue(self, item: Retiring) -> None:
        self._db.delete(item.key, self._sync)
