"""Blob metadata (tract -1): create, stat, extend, set length, delete.

These run on the *primary* of the blob's tract -1 row. A per-blob lock
serialises them, so concurrent extends from any number of clients each get
their own range and never the same tract twice.

Each change is a two-phase commit over the row:

1. **Prepare.** The primary computes the new record, tagged with
   ``(epoch, seq)``: the row's version and a per-blob counter, and logs it
   durably itself. Every other holder of the row (filling and leaving ones
   too) stores it durably and says yes. A holder whose table says the row
   has moved on refuses (409), so a primary that was replaced cannot get a
   change through.
2. **Commit.** Once every holder said yes, the primary answers the client.
   Any failure before that answers an error, and the client retries with
   the same operation id; the primary finds the id in its log, prepares
   the record on every holder again, and then answers.

A primary that crashes and restarts (without being declared dead) has its
own log, newer than or equal to every holder's, and its next change carries
the whole record to all of them.

**Only committed records are answered.** The primary's log may hold a record
that never reached every holder (the prepare failed, or the primary crashed
before it ended). Such a record is in doubt, and must not be shown to anyone:
a ``stat`` or an extent check that saw it, followed by a failover to a holder
without it, would have shown a size that then vanished. So after each commit
the primary marks the record committed, and before it answers from a record
without that mark (after a failed prepare, a restart, or on becoming primary)
it replicates the record to every holder first, finishing the commit.

Why this survives a crash of any one process: an acknowledged change is on
*every* holder of the row, so whichever survivor becomes primary (the
metaserver promotes the next holder in the row, never a filling one) has
it. A change that was prepared on some holders but never acknowledged is
*in doubt*; the new primary may or may not have it, and either outcome is
linearizable, because the client never heard back. Replicas keep the record
with the highest ``(epoch, seq)``, so a new primary's records supersede
anything an old one prepared. Each record remembers the last few operation
ids and their results: a client retrying an operation whose answer it lost
gets the original answer (the same extent range, or "created") instead of
having it applied twice.
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

_OPS_KEPT = 16
"""Operation ids remembered per blob: enough for every client that could be retrying at once."""


def _info(record: MetaRecord) -> BlobInfo:
    return BlobInfo(guid=record.guid, tracts=record.tracts, length=record.length, created=record.created,
                    incarnation=record.incarnation)


class MetaService:
    """The metadata operations of the blobs whose tract -1 row this server leads."""

    def __init__(self, node: Node) -> None:
        self.node = node
        node.committed_meta = self.committed

    def _require_primary(self, guid: bytes, table: Table) -> None:
        primary = table.holders(guid, METADATA_TRACT)[0]
        if primary.id != self.node.id:
            raise StaleVersion(f"this server is not the metadata primary of blob {format_guid(guid)} "
                               f"(that is {primary.id}); refetch the table", server_version=table.version)

    async def _live(self, guid: bytes, table: Table) -> MetaRecord:
        record = await self.committed(guid, table)
        if record is None or record.deleted:
            raise BlobNotFound(f"no blob {format_guid(guid)}")
        return record

    async def _change(self, guid: bytes, table: Table, op: str | None,
                      change: Callable[[MetaRecord | None], tuple[MetaRecord, int]]) -> tuple[MetaRecord, int]:
        """Run ``change`` (old record -> new record, result) as one committed step; returns both.

        A retried ``op`` that already took effect returns its first result and changes nothing.
        """
        self._require_primary(guid, table)
        async with self.node.locks.hold(("meta", guid)):
            old = self.node.store.meta(guid)
            if op and old is not None and op in old.ops:
                # A retry: the change is in our log; make sure every holder has it before answering again.
                await self._replicate(guid, table, old)
                await self.node.run_io(self.node.store.mark_committed, old, guid)
                return old, old.ops[op]
            record, result = change(old)
            ops = dict(record.ops)
            if op:
                ops[op] = result
                while len(ops) > _OPS_KEPT:
                    ops.pop(next(iter(ops)))
            epoch = table.row_versions[table.row_of(guid, METADATA_TRACT)]
            seq = max(record.seq, (old.seq + 1) if old else 1)
            record = record.model_copy(update={"ops": ops, "epoch": epoch, "seq": seq})
            if not await self.node.run_io(self.node.store.put_meta_if_newer, guid, record):  # the primary's log
                raise StaleVersion(f"blob {format_guid(guid)} has metadata from a newer primary than this server "
                                   f"(row version {epoch}); refetch the table", server_version=table.version)
            await self._replicate(guid, table, record)  # every other holder has it durably
            await self.node.run_io(self.node.store.mark_committed, record, guid)
            return record, result  # acknowledged: committed

    async def committed(self, guid: bytes, table: Table) -> MetaRecord | None:
        """The blob's record as every holder of its row has it (None if there is none).

        A record this primary has not seen committed (in doubt) is replicated first;
        if a holder cannot be reached, that raises Unavailable rather than answer from it.
        """
        store = self.node.store
        record = store.meta(guid)
        if record is None or store.is_committed(record, guid):
            return record
        async with self.node.locks.hold(("meta", guid)):
            record = store.meta(guid)
            if record is not None and not store.is_committed(record, guid):
                await self._replicate(guid, table, record)
                await self.node.run_io(store.mark_committed, record, guid)
            return record

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
    async def create(self, guid: bytes, table: Table, op: str | None = None) -> BlobInfo:
        def change(old: MetaRecord | None) -> tuple[MetaRecord, int]:
            if old is not None and not old.deleted:
                raise BlobExists(f"blob {format_guid(guid)} already exists")
            seq = (old.seq + 1) if old else 1
            return MetaRecord(guid=format_guid(guid), tracts=0, length=None, created=time.time(), seq=seq,
                              incarnation=seq, ops=old.ops if old else {}), 0

        record, _ = await self._change(guid, table, op, change)
        return _info(record) if not record.deleted else _info(await self._live(guid, table))

    async def stat(self, guid: bytes, table: Table) -> BlobInfo:
        self._require_primary(guid, table)
        return _info(await self._live(guid, table))

    async def extend(self, guid: bytes, count: int, table: Table, op: str | None = None) -> ExtendResult:
        def change(old: MetaRecord | None) -> tuple[MetaRecord, int]:
            if old is None or old.deleted:
                raise BlobNotFound(f"no blob {format_guid(guid)}")
            return old.model_copy(update={"tracts": old.tracts + count}), old.tracts

        record, first = await self._change(guid, table, op, change)
        return ExtendResult(first=first, count=count, tracts=record.tracts)

    async def set_length(self, guid: bytes, length: int, table: Table, op: str | None = None) -> BlobInfo:
        tract_size = table.tract_size

        def change(old: MetaRecord | None) -> tuple[MetaRecord, int]:
            if old is None or old.deleted:
                raise BlobNotFound(f"no blob {format_guid(guid)}")
            need = -(-length // tract_size)
            if need != old.tracts:
                raise BadRequest(f"length {length} needs {need} tracts of {tract_size} bytes, but the blob has "
                                 f"{old.tracts}; a recorded length must fill every tract but the last")
            return old.model_copy(update={"length": length}), 0

        record, _ = await self._change(guid, table, op, change)
        return _info(record)

    async def delete(self, guid: bytes, table: Table, op: str | None = None) -> None:
        def change(old: MetaRecord | None) -> tuple[MetaRecord, int]:
            if old is None or old.deleted:
                raise BlobNotFound(f"no blob {format_guid(guid)}")
            return old.model_copy(update={"deleted": True, "tracts": 0, "length": None}), 0

        await self._change(guid, table, op, change)
        self.node.forget_extent(guid)

    async def apply(self, guid: bytes, record: MetaRecord, table: Table) -> None:
        """A holder's side of phase 1: keep the record if it is newer by (epoch, seq)."""
        if table.holders(guid, METADATA_TRACT)[0].id == self.node.id:
            raise StaleVersion("this server is the primary of that row; it does not take replicated records")
        await self.node.run_io(self.node.store.put_meta_if_newer, guid, record)
        if record.deleted:
            self.node.forget_extent(guid)
