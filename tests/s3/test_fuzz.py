"""Fuzz fds's S3 endpoint: generated requests (methods, paths, S3's query parameters and headers, XML and
aws-chunked bodies), mostly signed with a good key so they reach past authentication. No answer may be
a 5xx (501 NotImplemented excepted, S3's answer for what it does not offer), every refusal is S3's XML
error, a 206 holds the bytes its Content-Range names, no write signed with a read-only key succeeds, and
the server is still up at the end.

Seeded (``--fuzz-seed``) and sized (``--fuzz-examples``) like the other fuzz tests (tests/fuzz).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from fds.local import LocalCluster
from tests.s3._raw import s3_error, send
from tests.s3._targets import S3Target, new_bucket_name
from tests.s3.conftest import empty_and_delete

pytestmark = pytest.mark.fuzz

DEFAULT_EXAMPLES = 10
MiB = 1024 * 1024
BIG = bytes(range(256)) * (3 * MiB // 256) + b"tail"


@pytest.fixture(scope="module")
def world(fds_target: S3Target) -> Iterator[dict[str, str]]:
    """Things that exist, so cases read, copy and complete real objects and uploads, not only 404s."""
    s3 = fds_target.client()
    bucket = new_bucket_name("fuzz")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"small object")
    s3.put_object(Bucket=bucket, Key="dir/big", Body=BIG)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"p" * 1000)
    yield {"bucket": bucket, "upload": upload, "etag": s3.head_object(Bucket=bucket, Key="k")["ETag"]}
    empty_and_delete(s3, bucket)


_ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
_NUMBER = st.one_of(st.integers(-5, 2**65).map(str), st.sampled_from(["", "-0", "1e3", "0x10", " 7", "١"]))


def _names(world: dict[str, str]) -> dict[str, Any]:
    bucket = world["bucket"]
    buckets = st.sampled_from([bucket, bucket, bucket, "no-such-bucket-zz", "Bad_Name", "ab", "fds-s3-system",
                               "a" * 70, bucket.upper()])
    keys = st.one_of(st.sampled_from(["k", "dir/big", "m", "missing", "dir/", "a b/ü", "%2F", "..", "k" * 1100]),
                     st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=30))
    # (control characters left out: fds names them raw in an error's <Resource>, which XML 1.0 cannot hold;
    # test_refusals.py::test_error_body_for_a_key_with_control_characters shows that one)
    values = st.one_of(_ASCII, _NUMBER, st.sampled_from([world["upload"], "", "url", "2", "*", world["etag"]]))
    subresources = st.sampled_from(["list-type", "prefix", "delimiter", "max-keys", "continuation-token",
                                    "start-after", "marker", "encoding-type", "fetch-owner", "uploads", "uploadId",
                                    "partNumber", "delete", "location", "acl", "versioning", "policy", "tagging",
                                    "versions", "max-uploads", "key-marker", "upload-id-marker", "max-parts",
                                    "part-number-marker", "response-content-type", "response-content-disposition",
                                    "X-Amz-Expires", "X-Amz-Signature", "x-id", "cors", "lifecycle"])
    header_names = st.sampled_from(
        ["range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "x-amz-copy-source",
         "x-amz-copy-source-range", "x-amz-copy-source-if-match", "x-amz-metadata-directive", "x-amz-meta-a",
         "content-md5", "content-type", "x-amz-checksum-crc32", "x-amz-checksum-sha256", "x-amz-sdk-checksum-algorithm",
         "x-amz-trailer", "x-amz-decoded-content-length", "content-encoding", "x-amz-date", "expect",
         "x-amz-storage-class", "x-amz-acl", "x-amz-tagging", "x-amz-server-side-encryption"])
    header_values = st.one_of(_ASCII, _NUMBER, st.sampled_from([
        "bytes=0-9", "bytes=-5", "bytes=5-", "bytes=99999999-", f"/{bucket}/k", f"/{bucket}/dir/big",
        f"{bucket}/missing", "/no-such-bucket-zz/k", "REPLACE", "COPY", "aws-chunked", "x-amz-checksum-crc32",
        "CRC32", "CRC32C", "Sun, 06 Nov 1994 08:49:37 GMT", "Wed, 01 Jan 2100 00:00:00 GMT", world["etag"], "*",
        "AAAAAA==", "100-continue", "GLACIER"]))
    return {"buckets": buckets, "keys": keys, "values": values, "subresources": subresources,
            "header_names": header_names, "header_values": header_values}


def _xml(names: dict[str, Any]) -> st.SearchStrategy[bytes]:
    leaf = st.builds(lambda tag, text: f"<{tag}>{text}</{tag}>",
                     st.sampled_from(["Key", "PartNumber", "ETag", "Quiet", "LocationConstraint", "VersionId"]),
                     st.one_of(names["values"], names["keys"].map(lambda k: k.replace("<", "&lt;"))))
    inner = st.lists(st.one_of(leaf, leaf.map(lambda x: f"<Object>{x}</Object>"),
                               st.lists(leaf, max_size=3).map(lambda xs: "<Part>" + "".join(xs) + "</Part>")),
                     max_size=6).map("".join)
    root = st.sampled_from(["Delete", "CompleteMultipartUpload", "CreateBucketConfiguration", "Other"])
    return st.builds(lambda r, body, cut: (f"<{r}>{body}</{r}>".encode())[:cut], root, inner,
                     st.integers(0, 10_000))


def _aws_chunked() -> st.SearchStrategy[bytes]:
    chunk = st.builds(lambda data, size, sig, crlf: (f"{size if size is not None else format(len(data), 'x')}"
                                                      f"{';chunk-signature=' + sig if sig else ''}\r\n").encode()
                      + data + crlf,
                      st.binary(max_size=300), st.one_of(st.none(), _NUMBER), st.one_of(st.none(), _ASCII),
                      st.sampled_from([b"\r\n", b"\n", b""]))
    trailer = st.sampled_from([b"", b"x-amz-checksum-crc32:AAAAAA==\r\n", b"x-amz-checksum-crc32:garbage\r\n",
                               b"bad trailer\r\n", b"\r\n\r\n"])
    return st.builds(lambda chunks, last, tail: b"".join(chunks) + last + tail + b"\r\n",
                     st.lists(chunk, max_size=4), st.sampled_from([b"0\r\n", b"0;chunk-signature=00\r\n", b""]),
                     trailer)


def _problem(method: str, response: httpx.Response) -> str | None:
    status = response.status_code
    if method == "HEAD":  # no body to check
        return f"server error {status}" if status >= 500 and status != 501 else None
    if status >= 500:
        if status == 501:
            try:
                if s3_error(response)["Code"] == "NotImplemented":
                    return None
            except AssertionError as error:
                return str(error)
        return f"server error {status}: {response.content[:300]!r}"
    if b"Traceback" in response.content:
        return f"{status} with a traceback"
    if 400 <= status < 500:
        if status == 400 and response.content == b"Invalid HTTP request received.":
            return None  # uvicorn's own refusal of bytes its parser will not take
        try:
            s3_error(response)
        except AssertionError as error:
            return str(error)
    if status == 206 and method == "GET":
        spec = response.headers.get("content-range", "")
        try:
            first, last = map(int, spec.split()[1].split("/")[0].split("-"))
        except (IndexError, ValueError):
            return f"206 with Content-Range {spec!r}"
        if len(response.content) != last - first + 1:
            return f"206 {spec} with {len(response.content)} bytes"
    return None


def test_fuzz_s3_requests(fds_s3: tuple[S3Target, LocalCluster], world: dict[str, str],
                          request: pytest.FixtureRequest) -> None:
    target, cluster = fds_s3
    examples = request.config.getoption("--fuzz-examples") or DEFAULT_EXAMPLES
    run_seed = int(request.config.getoption("--fuzz-seed"))
    names = _names(world)
    bodies = st.one_of(st.just(b""), st.binary(max_size=2000), _xml(names), _aws_chunked(),
                       st.sampled_from([b"x" * 5000, b"<Delete><Object><Key>k</Key></Object></Delete>"]))
    path = st.one_of(st.just("/"), names["buckets"].map(lambda b: f"/{b}"),
                     st.builds(lambda b, k: f"/{b}/{k}", names["buckets"], names["keys"]))
    query = st.lists(st.tuples(names["subresources"], st.one_of(st.none(), names["values"])), max_size=4).map(
        lambda pairs: "&".join(httpx.QueryParams({k: v or ""}).__str__() if v is not None else k for k, v in pairs))
    headers = st.dictionaries(names["header_names"], names["header_values"], max_size=4)
    signing = st.sampled_from(["good"] * 8 + ["read-only", "read-only", "none", "garbage"])
    reader = cluster.s3_key(read_only=True)
    bugs: dict[str, str] = {}
    counts: dict[int, int] = {}

    with httpx.Client() as http:
        @settings(max_examples=examples * 40, phases=[Phase.generate], database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @seed(zlib.crc32(b"s3-requests") ^ run_seed)
        @given(method=st.sampled_from(["GET", "GET", "PUT", "PUT", "POST", "DELETE", "HEAD", "OPTIONS", "PATCH"]),
               path=path, query=query, headers=headers, body=bodies, signing=signing)
        def run(method: str, path: str, query: str, headers: dict[str, str], body: bytes, signing: str) -> None:
            if method in ("GET", "HEAD", "DELETE") and body and len(body) % 3:
                body = b""  # mostly no body where S3 takes none
            if signing == "garbage":
                headers = {**headers, "authorization": "AWS4-HMAC-SHA256 Credential=x/y, Signature=z"}
            try:
                response = send(target, method, path, query=query, body=body, headers=headers,
                                sign=signing in ("good", "read-only"), key=reader if signing == "read-only" else None,
                                client=http, timeout=60)
            except (httpx.RemoteProtocolError, httpx.ReadTimeout, httpx.ConnectError) as error:
                bugs.setdefault(type(error).__name__, f"{method} {path}?{query} {headers}: {error}")
                return
            except (httpx.LocalProtocolError, UnicodeEncodeError, ValueError):
                return  # a request httpx or botocore will not send
            counts[response.status_code] = counts.get(response.status_code, 0) + 1
            problem = _problem(method, response)
            if signing == "read-only" and method in ("PUT", "POST", "DELETE") and response.status_code < 300:
                problem = f"a read-only key's {method} was answered {response.status_code}"
            if problem is not None:
                kind = problem.split(":")[0][:60]
                bugs.setdefault(kind, f"{method} {path}?{query} headers={headers} body={body[:200]!r} "
                                      f"({signing} signature) -> {problem}")

        run()
    assert not bugs, "\n".join(f"- {kind}: {example}" for kind, example in bugs.items())
    assert sum(n for status, n in counts.items() if status < 300) > examples, counts  # the fuzz got past auth
    for child in cluster.children:
        assert child.alive(), f"{child.name} (pid {child.pid}) died; see {child.log}"
    assert target.client().head_bucket(Bucket=world["bucket"])["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_fuzz_keys_round_trip(fds_target: S3Target, world: dict[str, str], request: pytest.FixtureRequest) -> None:
    """Any key S3 allows (1-1024 UTF-8 bytes) stores, reads back, lists and deletes under its own name."""
    examples = request.config.getoption("--fuzz-examples") or DEFAULT_EXAMPLES
    run_seed = int(request.config.getoption("--fuzz-seed"))
    s3 = fds_target.client()
    bucket = world["bucket"]
    problems: list[str] = []

    @settings(max_examples=examples * 5, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @seed(zlib.crc32(b"s3-keys") ^ run_seed)
    @given(key=st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1,
                       max_size=60).filter(lambda k: len(k.encode()) <= 1024))
    def run(key: str) -> None:
        name = f"fz/{key}"
        data = hashlib.sha256(name.encode()).digest()
        s3.put_object(Bucket=bucket, Key=name, Body=data)
        got = s3.get_object(Bucket=bucket, Key=name)["Body"].read()
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=name).get("Contents", [])]
        s3.delete_object(Bucket=bucket, Key=name)
        if got != data or name not in listed:
            problems.append(f"{name!r}: read {got!r}, listed {listed!r}")

    run()
    assert not problems, problems
