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

**Group commit.** Changes computed while an earlier log-and-prepare of the
same group (a namespace, a row: :meth:`RecordKind.group`) is under way wait
and then go together, as databases group their commits: one synced write
batch in the primary's log, one prepare request to each other holder (one
synced batch there), one commit mark. Each change still holds its own
records' locks until it is committed, and each is answered on its own: a
change whose records turn out not to be newer fails alone; a prepare that
fails fails every change of that round, and each is retried as before.

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
from dataclasses import dataclass, field
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

    def group(self, guid: bytes, table: Table) -> Hashable:
        """Changes whose records share this can be logged and prepared together (one prepare request)."""
        ...

    def log(self, changes: Sequence[Sequence[R]]) -> list[bool]:
        """The primary's durable log, one synced write for every change: store each change's records, or none
        of them if any stored one is as new (False for that change)."""
        ...

    def is_committed(self, key: Hashable, record: R) -> bool: ...

    def mark_committed(self, keys: Sequence[Hashable], records: Sequence[R]) -> None: ...

    def prepare_request(self, records: Sequence[R]) -> tuple[str, bytes]:
        """The path (under a holder's URL) and JSON body that prepare ``records`` (of one group) there."""
        ...


MAX_GROUP = 256  # a rename is two records: NameRecords takes up to 512
"""The most changes one group commit carries."""


@dataclass
class _Pending:
    records: list[Any]
    keys: list[Hashable]
    done: asyncio.Future[None]


@dataclass
class _Group:
    guid: bytes
    table: Table
    waiting: list[_Pending] = field(default_factory=list)
    task: asyncio.Task[None] | None = None


class TwoPhase(Generic[R]):
    """Changes to one kind of record, run on the primary of the record's row."""

    def __init__(self, node: Node, kind: RecordKind[R]) -> None:
        self.node = node
        self.kind = kind
        self._groups: dict[Hashable, _Group] = {}

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
            pending = _Pending(stamped, list(keys), asyncio.get_running_loop().create_future())
            self._enqueue(guid, table, pending)
            try:
                await pending.done  # logged here, prepared on every other holder, marked committed
            except _NotNewer:
                raise StaleVersion(f"{what} has {kind.what} from a newer primary than this server (row version "
                                   f"{epoch}); refetch the table", server_version=table.version) from None
            return stamped, result  # acknowledged: committed

    def _enqueue(self, guid: bytes, table: Table, pending: _Pending) -> None:
        key = (self.kind.group(guid, table), table.version)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(guid, table)
        group.waiting.append(pending)
        if group.task is None:
            # its own task, so a caller that goes away (a dropped connection) does not stop the round
            group.task = asyncio.ensure_future(self._run(key, group))

    async def _run(self, key: Hashable, group: _Group) -> None:
        """Commit the group's waiting changes, round after round, until none wait."""
        try:
            while group.waiting:
                batch, group.waiting = group.waiting[:MAX_GROUP], group.waiting[MAX_GROUP:]
                await self._round(group.guid, group.table, batch)
        finally:
            group.task = None
            if self._groups.get(key) is group and not group.waiting:
                del self._groups[key]

    async def _round(self, guid: bytes, table: Table, batch: list[_Pending]) -> None:
        node, kind = self.node, self.kind
        try:
            logged = await node.run_io(kind.log, [p.records for p in batch])  # the primary's log
            for pending, ok in zip(batch, logged, strict=True):
                if not ok:
                    _settle(pending, _NotNewer())
            batch = [p for p, ok in zip(batch, logged, strict=True) if ok]
            if batch:
                records = [r for p in batch for r in p.records]
                await self.replicate(guid, table, records)  # every other holder has them durably
                await node.run_io(kind.mark_committed, [k for p in batch for k in p.keys], records)
        except BaseException as exc:
            for pending in batch:
                _settle(pending, exc)
            if not isinstance(exc, Exception):
                raise
        else:
            for pending in batch:
                _settle(pending, None)

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


class _NotNewer(Exception):
    """A change whose records the primary's log already holds as new (from a newer primary)."""


def _settle(pending: _Pending, exc: BaseException | None) -> None:
    if pending.done.done():  # its caller went away
        return
    if exc is None:
        pending.done.set_result(None)
    else:
        pending.done.set_exception(exc)
