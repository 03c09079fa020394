"""The inputs the fuzz tests found, as explicit examples: each got a 5xx, killed a server, or hung one.

Each test names the bug it pins (and the commit that fixed it says the
rest). Requests the client libraries would refuse or rewrite are sent as
raw bytes over a socket.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from fds.client import SyncClient
from fds.guid import format_guid
from fds.local import LocalCluster
from fds.models import TableModel
from fds.placement import tract_row
from tests.fuzz._fuzzing import raw_exchange
from tests.fuzz._minutesort import JOB, StandInHead

NON_ASCII_TOKENS = ["fds1.cluster.123.aa.\u00e9", "fds1.cluster.123.aa.\u0663", "fds1.write.99.\u00e9\u00e9.x"]


def _error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code, error
    assert error["message"] and "Traceback" not in error["message"]
    return str(error["message"])


def _raw_error(port: int, raw: bytes, status: int) -> dict[str, Any]:
    answer = raw_exchange(port, raw)
    assert not isinstance(answer, str), answer
    got, _, body = answer
    assert got == status, (got, body)
    error: dict[str, Any] = orjson.loads(body)["error"]
    assert error["message"]
    return error


@pytest.fixture(scope="module")
def table(fuzz_cluster: LocalCluster) -> TableModel:
    resp = httpx.get(f"{fuzz_cluster.metaserver_url}/v1/table", headers=fuzz_cluster.headers())
    return TableModel.model_validate(resp.json())


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


# -- fds/auth.py ---------------------------------------------------------------------------------
def test_a_non_ascii_token_is_401_not_500(fuzz_cluster: LocalCluster, table: TableModel) -> None:
    """hmac.compare_digest raised TypeError on non-ASCII text: 500 on every server and port."""
    guid = format_guid(uuid.uuid4().bytes)
    for token in NON_ASCII_TOKENS:
        for url in (fuzz_cluster.metaserver_url, table.servers[0].url, fuzz_cluster.gateway_url):
            raw = f"GET /v1/blobs/{guid} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"
            error = _raw_error(_port(url), raw.encode(), 401)
            assert error["code"] == "bad_token", error
        raw = f"GET /v1/tracts/{guid}/0?version=1&incarnation=1 HTTP/1.1\r\nauthorization: Bearer {token}\r\n\r\n"
        assert _raw_error(_port(table.servers[0].data_url), raw.encode(), 401)["code"] == "bad_token"


# -- fds/models.py: server URLs ------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["http://\x0bx:1", "ftp://a:1", "http://a:99999", "http://a:port", "http://[zz]:1",
                                 "http://\u00e9t\u00e9:1", "http://", "0", "http://a b:1"])
def test_register_refuses_a_url_clients_cannot_use(fuzz_cluster: LocalCluster, url: str) -> None:
    """The metaserver took any text as a server's URL, then failed nudging it (httpx.InvalidURL: 500 on
    decommission and in every detector pass), and clients failed encoding it (500 at the gateway)."""
    ms, headers = fuzz_cluster.metaserver_url, fuzz_cluster.headers()
    for field in ("url", "data_url"):
        body = {"id": "fz-url", "url": "http://127.0.0.1:9", "domain": "fz", "capacity_bytes": 1, field: url}
        message = _error(httpx.post(f"{ms}/v1/servers", json=body, headers=headers), 400, "bad_request")
        assert "http:// or https:// URL" in message, message
    servers = httpx.get(f"{ms}/v1/cluster", headers=headers).json()["servers"]
    assert "fz-url" not in {s["id"] for s in servers}
    _error(httpx.post(f"{ms}/v1/servers/fz-url/decommission", headers=headers), 404, "unknown_server")


# -- fds/models.py: integers over 64 bits, NaN and infinity --------------------------------------------
def test_heartbeat_counts_over_64_bits_are_refused(fuzz_cluster: LocalCluster, table: TableModel) -> None:
    """One heartbeat with a count over 64 bits made GET /v1/cluster a 500 (orjson) until the next one."""
    ms, headers = fuzz_cluster.metaserver_url, fuzz_cluster.headers()
    beat = {"tracts": 0, "bytes_used": 0, "disk_free": 0, "capacity_bytes": 1, "table_version": 0}
    sid = table.servers[3].id
    for change in ({"tracts": 2**70}, {"disk_free": 2**64}, {"table_version": 2**63},
                   {"fill": {"bytes_done": 2**64}}, {"traffic": {"requests": 2**64}}):
        resp = httpx.post(f"{ms}/v1/servers/{sid}/heartbeat", json={**beat, **change}, headers=headers)
        assert "less than or equal to" in _error(resp, 400, "bad_request"), change
    body = {"id": "fz-big", "url": "http://127.0.0.1:9", "domain": "fz", "capacity_bytes": 2**64}
    _error(httpx.post(f"{ms}/v1/servers", json=body, headers=headers), 400, "bad_request")
    assert httpx.get(f"{ms}/v1/cluster", headers=headers).status_code == 200
    assert httpx.get(f"{ms}/metrics", headers=headers).status_code == 200


def test_replicated_records_over_64_bits_or_not_finite_are_refused(fuzz_cluster: LocalCluster,
                                                                   table: TableModel) -> None:
    """PUT /v1/internal/meta stored a record with seq 2**70 (it then outranked every later record of
    the blob) and answered 500; created=inf or NaN, and a negative length, were stored as well."""
    headers = fuzz_cluster.headers()
    raw = uuid.uuid4().bytes
    guid = format_guid(raw)
    replica = table.servers[table.rows[tract_row(raw, -1, len(table.rows))][1]].url
    good = {"guid": guid, "tracts": 1, "created": 1.0, "seq": 1}
    for change in ({"seq": 2**70}, {"tracts": 2**64}, {"epoch": 2**63}, {"incarnation": 2**64},
                   {"ops": {"op": 2**64}}, {"length": 2**64}, {"length": -1}, {"created": "inf"},
                   {"created": "NaN"}, {"created": "-Infinity"}):
        resp = httpx.put(f"{replica}/v1/internal/meta/{guid}", params={"version": table.version},
                         json={**good, **change}, headers=headers)
        _error(resp, 400, "bad_request")
    listing = httpx.post(f"{replica}/v1/internal/rows", json={"rows": [tract_row(raw, -1, len(table.rows))],
                                                              "version": table.version}, headers=headers)
    assert listing.status_code == 200 and guid not in listing.text  # nothing was stored


# -- fds/tractserver/_fastpath.py ----------------------------------------------------------------------
@pytest.mark.parametrize("length", ["\u00b2".encode("latin-1"), "\u00b3".encode("latin-1"), b"0" * 5000, b"1" * 19])
def test_data_port_answers_a_bad_content_length(fuzz_cluster: LocalCluster, table: TableModel, length: bytes) -> None:
    """Digits int() refuses ('\u00b2' passes isdigit) or over 4300 of them: the ValueError escaped the
    protocol callback and asyncio dropped the connection without a word."""
    token = fuzz_cluster.headers()["authorization"]
    for method in (b"PUT", b"GET"):
        raw = (method + b" /v1/tracts/" + format_guid(uuid.uuid4().bytes).encode() + b"/0?version=1&incarnation=1"
               b" HTTP/1.1\r\nauthorization: " + token.encode() + b"\r\ncontent-length: " + length + b"\r\n\r\n")
        error = _raw_error(_port(table.servers[0].data_url), raw, 400)
        assert "Content-Length" in error["message"], error


@pytest.mark.parametrize("target", ["http://[/v1/tracts/x/0", "//[x/v1/tracts/x/0", "http://[::1/v1/tracts/x/0"])
def test_data_port_answers_a_target_urlsplit_refuses(fuzz_cluster: LocalCluster, table: TableModel,
                                                     target: str) -> None:
    raw = f"GET {target} HTTP/1.1\r\nauthorization: {fuzz_cluster.headers()['authorization']}\r\n\r\n"
    error = _raw_error(_port(table.servers[0].data_url), raw.encode(), 400)
    assert "malformed request target" in error["message"], error


# -- fds/buffers.py -------------------------------------------------------------------------------------
def test_an_empty_tract_can_be_written_and_read(fuzz_cluster: LocalCluster, table: TableModel) -> None:
    """An empty body is an empty aligned view, and is_aligned() asked ctypes for its address: a 500
    (ValueError: Buffer size too small) on every empty tract write, on both ports."""
    headers = fuzz_cluster.headers()
    with SyncClient(fuzz_cluster.metaserver_url) as client:
        blob = client.create_blob()
        blob.extend(2)
        incarnation = blob.stat().incarnation
    raw = uuid.UUID(blob.guid).bytes
    params = {"version": table.version, "incarnation": incarnation}
    for tract, port in ((0, "url"), (1, "data_url")):
        for index in table.rows[tract_row(raw, tract, len(table.rows))]:
            url = getattr(table.servers[index], port)
            resp = httpx.put(f"{url}/v1/tracts/{blob.guid}/{tract}", params=params, content=b"", headers=headers)
            assert resp.status_code == 200 and resp.json()["length"] == 0, resp.text
            resp = httpx.get(f"{url}/v1/tracts/{blob.guid}/{tract}", params=params, headers=headers)
            assert resp.status_code == 200 and resp.content == b"", resp.text


# -- fds/tractserver/_app.py ---------------------------------------------------------------------------
def test_scrub_refuses_a_rate_that_would_hold_it_for_days(fuzz_cluster: LocalCluster, table: TableModel) -> None:
    """rate=1 slept a second per byte checked, holding the request and the scrub lock (no more scrubs)."""
    url, headers = table.servers[2].url, fuzz_cluster.headers()
    for rate in (1, 5, (1 << 20) - 1):
        resp = httpx.post(f"{url}/v1/admin/scrub", params={"rate": rate}, headers=headers, timeout=30)
        assert "minimum" in _error(resp, 400, "bad_request")
    assert httpx.post(f"{url}/v1/admin/scrub", params={"rate": 0}, headers=headers, timeout=60).status_code == 200


# -- apps/minutesort/_head.py ----------------------------------------------------------------------------
def test_head_refuses_unknown_workers_forged_reports_and_bad_aborts(
        head_process: tuple[subprocess.Popen[bytes], str, Path], fuzz_cluster: LocalCluster) -> None:
    """A task asked before the job hit an assert (500); unknown indices were a 500 (IndexError) or counted
    towards the barrier; forged reports made the head crash collecting outputs (KeyError); an abort body
    that was not a JSON object was a 500."""
    proc, head, log = head_process
    headers = fuzz_cluster.headers()
    for route in ("beat", "finished"):
        _error(httpx.post(f"{head}/v1/workers/0/{route}", headers=headers, json=_finished(0)), 404, "unknown_worker")
    for i in range(2):
        resp = httpx.post(f"{head}/v1/workers", json={"url": f"http://127.0.0.1:{9 + i}"}, headers=headers)
        assert resp.status_code == 200 and resp.json()["index"] == i, resp.text
    for worker in (2, -1, 2**40):
        _error(httpx.post(f"{head}/v1/tasks", json={"worker": worker, "wait": 0}, headers=headers), 404,
               "unknown_worker")
        _error(httpx.post(f"{head}/v1/workers/{worker}/beat", headers=headers), 404, "unknown_worker")
        _error(httpx.post(f"{head}/v1/commits", json={"worker": worker, "attempt": 1}, headers=headers), 404,
               "unknown_worker")
        _error(httpx.post(f"{head}/v1/sorted", json={"worker": worker, "attempt": 1, "bucket": 0}, headers=headers),
               404, "unknown_worker")
    _error(httpx.post(f"{head}/v1/workers/0/finished", json=_finished(1), headers=headers), 400, "bad_request")
    task = httpx.post(f"{head}/v1/tasks", json={"worker": 0, "wait": 0}, headers=headers).json()
    assert task["kind"] == "read", task
    # A report of buckets the task did not have, or of a GUID that is none, is refused; one for an attempt
    # that is not running (forged, or late) is taken but does not count.
    _error(httpx.post(f"{head}/v1/commits", json={"worker": 0, "attempt": task["attempt"], "parts": {"99": {}}},
                      headers=headers), 400, "bad_request")
    _error(httpx.post(f"{head}/v1/sorted", json={"worker": 0, "attempt": 5, "bucket": 0, "output": "not-a-guid"},
                      headers=headers), 400, "bad_guid")
    forged = httpx.post(f"{head}/v1/commits", json={"worker": 1, "attempt": task["attempt"]}, headers=headers)
    assert forged.status_code == 200 and forged.json() == {"accepted": False}, forged.text
    for body in (b"{nope", b"[1, 2]", b'"reason"', b"\xff\xfe", b""):
        resp = httpx.post(f"{head}/v1/abort", content=body, headers={**headers, "content-type": "application/json"})
        assert "JSON object" in _error(resp, 400, "bad_request"), body
    _error(httpx.post(f"{head}/v1/lost", json={"url": "http://nowhere:1"}, headers=headers), 404, "unknown_worker")
    time.sleep(0.3)  # the head's loop must not have crashed or finished
    assert proc.poll() is None, log.read_text()[-3000:]
    assert httpx.get(f"{head}/v1/job", headers=headers).status_code == 200


def _finished(worker: int) -> dict[str, Any]:
    return {"worker": worker, "tracts_read": 0, "bytes_received": 0, "peak_rss_bytes": 0, "seconds": {}}


# -- apps/minutesort/_worker.py --------------------------------------------------------------------------
def test_worker_refuses_bad_bins_and_hand_overs(
        waiting_worker: tuple[StandInHead, subprocess.Popen[bytes], Path], fuzz_cluster: LocalCluster) -> None:
    """A bin's Content-Length was allocated before any of it was read (a terabyte); error bodies pasted text
    into JSON; a bin without an attempt, or of a bucket that is none, must be refused, not kept."""
    head, proc, log = waiting_worker
    worker, headers = head.worker_url, fuzz_cluster.headers()
    for job in ('"', "\\", "a\x05b", "\u00e9"):
        resp = httpx.put(f"{worker}/v1/bins/0", params={"job": job, "attempt": 1}, content=b"", headers=headers)
        assert "runs sort" in _error(resp, 409, "bad_bin")
    for bucket, attempt in (("'\"'", "1"), ("%5C", "1"), ("0", ""), ("0", "0"), ("-1", "1")):
        resp = httpx.put(f"{worker}/v1/bins/{bucket}", params={"job": JOB, "attempt": attempt}, content=b"",
                         headers=headers)
        _error(resp, 400, "bad_bin")
    raw = (f"PUT /v1/bins/0?job={JOB}&attempt=1 HTTP/1.1\r\nhost: x\r\nauthorization: {headers['authorization']}"
           f"\r\ncontent-length: {10**12}\r\n\r\n")
    assert _raw_error(_port(worker), raw.encode(), 413)["code"] == "bad_bin"
    _error(httpx.get(f"{worker}/v1/buckets/7", params={"job": JOB}, headers=headers), 410, "gone")
    _error(httpx.get(f"{worker}/v1/buckets/x", params={"job": JOB}, headers=headers), 400, "bad_request")
    _error(httpx.get(f"{worker}/v1/buckets/0", params={"job": "ff"}, headers=headers), 409, "wrong_job")
    time.sleep(0.5)
    assert proc.poll() is None and head.finished is None, log.read_text()[-3000:]  # still waiting for a task
