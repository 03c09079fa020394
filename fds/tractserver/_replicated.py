"""Replicated records: the two-phase commit that blob metadata and names share.

A *record* lives on every holder of one row of the table (the row of some
GUID's tract -1: a blob's, or a bucket's namespace GUID). The row's primary
orders every change to it:

1. **Prepare.** Under a lock per record, the primary computes the new
   records, tags each with ``(epoch, seq)``: the row's version and a
   per-record counter, and logs them durably itself; every other holder
   of the row (filling and leaving ones too) stores them durably and says
   yes. A holder whose table says the row has moved on refuses (409), so
   a primary that was replaced cannot get a change through. Holders keep
   a record only if it is newer by ``(epoch, seq)`` than theirs.
2. **Commit.** Once every holder said yes, the primary marks the records
   committed and answers. Any failure before that answers an error; the
   client retries with the same operation id, the primary finds the id in
   the records and prepares them on every holder again before answering.

**Only committed records are answered.** A record the primary logged but
has not seen on every holder (a failed prepare, a restart, a new primary)
is *in doubt*: before answering from it, the primary replicates it to every
holder (:meth:`TwoPhase.committed`), so nothing shown can vanish in a
failover. An acknowledged change is on every holder, so whichever survivor
becomes primary (never a filling one) has it.

What differs between kinds of records (how they are stored, where a prepare
is sent) is a :class:`RecordKind`; :mod:`fds.tractserver._meta` and
:mod:`fds.tractserver._names` each give one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Sequence
from contextlib import AsyncExitStack
from typing import Any, Generic, Protocol, TypeVar

import httpx

from fds.errors import StaleVersion, Unavailable, error_from_response
from fds.guid import format_guid
from fds.placement import METADATA_TRACT
from fds.tlt import Table
from fds.tractserver._node import Node

__all__ = ["Record", "RecordKind", "TwoPhase", "OPS_KEPT"]

OPS_KEPT = 16
"""Operation ids remembered per record: enough for every client that could be retrying at once."""


class Record(Protocol):
    seq: int
    epoch: int
    ops: dict[str, int]

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Any: ...

    def model_dump_json(self) -> str: ...


R = TypeVar("R", bound=Record)


class RecordKind(Protocol[R]):
    """How one kind of record is stored on this server and prepared on the others. Methods block."""

    what: str
    """What the records are, for messages ("metadata", "names")."""

    def lock_key(self, key: Hashable) -> Hashable: ...

    def load(self, key: Hashable) -> R | None: ...

    def log(self, records: Sequence[R]) -> bool:
        """The primary's durable log: store every record, or none if any stored one is as new (returns False)."""
        ...

    def is_committed(self, key: Hashable, record: R) -> bool: ...

    def mark_committed(self, keys: Sequence[Hashable], records: Sequence[R]) -> None: ...

    def prepare_request(self, records: Sequence[R]) -> tuple[str, bytes]:
        """The path (under a holder's URL) and JSON body that prepare ``records`` there."""
        ...


class TwoPhase(Generic[R]):
    """Changes to one kind of record, run on the primary of the record's row."""

    def __init__(self, node: Node, kind: RecordKind[R]) -> None:
        self.node = node
        self.kind = kind

    def require_primary(self, guid: bytes, table: Table, what: str) -> None:
        primary = table.holders(guid, METADATA_TRACT)[0]
        if primary.id != self.node.id:
            raise StaleVersion(f"this server is not the primary of {what} (that is {primary.id}); refetch the table",
                               server_version=table.version)

    async def change(self, guid: bytes, keys: Sequence[Hashable], table: Table, op: str | None,
                     compute: Callable[[list[R | None]], tuple[list[R], int]], *, what: str) -> tuple[list[R], int]:
        """Run ``compute`` (the records stored under ``keys`` -> new records for those keys, a result) as one
        committed step on the row of ``guid``; returns the records and the result.

        A retried ``op`` that already took effect returns its first result and changes nothing.
        """
        self.require_primary(guid, table, what)
        node, kind = self.node, self.kind
        async with AsyncExitStack() as stack:
            for lock in sorted({kind.lock_key(k) for k in keys}, key=repr):
                await stack.enter_async_context(node.locks.hold(lock))
            olds = [kind.load(k) for k in keys]
            if op:
                done = [(k, o) for k, o in zip(keys, olds, strict=True) if o is not None and op in o.ops]
                if done:  # a retry: the change is in our log; make sure every holder has it before answering again
                    records = [o for _, o in done]
                    await self.replicate(guid, table, records)
                    await node.run_io(kind.mark_committed, [k for k, _ in done], records)
                    return records, records[0].ops[op]
            news, result = compute(olds)
            epoch = table.row_versions[table.row_of(guid, METADATA_TRACT)]
            stamped: list[R] = []
            for old, record in zip(olds, news, strict=True):
                ops = dict(old.ops) if old is not None else dict(record.ops)
                if op:
                    ops[op] = result
                    while len(ops) > OPS_KEPT:
                        ops.pop(next(iter(ops)))
                seq = max(record.seq, (old.seq + 1) if old is not None else 1)
                stamped.append(record.model_copy(update={"ops": ops, "epoch": epoch, "seq": seq}))
            if not await node.run_io(kind.log, stamped):  # the primary's log
                raise StaleVersion(f"{what} has {kind.what} from a newer primary than this server (row version "
                                   f"{epoch}); refetch the table", server_version=table.version)
            await self.replicate(guid, table, stamped)  # every other holder has them durably
            await node.run_io(kind.mark_committed, list(keys), stamped)
            return stamped, result  # acknowledged: committed

    async def committed(self, guid: bytes, key: Hashable, table: Table) -> R | None:
        """The record under ``key`` as every holder of the row of ``guid`` has it (None if there is none).

        A record this primary has not seen committed (in doubt) is replicated first; if a holder cannot be
        reached, that raises Unavailable rather than answer from it.
        """
        kind = self.kind
        record = kind.load(key)
        if record is None or kind.is_committed(key, record):
            return record
        async with self.node.locks.hold(kind.lock_key(key)):
            record = kind.load(key)
            if record is not None and not kind.is_committed(key, record):
                await self.replicate(guid, table, [record])
                await self.node.run_io(kind.mark_committed, [key], [record])
            return record

    async def replicate(self, guid: bytes, table: Table, records: Sequence[R]) -> None:
        """Prepare ``records`` on every other holder of the row of ``guid``; Unavailable if one cannot be reached."""
        others = [s for s in table.holders(guid, METADATA_TRACT) if s.id != self.node.id]
        if not others:
            return
        http = self.node.http
        assert http is not None
        path, body = self.kind.prepare_request(records)

        async def push(url: str) -> None:
            resp = await http.put(f"{url}{path}", content=body, params={"version": table.version},
                                  headers={"content-type": "application/json"})
            if resp.status_code != 200:
                raise error_from_response(resp.status_code, resp.content, where=f"replicate {self.kind.what} to {url}")

        results = await asyncio.gather(*(push(s.url) for s in others), return_exceptions=True)
        for server, result in zip(others, results, strict=True):
            if isinstance(result, httpx.HTTPError):
                raise Unavailable(f"{self.kind.what} replica {server.id} of {format_guid(guid)} unreachable: "
                                  f"{result}; nothing acknowledged")
            if isinstance(result, BaseException):
                raise result
