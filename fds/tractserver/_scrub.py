"""The integrity scrubber: re-read every tract, repair what is bad or missing, collect orphans.

One pass (:meth:`Scrubber.scrub_once`, also ``POST /v1/admin/scrub``):

1. **Verify.** Re-read each tract this server holds from disk, at most
   ``scrub_rate`` bytes a second, and check its xxh3. A bad or vanished
   copy is replaced from a complete row-mate, unless a client rewrote the
   tract meanwhile (the copy is written only if the generation is still
   the bad one).
2. **Reconcile.** Compare the listing of each row this server holds with
   every complete row-mate's, tract by tract, by version and checksum: a
   tract a row-mate holds in a newer version, or that this server lacks,
   is brought here (only the version, if the bytes are the same; nothing
   for a blob that no longer has that incarnation). Every holder does the
   same, so after one pass on each, every copy of a row is the newest any
   of them had: replicas agree even after a write that reached only some
   of them. Newer metadata and name records are kept too.
3. **Orphans.** Run the orphan collector (tracts of deleted or re-created
   blobs) and the clean-up of rows this server no longer holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass

import httpx

from fds.errors import BlobNotFound, FDSError
from fds.guid import format_guid, parse_guid
from fds.httpclient import ConnectError
from fds.models import ServerRef
from fds.tlt import Table
from fds.tractserver._fill import Filler, apply_names, catch_up, copy_tract, fetch_listing
from fds.tractserver._node import Node
from fds.versions import TractVersion

__all__ = ["Scrubber", "ScrubReport"]

log = logging.getLogger("fds.tractserver")


@dataclass
class ScrubReport:
    checked: int = 0
    bytes_checked: int = 0
    bad: int = 0
    repaired: int = 0
    missing_copied: int = 0
    newer_copied: int = 0
    """Tracts a row-mate held in a newer version, copied here."""
    restamped: int = 0
    """Tracts a row-mate held in a newer version with the same bytes: only the version was adopted."""
    unrepaired: int = 0
    orphans_removed: int = 0
    moved_removed: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class Scrubber:
    """Runs scrub passes, every ``scrub_interval`` seconds or on demand."""

    def __init__(self, node: Node, filler: Filler) -> None:
        self.node = node
        self.pool = filler.pool
        self.last: ScrubReport | None = None
        self._lock = asyncio.Lock()

    async def loop(self) -> None:
        while True:
            await asyncio.sleep(self.node.config.scrub_interval)
            try:
                await self.scrub_once()
            except Exception:  # a bad pass must not end the loop
                log.exception("scrub pass failed")

    async def scrub_once(self, rate: int | None = None) -> ScrubReport:
        """One whole pass; ``rate`` overrides ``scrub_rate`` (0: as fast as the disk goes)."""
        async with self._lock:
            started = time.monotonic()
            report = ScrubReport()
            node = self.node
            try:
                await node.refresh_table()
            except (httpx.HTTPError, FDSError):
                pass  # verify against the table we have; clean-up waits for the metaserver
            table = node.table
            if table is None:
                return report
            await self._verify(table, report, node.config.scrub_rate if rate is None else rate)
            await self._reconcile(table, report)
            report.orphans_removed = await node.collect_once()
            try:
                report.moved_removed = await node.clean_once()
            except (httpx.HTTPError, FDSError) as exc:
                log.info("scrub: clean-up of rows moved away skipped: %s", exc)
            report.seconds = time.monotonic() - started
            self.last = report
            log.info("scrub pass: %s", report.as_dict())
            return report

    async def _verify(self, table: Table, report: ScrubReport, rate: int) -> None:
        node = self.node
        held = set(table.rows_of(node.id))
        tracts = await node.run_io(node.store.tracts_where, lambda g, t: table.row_of(g, t) in held)
        started = time.monotonic()
        for guid, incarnation, tract, entry in tracts:
            bad = await node.run_io(node.store.verify, guid, tract, incarnation)
            report.checked += 1
            report.bytes_checked += entry.length
            if bad is not None:
                report.bad += 1
                if await self._repair(table, guid, incarnation, tract, bad.generation):
                    report.repaired += 1
                else:
                    report.unrepaired += 1
            if rate > 0:  # throttle: stay at or below rate bytes a second on average
                ahead = report.bytes_checked / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)

    async def _repair(self, table: Table, guid: bytes, incarnation: int, tract: int, generation: int) -> bool:
        row = table.row_of(guid, tract)
        for source in table.complete_holders(row):
            if source.id == self.node.id:
                continue
            try:
                if await copy_tract(self.node, self.pool, source, guid, incarnation, tract, table.version,
                                    replace=generation) is not None:
                    log.warning("scrub: repaired tract %d of blob %s from %s", tract, format_guid(guid), source.id)
                    return True
                current = self.node.store.entry(guid, tract, incarnation)
                if current is None or current.generation != generation:
                    return True  # rewritten by a client meanwhile: nothing to repair
            except (FDSError, ConnectError) as exc:
                log.warning("scrub: cannot repair from %s: %s", source.id, exc)
        return False

    async def _reconcile(self, table: Table, report: ScrubReport) -> None:
        """Bring every tract of this server's rows up to the newest version its complete row-mates hold."""
        node = self.node
        rows_held = [r for r in table.rows_of(node.id) if not table.is_filling(node.id, r)]
        partners: dict[str, tuple[ServerRef, list[int]]] = {}
        for r in rows_held:
            for server in table.complete_holders(r):
                if server.id != node.id:
                    partners.setdefault(server.id, (server, []))[1].append(r)
        live: dict[bytes, int | None] = {}
        for server, rows in partners.values():
            try:
                listing = await fetch_listing(node, server, rows, table.version)
            except (httpx.HTTPError, FDSError) as exc:
                log.info("scrub: cannot compare rows with %s: %s", server.id, exc)
                continue
            for record in listing.meta:
                await node.run_io(node.store.put_meta_if_newer, parse_guid(record.guid), record)
            await apply_names(node, listing)
            for guid_text, incarnation, tract, _length, checksum, stamp, writer in listing.tracts:
                guid = parse_guid(guid_text)
                version = TractVersion(stamp, writer)
                mine = node.store.entry(guid, tract, incarnation)
                if mine is not None and mine.version >= version:
                    continue
                if guid not in live:
                    try:
                        live[guid] = (await node.blob_info(guid, table)).incarnation
                    except BlobNotFound:
                        live[guid] = None
                    except (FDSError, httpx.HTTPError):
                        continue
                if live[guid] != incarnation:
                    continue  # a deleted or superseded blob: the collectors will remove it
                try:
                    copied = await catch_up(node, self.pool, server, table, guid, incarnation, tract, checksum,
                                            version)
                except (FDSError, ConnectError) as exc:
                    log.info("scrub: cannot copy tract %d of %s from %s: %s", tract, guid_text, server.id, exc)
                    continue
                if mine is None and copied is not None:
                    report.missing_copied += 1
                    log.warning("scrub: copied missing tract %d of blob %s from %s", tract, guid_text, server.id)
                elif mine is not None:
                    report.newer_copied += copied is not None
                    report.restamped += copied is None
                    log.warning("scrub: tract %d of blob %s: %s holds a newer version (%s, this server %s); %s",
                                tract, guid_text, server.id, version, mine.version,
                                "copied it" if copied is not None else "same bytes, version adopted")
