"""A tract server's runtime: identity, table, membership loops, and checks.

The node owns what is not the disk: which table version it serves, whether a
request's version is current, which blob extents it has seen, which writes
are in flight in which rows, and the background loops (heartbeat, orphan
collector, clean-up of rows it no longer holds). Each loop is a ``while``
around a ``*_once`` method that tests can call directly.

**Leaving a row.** When a table takes rows away from this server for good
(handed over, or dropped as an absent holder once the row had k live,
complete holders again), :meth:`Node.clean_once` removes their tracts and
metadata and reports the table version it cleaned at in its heartbeats.
The metaserver hands such a server new rows only after that. Rows it is an
*absent* holder of (declared dead while its copy may be the last good one)
are kept: coming back, it rejoins them as filling and copies only what
changed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from fds import tls
from fds.auth import HttpxAuth, client_headers
from fds.config import TractServerConfig
from fds.durable import ensure_dir, write_durably
from fds.errors import (
    BadRequest,
    BlobNotFound,
    FDSError,
    PastEnd,
    StaleVersion,
    TableNotReady,
    Unavailable,
    error_from_response,
)
from fds.guid import format_guid, parse_guid
from fds.models import (
    BlobInfo,
    FillProgress,
    Heartbeat,
    HeartbeatReply,
    MetaRecord,
    RegisterRequest,
    TableModel,
    Traffic,
)
from fds.placement import MAX_TRACT, METADATA_TRACT
from fds.tlt import Table
from fds.tractserver._namestore import NameStore
from fds.tractserver._store import TractStore

__all__ = ["Node"]

log = logging.getLogger("fds.tractserver")
T = TypeVar("T")

_EXTENT_CACHE = 100_000


def load_identity(data_dir: Path) -> str:
    """The server's stable id, created on first start and kept in ``server.json``."""
    ident = data_dir / "server.json"
    if ident.exists():
        return str(json.loads(ident.read_text())["id"])
    server_id = f"ts-{uuid.uuid4().hex[:12]}"
    write_durably(ident, json.dumps({"id": server_id}).encode())
    return server_id


class KeyedLocks:
    """One asyncio lock per key, created on demand and dropped when free."""

    def __init__(self) -> None:
        self._locks: dict[object, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, key: object) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and not lock._waiters:
                self._locks.pop(key, None)


