"""A tract server's runtime: identity, table, membership loops, and checks.

The node owns what is not the disk: which table version it serves, whether a
request's version is current, which blob extents it has seen, and the
background loops (heartbeat, orphan collector). Each loop is a ``while``
around a ``*_once`` method that tests can call directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import httpx

from fds.auth import client_headers
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
from fds.guid import format_guid
from fds.models import BlobInfo, Heartbeat, RegisterRequest, TableModel
from fds.placement import MAX_TRACT, METADATA_TRACT
from fds.tlt import Table
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
        self.io = ThreadPoolExecutor(max_workers=config.io_threads, thread_name_prefix="fds-io")
        self.table: Table | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._extents: OrderedDict[bytes, tuple[int, int]] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self.http: httpx.AsyncClient | None = None
        self.registered = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        self.http = httpx.AsyncClient(timeout=10.0, headers=client_headers())
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name="heartbeat"))
        if self.config.collector_interval > 0:
            self._tasks.append(asyncio.create_task(self._collector_loop(), name="collector"))

    async def stop(self) -> None:
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
        resp = await self.http.post(f"{self.config.metaserver}/v1/servers", content=req.model_dump_json(),
                                    headers={"content-type": "application/json"})
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, where="register with metaserver")
        self.registered.set()
        log.info("registered %s (%s) at %s with %s", self.id, self.domain, self.url, self.config.metaserver)
        if resp.json()["table_version"] > 0:
            await self.refresh_table()

    async def heartbeat_once(self) -> None:
        assert self.http is not None
        if not self.registered.is_set():
            await self.register_once()
            return
        beat = Heartbeat(tracts=self.store.tracts, bytes_used=self.store.bytes_used,
                         disk_free=await self.run_io(self.store.disk_free),
                         capacity_bytes=self.store.capacity_bytes,
                         table_version=self.table.version if self.table else 0)
        resp = await self.http.post(f"{self.config.metaserver}/v1/servers/{self.id}/heartbeat",
                                    content=beat.model_dump_json(), headers={"content-type": "application/json"})
        if resp.status_code == 404:
            self.registered.clear()  # the metaserver forgot us: register again
            await self.register_once()
            return
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, where="heartbeat")
        current = resp.json()["table_version"]
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
            self.table = table
            log.info("table version %d: %d rows, k=%d", table.version, len(table), table.replicas)

    # -- request checks ------------------------------------------------------
    async def check(self, guid: bytes, tract: int, version: int) -> Table:
        """Refuse a request whose table version is stale or whose row is not ours."""
        if not 0 <= tract <= MAX_TRACT and tract != METADATA_TRACT:
            raise BadRequest(f"tract number {tract} is out of range: use 0..{MAX_TRACT}", code="bad_tract")
        table = self.table
        if table is None or version > table.version:
            try:
                await self.refresh_table()
            except (httpx.HTTPError, FDSError):
                pass
            table = self.table
            if table is None:
                raise TableNotReady("this tract server has no table yet; retry shortly")
            if version > table.version:
                raise StaleVersion(f"table version {version} is newer than this server's {table.version}; "
                                   "retry shortly", server_version=table.version)
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
            record = self.store.meta(guid)
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


