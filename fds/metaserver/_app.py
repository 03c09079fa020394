"""The metaserver's HTTP API, and the loop that detects failures and plans repairs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from fastapi.responses import Response

from fds import tls
from fds.auth import HttpxAuth
from fds.metaserver._metrics import register_metaserver_metrics
from fds.metaserver._state import MetaState, TickResult
from fds.metaserver._status_page import router as status_page
from fds.models import (
    ClusterStatus,
    DeclaredDead,
    FilledRequest,
    Heartbeat,
    HeartbeatReply,
    RegisterRequest,
    TableAck,
    TableModel,
)
from fds.web import create_app as create_base_app
from fds.web import json_response

__all__ = ["create_app"]

log = logging.getLogger("fds.metaserver")


def create_app(state: MetaState, *, detect: bool = True) -> FastAPI:
    """The metaserver app over ``state``; with ``detect``, the failure detector runs every ``detect_interval``."""
    http: httpx.AsyncClient | None = None
    wake = asyncio.Event()
    told = 0
    """The table version whose filling servers were last nudged."""

    async def push(server_id: str, url: str, body: bytes) -> None:
        """Push the pending table to a server it takes out of rows; its answer acknowledges it."""
        assert http is not None
        try:
            resp = await http.post(f"{url}/v1/internal/table", content=body, timeout=2.0,
                                   headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            log.info("cannot push the pending table to %s: %s", server_id, exc)
            return
        if resp.status_code == 200:
            state.table_acked(server_id, TableAck.model_validate_json(resp.content).table_version)
        else:
            log.info("%s did not take the pending table: %s", server_id, resp.text[:200])

    async def publish() -> None:
        """Get a pending table published: push it to the servers it waits for, then publish if it may."""
        pending = state.pending
        if pending is None or http is None or state.table is None:
            return
        urls = {s.id: s.url for s in state.table.servers}
        body = pending.model_dump_json().encode()
        await asyncio.gather(*(push(s, urls[s], body) for s in state.waiting_for() if s in urls))
        state.publish()

    async def tell() -> None:
        """Tell servers that fill rows in a newly published table to start copying now (their next heartbeat
        would also tell them)."""
        nonlocal told
        table = state.table
        if http is None or table is None or table.version == told:
            return
        told = table.version
        client = http

        async def nudge(url: str) -> None:
            try:
                await client.post(f"{url}/v1/admin/fill")
            except httpx.HTTPError as exc:
                log.info("could not nudge %s to fill: %s", url, exc)

        filling = sorted({table.servers[i].url for servers in table.filling.values() for i in servers})
        await asyncio.gather(*(nudge(url) for url in filling))

    async def settle() -> None:
        await publish()
        await tell()

    async def publisher() -> None:
        """Publishes pending tables and nudges fillers whenever something changed (``wake``)."""
        while True:
            await wake.wait()
            wake.clear()
            try:
                await settle()
            except Exception:  # a bad pass must not end the loop
                log.exception("publishing the table failed")

    async def tick() -> TickResult:
        result = state.tick()
        await settle()
        return result

    async def detector() -> None:
        while True:
            await asyncio.sleep(state.config.detect_interval)
            try:
                await tick()
            except Exception:  # a bad pass must not end the loop
                log.exception("failure detector pass failed")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nonlocal http
        http = httpx.AsyncClient(timeout=5.0, auth=HttpxAuth(), verify=tls.client_context())
        tasks = [asyncio.create_task(publisher(), name="publisher")]
        if detect:
            tasks.append(asyncio.create_task(detector(), name="detector"))
        wake.set()  # a table left pending by a restart
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await http.aclose()

    app = create_base_app(
        "fds metaserver",
        "Membership, heartbeats, failure detection and the tract locator table. Never on the data path.",
        role="metaserver",
    )
    app.router.lifespan_context = lifespan
    app.state.meta = state
    register_metaserver_metrics(app.state.metrics, state)
    app.include_router(status_page)

    @app.post("/v1/servers", response_model=HeartbeatReply, tags=["membership"],
              summary="Register (or re-register) a tract server. A new server joins the table and is "
                      "handed its share of rows once the cluster is healthy.")
    async def register(req: RegisterRequest) -> Response:
        reply = state.register(req)
        wake.set()
        return json_response(reply)

    @app.post("/v1/servers/{server_id}/heartbeat", response_model=HeartbeatReply, tags=["membership"],
              summary="A tract server's periodic heartbeat, with its disk statistics and fill progress.")
    async def heartbeat(server_id: str, beat: Heartbeat) -> Response:
        reply = state.heartbeat(server_id, beat)
        if state.pending is not None:
            wake.set()  # the heartbeat may acknowledge it
        return json_response(reply)

    @app.post("/v1/servers/{server_id}/filled", response_model=HeartbeatReply, tags=["membership"],
              summary="A tract server has copied every tract of these rows; they stop filling.")
    async def filled(server_id: str, req: FilledRequest) -> Response:
        version = state.filled(server_id, req.rows)
        wake.set()
        return json_response(HeartbeatReply(table_version=version))

    @app.post("/v1/servers/{server_id}/decommission", tags=["membership"],
              summary="Hand every row of this server to others; once it holds none it is 'decommissioned'.")
    async def decommission(server_id: str) -> Response:
        result = state.decommission(server_id)
        await settle()
        return json_response(result)

    @app.post("/v1/servers/{server_id}/declare-dead", response_model=DeclaredDead, tags=["membership"],
              summary="Declare a silent tract server dead now, even during an outage (repair held): its rows "
                      "are re-replicated from their other holders. Audited in the metaserver's log. A server "
                      "that is heartbeating is refused (409 server_alive): decommission it instead.")
    async def declare_dead(server_id: str) -> Response:
        result = state.declare_dead(server_id)
        wake.set()
        return json_response(result)

    @app.post("/v1/admin/tick", tags=["ops"],
              summary="Run one pass of the failure detector and repair planner now.")
    async def admin_tick() -> Response:
        result = await tick()
        return json_response({"declared_dead": result.declared_dead, "rows_changed": result.rows_changed,
                              "fill": result.fill, "table_version": state.table.version if state.table else 0})

    @app.get("/v1/table", response_model=TableModel, tags=["table"],
             summary="The tract locator table, its version, tract size and replication level.")
    async def table() -> Response:
        return Response(state.table_json(), media_type="application/json")

    @app.get("/v1/cluster", response_model=ClusterStatus, tags=["ops"],
             summary="Servers, their health and disk use, the table version, and repair progress.")
    async def cluster() -> Response:
        return json_response(state.status())

    return app
