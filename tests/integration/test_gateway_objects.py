"""The gateway's bucket and object routes against a real cluster: uploads, Range, ETags and conditions,
listing, copy, rename, and a clear 4xx for every bad request."""

from __future__ import annotations

import base64
import random
from collections.abc import Iterator

import httpx
import pytest

from fds.names import INLINE_MAX
from tests.support.clusters import SMALL_TRACT, shared_cluster
from tests.support.credentials import AUTH


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    for cluster in shared_cluster(tmp_path_factory, "gateway-objects", replicas=3, gateway=True):
        with httpx.Client(base_url=cluster.gateway_url, timeout=60, headers=AUTH) as http:
            assert http.put("/v1/buckets/gwb").status_code == 201
            yield http


def _error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error"]["code"] == code, body
    return str(body["error"]["message"])


def test_upload_download_with_ranges_and_headers(gw: httpx.Client) -> None:
    data = random.Random(5).randbytes(2 * SMALL_TRACT + 999)
    put = gw.put("/v1/buckets/gwb/objects/dir/file.bin", content=data,
                 headers={"content-type": "application/x-thing", "x-fds-meta-owner": "ann",
                          "x-fds-meta-note": "déjà vu".encode()})
    assert put.status_code == 200, put.text
    etag = put.headers["etag"]
    assert etag == f'"{put.json()["etag"]}"'
    got = gw.get("/v1/buckets/gwb/objects/dir/file.bin")
    assert got.content == data and got.headers["etag"] == etag
    assert got.headers["content-type"] == "application/x-thing" and got.headers["x-fds-meta-owner"] == "ann"
    note = got.headers["x-fds-meta-note"]  # not ASCII: RFC 2047, as S3 sends it
    assert note.startswith("=?UTF-8?B?") and base64.b64decode(note[10:-2]).decode() == "déjà vu"
    assert "last-modified" in got.headers
    part = gw.get("/v1/buckets/gwb/objects/dir/file.bin",
                  headers={"range": f"bytes={SMALL_TRACT - 3}-{SMALL_TRACT + 2}"})
    assert part.status_code == 206 and part.content == data[SMALL_TRACT - 3:SMALL_TRACT + 3]
    assert part.headers["content-range"] == f"bytes {SMALL_TRACT - 3}-{SMALL_TRACT + 2}/{len(data)}"
    tail = gw.get("/v1/buckets/gwb/objects/dir/file.bin", headers={"range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    bad = gw.get("/v1/buckets/gwb/objects/dir/file.bin", headers={"range": f"bytes={len(data)}-"})
    _error(bad, 416, "range_not_satisfiable")
    assert bad.headers["content-range"] == f"bytes */{len(data)}"
    head = gw.head("/v1/buckets/gwb/objects/dir/file.bin")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
    assert gw.get("/v1/buckets/gwb/objects/dir/file.bin", headers={"if-none-match": etag}).status_code == 304
    _error(gw.get("/v1/buckets/gwb/objects/dir/file.bin", headers={"if-match": '"nope"'}), 412, "precondition_failed")


def test_small_objects_are_inline(gw: httpx.Client) -> None:
    """A body of at most INLINE_MAX bytes (with a Content-Length or chunked) is kept in its name record: no blob;
    ranges, conditions, headers, copy, rename and overwrites by a blob work on it as on any object."""
    data = random.Random(7).randbytes(INLINE_MAX)
    put = gw.put("/v1/buckets/gwb/objects/small", content=data,
                 headers={"content-type": "text/x", "x-fds-meta-owner": "ann", "if-none-match": "*"})
    assert put.status_code == 200, put.text
    assert (put.json()["blob"], put.json()["incarnation"], put.json()["size"]) == ("", 0, INLINE_MAX)
    got = gw.get("/v1/buckets/gwb/objects/small")
    assert got.content == data and got.headers["etag"] == put.headers["etag"]
    assert got.headers["content-type"] == "text/x" and got.headers["x-fds-meta-owner"] == "ann"
    part = gw.get("/v1/buckets/gwb/objects/small", headers={"range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{INLINE_MAX}"
    assert gw.get("/v1/buckets/gwb/objects/small", headers={"range": "bytes=-5"}).content == data[-5:]
    _error(gw.get("/v1/buckets/gwb/objects/small", headers={"range": f"bytes={INLINE_MAX}-"}), 416,
           "range_not_satisfiable")
    assert gw.head("/v1/buckets/gwb/objects/small").headers["content-length"] == str(INLINE_MAX)
    assert gw.get("/v1/buckets/gwb/objects/small", headers={"if-none-match": put.headers["etag"]}).status_code == 304
    streamed = gw.put("/v1/buckets/gwb/objects/small-chunked", content=iter([data[:5000], data[5000:]]))
    assert streamed.status_code == 200 and streamed.json()["blob"] == ""
    copy = gw.put("/v1/buckets/gwb/objects/small-copy", headers={"x-fds-copy-source": "gwb/small"})
    assert copy.status_code == 200 and copy.json()["blob"] == "" and copy.json()["etag"] == put.json()["etag"]
    moved = gw.post("/v1/buckets/gwb/rename", json={"source": "small-copy", "target": "small-moved"})
    assert moved.status_code == 200 and gw.get("/v1/buckets/gwb/objects/small-moved").content == data
    big = data + b"!"
    grown = gw.put("/v1/buckets/gwb/objects/small", content=big, headers={"if-match": put.headers["etag"]})
    assert grown.status_code == 200 and grown.json()["blob"] != ""
    assert gw.get("/v1/buckets/gwb/objects/small").content == big
    for key in ("small", "small-chunked", "small-moved"):
        assert gw.delete(f"/v1/buckets/gwb/objects/{key}").status_code == 204


def test_chunked_upload_streams(gw: httpx.Client) -> None:
    data = random.Random(6).randbytes(SMALL_TRACT * 2 + 5)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    put = gw.put("/v1/buckets/gwb/objects/chunked", content=chunks())
    assert put.status_code == 200 and put.json()["size"] == len(data)
    assert gw.get("/v1/buckets/gwb/objects/chunked").content == data


def test_conditional_writes(gw: httpx.Client) -> None:
    first = gw.put("/v1/buckets/gwb/objects/cond", content=b"1", headers={"if-none-match": "*"})
    assert first.status_code == 200
    _error(gw.put("/v1/buckets/gwb/objects/cond", content=b"2", headers={"if-none-match": "*"}), 412,
           "precondition_failed")
    _error(gw.put("/v1/buckets/gwb/objects/cond", content=b"2", headers={"if-match": '"other"'}), 412,
           "precondition_failed")
    second = gw.put("/v1/buckets/gwb/objects/cond", content=b"2", headers={"if-match": first.headers["etag"]})
    assert second.status_code == 200 and gw.get("/v1/buckets/gwb/objects/cond").content == b"2"
    _error(gw.put("/v1/buckets/gwb/objects/cond", content=b"3", headers={"if-none-match": '"x"'}), 400,
           "bad_condition")
    _error(gw.delete("/v1/buckets/gwb/objects/cond", headers={"if-match": first.headers["etag"]}), 412,
           "precondition_failed")
    assert gw.delete("/v1/buckets/gwb/objects/cond", headers={"if-match": second.headers["etag"]}).status_code == 204


def test_listing_copy_rename(gw: httpx.Client) -> None:
    assert gw.put("/v1/buckets/gw-list").status_code == 201
    keys = [f"p/{i:02d}" for i in range(12)] + ["q/x", "top"]
    for key in keys:
        assert gw.put(f"/v1/buckets/gw-list/objects/{key}", content=key.encode()).status_code == 200
    seen, token = [], None
    while True:
        params = {"limit": 5, **({"page_token": token} if token else {})}
        page = gw.get("/v1/buckets/gw-list/objects", params=params).json()
        seen += [o["key"] for o in page["objects"]]
        token = page["next_token"]
        if token is None:
            break
    assert seen == keys
    page = gw.get("/v1/buckets/gw-list/objects", params={"delimiter": "/"}).json()
    assert page["prefixes"] == ["p/", "q/"] and [o["key"] for o in page["objects"]] == ["top"]
    copy = gw.put("/v1/buckets/gw-list/objects/copied", headers={"x-fds-copy-source": "gw-list/top"})
    assert copy.status_code == 200 and gw.get("/v1/buckets/gw-list/objects/copied").content == b"top"
    moved = gw.post("/v1/buckets/gw-list/rename", json={"source": "copied", "target": "moved"})
    assert moved.status_code == 200 and moved.json()["key"] == "moved"
    _error(gw.get("/v1/buckets/gw-list/objects/copied"), 404, "no_such_key")
    assert "gw-list" in [b["name"] for b in gw.get("/v1/buckets").json()]
    _error(gw.delete("/v1/buckets/gw-list"), 409, "bucket_not_empty")
    for key in [*keys, "moved"]:
        assert gw.delete(f"/v1/buckets/gw-list/objects/{key}").status_code == 204
    assert gw.delete("/v1/buckets/gw-list").status_code == 204
    assert gw.head("/v1/buckets/gw-list").status_code == 404


def test_bad_requests_get_clear_4xx(gw: httpx.Client) -> None:
    assert "bad bucket name" in _error(gw.put("/v1/buckets/Bad_Name"), 400, "bad_bucket_name")
    _error(gw.put("/v1/buckets/gwb"), 409, "bucket_exists")
    _error(gw.get("/v1/buckets/no-such/objects"), 404, "no_such_bucket")
    _error(gw.get("/v1/buckets/no-such/objects/k"), 404, "no_such_bucket")
    _error(gw.get("/v1/buckets/gwb/objects/missing"), 404, "no_such_key")
    _error(gw.delete("/v1/buckets/gwb/objects/missing"), 404, "no_such_key")
    _error(gw.delete("/v1/buckets/no-such"), 404, "no_such_bucket")
    _error(gw.get("/v1/buckets/gwb/objects", params={"page_token": "!!"}), 400, "bad_page_token")
    _error(gw.put("/v1/buckets/gwb/objects/m", content=b"x", headers={"x-fds-meta-b!d": "v"}), 400, "bad_object")
    _error(gw.put("/v1/buckets/gwb/objects/c", headers={"x-fds-copy-source": "gwb"}), 400, "bad_copy_source")
    _error(gw.put("/v1/buckets/gwb/objects/c", headers={"x-fds-copy-source": "gwb/missing"}), 404, "no_such_key")
    _error(gw.post("/v1/buckets/gwb/rename", json={"source": "missing", "target": "t"}), 404, "no_such_key")
