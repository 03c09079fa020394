"""The REST gateway against a real cluster: whole-blob PUT/GET, Range, HEAD, DELETE, errors."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest

from fds.client import Client
from fds.local import LocalCluster
from tests.support.clusters import SMALL_TRACT, shared_cluster
from tests.support.credentials import AUTH

T = SMALL_TRACT


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A k=3 cluster of 4 tract servers with a gateway, shared by this module and always stopped."""
    yield from shared_cluster(tmp_path_factory, "gateway", replicas=3, gateway=True)


@pytest.fixture(scope="module")
def gw(cluster: LocalCluster) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=cluster.gateway_url, timeout=60, headers=AUTH) as http:
        yield http


def _guid() -> str:
    return str(uuid.uuid4())


def _error(resp: httpx.Response) -> dict[str, str]:
    assert resp.headers["content-type"] == "application/json"
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return dict(body["error"])


def test_post_creates_an_empty_blob(gw: httpx.Client) -> None:
    resp = gw.post("/v1/blobs")
    assert resp.status_code == 201
    guid = resp.json()["guid"]
    assert str(uuid.UUID(guid)) == guid
    head = gw.head(f"/v1/blobs/{guid}")
    assert head.status_code == 200
    assert head.headers["x-fds-tracts"] == "0" and head.headers["content-length"] == "0"
    got = gw.get(f"/v1/blobs/{guid}")
    assert got.status_code == 200 and got.content == b""


