"""The metaserver's HTTP API."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import Response

from fds.metaserver._state import MetaState
from fds.models import ClusterStatus, Heartbeat, HeartbeatReply, RegisterRequest, TableModel
from fds.web import create_app as create_base_app
from fds.web import json_response

__all__ = ["create_app"]


def create_app(state: MetaState) -> FastAPI:
    """The metaserver app over ``state``."""
    app = create_base_app(
        "fds metaserver",
        "Membership, heartbeats and the tract locator table. Never on the data path.",
        role="metaserver",
    )
    app.state.meta = state
    metrics = app.state.metrics
    metrics.gauge("fds_table_version", "Current tract locator table version (0: not built yet).",
                  lambda: state.table.version if state.table else 0)
    metrics.gauge("fds_servers_registered", "Tract servers that have registered.", lambda: len(state.members))
    metrics.gauge("fds_servers_alive", "Tract servers whose last heartbeat is recent.",
                  lambda: sum(s.alive for s in state.status().servers))
    metrics.labelled_gauge("fds_heartbeat_age_seconds", "Seconds since each tract server's last heartbeat.",
                           "server", lambda: {s.id: s.heartbeat_age for s in state.status().servers
                                              if s.heartbeat_age is not None})

    @app.post("/v1/servers", response_model=HeartbeatReply, tags=["membership"],
              summary="Register (or re-register) a tract server.")
    async def register(req: RegisterRequest) -> Response:
        return json_response(HeartbeatReply(table_version=state.register(req)))

    @app.post("/v1/servers/{server_id}/heartbeat", response_model=HeartbeatReply, tags=["membership"],
              summary="A tract server's periodic heartbeat, with its disk statistics.")
    async def heartbeat(server_id: str, beat: Heartbeat) -> Response:
        return json_response(HeartbeatReply(table_version=state.heartbeat(server_id, beat)))

    @app.get("/v1/table", response_model=TableModel, tags=["table"],
             summary="The tract locator table, its version, tract size and replication level.")
    async def table() -> Response:
        return Response(state.table_json(), media_type="application/json")

    @app.get("/v1/cluster", response_model=ClusterStatus, tags=["ops"],
             summary="Servers, their health and disk use, and the table version.")
    async def cluster() -> Response:
        return json_response(state.status())

    return app