class Node:
    """Everything a tract server knows besides its disk."""

    def __init__(self, config: TractServerConfig, url: str, *, data_url: str = "") -> None:
        self.config = config
        self.url = url
        self.data_url = data_url
        self.dir = ensure_dir(config.dir)
        self.id = load_identity(self.dir)
        self.domain = config.domain or self.id
        self.store = TractStore(self.dir, capacity_bytes=config.capacity_bytes, cache_bytes=config.cache_bytes,
                                 direct_io=bool(config.direct_io))
        self.store.sweep()
        self.names = NameStore(self.store)
        """The name records of the namespaces whose rows this server holds (same RocksDB)."""
        self.io = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="fds-io")
        self.table: Table | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._extents: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        self._tasks: list[asyncio.Task[Any]] = []
        self.http: httpx.AsyncClient | None = None
        self.registered = asyncio.Event()
        self.locks = KeyedLocks()
        """Per-tract locks ``(guid, tract)``: client writes, recovery copies and repairs take turns."""
        self._in_flight: Counter[tuple[int, int]] = Counter()
        self.clean_version = 0
        self._clean_needed = True  # a restart may follow rows being taken away while down
        self._cleaning: asyncio.Task[int] | None = None
        self.fill_progress = FillProgress()
        self.copied_tracts = 0
        self.copied_bytes = 0
        """Tracts and bytes copied here from row-mates since start (filling rows, scrub repairs)."""
        self._current: dict[int, set[tuple[bytes, int, int]]] = {}
        """Per row this server is filling: tracts known current here (copied, checked against a complete
        holder, or written by a client since). Until the row is filled only these are served."""
        self.traffic: Callable[[], Traffic] = Traffic
        """What heartbeats report of this server's requests (the app hands in its metrics' counts)."""
        self.heartbeat_acked: float | None = None
        """``time.monotonic()`` when the metaserver last accepted a heartbeat; None before the first."""
        self.lease_until = 0.0
        """``time.monotonic()`` until which this server may serve: its lease from the metaserver, counted from
        when it sent the heartbeat the metaserver acknowledged (inf if the metaserver grants none)."""
        self.on_table: list[Callable[[Table], None]] = []
        """Called with each newer table (the filler listens)."""
        self.committed_meta: Callable[[bytes, Table], Awaitable[MetaRecord | None]] = self._stored_meta
        """A blob's metadata record as every holder has it, on its primary (the metadata service sets this)."""

    @property
    def auth_headers(self) -> dict[str, str]:
        """Credentials for one server-to-server request (a fresh token when due)."""
        return client_headers()

    # -- lifecycle ---------------------------------------------------------
    def spawn(self, coro: Any, name: str) -> None:
        """Run a background loop until :meth:`stop`."""
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def start(self) -> None:
        self.http = httpx.AsyncClient(timeout=10.0, auth=HttpxAuth(), verify=tls.client_context())
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        if self.config.collector_interval > 0:
            self._tasks.append(asyncio.create_task(self._collector_loop(), name="collector"))

    async def stop(self) -> None:
        if self._cleaning is not None:
            self._tasks.append(self._cleaning)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()
        self.io.shutdown(wait=True)
        self.store.close()

    async def run_io(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking disk work on the I/O threads."""
        return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)

    # -- membership ----------------------------------------------------------
    async def register_once(self) -> None:
        assert self.http is not None
        req = RegisterRequest(id=self.id, url=self.url, data_url=self.data_url, disk=str(self.dir.resolve()),
                              domain=self.domain,
                              capacity_bytes=self.store.capacity_bytes)
        sent = time.monotonic()
        resp = await self.http.post(f"{self.config.metaserver}/v1/servers", content=req.model_dump_json(),
                                    headers={"content-type": "application/json"})
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, where="register with metaserver")
        reply = HeartbeatReply.model_validate_json(resp.content)
        self._leased(sent, reply)
        self.registered.set()
        log.info("registered %s (%s) at %s with %s", self.id, self.domain, self.url, self.config.metaserver)
        if reply.table_version > 0:
            await self.refresh_table()

    def _leased(self, sent: float, reply: HeartbeatReply) -> None:
        """The metaserver acknowledged a heartbeat sent at ``sent``: extend the lease it granted."""
        if reply.lease_seconds is None:
            self.lease_until = float("inf")  # leases are off
        elif reply.lease_seconds > 0:
            self.lease_until = max(self.lease_until, sent + reply.lease_seconds)

    def check_lease(self) -> None:
        """Refuse to serve once the lease has run out: the metaserver may have given this server's rows away."""
        if time.monotonic() >= self.lease_until:
            raise Unavailable("this tract server's lease from the metaserver has run out (it has not heard from "
                              "the metaserver, which may have given its rows to others); read another replica",
                              code="lease_expired")

    async def heartbeat_once(self) -> None:
        assert self.http is not None
        if not self.registered.is_set():
            await self.register_once()
            return
        beat = Heartbeat(tracts=self.store.tracts, bytes_used=self.store.bytes_used,
                         disk_free=await self.run_io(self.store.disk_free),
                         capacity_bytes=self.store.capacity_bytes,
                         table_version=self.table.version if self.table else 0,
                         clean_version=self.clean_version, fill=self.fill_progress, traffic=self.traffic())
        sent = time.monotonic()
        resp = await self.http.post(f"{self.config.metaserver}/v1/servers/{self.id}/heartbeat",
                                    content=beat.model_dump_json(), headers={"content-type": "application/json"})
        if resp.status_code == 404:
            self.registered.clear()  # the metaserver forgot us: register again
            await self.register_once()
            return
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, where="heartbeat")
        self.heartbeat_acked = time.monotonic()
        reply = HeartbeatReply.model_validate_json(resp.content)
        self._leased(sent, reply)
        current = reply.table_version
        if current and (self.table is None or current > self.table.version):
            await self.refresh_table()

    async def _heartbeat_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self.heartbeat_once()
                if failures:
                    log.info("metaserver reachable again")
                failures = 0
            except (httpx.HTTPError, FDSError) as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("metaserver %s: %s (attempt %d)", self.config.metaserver, exc, failures)
            await asyncio.sleep(self.config.heartbeat_interval)

    async def refresh_table(self) -> None:
        """Fetch the table from the metaserver; concurrent callers share one fetch."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._fetch_table())
        await asyncio.shield(self._refreshing)

    async def _fetch_table(self) -> None:
        assert self.http is not None
        resp = await self.http.get(f"{self.config.metaserver}/v1/table")
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, where="fetch table")
        table = Table(TableModel.model_validate_json(resp.content))
        if self.table is None or table.version > self.table.version:
            self.adopt(table)

    def adopt(self, table: Table) -> None:
        """Start using ``table`` (newer than the current one)."""
        old = self.table
        self.table = table
        log.info("table version %d: %d rows, k=%d", table.version, len(table), table.replicas)
        if old is None or old.kept_rows(self.id) - table.kept_rows(self.id):
            self._clean_needed = True
        if self._clean_needed:
            self._start_clean()
        elif self._cleaning is None or self._cleaning.done():
            self.clean_version = table.version
        for row in [r for r in self._current if not table.is_filling(self.id, r)]:
            del self._current[row]
        for listener in self.on_table:
            listener(table)

    async def table_at_least(self, version: int) -> Table:
        """The table, refreshed first if it is older than ``version``."""
        if self.table is None or self.table.version < version:
            try:
                await self.refresh_table()
            except (httpx.HTTPError, FDSError):
                pass
        table = self.table
        if table is None:
            raise TableNotReady("this tract server has no table yet; retry shortly")
        if table.version < version:
            raise StaleVersion(f"table version {version} is newer than this server's {table.version}; "
                               "retry shortly", server_version=table.version)
        return table

    # -- rows being filled -----------------------------------------------------
    def mark_current(self, row: int, guid: bytes, incarnation: int, tract: int) -> None:
        """This server's copy of a tract of a row it is filling is known current: it may be served."""
        table = self.table
        if table is not None and table.is_filling(self.id, row):
            self._current.setdefault(row, set()).add((guid, incarnation, tract))

    def is_current(self, row: int, guid: bytes, incarnation: int, tract: int) -> bool:
        return (guid, incarnation, tract) in self._current.get(row, ())

    # -- writes in flight ----------------------------------------------------
    @asynccontextmanager
    async def writing(self, row: int, version: int) -> AsyncIterator[None]:
        """Count a client write to ``row`` made under table ``version`` while it runs."""
        key = (row, version)
        self._in_flight[key] += 1
        try:
            yield
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    async def drain(self, rows: Collection[int], table: Table, timeout: float = 60.0) -> None:
        """Wait for writes to ``rows`` made under an older view of them to finish.

        Once this server uses ``table`` it refuses such writes, but some may
        have passed the check before. A listing for recovery, or a clean-up,
        must see their result: otherwise a tract written under the old
        table could be missed by the row's new holder.
        """
        wanted = set(rows)

        def old() -> bool:
            return any(row in wanted and (version < table.row_versions[row] or not table.holds(self.id, row))
                       for row, version in self._in_flight)

        deadline = asyncio.get_running_loop().time() + timeout
        while old():
            if asyncio.get_running_loop().time() > deadline:
                raise Unavailable("writes under an older table are still running here; retry")
            await asyncio.sleep(0.005)

    # -- rows this server no longer holds --------------------------------------
    def _start_clean(self) -> None:
        if self._cleaning is None or self._cleaning.done():
            self._cleaning = asyncio.create_task(self._clean_soon())

    async def _clean_soon(self) -> int:
        removed = 0
        while self._clean_needed:
            try:
                removed += await self.clean_once()
            except (httpx.HTTPError, FDSError) as exc:
                log.warning("clean-up of rows this server left is waiting: %s", exc)
                await asyncio.sleep(self.config.heartbeat_interval)
        return removed

    async def clean_once(self) -> int:
        """Remove tracts and metadata of every row this server neither holds nor is absent from in the
        current table.

        Asks the metaserver for the newest table first, so a stale view
        never removes a row this server was just handed. Returns the number
        of tracts removed.
        """
        await self.refresh_table()
        self._clean_needed = False
        table = self.table
        assert table is not None
        held = table.kept_rows(self.id)
        gone = [r for r in range(len(table)) if r not in held]
        await self.drain(gone, table)

        def clean() -> int:
            count = 0
            for guid, incarnation, tract, _ in self.store.tracts_where(
                    lambda g, t: table.row_of(g, t) not in held):
                count += self.store.delete_tract(guid, tract, incarnation)
            for record in self.store.metas_where(lambda g: table.row_of(g, METADATA_TRACT) not in held):
                self.store.delete_meta(parse_guid(record.guid))
            for ns in list(self.names.namespaces()):
                if table.row_of(ns, METADATA_TRACT) not in held:
                    self.names.drop_namespace(ns)
            return count

        removed = await self.run_io(clean)
        if removed:
            log.info("removed %d tracts of rows this server no longer holds (table version %d)",
                     removed, table.version)
        if not self._clean_needed:
            self.clean_version = table.version
        return removed

    # -- request checks ------------------------------------------------------
    async def check(self, guid: bytes, tract: int, version: int) -> Table:
        """Refuse a request whose table version is stale or whose row is not ours, or any once the lease is over."""
        if not 0 <= tract <= MAX_TRACT and tract != METADATA_TRACT:
            raise BadRequest(f"tract number {tract} is out of range: use 0..{MAX_TRACT}", code="bad_tract")
        self.check_lease()
        table = self.table
        if table is None or version > table.version:
            table = await self.table_at_least(version)
        row = table.row_of(guid, tract)
        if version < table.row_versions[row]:
            raise StaleVersion(f"table version {version} is stale: row {row} changed at version "
                               f"{table.row_versions[row]}; refetch the table", server_version=table.version)
        if not table.holds(self.id, row):
            raise StaleVersion(f"this server does not hold row {row} in table version {table.version}; "
                               "refetch the table", server_version=table.version)
        return table

    async def check_extent(self, guid: bytes, incarnation: int, tract: int, table: Table) -> None:
        """Refuse a tract past the blob's end (extend first), or of a blob that is gone or was re-created."""
        known = self._extents.get(guid)
        if known is not None and known[0] == incarnation and tract < known[1]:
            self._extents.move_to_end(guid)
            return
        info = await self.blob_info(guid, table)
        self._extents[guid] = (info.incarnation, info.tracts)
        self._extents.move_to_end(guid)
        if len(self._extents) > _EXTENT_CACHE:
            self._extents.popitem(last=False)
        if info.incarnation != incarnation:
            raise BlobNotFound(f"blob {format_guid(guid)} incarnation {incarnation} no longer exists: it was "
                               f"deleted and created again (now incarnation {info.incarnation}); open it again")
        if tract >= info.tracts:
            raise PastEnd(f"tract {tract} is past the end of blob {format_guid(guid)}, which has "
                          f"{info.tracts} tracts; extend it first", tracts=info.tracts)

    async def blob_info(self, guid: bytes, table: Table) -> BlobInfo:
        """Ask the blob's metadata primary (which may be this server) for its size."""
        primary = table.holders(guid, METADATA_TRACT)[0]
        if primary.id == self.id:
            record = await self.committed_meta(guid, table)
            if record is None or record.deleted:
                raise BlobNotFound(f"no blob {format_guid(guid)}")
            return BlobInfo(guid=record.guid, tracts=record.tracts, length=record.length, created=record.created,
                            incarnation=record.incarnation)
        assert self.http is not None
        try:
            resp = await self.http.get(f"{primary.url}/v1/meta/{format_guid(guid)}",
                                       params={"version": table.version})
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach metadata primary {primary.id} of blob {format_guid(guid)}: "
                              f"{exc}") from None
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content)
        return BlobInfo.model_validate_json(resp.content)

    async def _stored_meta(self, guid: bytes, table: Table) -> MetaRecord | None:
        return self.store.meta(guid)

    def forget_extent(self, guid: bytes) -> None:
        self._extents.pop(guid, None)

    # -- orphan collector ------------------------------------------------------
    async def collect_once(self) -> int:
        """Remove the tracts of deleted blobs and of superseded incarnations; returns how many.

        A blob's tracts are removed only when its metadata primary answers
        that the blob is gone or now has another incarnation; when the
        primary cannot be asked, the blob waits for the next pass.
        """
        table = self.table
        if table is None:
            return 0
        removed = 0
        for guid, incarnation in await self.run_io(lambda: list(self.store.blobs())):
            try:
                if (await self.blob_info(guid, table)).incarnation == incarnation:
                    continue
            except BlobNotFound:
                pass
            except (FDSError, httpx.HTTPError):
                continue  # cannot tell; try next pass
            self.forget_extent(guid)
            removed += await self.run_io(self.store.delete_tracts, guid, incarnation)
        if removed:
            log.info("collector removed %d orphan tracts", removed)
        return removed

    async def _collector_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.collector_interval)
            try:
                await self.collect_once()
            except Exception:  # a bad pass must not end the loop
                log.exception("collector pass failed")


