"""Bad input gets a clear 4xx with the fds error body, never a 500 or a traceback."""

from __future__ import annotations

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
    guid = uuid.uuid4().bytes

    def url_for(tract: int) -> str:
        row = table.rows[tract_row(guid, tract, len(table.rows))]
        return table.servers[row[0]].url

    meta = url_for(-1)
    r = httpx.post(f"{meta}/v1/meta/{format_guid(guid)}", params={"version": table.version}, headers=AUTH)
    assert r.status_code == 201, r.text
    r = httpx.post(f"{meta}/v1/meta/{format_guid(guid)}/extend", params={"version": table.version},
                   json={"count": 2}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"first": 0, "count": 2, "tracts": 2}
    return {"table": table, "guid": format_guid(guid), "raw": guid, "url_for": url_for, "meta": meta}


def _p(version: object) -> dict[str, object]:
    """Query parameters of a tract request: the table version, and the blob's first incarnation."""
    return {"incarnation": 1, "version": version}


def _error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert body["code"] == code, body
    assert body["message"] and "Traceback" not in body["message"]
    return str(body["message"])


def test_good_write_then_read(env: dict) -> None:
    url = env["url_for"](0)
    r = httpx.put(f"{url}/v1/tracts/{env['guid']}/0", params=_p(env["table"].version), content=b"abc", headers=AUTH)
    assert r.status_code == 200 and r.json()["length"] == 3
    r = httpx.get(f"{url}/v1/tracts/{env['guid']}/0", params=_p(env["table"].version), headers=AUTH)
    assert r.status_code == 200 and r.content == b"abc"
    assert len(r.headers["x-fds-checksum"]) == 16


def test_malformed_guid(env: dict) -> None:
    url = env["url_for"](0)
    for bad in ["not-a-guid", "1234", "g" * 32, "0" * 33]:
        msg = _error(httpx.get(f"{url}/v1/tracts/{bad}/0", params=_p(1), headers=AUTH), 400, "bad_guid")
        assert "32 hex digits" in msg
    _error(httpx.post(f"{env['meta']}/v1/meta/zzz", params={"version": 1}, headers=AUTH), 400, "bad_guid")


def test_negative_and_huge_tract_numbers(env: dict) -> None:
    url, guid, v = env["url_for"](0), env["guid"], env["table"].version
    _error(httpx.get(f"{url}/v1/tracts/{guid}/-1", params=_p(v), headers=AUTH), 400, "bad_tract")
    _error(httpx.put(f"{url}/v1/tracts/{guid}/-5", params=_p(v), content=b"x", headers=AUTH), 400, "bad_tract")
    _error(httpx.get(f"{url}/v1/tracts/{guid}/{2**70}", params=_p(v), headers=AUTH), 400, "bad_tract")
    _error(httpx.get(f"{url}/v1/tracts/{guid}/abc", params=_p(v), headers=AUTH), 400, "bad_tract")


def test_tract_over_tract_size(env: dict) -> None:
    url = env["url_for"](1)
    r = httpx.put(f"{url}/v1/tracts/{env['guid']}/1", params=_p(env["table"].version),
                  content=b"x" * (SMALL_TRACT + 1), headers=AUTH)
    assert str(SMALL_TRACT) in _error(r, 413, "tract_too_large")


def test_read_and_write_past_the_end(env: dict) -> None:
    v = env["table"].version
    url = env["url_for"](5)
    assert "extend" in _error(httpx.get(f"{url}/v1/tracts/{env['guid']}/5", params=_p(v),
                                        headers=AUTH), 416, "past_end")
    assert "extend" in _error(httpx.put(f"{url}/v1/tracts/{env['guid']}/5", params=_p(v), content=b"x", headers=AUTH),
                              416, "past_end")


def test_unwritten_tract_within_size(env: dict) -> None:
    url = env["url_for"](1)
    _error(httpx.get(f"{url}/v1/tracts/{env['guid']}/1", params=_p(env["table"].version), headers=AUTH),
           404, "tract_not_found")


def test_unknown_blob(env: dict) -> None:
    table = env["table"]
    other = uuid.uuid4().bytes
    row = table.rows[tract_row(other, 0, len(table.rows))]
    url = table.servers[row[0]].url
    _error(httpx.get(f"{url}/v1/tracts/{format_guid(other)}/0", params=_p(table.version), headers=AUTH),
           404, "blob_not_found")
    _error(httpx.put(f"{url}/v1/tracts/{format_guid(other)}/0", params=_p(table.version), content=b"x", headers=AUTH),
           404, "blob_not_found")
    meta_row = table.rows[tract_row(other, -1, len(table.rows))]
    meta = table.servers[meta_row[0]].url
    _error(httpx.get(f"{meta}/v1/meta/{format_guid(other)}", params={"version": table.version},
                     headers=AUTH), 404, "blob_not_found")


