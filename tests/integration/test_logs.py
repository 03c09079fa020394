"""Structured logs: JSON lines, and one request id from the client through every server it touches."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from fds.client import BlobNotFound, Client
from fds.local import LocalCluster
from fds.logs import request_id
from tests.support.credentials import AUTH


def _events(cluster: LocalCluster) -> dict[str, list[dict[str, Any]]]:
    """Every server's log, parsed: each line must be one JSON object."""
    events: dict[str, list[dict[str, Any]]] = {}
    for child in cluster.children:
        text = Path(child.log).read_text()
        whole = text[:text.rfind("\n") + 1]  # a line still being written is read next time
        lines = [line for line in whole.splitlines() if line.strip()]
        events[child.name] = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    return events


def test_request_id_travels_from_client_through_servers(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(tractservers=3, replicas=3, env={"FDS_LOG_LEVEL": "DEBUG"})

    async def main() -> str:
        async with Client(cluster.metaserver_url) as fds:
            request_id.set("op-create-1")
            blob = await fds.create_blob()
            request_id.set("op-write-1")
            await blob.extend(1)
            await blob.write_tract(0, b"x" * 1000)
            request_id.set("op-missing-1")
            try:
                await fds.open_blob("0" * 32)
            except BlobNotFound:
                pass
            return blob.guid

    guid = asyncio.run(main())
    tract_servers = [c.name for c in cluster.tract_children]

    def check(events: dict[str, list[dict[str, Any]]]) -> list[str]:
        """What is not (yet) in the logs: a server logs a request after answering it."""
        def seen(rid: str, path_part: str) -> set[str]:
            return {name for name in tract_servers for e in events[name]
                    if e.get("request_id") == rid and path_part in e.get("path", "")}

        missing = [e for name in tract_servers for e in events[name] if e.get("request_id") == "op-missing-1"]
        wrong = {
            # the create reached the row's primary, which prepared it on the other two under the same id
            "create at the primary": len(seen("op-create-1", f"/v1/meta/{guid}")) == 1,
            "prepares on the two others": len(seen("op-create-1", f"/v1/internal/meta/{guid}")) == 2,
            # the tract write went to all three replicas (on their data ports), one id
            "the write on all three": len(seen("op-write-1", f"/v1/tracts/{guid}/0")) == 3,
            "the 404, at info": bool(missing) and all(e["status"] == 404 and e["level"] == "info" for e in missing),
        }
        return [what for what, ok in wrong.items() if not ok]

    deadline = time.monotonic() + 30
    while (absent := check(events := _events(cluster))) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not absent, absent
    for name, lines in events.items():
        assert lines, name
        assert all({"ts", "level", "role", "logger", "msg"} <= e.keys() for e in lines), name


def test_servers_echo_or_make_request_ids(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(tractservers=1)
    url = f"{cluster.metaserver_url}/v1/cluster"
    assert httpx.get(url, headers={**AUTH, "x-request-id": "abc-123"}).headers["x-request-id"] == "abc-123"
    made = httpx.get(url, headers={**AUTH, "x-request-id": "bad id\twith spaces" + "x" * 100}).headers["x-request-id"]
    assert made != "" and " " not in made and len(made) <= 64  # a hostile id never reaches the logs
    refused = httpx.get(url, headers={"x-request-id": "no-auth-1"})
    assert refused.status_code == 401 and refused.headers["x-request-id"] == "no-auth-1"
    table = httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH).json()
    data = table["servers"][0]["data_url"]
    resp = httpx.get(f"{data}/v1/tracts/nope/0", headers={**AUTH, "x-request-id": "data-1"})
    assert resp.status_code == 400 and resp.headers["x-request-id"] == "data-1"
    def logged(events: dict[str, list[dict[str, Any]]]) -> bool:  # each server logs after it answers
        return (any(e.get("request_id") == "no-auth-1" and e.get("status") == 401 for e in events["metaserver"])
                and any(e.get("request_id") == "data-1" and e.get("status") == 400 for e in events["ts0"]))

    deadline = time.monotonic() + 30
    while not logged(events := _events(cluster)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert logged(events), (events["metaserver"][-5:], events["ts0"][-5:])
