"""The tract server's HTTP API: the data path, plus blob metadata."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

from fds.buffers import aligned
from fds.errors import BadRequest, StaleVersion, TractTooLarge
from fds.guid import format_guid, parse_guid
from fds.models import (
    BlobInfo,
    ExtendRequest,
    ExtendResult,
    MetaRecord,
    MetaRecords,
    RowListing,
    RowsRequest,
    SetLengthRequest,
    TableAck,
    TableModel,
    TractServerStats,
    TractWritten,
)
from fds.placement import METADATA_TRACT
from fds.tlt import Table
from fds.tractserver._fastpath import serve_data_port
from fds.tractserver._fill import Filler
from fds.tractserver._meta import MetaService
from fds.tractserver._metrics import register_tractserver_metrics
from fds.tractserver._name_routes import add_name_routes
from fds.tractserver._names import NameService
from fds.tractserver._node import Node
from fds.tractserver._scrub import Scrubber
from fds.tractserver._tracts import TractService, tract_version
from fds.web import create_app as create_base_app
from fds.web import json_response

__all__ = ["create_app"]

_VERSION = Query(ge=0, description="The table version the caller used; a stale one gets 409 stale_version.")
_INCARNATION = Query(ge=0, lt=2**63, description="The blob's incarnation, from its metadata (create or stat).")
_STAMP = Query(default=None, ge=0, lt=2**63, description="The write's version: a hybrid logical clock reading "
                                                          "(nanoseconds), with `writer`. Omitted: the server "
                                                          "assigns one newer than the stored tract's.")
_WRITER = Query(default=None, ge=0, lt=2**63, description="The write's version: the writer's id (breaks ties).")
_OP = Query(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
            description="The client's id for this operation; a retry with the same id gets the first answer.")
_RAW_BODY = {"requestBody": {
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    "required": True}}
_DRAIN_LIMIT_TRACTS = 4
_MIN_SCRUB_RATE = 1 << 20
"""An explicit scrub rate below this would hold the request, and the scrub lock, for days."""


async def _read_body(request: Request, tracts: TractService) -> memoryview:
    """Read the request body into one block-aligned buffer (:func:`fds.buffers.aligned`), ready for O_DIRECT."""
    declared = request.headers.get("content-length")
    if declared is None or not declared.isdigit():
        raise BadRequest("send the tract with a Content-Length header (chunked bodies are not accepted)",
                         code="length_required")
    length = int(declared)
    try:
        tracts.check_length(length)
    except TractTooLarge:
        if length <= _DRAIN_LIMIT_TRACTS * tracts.tract_size():
            async for _ in request.stream():  # drain, so the connection stays usable
                pass
        raise
    buf = aligned(length)
    pos = 0
    async for chunk in request.stream():
        end = pos + len(chunk)
        if end > length:
            raise BadRequest("request body is longer than its Content-Length")
        buf[pos:end] = chunk
        pos = end
    if pos != length:
        raise BadRequest(f"request body ended after {pos} of {length} bytes")
    return buf


def create_app(node: Node, *, data_sock: socket.socket | None = None) -> FastAPI:
    """The tract server app for ``node``; with ``data_sock``, it also serves the data port there."""
    meta = MetaService(node)
    names = NameService(node, meta)
    tracts = TractService(node)
    filler = Filler(node)
    scrubber = Scrubber(node, filler)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        if node.config.scrub_interval > 0:
            node.spawn(scrubber.loop(), "scrubber")
        if node.config.collector_interval > 0:
            node.spawn(names.retire_loop(min(node.config.collector_interval, max(0.5, node.config.name_grace / 2))),
                       "retire")
        data_server = await serve_data_port(tracts, data_sock, app.state.metrics) if data_sock is not None else None
        yield
        if data_server is not None:
            data_server.close()
        await filler.aclose()
        await tracts.aclose()
        await node.stop()

    app = create_base_app(
        "fds tract server",
        "Stores 8 MiB tracts in files on one disk, checksummed, and serves them. "
        "Every data request carries the caller's table version.",
        role="tractserver",
    )
    app.router.lifespan_context = lifespan
    app.state.node = node
    register_tractserver_metrics(app.state.metrics, node)

    # -- tracts ------------------------------------------------------------
    @app.put("/v1/tracts/{guid}/{tract}", response_model=TractWritten, tags=["tracts"], openapi_extra=_RAW_BODY,
             summary="Write a whole tract; acknowledged once data and index are durable.")
    async def put_tract(guid: str, tract: str, request: Request, version: int = _VERSION,
                        incarnation: int = _INCARNATION, stamp: int | None = _STAMP,
                        writer: int | None = _WRITER) -> Response:
        written = tract_version(stamp, writer)
        await tracts.locate(guid, tract, version)  # refuse bad or stale requests before reading the body
        body = await _read_body(request, tracts)
        entry = await tracts.write(guid, tract, version, incarnation, body, written)
        return json_response(TractWritten(length=entry.length, checksum=f"{entry.checksum:016x}",
                                          stamp=entry.stamp, writer=entry.writer))

    @app.post("/v1/tracts/{guid}/{tract}/copy", response_model=TractWritten, tags=["tracts"],
              summary="Write a tract with another blob's tract, copied server to server (copies inside the cluster).")
    async def copy_tract(guid: str, tract: str, version: int = _VERSION, incarnation: int = _INCARNATION,
                         stamp: int | None = _STAMP, writer: int | None = _WRITER,
                         source: str = Query(description="The GUID of the blob to copy from."),
                         source_incarnation: int = Query(ge=0, lt=2**63),
                         source_tract: int = Query(ge=0, lt=2**40)) -> Response:
        entry = await tracts.copy(guid, tract, version, incarnation, tract_version(stamp, writer), source,
                                  source_incarnation, source_tract)
        return json_response(TractWritten(length=entry.length, checksum=f"{entry.checksum:016x}",
                                          stamp=entry.stamp, writer=entry.writer))

    @app.get("/v1/tracts/{guid}/{tract}", tags=["tracts"],
             responses={200: {"content": {"application/octet-stream": {}}}},
             summary="Read a whole tract; its checksum is verified first.")
    async def get_tract(guid: str, tract: str, version: int = _VERSION, incarnation: int = _INCARNATION) -> Response:
        data, entry = await tracts.read(guid, tract, version, incarnation)
        return Response(data, media_type="application/octet-stream",
                        headers={"x-fds-checksum": f"{entry.checksum:016x}", "x-fds-version": str(entry.version)})

    @app.head("/v1/tracts/{guid}/{tract}", tags=["tracts"], summary="A tract's length and checksum.")
    async def head_tract(guid: str, tract: str, version: int = _VERSION, incarnation: int = _INCARNATION) -> Response:
        entry = await tracts.entry(guid, tract, version, incarnation)
        if entry is None:
            return Response(status_code=404)
        return Response(headers={"content-length": str(entry.length), "x-fds-checksum": f"{entry.checksum:016x}",
                                 "x-fds-version": str(entry.version)})

    # -- blob metadata (tract -1, on its row's primary) ------------------------
    @app.post("/v1/meta/{guid}", status_code=201, response_model=BlobInfo, tags=["metadata"],
              summary="Create a blob: empty, or with `tracts` and a recorded `length` in one step.")
    async def create_blob(guid: str, version: int = _VERSION, op: str | None = _OP,
                          tracts: int = Query(default=0, ge=0, le=2**32, description="Tracts it starts with."),
                          length: int | None = Query(default=None, ge=0, lt=2**63,
                                                     description="Its byte length (fills every tract but the "
                                                                 "last), recorded at once.")) -> Response:
        raw = parse_guid(guid)
        table = await node.check(raw, METADATA_TRACT, version)
        return json_response(await meta.create(raw, table, op, tracts=tracts, length=length), status=201)

    @app.get("/v1/meta/{guid}", response_model=BlobInfo, tags=["metadata"], summary="A blob's size.")
    async def stat_blob(guid: str, version: int = _VERSION) -> Response:
        raw = parse_guid(guid)
        table = await node.check(raw, METADATA_TRACT, version)
        return json_response(await meta.stat(raw, table))

    @app.post("/v1/meta/{guid}/extend", response_model=ExtendResult, tags=["metadata"],
              summary="Atomically add tracts; each caller gets its own new range.")
    async def extend_blob(guid: str, req: ExtendRequest, version: int = _VERSION, op: str | None = _OP) -> Response:
        raw = parse_guid(guid)
        table = await node.check(raw, METADATA_TRACT, version)
        return json_response(await meta.extend(raw, req.count, table, op))

    @app.patch("/v1/meta/{guid}", response_model=BlobInfo, tags=["metadata"],
               summary="Record the blob's byte length (stream writers do this when done).")
    async def set_length(guid: str, req: SetLengthRequest, version: int = _VERSION,
                         op: str | None = _OP) -> Response:
        raw = parse_guid(guid)
        table = await node.check(raw, METADATA_TRACT, version)
        return json_response(await meta.set_length(raw, req.length, table, op))

    @app.delete("/v1/meta/{guid}", status_code=204, tags=["metadata"],
                summary="Delete a blob's metadata; a collector removes its tracts later.")
    async def delete_blob(guid: str, version: int = _VERSION, op: str | None = _OP) -> Response:
        raw = parse_guid(guid)
        table = await node.check(raw, METADATA_TRACT, version)
        await meta.delete(raw, table, op)
        return Response(status_code=204)

    @app.put("/v1/internal/meta/{guid}", tags=["internal"],
             summary="Server to server: a metadata record from the row's primary.")
    async def replicate_meta(guid: str, record: MetaRecord, version: int = _VERSION) -> Response:
        raw = parse_guid(guid)
        if format_guid(raw) != record.guid:
            raise BadRequest("record GUID does not match the URL")
        table = await node.check(raw, METADATA_TRACT, version)
        await meta.apply(raw, record, table)
        return json_response({"seq": record.seq})

    @app.put("/v1/internal/meta", tags=["internal"],
             summary="Server to server: metadata records of blobs of one row from its primary (a group commit).")
    async def replicate_metas(body: MetaRecords, version: int = _VERSION) -> Response:
        table = await node.check(parse_guid(body.records[0].guid), METADATA_TRACT, version)
        await meta.apply_many(body.records, table)
        return json_response({"records": len(body.records)})

    @app.post("/v1/internal/rows", response_model=RowListing, tags=["internal"],
              summary="Server to server: every tract and metadata record this server has of some rows, for "
                      "a new holder to copy. Answers only once writes under an older table have finished.")
    async def list_rows(req: RowsRequest) -> Response:
        node.check_lease()
        table = await node.table_at_least(req.version)
        for r in req.rows:
            if not 0 <= r < len(table):
                raise BadRequest(f"row {r} does not exist: the table has {len(table)} rows", code="bad_row")
            if not table.holds(node.id, r) or table.is_filling(node.id, r):
                raise StaleVersion(f"this server does not hold every tract of row {r} in table version "
                                   f"{table.version}; ask another holder", server_version=table.version)
        await node.drain(req.rows, table)
        wanted = set(req.rows)

        def scan() -> RowListing:
            found = node.store.tracts_where(lambda g, t: table.row_of(g, t) in wanted)
            return RowListing(
                tracts=[(format_guid(g), inc, t, e.length, f"{e.checksum:016x}", e.stamp, e.writer)
                        for g, inc, t, e in found],
                meta=node.store.metas_where(lambda g: table.row_of(g, METADATA_TRACT) in wanted),
                names=node.names.records_where(lambda ns: table.row_of(ns, METADATA_TRACT) in wanted))

        return json_response(await node.run_io(scan))

    @app.post("/v1/internal/table", response_model=TableAck, tags=["internal"],
              summary="Metaserver to server: a table to use now (one that takes this server out of rows, "
                      "pushed before it is published). Answers the version this server uses.")
    async def push_table(model: TableModel) -> Response:
        if node.table is None or model.version > node.table.version:
            node.adopt(Table(model))
        return json_response(TableAck(table_version=node.table.version if node.table else 0))

    # -- operations ---------------------------------------------------------
    @app.get("/v1/stats", response_model=TractServerStats, tags=["ops"], summary="Tracts and bytes on this disk.")
    async def stats() -> Response:
        return json_response(TractServerStats(
            id=node.id, url=node.url, tracts=node.store.tracts, bytes_used=node.store.bytes_used,
            disk_free=await node.run_io(node.store.disk_free), capacity_bytes=node.store.capacity_bytes,
            table_version=node.table.version if node.table else 0, copied_tracts=node.copied_tracts,
            copied_bytes=node.copied_bytes))

    @app.post("/v1/admin/collect", tags=["ops"],
              summary="Run one pass of the orphan-tract collector now, and delete the due blobs of replaced objects.")
    async def collect() -> Response:
        return json_response({"removed": await node.collect_once(), "retired": await names.retire_once()})

    @app.post("/v1/admin/fill", tags=["ops"],
              summary="Start copying any rows this server is filling (the metaserver calls this).")
    async def fill() -> Response:
        try:
            await node.refresh_table()
        except Exception:  # noqa: BLE001 - the heartbeat will bring the table
            pass
        filler.trigger()
        table = node.table
        return json_response({"filling_rows": len(table.filling_rows(node.id)) if table else 0})

    @app.post("/v1/admin/scrub", tags=["ops"],
              summary="Run one scrub pass now: verify every tract, repair bad or missing copies, collect orphans.")
    async def scrub(rate: int | None = Query(default=None, ge=0, description="Bytes a second (at least 1 MiB); "
                                                                          "0: unthrottled.")
                    ) -> Response:
        if rate is not None and 0 < rate < _MIN_SCRUB_RATE:
            raise BadRequest(f"scrub rate {rate} is under the minimum of {_MIN_SCRUB_RATE} bytes a second; use 0 "
                             "for unthrottled (the pass holds this request and the scrubber until it ends)")
        return json_response((await scrubber.scrub_once(rate)).as_dict())

    add_name_routes(app, node, names)
    return app