def test_stale_and_missing_version(env: dict) -> None:
    url, guid = env["url_for"](0), env["guid"]
    msg = _error(httpx.get(f"{url}/v1/tracts/{guid}/0", params=_p(0), headers=AUTH), 409, "stale_version")
    assert "refetch" in msg
    _error(httpx.put(f"{url}/v1/tracts/{guid}/0", params=_p(0), content=b"x", headers=AUTH), 409, "stale_version")
    _error(httpx.get(f"{url}/v1/tracts/{guid}/0", headers=AUTH), 400, "bad_request")
    _error(httpx.get(f"{url}/v1/tracts/{guid}/0", params=_p("abc"), headers=AUTH), 400, "bad_request")


def test_wrong_server_is_told_to_refetch(env: dict) -> None:
    table, raw = env["table"], env["raw"]
    holder = table.rows[tract_row(raw, 0, len(table.rows))][0]
    other = next(s for i, s in enumerate(table.servers) if i != holder)
    msg = _error(httpx.get(f"{other.url}/v1/tracts/{env['guid']}/0", params=_p(table.version), headers=AUTH),
                 409, "stale_version")
    assert "does not hold row" in msg


def test_metadata_bad_bodies(env: dict) -> None:
    meta, guid, v = env["meta"], env["guid"], env["table"].version
    _error(httpx.post(f"{meta}/v1/meta/{guid}/extend", params={"version": v}, json={"count": 0},
                      headers=AUTH), 400, "bad_request")
    _error(httpx.post(f"{meta}/v1/meta/{guid}/extend", params={"version": v}, content=b"{nope",
                      headers=AUTH), 400, "bad_request")
    _error(httpx.post(f"{meta}/v1/meta/{guid}", params={"version": v}, headers=AUTH), 409, "blob_exists")
    _error(httpx.patch(f"{meta}/v1/meta/{guid}", params={"version": v}, json={"length": 10 * SMALL_TRACT},
                       headers=AUTH), 400, "bad_request")


def test_unknown_route_and_method(env: dict, cluster_k1: LocalCluster) -> None:
    _error(httpx.get(f"{env['meta']}/v1/nothing", headers=AUTH), 404, "no_such_route")
    _error(httpx.delete(f"{cluster_k1.metaserver_url}/v1/table", headers=AUTH), 405, "method_not_allowed")
    assert httpx.get(f"{cluster_k1.metaserver_url}/healthz", headers=AUTH).json() == {"status": "ok"}
    assert httpx.get(f"{env['meta']}/healthz", headers=AUTH).status_code == 200
    assert httpx.get(f"{env['meta']}/openapi.json", headers=AUTH).json()["info"]["title"] == "fds tract server"


def test_metaserver_bad_input(cluster_k1: LocalCluster) -> None:
    ms = cluster_k1.metaserver_url
    _error(httpx.post(f"{ms}/v1/servers", json={"id": "../../etc", "url": "x", "domain": "d", "capacity_bytes": 1},
                      headers=AUTH),
           400, "bad_request")
    _error(httpx.post(f"{ms}/v1/servers/nobody/heartbeat",
                      json={"tracts": 0, "bytes_used": 0, "disk_free": 0, "capacity_bytes": 0, "table_version": 0},
                      headers=AUTH),
           404, "unknown_server")


def test_replication_endpoints_refuse_bad_input(cluster_k3: LocalCluster) -> None:
    """The recovery and membership routes answer malformed or unknown input with a 4xx that says why."""
    ms = cluster_k3.metaserver_url
    table = TableModel.model_validate(httpx.get(f"{ms}/v1/table", headers=AUTH).json())
    ts = cluster_k3.tract_children[0].url
    me = httpx.get(f"{ts}/v1/stats", headers=AUTH).json()["id"]
    index = next(i for i, s in enumerate(table.servers) if s.id == me)
    not_mine = next(r for r, row in enumerate(table.rows) if index not in row)

    resp = httpx.post(f"{ts}/v1/internal/rows", json={"rows": [len(table.rows) + 5], "version": table.version},
                      headers=AUTH)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_row"
    resp = httpx.post(f"{ts}/v1/internal/rows", json={"rows": [not_mine], "version": table.version}, headers=AUTH)
    assert resp.status_code == 409 and "ask another holder" in resp.json()["error"]["message"]
    resp = httpx.post(f"{ts}/v1/internal/rows", json={"rows": "all"}, headers=AUTH)
    assert resp.status_code == 400 and "rows" in resp.json()["error"]["message"]
    resp = httpx.post(f"{ts}/v1/admin/scrub", params={"rate": -1}, headers=AUTH)
    assert resp.status_code == 400 and "rate" in resp.json()["error"]["message"]

    resp = httpx.post(f"{ms}/v1/servers/ts-nosuchserver/filled", json={"rows": [0], "version": 1}, headers=AUTH)
    assert resp.status_code == 404 and "not in the table" in resp.json()["error"]["message"]
    resp = httpx.post(f"{ms}/v1/servers/{me}/filled", json={"rows": "x"}, headers=AUTH)
    assert resp.status_code == 400
    resp = httpx.post(f"{ms}/v1/servers/ts-nosuchserver/decommission", headers=AUTH)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "unknown_server"
