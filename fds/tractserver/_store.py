"""Tracts on one disk: files, plus a RocksDB index that is the commit point.

Layout under the server's data directory::

    index.rocksdb/      t<guid:16><incarnation:8 BE><tract:8 BE>  -> length, xxh3, generation, written_at,
                                                                     version (stamp, writer)
                        m<guid:16>                                -> MetaRecord JSON (tract -1)
                        c<guid:16>                                -> (epoch, seq) of the record known on
                                                                     every holder (metadata primaries)
    tracts/<gg>/<guid hex>.<incarnation>.<tract>.<generation hex>    the tract's bytes, nothing else

The 256 shard directories ``tracts/<gg>`` are made, durably, when the store
opens; a write never creates a directory.

The blob's *incarnation* (see :class:`fds.models.MetaRecord`) is part of
every tract's name, so a GUID deleted and created again starts with no
tracts, and the old incarnation's tracts are the collector's to remove.

A write (see :meth:`TractStore.write`):

1. writes the bytes under a *new* file name (a new generation) through
   :func:`fds.durable.create_durably` (O_DIRECT write, fdatasync, and a
   directory fsync shared with concurrent writers). The name is never
   reused, so no temporary or rename is needed;
2. puts the index entry pointing at that generation, with the write's
   version (:mod:`fds.versions`), with a synced WAL write. This is the
   commit point;
3. unlinks the previous generation's file.

Killed before 2, the index still names the old file, so readers see the old
tract; the new file, whole or partial, is an orphan. Killed after 2, readers see the new one;
the old file is the orphan. :meth:`TractStore.sweep` removes orphans and
temporaries at start-up. No reader can ever see a torn tract, and a
checksum mismatch on read is refused, not served.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import rocksdict
import xxhash

from fds.buffers import is_aligned
from fds.durable import create_durably, ensure_dir, fsync_dir, read_direct, remove_temporaries
from fds.errors import ChecksumMismatch, Conflict, DiskFull, Superseded, TractNotFound
from fds.guid import format_guid, parse_guid
from fds.models import MetaRecord
from fds.tractserver._cache import TractCache
from fds.versions import TractVersion

__all__ = ["TractStore", "TractEntry"]

log = logging.getLogger("fds.tractserver")

_ENTRY = struct.Struct(">QQQQQQ")
_ENTRY_UNVERSIONED = struct.Struct(">QQQQ")
"""Index entries written before tract versions: they read as version 0.0, older than any write."""
_TRACT = b"t"
_META = b"m"
_COMMITTED = b"c"
_MARK = struct.Struct(">QQ")
_META_LOCKS = 64
"""Stripes of the lock that makes each metadata record's compare-and-put one step."""


@dataclass(frozen=True, slots=True)
class TractEntry:
    length: int
    checksum: int
    generation: int
    written_ns: int
    stamp: int = 0
    writer: int = 0

    @property
    def version(self) -> TractVersion:
        return TractVersion(self.stamp, self.writer)

    def pack(self) -> bytes:
        return _ENTRY.pack(self.length, self.checksum, self.generation, self.written_ns, self.stamp, self.writer)

    @classmethod
    def unpack(cls, raw: bytes) -> TractEntry:
        if len(raw) == _ENTRY_UNVERSIONED.size:
            return cls(*_ENTRY_UNVERSIONED.unpack(raw))
        return cls(*_ENTRY.unpack(raw))


def _tract_key(guid: bytes, tract: int, incarnation: int) -> bytes:
    return _TRACT + guid + incarnation.to_bytes(8, "big") + tract.to_bytes(8, "big")


