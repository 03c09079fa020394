"""Buckets and keys: the name operations a bucket's namespace primary runs.

A bucket's names are records in its namespace (:mod:`fds.names`), kept by the
holders of one row and changed with the two-phase commit of
:mod:`fds.tractserver._replicated`. This server runs the operations of the
namespaces whose row it leads:

- **Objects.** ``put`` points a key at a blob the writer has already written
  whole, or keeps a small object's bytes (up to :data:`fds.names.INLINE_MAX`)
  inside the record itself: either way the switch from the old object to the
  new one is one committed record, so a reader sees the old object or the new
  one, never a mix. ``if_none_match``
  (create only) and ``if_match`` (the current ETag) are checked under the key's
  lock against the committed record: 412 otherwise. ``rename`` moves a record
  from one key to another of the bucket in one step (both records prepared
  together). A blob a change stops naming waits in the namespace's queue for
  ``name_grace`` seconds (reads that looked the name up first finish) and is
  then deleted by :meth:`NameService.retire_once`.
- **Buckets.** Key ``""`` of a namespace is the bucket's own record: object
  changes need it, under a shared gate; deleting the bucket takes the gate
  alone, checks that no object is left and writes its tombstone, so no object
  can land in a bucket being deleted. The list of buckets is the catalogue
  namespace: the client adds a bucket there after creating it, and removes it
  after deleting it.
- **Listing** is one RocksDB iterator over the namespace from a seek
  (:meth:`fds.tractserver._namestore.NameStore.listing`); in-doubt records
  met on the way are replicated before the page is answered.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextlib import asynccontextmanager

import httpx
import orjson

from fds.errors import (
    BadRequest,
    BlobNotFound,
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    FDSError,
    KeyNotFound,
    PreconditionFailed,
    StaleVersion,
    error_from_response,
)
from fds.guid import format_guid
from fds.models import BucketInfo, NameRecord, NameRecords, ObjectInfo, ObjectPut, RenameRequest
from fds.names import CATALOGUE, bucket_guid, check_bucket, check_key, check_prefix
from fds.placement import METADATA_TRACT
from fds.tlt import Table
from fds.tractserver._meta import MetaService
from fds.tractserver._namestore import NameStore, Page, Retiring
from fds.tractserver._node import Node
from fds.tractserver._replicated import TwoPhase

__all__ = ["NameService", "MAX_PAGE"]

log = logging.getLogger("fds.tractserver")

MAX_PAGE = 10_000
"""The most names one listing page holds."""

_Key = tuple[bytes, str]

_REPLICATE_BATCH = 500
"""In-doubt records a listing replicates in one prepare (NameRecords takes up to 512)."""


class _NameRecords:
    """Name records as :class:`TwoPhase` stores and prepares them, keyed ``(namespace GUID, key)``."""

    what = "names"

    def __init__(self, names: NameStore, grace: float) -> None:
        self.names = names
        self.grace = grace

    def lock_key(self, key: Hashable) -> Hashable:
        return ("name", key)

    def load(self, key: Hashable) -> NameRecord | None:
        ns, name = _split(key)
        found = self.names.get(ns, name)
        return None if found is None else found[0]

    def group(self, guid: bytes, table: Table) -> Hashable:
        return guid  # the namespace: one prepare request carries records of one namespace

    def log(self, changes: Sequence[Sequence[NameRecord]]) -> list[bool]:
        return self.names.apply_changes(changes, grace=self.grace)

    def is_committed(self, key: Hashable, record: NameRecord) -> bool:
        ns, name = _split(key)
        found = self.names.get(ns, name, data=False)
        return found is not None and found[1] and (found[0].epoch, found[0].seq) == (record.epoch, record.seq)

    def mark_committed(self, keys: Sequence[Hashable], records: Sequence[NameRecord]) -> None:
        self.names.mark_committed(records)

    def prepare_request(self, records: Sequence[NameRecord]) -> tuple[str, bytes]:
        return f"/v1/internal/names/{records[0].ns}", NameRecords(records=list(records)).model_dump_json().encode()


def _split(key: Hashable) -> _Key:
    assert isinstance(key, tuple)
    ns, name = key
    assert isinstance(ns, bytes) and isinstance(name, str)
    return ns, name


def _object(record: NameRecord) -> ObjectInfo:
    return ObjectInfo(key=record.key, size=record.size, etag=record.etag, mtime=record.mtime,
                      content_type=record.content_type, meta=record.meta, blob=record.blob,
                      incarnation=record.incarnation)


def _unquote(etag: str) -> str:
    return etag[1:-1] if len(etag) >= 2 and etag[0] == etag[-1] == '"' else etag


class _Gate:
    """Per namespace: object changes share it; deleting the bucket holds it alone."""

    def __init__(self) -> None:
        self._users: Counter[bytes] = Counter()
        self._closing: set[bytes] = set()
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def shared(self, ns: bytes) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: ns not in self._closing)
            self._users[ns] += 1
        try:
            yield
        finally:
            async with self._changed:
                self._users[ns] -= 1
                if not self._users[ns]:
                    del self._users[ns]
                self._changed.notify_all()

    @asynccontextmanager
    async def alone(self, ns: bytes) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: ns not in self._closing)
            self._closing.add(ns)
            await self._changed.wait_for(lambda: not self._users[ns])
        try:
            yield
        finally:
            async with self._changed:
                self._closing.discard(ns)
                self._changed.notify_all()


class NameService:
    """The name operations of the namespaces whose row this server leads, and their retired blobs."""

    def __init__(self, node: Node, meta: MetaService) -> None:
        self.node = node
        self.meta = meta
        self.store = node.names
        self.records = TwoPhase(node, _NameRecords(self.store, node.config.name_grace))
        self._gate = _Gate()

    # -- checks ------------------------------------------------------------------
    async def _bucket(self, bucket: str, ns: bytes, table: Table) -> NameRecord:
        self.records.require_primary(ns, table, f"the names of bucket {bucket!r}")
        header = await self.records.committed(ns, (ns, ""), table)
        if header is None or header.deleted:
            raise BucketNotFound(f"no bucket {bucket!r}; create it first (`fds mb fds://{bucket}`)")
        return header

    async def _change(self, ns: bytes, keys: list[str], table: Table, op: str | None, what: str,
                      compute: Callable[[list[NameRecord | None]], tuple[list[NameRecord], int]]) -> list[NameRecord]:
        records, _ = await self.records.change(ns, [(ns, k) for k in keys], table, op, compute, what=what)
        return records

    # -- buckets -----------------------------------------------------------------
    async def create_bucket(self, bucket: str, table: Table, op: str | None) -> BucketInfo:
        ns = bucket_guid(check_bucket(bucket))

        def compute(olds: list[NameRecord | None]) -> tuple[list[NameRecord], int]:
            old = olds[0]
            if old is not None and not old.deleted:
                raise BucketExists(f"bucket {bucket!r} already exists")
            return [NameRecord(ns=format_guid(ns), key="", mtime=time.time(), meta={"name": bucket})], 0

        (record,) = await self._change(ns, [""], table, op, f"the names of bucket {bucket!r}", compute)
        return BucketInfo(name=bucket, created=record.mtime)

    async def head_bucket(self, bucket: str, table: Table) -> BucketInfo:
        ns = bucket_guid(check_bucket(bucket))
        return BucketInfo(name=bucket, created=(await self._bucket(bucket, ns, table)).mtime)

    async def delete_bucket(self, bucket: str, table: Table, op: str | None) -> None:
        ns = bucket_guid(check_bucket(bucket))
        self.records.require_primary(ns, table, f"the names of bucket {bucket!r}")
        what = f"the names of bucket {bucket!r}"

        def compute(olds: list[NameRecord | None]) -> tuple[list[NameRecord], int]:
            old = olds[0]
            if old is None or old.deleted:
                raise BucketNotFound(f"no bucket {bucket!r}")
            return [old.model_copy(update={"deleted": True, "mtime": time.time()})], 0

        async with self._gate.alone(ns):
            header = self.store.get(ns, "")
            if header is not None and op and op in header[0].ops and header[0].deleted:
                await self._change(ns, [""], table, op, what, compute)  # a retry: replicates the tombstone again
                return
            await self._bucket(bucket, ns, table)
            page = await self._listing(ns, table, limit=1)
            if page.objects:
                raise BucketNotEmpty(f"bucket {bucket!r} is not empty (it holds {page.objects[0]['key']!r} and maybe "
                                     f"more); delete its objects first (`fds rm -r fds://{bucket}/`)")
            await self._change(ns, [""], table, op, what, compute)

    # -- the catalogue of buckets --------------------------------------------------------
    async def catalogue_put(self, bucket: str, created: float, table: Table, op: str | None) -> None:
        check_bucket(bucket)

        def compute(olds: list[NameRecord | None]) -> tuple[list[NameRecord], int]:
            old = olds[0]
            if old is not None and not old.deleted:
                return [old], 0  # already listed: the record goes out again, unchanged but for its seq
            return [NameRecord(ns=format_guid(CATALOGUE), key=bucket, mtime=created)], 0

        await self._change(CATALOGUE, [bucket], table, op, "the list of buckets", compute)

    async def catalogue_delete(self, bucket: str, table: Table, op: str | None) -> None:
        check_bucket(bucket)

        def compute(olds: list[NameRecord | None]) -> tuple[list[NameRecord], int]:
            old = olds[0]
            if old is None or old.deleted:
                return [old or NameRecord(ns=format_guid(CATALOGUE), key=bucket, mtime=time.time(), deleted=True)], 0
            return [old.model_copy(update={"deleted": True})], 0

        await self._change(CATALOGUE, [bucket], table, op, "the list of buckets", compute)

    async def catalogue(self, after: str, limit: int, table: Table) -> list[BucketInfo]:
        self.records.require_primary(CATALOGUE, table, "the list of buckets")
        page = await self._listing(CATALOGUE, table, after=after, limit=limit)
        return [BucketInfo(name=o["key"], created=o["mtime"]) for o in page.objects]

    # -- objects -------------------------------------------------------------------------
    async def put(self, bucket: str, key: str, body: ObjectPut, table: Table, op: str | None, *,
                  if_match: str | None = None, if_none_match: bool = False) -> ObjectInfo:
        ns = bucket_guid(check_bucket(bucket))
        check_key(key)
        # An inline object has no blob GUID to make its ETag of: a fresh random one, so it still changes with
        # every write (caches and compare-and-swap commits rely on that).
        etag = body.etag or body.blob.replace("-", "") or secrets.token_hex(16)

        def compute(olds: list[NameRecord | None]) -> tuple[list[NameRecord], int]:
            old = olds[0]
            _check_conditions(bucket, key, old, if_match, if_none_match)
            return [NameRecord(ns=format_guid(ns), key=key, blob=body.blob, incarnation=body.incarnation,
                               size=body.size, etag=etag, mtime=time.time(), content_type=body.content_type,
                               meta=body.meta, data=body.data)], 1

        async with self._gate.shared(ns):
            await self._bucket(bucket, ns, table)
            (record,) = await self._change(ns, [key], table, op, f"the names of bucket {bucket!r}", compute)
        return _object(record)

    async def head(self, bucket: str, key: str, table: Table) -> tuple[ObjectInfo, bytes | None]:
        """The object and, if it is inline, its bytes (None for one in a blob)."""
        ns = bucket_guid(check_bucket(bucket))
        check_key(key)
        await self._bucket(bucket, ns, table)
        record = await self.records.committed(ns, (ns, key), table)
        if record is None or record.deleted:
            raise KeyNotFound(f"no object {key!r} in bucket {bucket!r}")
        return _object(record), record.data

    async def delete(self, bucket: str, key: str, table: Table, op: str | None, *,
                     if_match: str | None = None) -> None:
        ns = bucket_guid(check_bucket(bucket))
        check_key(key)

        def compute(olds: list[NameRecord | None]) -> tuple[list[NameRecord], int]:
            old = olds[0]
            if old is None or old.deleted:
                raise KeyNotFound(f"no object {key!r} in bucket {bucket!r}")
            _check_conditions(bucket, key, old, if_match, False)
            return [old.model_copy(update={"deleted": True, "mtime": time.time(), "data": None})], 0

        async with self._gate.shared(ns):
            await self._bucket(bucket, ns, table)
            await self._change(ns, [key], table, op, f"the names of bucket {bucket!r}", compute)

    async def rename(self, bucket: str, req: RenameRequest, table: Table, op: str | None) -> ObjectInfo:
        ns = bucket_guid(check_bucket(bucket))
        source, target = check_key(req.source), check_key(req.target)
        if source == target:
            raise BadRequest(f"rename {source!r} to itself: name another target", code="bad_key")

        def compute(olds: list[NameRecord | None]) -> tuple[list[NameRecord], int]:
            old_target, old_source = olds
            if old_source is None or old_source.deleted:
                raise KeyNotFound(f"no object {source!r} in bucket {bucket!r} to rename")
            _check_conditions(bucket, source, old_source, req.if_match, False)
            _check_conditions(bucket, target, old_target, None, req.if_none_match)
            now = time.time()
            moved = old_source.model_copy(update={"key": target, "mtime": now, "ops": {},
                                                  "seq": (old_target.seq + 1) if old_target else 1, "deleted": False})
            return [moved, old_source.model_copy(update={"deleted": True, "mtime": now, "data": None})], 1

        async with self._gate.shared(ns):
            await self._bucket(bucket, ns, table)
            moved, _ = await self._change(ns, [target, source], table, op, f"the names of bucket {bucket!r}",
                                          compute)
        return _object(moved)

    async def list_names(self, bucket: str, table: Table, *, prefix: str = "", after: str = "", delimiter: str = "",
                         limit: int = 1000) -> bytes:
        """One page of the bucket's names, as :class:`fds.models.NameListing`'s JSON (built without models or
        parsing: a page may hold ten thousand)."""
        ns = bucket_guid(check_bucket(bucket))
        check_prefix(prefix)
        check_prefix(after)
        check_prefix(delimiter)
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"a page holds 1 to {MAX_PAGE} names, not {limit}", code="bad_limit")
        await self._bucket(bucket, ns, table)
        page = await self._listing(ns, table, prefix=prefix, after=after, delimiter=delimiter, limit=limit, raw=True)
        return (b'{"objects":[' + b",".join(page.raw) + b'],"prefixes":' + orjson.dumps(page.prefixes)
                + b',"next":' + orjson.dumps(page.next) + b"}")

    async def _listing(self, ns: bytes, table: Table, *, prefix: str = "", after: str = "", delimiter: str = "",
                       limit: int = 1000, raw: bool = False) -> Page:
        for _attempt in range(3):
            page = await self.node.run_io(lambda: self.store.listing(ns, prefix=prefix, after=after,
                                                                     delimiter=delimiter, limit=limit, raw=raw))
            if not page.in_doubt:
                return page
            # Replicate before showing them: after a failed prepare, a restart, or on a new primary (which has
            # every record as a holder stored it, unmarked). In batches, not one request per record: holders keep
            # only newer records, and a record changed meanwhile is not marked, so no lock is needed.
            for at in range(0, len(page.in_doubt), _REPLICATE_BATCH):
                batch = page.in_doubt[at:at + _REPLICATE_BATCH]
                await self.records.replicate(ns, table, batch)
                await self.node.run_io(self.store.mark_committed, batch)
        raise StaleVersion("names in this bucket keep changing under a failing replica; retry",
                           server_version=table.version)

    def referenced(self, ns: bytes, blob: bytes) -> str | None:
        return self.store.referenced(ns, blob)

    async def apply(self, ns: bytes, records: list[NameRecord], table: Table) -> None:
        """A holder's side of the prepare: keep the records newer than its own."""
        if table.holders(ns, METADATA_TRACT)[0].id == self.node.id:
            raise StaleVersion("this server is the primary of that row; it does not take replicated records")
        if any(r.ns != format_guid(ns) for r in records):
            raise BadRequest("every record's namespace must be the one in the URL")
        await self.node.run_io(lambda: self.store.apply(records, grace=self.node.config.name_grace,
                                                        all_newer=False))

    # -- blobs no name refers to any more --------------------------------------------------
    async def retire_once(self) -> int:
        """Delete the due blobs of the queues of namespaces this server leads; returns how many.

        Other holders drop queued blobs that are already gone (their copy of the queue is for when they
        lead the row). A blob whose metadata primary cannot be reached waits for the next pass.
        """
        table = self.node.table
        if table is None:
            return 0
        items = await self.node.run_io(self.store.retiring, int(time.time() * 1000))
        retired = 0
        for item in items:
            leads = table.holders(item.ns, METADATA_TRACT)[0].id == self.node.id
            try:
                if self.store.referenced(item.ns, item.blob) is None:
                    if leads:
                        retired += await self._delete_blob(item, table)
                    elif await self._blob_alive(item, table):
                        continue
                await self.node.run_io(self.store.dequeue, item)
            except (FDSError, httpx.HTTPError) as exc:
                log.info("retiring blob %s waits: %s", format_guid(item.blob), exc)
        if retired:
            log.info("deleted %d blobs of replaced or deleted objects", retired)
        return retired

    async def _blob_alive(self, item: Retiring, table: Table) -> bool:
        try:
            return (await self.node.blob_info(item.blob, table)).incarnation == item.incarnation
        except BlobNotFound:
            return False

    async def _delete_blob(self, item: Retiring, table: Table) -> int:
        if not await self._blob_alive(item, table):
            return 0
        op = "retire-" + item.blob.hex()
        primary = table.holders(item.blob, METADATA_TRACT)[0]
        if primary.id == self.node.id:
            try:
                await self.meta.delete(item.blob, table, op)
            except BlobNotFound:
                return 0
            return 1
        http = self.node.http
        assert http is not None
        resp = await http.delete(f"{primary.url}/v1/meta/{format_guid(item.blob)}",
                                 params={"version": table.version, "op": op})
        if resp.status_code == 204:
            return 1
        err = error_from_response(resp.status_code, resp.content, where=f"delete blob {format_guid(item.blob)}")
        if isinstance(err, BlobNotFound):
            return 0
        raise err

    async def retire_loop(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.retire_once()
            except Exception:  # a bad pass must not end the loop
                log.exception("retiring pass failed")


def _check_conditions(bucket: str, key: str, old: NameRecord | None, if_match: str | None,
                      if_none_match: bool) -> None:
    live = old if old is not None and not old.deleted else None
    if if_none_match and live is not None:
        raise PreconditionFailed(f"object {key!r} already exists in bucket {bucket!r} (a create-only write: "
                                 "if_none_match)", etag=live.etag)
    if if_match is not None:
        if live is None:
            raise PreconditionFailed(f"no object {key!r} in bucket {bucket!r} to match ETag {if_match!r}")
        if if_match != "*" and _unquote(if_match) != live.etag:
            raise PreconditionFailed(f"object {key!r} in bucket {bucket!r} has ETag {live.etag!r}, not {if_match!r}; "
                                     "it changed since you read it", etag=live.etag)
