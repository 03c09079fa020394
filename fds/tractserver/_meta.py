"""Blob metadata (tract -1): create, stat, extend, set length, delete.

These run on the *primary* of the blob's tract -1 row. A per-blob lock
serialises them, so concurrent extends from any number of clients each get
their own range and never the same tract twice. Every change is made
durable locally (synced RocksDB write) and pushed to the row's other
replicas before it is acknowledged; a replica keeps the record with the
highest ``seq``. (Two-phase commit across a primary failure is the
replication issue's work; this is primary-backup.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx

from fds.errors import BadRequest, BlobExists, BlobNotFound, StaleVersion, Unavailable, error_from_response
from fds.guid import format_guid
from fds.models import BlobInfo, ExtendResult, MetaRecord
from fds.placement import METADATA_TRACT
from fds.tlt import Table
from fds.tractserver._node import Node

__all__ = ["MetaService"]


def _info(record: MetaRecord) -> BlobInfo:
    return BlobInfo(guid=record.guid, tracts=record.tracts, length=record.length, created=record.created,
                    incarnation=record.incarnation)


class MetaService:
    """The metadata operations of the blobs whose tract -1 row this server leads."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._locks: dict[bytes, asyncio.Lock] = {}

    def _require_primary(self, guid: bytes, table: Table) -> None:
        primary = table.holders(guid, METADATA_TRACT)[0]
        if primary.id != self.node.id:
            raise StaleVersion(f"this server is not the metadata primary of blob {format_guid(guid)} "
                               f"(that is {primary.id}); refetch the table", server_version=table.version)

    def _live(self, guid: bytes) -> MetaRecord:
        record = self.node.store.meta(guid)
        if record is None or record.deleted:
            raise BlobNotFound(f"no blob {format_guid(guid)}")
        return record

    async def _change(self, guid: bytes, table: Table, change: Callable[[MetaRecord | None], MetaRecord]) -> MetaRecord:
        self._require_primary(guid, table)
        lock = self._locks.setdefault(guid, asyncio.Lock())
        try:
            async with lock:
                record = change(self.node.store.meta(guid))
                await self.node.run_io(self.node.store.put_meta, guid, record)
                await self._replicate(guid, table, record)
                return record
        finally:
            if not lock.locked() and not lock._waiters:
                self._locks.pop(guid, None)

    async def _replicate(self, guid: bytes, table: Table, record: MetaRecord) -> None:
        others = [s for s in table.holders(guid, METADATA_TRACT) if s.id != self.node.id]
        if not others:
            return
        http = self.node.http
        assert http is not None
        body = record.model_dump_json()

        async def push(url: str) -> None:
            resp = await http.put(f"{url}/v1/internal/meta/{record.guid}", content=body,
                                  params={"version": table.version}, headers={"content-type": "application/json"})
            if resp.status_code != 200:
                raise error_from_response(resp.status_code, resp.content, where=f"replicate metadata to {url}")

        results = await asyncio.gather(*(push(s.url) for s in others), return_exceptions=True)
        for server, result in zip(others, results, strict=True):
            if isinstance(result, httpx.HTTPError):
                raise Unavailable(f"metadata replica {server.id} unreachable: {result}; nothing acknowledged")
            if isinstance(result, BaseException):
                raise result

    # -- operations ------------------------------------------------------------
    async def create(self, guid: bytes, table: Table) -> BlobInfo:
        def change(old: MetaRecord | None) -> MetaRecord:
            if old is not None and not old.deleted:
                raise BlobExists(f"blob {format_guid(guid)} already exists")
            seq = (old.seq + 1) if old else 1
            return MetaRecord(guid=format_guid(guid), tracts=0, length=None, created=time.time(), seq=seq,
                              incarnation=seq)

        return _info(await self._change(guid, table, change))

    def stat(self, guid: bytes, table: Table) -> BlobInfo:
        self._require_primary(guid, table)
        return _info(self._live(guid))

    async def extend(self, guid: bytes, count: int, table: Table) -> ExtendResult:
        first = 0

        def change(old: MetaRecord | None) -> MetaRecord:
            nonlocal first
            if old is None or old.deleted:
                raise BlobNotFound(f"no blob {format_guid(guid)}")
            first = old.tracts
            return old.model_copy(update={"tracts": old.tracts + count, "seq": old.seq + 1})

        record = await self._change(guid, table, change)
        return ExtendResult(first=first, count=count, tracts=record.tracts)

    async def set_length(self, guid: bytes, length: int, table: Table) -> BlobInfo:
        tract_size = table.tract_size

        def change(old: MetaRecord | None) -> MetaRecord:
            if old is None or old.deleted:
                raise BlobNotFound(f"no blob {format_guid(guid)}")
            need = -(-length // tract_size)
            if need != old.tracts:
                raise BadRequest(f"length {length} needs {need} tracts of {tract_size} bytes, but the blob has "
                                 f"{old.tracts}; a recorded length must fill every tract but the last")
            return old.model_copy(update={"length": length, "seq": old.seq + 1})

        return _info(await self._change(guid, table, change))

    async def delete(self, guid: bytes, table: Table) -> None:
        def change(old: MetaRecord | None) -> MetaRecord:
            if old is None or old.deleted:
                raise BlobNotFound(f"no blob {format_guid(guid)}")
            return old.model_copy(update={"deleted": True, "tracts": 0, "length": None, "seq": old.seq + 1})

        await self._change(guid, table, change)
        self.node.forget_extent(guid)

    async def apply(self, guid: bytes, record: MetaRecord, table: Table) -> None:
        """A replica's side of :meth:`_replicate`: keep the newest record."""
        if table.holders(guid, METADATA_TRACT)[0].id == self.node.id:
            raise StaleVersion("this server is the primary of that row; it does not take replicated records")
        current = self.node.store.meta(guid)
        if current is None or record.seq > current.seq:
            await self.node.run_io(self.node.store.put_meta, guid, record)
        if record.deleted:
            self.node.forget_extent(guid)