class TractStore:
    """One disk's tracts and blob metadata records. Methods block: call them off the event loop."""

    def __init__(self, root: str | os.PathLike[str], *, capacity_bytes: int = 0, cache_bytes: int = 0,
                 direct_io: bool = True) -> None:
        self.root = ensure_dir(root)
        self.tract_dir = ensure_dir(self.root / "tracts")
        self._make_shards()
        self._db = rocksdict.Rdict(str(self.root / "index.rocksdb"), rocksdict.Options(raw_mode=True))
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True
        self._lock = threading.Lock()
        self._meta_locks = [threading.Lock() for _ in range(_META_LOCKS)]
        self._last_generation = 0
        self.capacity_bytes = capacity_bytes or shutil.disk_usage(self.root).total
        self.tracts = 0
        self.bytes_used = 0
        self.checksum_failures = 0
        self.cache = TractCache(cache_bytes)
        self.direct_io = direct_io
        for _key, value in self._iter_prefix(_TRACT):
            entry = TractEntry.unpack(value)
            self.tracts += 1
            self.bytes_used += entry.length

    def close(self) -> None:
        self._db.close()

    def _make_shards(self) -> None:
        """Create every shard directory now, and make their entries durable with one fsync.

        A write must never create one: a concurrent writer that finds the
        directory already there would commit a tract before its creator's
        fsync of ``tracts/`` made the directory durable, and a power loss
        would take the acknowledged tract with it (tests/fault/powerloss).
        """
        for shard in range(256):
            (self.tract_dir / f"{shard:02x}").mkdir(exist_ok=True)
        fsync_dir(self.tract_dir)  # also covers shards an older version made and never synced

    # -- paths and generations -------------------------------------------
    def _path(self, guid: bytes, tract: int, generation: int, incarnation: int) -> Path:
        hexed = guid.hex()
        return self.tract_dir / hexed[:2] / f"{hexed}.{incarnation}.{tract}.{generation:x}"

    def _next_generation(self) -> int:
        with self._lock:
            gen = max(time.time_ns(), self._last_generation + 1)
            self._last_generation = gen
            return gen

    # -- tracts ------------------------------------------------------------
    def entry(self, guid: bytes, tract: int, incarnation: int = 0) -> TractEntry | None:
        raw = self._db.get(_tract_key(guid, tract, incarnation))
        return None if raw is None else TractEntry.unpack(raw)

    def write(self, guid: bytes, tract: int, data: bytes | bytearray | memoryview, incarnation: int = 0,
              version: TractVersion | None = None, *, copy: bool = False,
              replace: int | None = None) -> TractEntry | None:
        """Store a tract durably if ``version`` is newer than the stored one; on return it survives a crash.

        A client write (``copy`` false) older than the stored version raises Superseded (naming it); the
        same version with the same bytes is a retry and returns the stored entry; the same version with
        other bytes raises Conflict. Without ``version`` (a writer that does not version its writes) the
        server assigns one newer than the stored one. Raises DiskFull.

        Copies made by recovery and the scrubber pass the source's version with ``copy``: they return
        None instead of raising, and when nothing needed writing. ``replace`` (a generation) replaces the
        stored tract whatever its version, if it still has that generation (the scrubber's repair of a
        copy that failed its checksum). Callers hold the tract's lock, so the test and the write are one
        step.

        A view made by :func:`fds.buffers.aligned` is written with O_DIRECT
        (the request path does this) unless the store was opened with
        ``direct_io=False``; other buffers go through the page cache.
        """
        length = len(data)
        checksum = xxhash.xxh3_64_intdigest(data)
        old = self.entry(guid, tract, incarnation)
        if version is None:
            version = TractVersion(max(time.time_ns(), old.stamp + 1 if old else 0), 0)
        if replace is not None:
            if old is None or old.generation != replace:
                return None
        elif old is not None and version <= old.version:
            if version == old.version and checksum == old.checksum:
                return None if copy else old  # already here: a retried write, or a copy of what we hold
            if copy:
                return None
            if version == old.version:
                raise Conflict(f"tract {tract} of blob {format_guid(guid)} holds other bytes under version "
                               f"{version}; write again with a new version", code="version_conflict")
            raise Superseded(f"tract {tract} of blob {format_guid(guid)} holds a newer version ({old.version}) "
                             f"than this write's ({version}); write again with a newer one",
                             stamp=old.stamp, writer=old.writer)
        growth = length - (old.length if old else 0)
        if growth > 0 and self.bytes_used + growth > self.capacity_bytes:
            raise DiskFull(f"tract server is full: {self.bytes_used} of {self.capacity_bytes} bytes used, "
                           f"this tract needs {growth} more; nothing was written")
        generation = self._next_generation()
        path = self._path(guid, tract, generation, incarnation)
        try:
            create_durably(path, data, direct=self.direct_io and is_aligned(data))
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise DiskFull(f"tract server's disk is full ({exc.strerror}); nothing was written") from None
            raise
        entry = TractEntry(length, checksum, generation, time.time_ns(), version.stamp, version.writer)
        self._db.put(_tract_key(guid, tract, incarnation), entry.pack(), self._sync)
        with self._lock:
            self.bytes_used += growth
            self.tracts += old is None
        if self.cache.capacity:
            view = memoryview(data)
            if not isinstance(view.obj, bytearray) or len(view) * 2 < len(view.obj):
                view = memoryview(bytes(view))  # own a copy that is no bigger than the tract
            self.cache.put(_tract_key(guid, tract, incarnation), generation, view)
        if old is not None:
            self._unlink(self._path(guid, tract, old.generation, incarnation))
        return entry

    def restamp(self, guid: bytes, tract: int, incarnation: int, version: TractVersion, checksum: int) -> bool:
        """Adopt a newer ``version`` for the bytes stored, if they are the bytes named (``checksum``): a replica
        holding the same bytes under an older version needs no copy, only the version. Returns whether it did.
        Callers hold the tract's lock."""
        old = self.entry(guid, tract, incarnation)
        if old is None or old.checksum != checksum or version <= old.version:
            return False
        entry = TractEntry(old.length, old.checksum, old.generation, old.written_ns, version.stamp, version.writer)
        self._db.put(_tract_key(guid, tract, incarnation), entry.pack(), self._sync)
        return True

    def read(self, guid: bytes, tract: int, incarnation: int = 0) -> tuple[memoryview, TractEntry]:
        """Read and verify a tract. Raises TractNotFound or ChecksumMismatch."""
        for _attempt in range(3):
            entry = self.entry(guid, tract, incarnation)
            if entry is None:
                raise TractNotFound(f"tract {tract} of blob {format_guid(guid)} is not stored here")
            key = _tract_key(guid, tract, incarnation)
            cached = self.cache.get(key, entry.generation)
            try:
                data = cached if cached is not None else read_direct(
                    self._path(guid, tract, entry.generation, incarnation), entry.length, direct=self.direct_io)
            except FileNotFoundError:
                continue  # overwritten between index lookup and open: look again
            if len(data) != entry.length or xxhash.xxh3_64_intdigest(data) != entry.checksum:
                self.checksum_failures += 1
                log.error("checksum mismatch: blob %s tract %d (%d bytes on disk, %d expected)",
                          format_guid(guid), tract, len(data), entry.length)
                self.cache.drop(key)
                raise ChecksumMismatch(
                    f"tract {tract} of blob {format_guid(guid)} failed its checksum on this server; "
                    "read another replica")
            if cached is None and self.cache.capacity:
                self.cache.put(key, entry.generation, data)
            return data, entry
        raise TractNotFound(f"tract {tract} of blob {format_guid(guid)} is being rewritten; retry")

    def delete_tracts(self, guid: bytes, incarnation: int) -> int:
        """Remove every tract of one incarnation of a blob; returns how many."""
        removed = 0
        for key, value in list(self._iter_prefix(_TRACT + guid + incarnation.to_bytes(8, "big"))):
            self._remove(key, TractEntry.unpack(value), guid, int.from_bytes(key[25:33], "big"), incarnation)
            removed += 1
        return removed

    def delete_tract(self, guid: bytes, tract: int, incarnation: int) -> bool:
        key = _tract_key(guid, tract, incarnation)
        raw = self._db.get(key)
        if raw is None:
            return False
        self._remove(key, TractEntry.unpack(raw), guid, tract, incarnation)
        return True

    def _remove(self, key: bytes, entry: TractEntry, guid: bytes, tract: int, incarnation: int) -> None:
        """Drop one tract: its index entry (synced), any cached copy, its file, and its share of the totals."""
        self._db.delete(key, self._sync)
        self.cache.drop(key)
        self._unlink(self._path(guid, tract, entry.generation, incarnation))
        with self._lock:
            self.tracts -= 1
            self.bytes_used -= entry.length

    def tracts_where(self, keep: Callable[[bytes, int], bool]) -> list[tuple[bytes, int, int, TractEntry]]:
        """``(guid, incarnation, tract, entry)`` of every tract for which ``keep(guid, tract)`` is true."""
        out = []
        for key, value in self._iter_prefix(_TRACT):
            guid, tract = key[1:17], int.from_bytes(key[25:33], "big")
            if keep(guid, tract):
                out.append((guid, int.from_bytes(key[17:25], "big"), tract, TractEntry.unpack(value)))
        return out

    def metas_where(self, keep: Callable[[bytes], bool]) -> list[MetaRecord]:
        return [MetaRecord.model_validate_json(value) for key, value in self._iter_prefix(_META) if keep(key[1:17])]

    def verify(self, guid: bytes, tract: int, incarnation: int) -> TractEntry | None:
        """Re-read a tract from disk (never the cache) and check it; returns the entry if it is bad or
        missing, None if it is good or gone from the index."""
        entry = self.entry(guid, tract, incarnation)
        if entry is None:
            return None
        try:
            data = read_direct(self._path(guid, tract, entry.generation, incarnation), entry.length,
                               direct=self.direct_io)
        except FileNotFoundError:
            return entry if self.entry(guid, tract, incarnation) == entry else None
        if len(data) != entry.length or xxhash.xxh3_64_intdigest(data) != entry.checksum:
            if self.entry(guid, tract, incarnation) != entry:
                return None  # rewritten while we read
            self.checksum_failures += 1
            log.error("scrub: checksum mismatch in blob %s tract %d", format_guid(guid), tract)
            return entry
        return None

    def blobs(self) -> Iterator[tuple[bytes, int]]:
        """``(guid, incarnation)`` of every blob incarnation with tracts here, each once."""
        it = self._db.iter()
        it.seek(_TRACT)
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(_TRACT):
                break
            guid, incarnation = key[1:17], int.from_bytes(key[17:25], "big")
            yield guid, incarnation
            it.seek(key[:25] + b"\xff" * 8 + b"\x00")

    # -- blob metadata (tract -1) -----------------------------------------
    def meta(self, guid: bytes) -> MetaRecord | None:
        raw = self._db.get(_META + guid)
        return None if raw is None else MetaRecord.model_validate_json(raw)

    def put_meta_if_newer(self, guid: bytes, record: MetaRecord) -> bool:
        """Keep ``record`` if it is newer by (epoch, seq) than the one stored; returns whether it was.

        The comparison and the put are one step under the blob's lock: the two-phase commit's
        prepare, the filler and the scrubber all apply records here, at once, and a record they
        compared against must still be the stored one when theirs goes in (or an acknowledged
        extend could be overwritten by an older record).
        """
        with self._meta_locks[hash(guid) % _META_LOCKS]:
            current = self.meta(guid)
            if current is not None and (record.epoch, record.seq) <= (current.epoch, current.seq):
                return False
            self._db.put(_META + guid, record.model_dump_json().encode(), self._sync)
            return True

    def put_metas_if_newer(self, records: Sequence[MetaRecord]) -> list[bool]:
        """:meth:`put_meta_if_newer` for records of distinct blobs (a group commit), in one synced write."""
        guids = [parse_guid(r.guid) for r in records]
        locks = sorted({hash(g) % _META_LOCKS for g in guids})
        for index in locks:
            self._meta_locks[index].acquire()
        try:
            batch = rocksdict.WriteBatch(raw_mode=True)
            out = []
            for guid, record in zip(guids, records, strict=True):
                current = self.meta(guid)
                newer = current is None or (record.epoch, record.seq) > (current.epoch, current.seq)
                if newer:
                    batch.put(_META + guid, record.model_dump_json().encode())
                out.append(newer)
            if any(out):
                self._db.write(batch, self._sync)
            return out
        finally:
            for index in locks:
                self._meta_locks[index].release()

    def mark_many_committed(self, records: Sequence[MetaRecord]) -> None:
        """:meth:`mark_committed` for several records, in one (unsynced) write."""
        batch = rocksdict.WriteBatch(raw_mode=True)
        for record in records:
            batch.put(_COMMITTED + parse_guid(record.guid), _MARK.pack(record.epoch, record.seq))
        self._db.write(batch)

    def delete_meta(self, guid: bytes) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        batch.delete(_META + guid)
        batch.delete(_COMMITTED + guid)
        self._db.write(batch, self._sync)

    def mark_committed(self, record: MetaRecord, guid: bytes) -> None:
        """Note that ``record`` is on every holder of its row (the primary replicated it).

        Not synced: a mark lost to a power cut only makes the primary replicate the record once
        more before it answers from it."""
        self._db.put(_COMMITTED + guid, _MARK.pack(record.epoch, record.seq))

    def is_committed(self, record: MetaRecord, guid: bytes) -> bool:
        """Whether ``record`` is the one :meth:`mark_committed` last marked."""
        raw = self._db.get(_COMMITTED + guid)
        return raw is not None and _MARK.unpack(raw) == (record.epoch, record.seq)

    # -- maintenance -------------------------------------------------------
    def sweep(self) -> int:
        """Remove temporaries and tract files the index does not name (crash leftovers)."""
        removed = remove_temporaries(self.tract_dir)
        for shard in self.tract_dir.iterdir():
            if not shard.is_dir():
                continue
            for file in shard.iterdir():
                try:
                    hexed, inc_text, tract_text, gen_text = file.name.split(".")
                    guid, tract, generation = bytes.fromhex(hexed), int(tract_text), int(gen_text, 16)
                    incarnation = int(inc_text)
                except ValueError:
                    continue
                entry = self.entry(guid, tract, incarnation)
                if entry is None or entry.generation != generation:
                    self._unlink(file)
                    removed += 1
        if removed:
            log.info("swept %d leftover files from interrupted writes", removed)
        return removed

    def disk_free(self) -> int:
        free = shutil.disk_usage(self.root).free
        return max(0, min(free, self.capacity_bytes - self.bytes_used))

    def _iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self._db.iter()
        it.seek(prefix)
        while it.valid():
            key = bytes(it.key())
            if not key.startswith(prefix):
                break
            yield key, bytes(it.value())
            it.next()

    @staticmethod
    def _unlink(path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
