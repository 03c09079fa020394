"""Filling rows: copying a row's tracts to this server when it becomes a new holder.

This is FDS's fast recovery (docs/design.md §4). When a server dies, the
metaserver appends a replacement to each of its rows, marked *filling*; the
same happens to a server that is handed rows when servers are added or
decommissioned. Each filling server:

1. asks a complete row-mate for the row's listing (``POST
   /v1/internal/rows``). The row-mate first adopts a table at least as new as
   ours and waits for writes still running under the old one (so nothing
   written before the change is missed), then lists every tract and
   metadata and name record of the row;
2. keeps the newer of each metadata and name record, and brings each tract up to
   the source's version (:func:`catch_up`): a tract it lacks or holds in
   an older version is copied, at most ``fill_in_flight`` at a time, with
   every byte checked against the checksum the source served, and stored
   with the source's version, so it never replaces a newer write (a
   client's since the change). A server back from an absence (partial
   recovery) holds most of the row already and copies only what changed;
   until the row is filled it serves only tracts copied or checked this
   way;
3. tells the metaserver which rows are complete; the row stops filling.

A dead server's rows are spread over all the others, and each row picks
the least-busy row-mate as its source, so every server reads and writes a
share of the lost data at once. Meanwhile clients write to the new holder,
and reads of tracts it does not have yet are refused (503) so the client
reads another replica. If a source fails, the rows it was serving are
listed again from another row-mate. With the metaserver down, copying goes
on and the report waits until it is back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter

import httpx
import orjson
import xxhash

from fds import tls
from fds.errors import FDSError, error_from_response
from fds.guid import format_guid, parse_guid
from fds.httpclient import ConnectError, HTTPPool
from fds.models import FilledRequest, FillProgress, RowListing, RowsRequest, ServerRef
from fds.tlt import Table
from fds.tractserver._node import Node
from fds.versions import TractVersion

__all__ = ["Filler", "fetch_listing", "copy_tract", "catch_up", "apply_names"]

log = logging.getLogger("fds.tractserver")


async def fetch_listing(node: Node, source: ServerRef, rows: list[int], version: int) -> RowListing:
    """What ``source`` holds of ``rows``, as of a table at least ``version``."""
    assert node.http is not None
    resp = await node.http.post(f"{source.url}/v1/internal/rows", timeout=120.0,
                                content=RowsRequest(rows=rows, version=version).model_dump_json(),
                                headers={"content-type": "application/json"})
    if resp.status_code != 200:
        raise error_from_response(resp.status_code, resp.content, where=f"list rows on {source.id}")
    return RowListing.model_validate_json(resp.content)


async def apply_names(node: Node, listing: RowListing) -> None:
    """Keep every name record of a row-mate's listing that is newer than this server's (as a prepare would)."""
    if listing.names:
        grace = node.config.name_grace
        await node.run_io(lambda: [node.names.apply([r], grace=grace, all_newer=False) for r in listing.names])


async def copy_tract(node: Node, pool: HTTPPool, source: ServerRef, guid: bytes, incarnation: int, tract: int,
                     version: int, *, replace: int | None = None) -> int | None:
    """Copy one tract from ``source``, with the source's version; returns its length, or None if nothing was
    written: the source no longer has it, or this server holds that version or a newer one. ``replace`` is as
    in :meth:`TractStore.write` (the scrubber's repair of a bad copy)."""
    path = f"/v1/tracts/{format_guid(guid)}/{tract}?version={version}&incarnation={incarnation}"
    resp = await pool.request("GET", (source.data_url or source.url) + path, headers=node.auth_headers)
    if resp.status == 404:
        return None  # deleted or rewritten away since the listing
    if resp.status != 200:
        raise error_from_response(resp.status, resp.body, where=f"copy tract {tract} from {source.id}")
    expected = resp.headers.get("x-fds-checksum", "")
    if f"{xxhash.xxh3_64_intdigest(resp.body):016x}" != expected:
        raise FDSError(f"tract {tract} of {format_guid(guid)} from {source.id} arrived damaged", code="bad_copy")
    try:
        tract_version = TractVersion.parse(resp.headers.get("x-fds-version", ""))
    except ValueError:
        raise FDSError(f"tract {tract} of {format_guid(guid)} from {source.id} came without a valid version",
                       code="bad_copy") from None
    async with node.locks.hold((guid, tract)):
        entry = await node.run_io(functools.partial(node.store.write, guid, tract, resp.body, incarnation,
                                                      tract_version, copy=True, replace=replace))
    if entry is None:
        return None
    node.copied_tracts += 1
    node.copied_bytes += entry.length
    return entry.length


async def catch_up(node: Node, pool: HTTPPool, source: ServerRef, table: Table, guid: bytes, incarnation: int,
                   tract: int, checksum: str, version: TractVersion) -> int | None:
    """Bring this server's copy of a tract up to ``source``'s, as listed (``checksum``, ``version``).

    Nothing to do if this copy is as new or newer; if it holds the same bytes under an older version, only
    the version is adopted; otherwise the tract is copied. Returns the bytes copied, or None if none were.
    """
    mine = node.store.entry(guid, tract, incarnation)
    if mine is not None and mine.version >= version:
        if mine.version == version and f"{mine.checksum:016x}" != checksum:
            log.error("tract %d of blob %s: this server and %s hold different bytes under one version %s",
                      tract, format_guid(guid), source.id, version)
        return None
    if mine is not None and f"{mine.checksum:016x}" == checksum:
        async with node.locks.hold((guid, tract)):
            await node.run_io(node.store.restamp, guid, tract, incarnation, version, mine.checksum)
        return None
    return await copy_tract(node, pool, source, guid, incarnation, tract, table.version)


class Filler:
    """Copies the rows this server is filling; one pass at a time, run again when the table changes."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.pool = HTTPPool(timeout=60.0, ssl_context=tls.client_context())
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._reported: set[tuple[int, int]] = set()  # (row, table version) already reported
        node.on_table.append(lambda table: self.trigger())

    def trigger(self) -> None:
        """Start a pass if there are rows to fill; one already running runs once more."""
        table = self.node.table
        if table is None or not table.filling_rows(self.node.id):
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = asyncio.create_task(self._run(), name="fill")

    async def _run(self) -> None:
        while True:
            self._again = False
            try:
                pending = await self.fill_once()
            except Exception:
                log.exception("fill pass failed")
                pending = True
            if not (self._again or pending):
                return
            if pending:
                await asyncio.sleep(self.node.config.heartbeat_interval)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.pool.aclose()

    async def fill_once(self) -> bool:
        """Copy every row this server is filling in the current table and report them.

        Returns True if some rows are still to do (a source failed, or the
        metaserver could not be told).
        """
        node = self.node
        table = node.table
        if table is None:
            return False
        rows = [r for r in table.filling_rows(node.id) if (r, table.version) not in self._reported]
        if not rows:
            return False
        progress = node.fill_progress = FillProgress(rows=len(rows))
        done: list[int] = []
        tried: dict[int, set[str]] = {r: set() for r in rows}
        todo = list(rows)
        slots = asyncio.Semaphore(max(1, node.config.fill_in_flight))
        while todo:
            plan = self._plan(table, todo, tried)
            if not plan:
                break
            results = await asyncio.gather(*(self._fill_from(table, source, group, slots, progress)
                                             for source, group in plan.values()), return_exceptions=True)
            todo = []
            for (source, group), result in zip(plan.values(), results, strict=True):
                if isinstance(result, BaseException):
                    log.warning("filling %d rows from %s failed: %s; trying another row-mate",
                                len(group), source.id, result)
                    todo.extend(group)
                else:
                    done.extend(group)
            if node.table is not table:
                break  # the table changed under us: the next pass starts from it
        progress.rows = len(rows) - len(done)
        if done and not await self._report(sorted(done), table.version):
            return True
        self._reported.update((r, table.version) for r in done)
        return bool(todo)

    def _plan(self, table: Table, rows: list[int],
              tried: dict[int, set[str]]) -> dict[str, tuple[ServerRef, list[int]]]:
        """Pick a source for each row: a complete row-mate not tried yet, the one with the fewest rows so far."""
        assigned: Counter[str] = Counter()
        plan: dict[str, tuple[ServerRef, list[int]]] = {}
        for r in rows:
            candidates = [s for s in table.complete_holders(r) if s.id != self.node.id and s.id not in tried[r]]
            if not candidates:
                log.error("row %d has no complete holder left to copy from", r)
                continue
            source = min(candidates, key=lambda s: (assigned[s.id], hash((s.id, r))))
            assigned[source.id] += 1
            tried[r].add(source.id)
            plan.setdefault(source.id, (source, []))[1].append(r)
        return plan

    async def _fill_from(self, table: Table, source: ServerRef, rows: list[int], slots: asyncio.Semaphore,
                         progress: FillProgress) -> None:
        node = self.node
        listing = await fetch_listing(node, source, rows, table.version)
        for record in listing.meta:
            await node.run_io(node.store.put_meta_if_newer, parse_guid(record.guid), record)
        await apply_names(node, listing)
        progress.tracts_total += len(listing.tracts)
        progress.bytes_total += sum(t[3] for t in listing.tracts)

        async def one(guid_text: str, incarnation: int, tract: int, length: int, checksum: str,
                      version: TractVersion) -> None:
            guid = parse_guid(guid_text)
            async with slots:
                await catch_up(node, self.pool, source, table, guid, incarnation, tract, checksum, version)
                mine = node.store.entry(guid, tract, incarnation)
                if mine is not None and mine.version >= version:
                    node.mark_current(table.row_of(guid, tract), guid, incarnation, tract)
            progress.tracts_done += 1
            progress.bytes_done += length

        await asyncio.gather(*(one(g, inc, t, n, c, TractVersion(stamp, writer))
                               for g, inc, t, n, c, stamp, writer in listing.tracts))

    async def _report(self, rows: list[int], version: int) -> bool:
        node = self.node
        assert node.http is not None
        try:
            resp = await node.http.post(f"{node.config.metaserver}/v1/servers/{node.id}/filled",
                                        content=FilledRequest(rows=rows, version=version).model_dump_json(),
                                        headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            log.warning("filled %d rows; cannot tell the metaserver yet: %s", len(rows), exc)
            return False
        if resp.status_code != 200:
            log.warning("filled %d rows; the metaserver said %s", len(rows), resp.text[:200])
            return False
        log.info("filled %d rows (table version %d)", len(rows), version)
        current = orjson.loads(resp.content)["table_version"]
        if node.table is None or current > node.table.version:
            try:
                await node.refresh_table()
            except (httpx.HTTPError, FDSError, ConnectError):
                pass
        return True
