"""The data port answers like the API port: same routes, same errors, never a traceback."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from fds.guid import format_guid
from fds.local import LocalCluster
from fds.models import TableModel
from fds.placement import tract_row
from tests.support.clusters import SMALL_TRACT
from tests.support.credentials import AUTH


@pytest.fixture(scope="module")
def env(cluster_k1: LocalCluster) -> dict[str, object]:
    table = TableModel.model_validate(httpx.get(f"{cluster_k1.metaserver_url}/v1/table", headers=AUTH).json())
    assert all(s.data_url and s.data_url != s.url for s in table.servers)
    guid = uuid.uuid4().bytes
    meta = table.servers[table.rows[tract_row(guid, -1, len(table.rows))][0]].url
    assert httpx.post(f"{meta}/v1/meta/{format_guid(guid)}", params={"version": table.version},
                      headers=AUTH).status_code == 201
    r = httpx.post(f"{meta}/v1/meta/{format_guid(guid)}/extend", params={"version": table.version}, json={"count": 2},
                   headers=AUTH)
    assert r.status_code == 200

    def data_url(tract: int) -> str:
        return table.servers[table.rows[tract_row(guid, tract, len(table.rows))][0]].data_url

    return {"table": table, "guid": format_guid(guid), "data": data_url(0), "data_url": data_url,
            "q": {"version": table.version, "incarnation": 1}}  # a blob's first creation is incarnation 1


def _error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert body["code"] == code, body
    return str(body["message"])


def test_round_trip_and_head(env: dict) -> None:
    url = f"{env['data']}/v1/tracts/{env['guid']}/0"
    data = bytes(range(256)) * 1000
    r = httpx.put(url, params=env["q"], content=data, headers=AUTH)
    assert r.status_code == 200 and r.json()["length"] == len(data)
    r = httpx.get(url, params=env["q"], headers=AUTH)
    assert r.status_code == 200 and r.content == data and len(r.headers["x-fds-checksum"]) == 16
    r = httpx.head(url, params=env["q"], headers=AUTH)
    assert r.status_code == 200 and r.headers["content-length"] == str(len(data))


def test_bad_requests(env: dict) -> None:
    base, guid, q = env["data"], env["guid"], env["q"]
    assert "32 hex digits" in _error(httpx.get(f"{base}/v1/tracts/nope/0", params=q, headers=AUTH), 400, "bad_guid")
    _error(httpx.get(f"{base}/v1/tracts/{guid}/-1", params=q, headers=AUTH), 400, "bad_tract")
    _error(httpx.get(f"{base}/v1/tracts/{guid}/x", params=q, headers=AUTH), 400, "bad_tract")
    _error(httpx.get(f"{base}/v1/tracts/{guid}/0", headers=AUTH), 400, "bad_request")
    _error(httpx.get(f"{base}/v1/tracts/{guid}/0", params={**q, "version": "abc"}, headers=AUTH), 400, "bad_request")
    _error(httpx.get(f"{base}/v1/tracts/{guid}/0", params={**q, "version": 0}, headers=AUTH), 409, "stale_version")
    assert "extend" in _error(httpx.get(f"{env['data_url'](9)}/v1/tracts/{guid}/9", params=q,
                                        headers=AUTH), 416, "past_end")
    _error(httpx.get(f"{env['data_url'](1)}/v1/tracts/{guid}/1", params=q, headers=AUTH), 404, "tract_not_found")
    other = format_guid(uuid.uuid4().bytes)
    _error(httpx.put(f"{base}/v1/tracts/{guid}/0", params={**q, "incarnation": 99}, content=b"x", headers=AUTH),
           404, "blob_not_found")
    assert "API port" in _error(httpx.get(f"{base}/v1/meta/{other}", params=q, headers=AUTH), 404, "no_such_route")
    _error(httpx.post(f"{base}/v1/tracts/{guid}/0", params=q, content=b"x", headers=AUTH), 405, "method_not_allowed")


def test_oversize_tract_and_connection_survives(env: dict) -> None:
    url = f"{env['data']}/v1/tracts/{env['guid']}/0"
    with httpx.Client(headers=AUTH) as client:
        _error(client.put(url, params=env["q"], content=b"x" * (SMALL_TRACT + 1)), 413, "tract_too_large")
        assert client.get(url, params=env["q"]).status_code == 200  # same keep-alive connection still works


def test_garbage_on_the_wire(env: dict) -> None:
    host, port = env["data"].removeprefix("http://").rsplit(":", 1)
    for garbage in (b"NOT HTTP\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"PUT /v1/tracts/a/0 HTTP/1.1\r\nbroken\r\n\r\n"):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(garbage)
            reply = sock.recv(4096)
            assert reply.startswith(b"HTTP/1.1 400"), reply[:80]