@pytest.mark.parametrize("size", [0, 1, T - 1, T, T + 1, 3 * T + 4321], ids=lambda s: f"{s}B")
def test_put_get_round_trip(gw: httpx.Client, size: int) -> None:
    data = random.Random(size).randbytes(size)
    guid = _guid()
    resp = gw.put(f"/v1/blobs/{guid}", content=data)
    assert resp.status_code == 201, resp.text
    info = resp.json()
    assert info["guid"] == guid and info["length"] == size and info["tracts"] == -(-size // T)
    got = gw.get(f"/v1/blobs/{guid}")
    assert got.status_code == 200
    assert got.headers["content-length"] == str(size)
    assert got.headers["accept-ranges"] == "bytes"
    assert got.content == data


@pytest.mark.parametrize("size", [0, 5, T, 2 * T + 777])
def test_chunked_upload_without_content_length(gw: httpx.Client, size: int) -> None:
    rng = random.Random(size + 1)
    data = rng.randbytes(size)
    pieces: list[bytes] = []
    pos = 0
    while pos < size:  # odd chunk sizes, so chunks straddle tract boundaries
        step = rng.randrange(1, 300_000)
        pieces.append(data[pos:pos + step])
        pos += step

    def body() -> Iterator[bytes]:
        yield from pieces

    guid = _guid()
    request = gw.build_request("PUT", f"/v1/blobs/{guid}", content=body())
    assert "content-length" not in request.headers and request.headers["transfer-encoding"] == "chunked"
    resp = gw.send(request)
    assert resp.status_code == 201, resp.text
    assert resp.json()["length"] == size and resp.json()["tracts"] == -(-size // T)
    assert gw.get(f"/v1/blobs/{guid}").content == data


def test_put_replaces_an_existing_blob(gw: httpx.Client) -> None:
    guid = _guid()
    assert gw.put(f"/v1/blobs/{guid}", content=b"a" * (3 * T)).status_code == 201
    resp = gw.put(f"/v1/blobs/{guid}", content=b"short")
    assert resp.status_code == 201 and resp.json()["tracts"] == 1
    assert gw.get(f"/v1/blobs/{guid}").content == b"short"


@pytest.fixture(scope="module")
def ranged(gw: httpx.Client) -> tuple[str, bytes]:
    data = random.Random(99).randbytes(3 * T + 12345)
    guid = _guid()
    assert gw.put(f"/v1/blobs/{guid}", content=data).status_code == 201
    return guid, data


@pytest.mark.parametrize(("header", "start", "end"), [
    ("bytes=0-99", 0, 100),                          # first bytes
    ("bytes=0-0", 0, 1),
    (f"bytes={T - 10}-{T + 9}", T - 10, T + 10),     # crosses one tract boundary
    (f"bytes=100-{2 * T + 100}", 100, 2 * T + 101),  # crosses two
    ("bytes=-500", None, None),                      # suffix
    (f"bytes={2 * T + 5}-", 2 * T + 5, None),        # open-ended
    (f"bytes=10-{10 * T}", 10, None),                # last-pos past the end is clamped
    (f"bytes=-{10 * T}", 0, None),                   # suffix longer than the blob: all of it
    ("BYTES=5-9", 5, 10),                            # the unit is case-insensitive
])
def test_range_gets(gw: httpx.Client, ranged: tuple[str, bytes], header: str, start: int | None,
                    end: int | None) -> None:
    guid, data = ranged
    if start is None:
        start = len(data) - 500
    end = len(data) if end is None else end
    resp = gw.get(f"/v1/blobs/{guid}", headers={"range": header})
    assert resp.status_code == 206, resp.text
    assert resp.content == data[start:end]
    assert resp.headers["content-length"] == str(end - start)
    assert resp.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"


@pytest.mark.parametrize("header", ["bytes={L}-", "bytes={L}-{L2}", "bytes=-0"])
def test_unsatisfiable_range_is_416(gw: httpx.Client, ranged: tuple[str, bytes], header: str) -> None:
    guid, data = ranged
    resp = gw.get(f"/v1/blobs/{guid}", headers={"range": header.format(L=len(data), L2=len(data) + 10)})
    assert resp.status_code == 416
    assert resp.headers["content-range"] == f"bytes */{len(data)}"
    assert _error(resp)["code"] == "range_not_satisfiable"


def test_any_range_of_an_empty_blob_is_416(gw: httpx.Client) -> None:
    guid = _guid()
    assert gw.put(f"/v1/blobs/{guid}", content=b"").status_code == 201
    resp = gw.get(f"/v1/blobs/{guid}", headers={"range": "bytes=0-"})
    assert resp.status_code == 416 and resp.headers["content-range"] == "bytes */0"


@pytest.mark.parametrize("header", ["bytes=abc", "items=0-1", "bytes=5-1", "bytes=-", "bytes=0-1,5-6", "bytes 0-1"])
def test_malformed_or_multiple_ranges_are_ignored(gw: httpx.Client, ranged: tuple[str, bytes], header: str) -> None:
    guid, data = ranged
    resp = gw.get(f"/v1/blobs/{guid}", headers={"range": header})
    assert resp.status_code == 200 and resp.content == data
    assert "content-range" not in resp.headers


def test_if_range_makes_the_range_ignored(gw: httpx.Client, ranged: tuple[str, bytes]) -> None:
    guid, data = ranged
    resp = gw.get(f"/v1/blobs/{guid}", headers={"range": "bytes=0-9", "if-range": '"some-etag"'})
    assert resp.status_code == 200 and resp.content == data


def test_head(gw: httpx.Client, ranged: tuple[str, bytes]) -> None:
    guid, data = ranged
    resp = gw.head(f"/v1/blobs/{guid}")
    assert resp.status_code == 200 and resp.content == b""
    assert resp.headers["content-length"] == str(len(data))
    assert resp.headers["x-fds-tracts"] == "4"
    assert resp.headers["accept-ranges"] == "bytes"


def test_blob_without_recorded_length(cluster: LocalCluster, gw: httpx.Client) -> None:
    """Written through the tract API with no length: served whole, ranges refused with a clear 400."""
    tracts = [b"x" * 10, b"y" * T, b"z" * 3]

    async def write() -> str:
        async with Client(cluster.metaserver_url) as fds:
            blob = await fds.create_blob()
            await blob.extend(len(tracts))
            await blob.write_tracts(enumerate(tracts))
            return blob.guid

    guid = asyncio.run(write())
    head = gw.head(f"/v1/blobs/{guid}")
    assert head.status_code == 200 and "content-length" not in head.headers
    assert head.headers["accept-ranges"] == "none" and head.headers["x-fds-tracts"] == "3"
    resp = gw.get(f"/v1/blobs/{guid}")
    assert resp.status_code == 200 and resp.content == b"".join(tracts)
    ranged = gw.get(f"/v1/blobs/{guid}", headers={"range": "bytes=0-4"})
    assert ranged.status_code == 400
    error = _error(ranged)
    assert error["code"] == "range_needs_length" and "no recorded byte length" in error["message"]


def test_delete_then_get_is_404(gw: httpx.Client) -> None:
    guid = _guid()
    assert gw.put(f"/v1/blobs/{guid}", content=b"bye").status_code == 201
    resp = gw.delete(f"/v1/blobs/{guid}")
    assert resp.status_code == 204 and resp.content == b""
    got = gw.get(f"/v1/blobs/{guid}")
    assert got.status_code == 404 and _error(got)["code"] == "blob_not_found"
    assert gw.head(f"/v1/blobs/{guid}").status_code == 404
    assert gw.delete(f"/v1/blobs/{guid}").status_code == 404


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize("guid", ["not-a-guid", "0x0123456789abcdef0123456789abcd", "g" * 32, "1" * 33])
def test_malformed_guid_is_400(gw: httpx.Client, method: str, guid: str) -> None:
    resp = gw.request(method, f"/v1/blobs/{guid}", content=b"data" if method == "PUT" else None)
    assert resp.status_code == 400
    error = _error(resp)
    assert error["code"] == "bad_guid" and "malformed GUID" in error["message"]


def test_head_with_malformed_guid_is_400(gw: httpx.Client) -> None:
    assert gw.head("/v1/blobs/not-a-guid").status_code == 400


def test_client_hanging_up_mid_upload_leaves_no_blob(cluster: LocalCluster, gw: httpx.Client) -> None:
    """The client declares 3 tracts, sends 1.5 and disconnects: the gateway deletes the partial blob."""
    guid = _guid()
    host, port = cluster.gateway_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"PUT /v1/blobs/{guid} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {3 * T}\r\n"
                     f"Authorization: {AUTH['authorization']}\r\n\r\n".encode())
        sock.sendall(b"p" * (T + T // 2))
        deadline = time.monotonic() + 30
        while gw.head(f"/v1/blobs/{guid}").status_code != 200:  # created and extended, upload under way
            assert time.monotonic() < deadline, "the gateway never created the blob"
            time.sleep(0.05)
    deadline = time.monotonic() + 30
    while gw.head(f"/v1/blobs/{guid}").status_code != 404:
        assert time.monotonic() < deadline, "the partial blob was not deleted"
        time.sleep(0.05)


def test_docs_and_openapi(gw: httpx.Client) -> None:
    docs = gw.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    spec = gw.get("/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert set(paths["/v1/blobs/{guid}"]) >= {"get", "put", "head", "delete"}
    assert "post" in paths["/v1/blobs"]
    assert gw.get("/healthz").json() == {"status": "ok"}
