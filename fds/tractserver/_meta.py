"""Blob metadata (tract -1): create, stat, extend, set length, delete.

These run on the *primary* of the blob's tract -1 row, as changes of one
replicated record per blob (:mod:`fds.tractserver._replicated`: the
two-phase commit, operation ids, answering only from committed records). A
per-blob lock serialises them, so concurrent extends from any number of
clients each get their own range and never the same tract twice.

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

import time
from collections.abc import Callable, Hashable, Sequence

from fds.errors import BadRequest, BlobExists, BlobNotFound, StaleVersion
from fds.guid import format_guid, parse_guid
from fds.models import BlobInfo, ExtendResult, MetaRecord, MetaRecords
from fds.placement import METADATA_TRACT
from fds.tlt import Table
from fds.tractserver._node import Node
from fds.tractserver._replicated import TwoPhase

__all__ = ["MetaService"]


def _info(record: MetaRecord) -> BlobInfo:
    return BlobInfo(guid=record.guid, tracts=record.tracts, length=record.length, created=record.created,
                    incarnation=record.incarnation)


class _BlobRecords:
    """Blob metadata records as :class:`TwoPhase` stores and prepares them: one per blob, keyed by its GUID."""

    what = "metadata"

    def __init__(self, node: Node) -> None:
        self.store = node.store

    def lock_key(self, key: Hashable) -> Hashable:
        return ("meta", key)

    def load(self, key: Hashable) -> MetaRecord | None:
        assert isinstance(key, bytes)
        return self.store.meta(key)

    def group(self, guid: bytes, table: Table) -> Hashable:
        return table.row_of(guid, METADATA_TRACT)  # blobs of one row have the same holders: one prepare

    def log(self, changes: Sequence[Sequence[MetaRecord]]) -> list[bool]:
        return self.store.put_metas_if_newer([record for (record,) in changes])

    def is_committed(self, key: Hashable, record: MetaRecord) -> bool:
        assert isinstance(key, bytes)
        return self.store.is_committed(record, key)

    def mark_committed(self, keys: Sequence[Hashable], records: Sequence[MetaRecord]) -> None:
        self.store.mark_many_committed(records)

    def prepare_request(self, records: Sequence[MetaRecord]) -> tuple[str, bytes]:
        if len(records) == 1:
            return f"/v1/internal/meta/{records[0].guid}", records[0].model_dump_json().encode()
        return "/v1/internal/meta", MetaRecords(records=list(records)).model_dump_json().encode()


class MetaService:
    """The metadata operations of the blobs whose tract -1 row this server leads."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.records = TwoPhase(node, _BlobRecords(node))
        node.committed_meta = self.committed

    def _require_primary(self, guid: bytes, table: Table) -> None:
        self.records.require_primary(guid, table, f"the metadata of blob {format_guid(guid)}")

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
        def compute(olds: list[MetaRecord | None]) -> tuple[list[MetaRecord], int]:
            record, result = change(olds[0])
            return [record], result

        records, result = await self.records.change(guid, [guid], table, op, compute,
                                                    what=f"the metadata of blob {format_guid(guid)}")
        return records[0], result

    async def committed(self, guid: bytes, table: Table) -> MetaRecord | None:
        """The blob's record as every holder of its row has it (None if there is none).

        A record this primary has not seen committed (in doubt) is replicated first;
        if a holder cannot be reached, that raises Unavailable rather than answer from it.
        """
        return await self.records.committed(guid, guid, table)

    # -- operations ------------------------------------------------------------
    async def create(self, guid: bytes, table: Table, op: str | None = None, *, tracts: int = 0,
                     length: int | None = None) -> BlobInfo:
        """Create the blob, empty or (``tracts``, ``length``) already sized: one step where a writer that
        knows its size up front would otherwise create, extend and record the length."""
        if length is not None and -(-length // table.tract_size) != tracts:
            raise BadRequest(f"length {length} needs {-(-length // table.tract_size)} tracts of {table.tract_size} "
                             f"bytes, not {tracts}; a recorded length must fill every tract but the last")

        def change(old: MetaRecord | None) -> tuple[MetaRecord, int]:
            if old is not None and not old.deleted:
                raise BlobExists(f"blob {format_guid(guid)} already exists")
            seq = (old.seq + 1) if old else 1
            return MetaRecord(guid=format_guid(guid), tracts=tracts, length=length, created=time.time(), seq=seq,
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

    async def apply_many(self, records: list[MetaRecord], table: Table) -> None:
        """A holder's side of phase 1 for records of several blobs of one row (a group commit)."""
        guids = [parse_guid(r.guid) for r in records]
        if len(set(guids)) != len(guids):
            raise BadRequest("one record per blob in a batch")
        rows = {table.row_of(g, METADATA_TRACT) for g in guids}
        if len(rows) != 1:
            raise BadRequest("every record of a batch must be of one row")
        if table.holders(guids[0], METADATA_TRACT)[0].id == self.node.id:
            raise StaleVersion("this server is the primary of that row; it does not take replicated records")
        await self.node.run_io(self.node.store.put_metas_if_newer, records)
        for guid, record in zip(guids, records, strict=True):
            if record.deleted:
                self.node.forget_extent(guid)

    async def apply(self, guid: bytes, record: MetaRecord, table: Table) -> None:
        """A holder's side of phase 1: keep the record if it is newer by (epoch, seq)."""
        if table.holders(guid, METADATA_TRACT)[0].id == self.node.id:
            raise StaleVersion("this server is the primary of that row; it does not take replicated records")
        await self.node.run_io(self.node.store.put_meta_if_newer, guid, record)
        if record.deleted:
            self.node.forget_extent(guid)
