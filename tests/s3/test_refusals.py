"""Every S3 operation refused as S3 refuses it, in S3's XML, and never a 5xx: without credentials, with a
forged signature, an unknown key, a skewed clock, an expired presigned URL, a read-only key writing; and
malformed XML bodies. After all of it the bucket holds what it held (a refused request changes nothing)."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fds.local import LocalCluster
from tests.s3._raw import presigned_url, s3_error, send, signed_at
from tests.s3._targets import S3Target, new_bucket_name
from tests.s3.conftest import empty_and_delete

pytestmark = pytest.mark.integration

BODY = b"the object's bytes"


@dataclass(frozen=True)
class Op:
    """One S3 operation as a raw request."""

    name: str
    method: str
    path: str
    query: str = ""
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    writes: bool = False


@dataclass(frozen=True)
class Scene:
    """A bucket with one object and one open multipart upload, and every operation on them."""

    bucket: str
    upload: str
    ops: tuple[Op, ...]


def _ops(bucket: str, upload: str) -> tuple[Op, ...]:
    complete = (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"" +
                hashlib.md5(b"x").hexdigest().encode() + b"\"</ETag></Part></CompleteMultipartUpload>")
    delete = b"<Delete><Object><Key>k</Key></Object></Delete>"
    copy = (("x-amz-copy-source", f"/{bucket}/k"),)
    u = f"uploadId={upload}"
    return (
        Op("ListBuckets", "GET", "/"),
        Op("CreateBucket", "PUT", f"/{bucket}-new", writes=True),
        Op("HeadBucket", "HEAD", f"/{bucket}"),
        Op("DeleteBucket", "DELETE", f"/{bucket}", writes=True),
        Op("GetBucketLocation", "GET", f"/{bucket}", "location"),
        Op("ListObjectsV2", "GET", f"/{bucket}", "list-type=2"),
        Op("ListObjects", "GET", f"/{bucket}"),
        Op("ListMultipartUploads", "GET", f"/{bucket}", "uploads"),
        Op("PutObject", "PUT", f"/{bucket}/k", body=b"replaced", writes=True),
        Op("GetObject", "GET", f"/{bucket}/k"),
        Op("GetObjectRange", "GET", f"/{bucket}/k", headers=(("range", "bytes=0-3"),)),
        Op("HeadObject", "HEAD", f"/{bucket}/k"),
        Op("DeleteObject", "DELETE", f"/{bucket}/k", writes=True),
        Op("DeleteObjects", "POST", f"/{bucket}", "delete", delete, writes=True,
           headers=(("content-md5", _md5_b64(delete)),)),
        Op("CopyObject", "PUT", f"/{bucket}/k2", headers=copy, writes=True),
        Op("CreateMultipartUpload", "POST", f"/{bucket}/m2", "uploads", writes=True),
        Op("UploadPart", "PUT", f"/{bucket}/m", f"partNumber=1&{u}", b"x", writes=True),
        Op("UploadPartCopy", "PUT", f"/{bucket}/m", f"partNumber=2&{u}", headers=copy, writes=True),
        Op("ListParts", "GET", f"/{bucket}/m", u),
        Op("CompleteMultipartUpload", "POST", f"/{bucket}/m", u, complete, writes=True),
        Op("AbortMultipartUpload", "DELETE", f"/{bucket}/m", u, writes=True),
    )


def _md5_b64(data: bytes) -> str:
    import base64

    return base64.b64encode(hashlib.md5(data).digest()).decode()


@pytest.fixture(scope="module")
def scene(fds_target: S3Target) -> Iterator[Scene]:
    s3 = fds_target.client()
    bucket = new_bucket_name("refuse")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=BODY)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    yield Scene(bucket, upload, _ops(bucket, upload))
    empty_and_delete(s3, bucket)


def _unchanged(target: S3Target, scene: Scene) -> None:
    """The scene is as the fixture made it: nothing a refused request sent took effect."""
    s3 = target.client()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=scene.bucket)["Contents"]] == ["k"]
    assert s3.get_object(Bucket=scene.bucket, Key="k")["Body"].read() == BODY
    uploads = s3.list_multipart_uploads(Bucket=scene.bucket).get("Uploads", [])
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [("m", scene.upload)]
    assert s3.list_parts(Bucket=scene.bucket, Key="m", UploadId=scene.upload).get("Parts", []) == []
    assert scene.bucket + "-new" not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def _refused(response: httpx.Response, method: str, status: int, codes: set[str], what: str) -> None:
    assert response.status_code == status, f"{what}: {response.status_code} {response.content[:300]!r}"
    if method == "HEAD":
        assert response.content == b"", what
        return
    code = s3_error(response)["Code"]
    assert code in codes, f"{what}: {code} ({response.content[:300]!r})"


HOUR = datetime.timedelta(hours=1)


def test_every_operation_refused_without_good_credentials(fds_target: S3Target, scene: Scene) -> None:
    secret = fds_target.secret_key
    forged = (fds_target.access_key, secret[:-1] + ("A" if secret[-1] != "A" else "B"))
    unknown = ("FDSNOSUCHKEY000000000", secret)
    with httpx.Client() as http:
        for op in scene.ops:
            args: dict[str, Any] = {"query": op.query, "body": op.body, "headers": dict(op.headers), "client": http}
            _refused(send(fds_target, op.method, op.path, sign=False, **args), op.method, 403, {"AccessDenied"},
                     f"{op.name} unsigned")
            _refused(send(fds_target, op.method, op.path, key=forged, **args), op.method, 403,
                     {"SignatureDoesNotMatch"}, f"{op.name} forged")
            _refused(send(fds_target, op.method, op.path, key=unknown, **args), op.method, 403,
                     {"InvalidAccessKeyId"}, f"{op.name} unknown key")
            with signed_at(datetime.datetime.now(datetime.UTC) - HOUR):
                skewed = send(fds_target, op.method, op.path, **args)
            _refused(skewed, op.method, 403, {"RequestTimeTooSkewed"}, f"{op.name} signed an hour ago")
            if not op.body and not op.headers:
                with signed_at(datetime.datetime.now(datetime.UTC) - 2 * HOUR):
                    url = presigned_url(fds_target, op.method, op.path, query=op.query, expires=60)
                _refused(http.request(op.method, url), op.method, 403, {"AccessDenied"}, f"{op.name} expired URL")
    _unchanged(fds_target, scene)


def test_presigned_urls_work_and_are_bound_to_their_request(fds_target: S3Target, scene: Scene) -> None:
    url = presigned_url(fds_target, "GET", f"/{scene.bucket}/k", expires=60)
    assert httpx.get(url, timeout=30).content == BODY
    assert httpx.head(url, timeout=30).status_code == 403  # signed for GET
    other = url.replace(f"/{scene.bucket}/k?", f"/{scene.bucket}/k2?")
    _refused(httpx.get(other, timeout=30), "GET", 403, {"SignatureDoesNotMatch"}, "another key's URL")
    tampered = url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")
    _refused(httpx.get(tampered, timeout=30), "GET", 403, {"SignatureDoesNotMatch"}, "expiry changed")
    too_long = presigned_url(fds_target, "GET", f"/{scene.bucket}/k", expires=8 * 24 * 3600)
    assert httpx.get(too_long, timeout=30).status_code in (400, 403)


def test_read_only_key_reads_and_cannot_write(fds_s3: tuple[S3Target, LocalCluster], scene: Scene) -> None:
    target, cluster = fds_s3
    reader = cluster.s3_key(read_only=True)
    with httpx.Client() as http:
        for op in scene.ops:
            response = send(target, op.method, op.path, query=op.query, body=op.body, headers=dict(op.headers),
                            key=reader, client=http)
            if op.writes:
                _refused(response, op.method, 403, {"AccessDenied"}, f"{op.name} with a read-only key")
            else:
                assert response.status_code in (200, 206), f"{op.name}: {response.status_code} {response.text[:300]}"
    _unchanged(target, scene)


MALFORMED = [
    b"",
    b"not xml at all",
    b"<Delete>",
    b"<Delete><Object><Key>k</Key></Object>",
    b"<?xml version='1.0'?><Wrong/>",
    b"\xff\xfe<\x00D\x00",
    b"<Delete><Object><Key>k</Key></Object></Delete><Extra/>",
    # entity expansion ("billion laughs"): must be refused, not expanded
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY e "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    b"<Delete><Object><Key>&e;</Key></Object></Delete>",
    # an external entity: must not be read
    b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<Delete><Object><Key>&x;</Key></Object></Delete>",
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_xml_bodies(fds_target: S3Target, scene: Scene, body: bytes) -> None:
    """DeleteObjects, CompleteMultipartUpload and CreateBucket with bodies that are not their XML: 400s."""
    with httpx.Client() as http:
        for name, method, path, query in (("DeleteObjects", "POST", f"/{scene.bucket}", "delete"),
                                          ("Complete", "POST", f"/{scene.bucket}/m", f"uploadId={scene.upload}"),
                                          ("CreateBucket", "PUT", f"/{scene.bucket}-new", "")):
            if name == "CreateBucket" and body == b"":
                continue  # no body is a plain CreateBucket
            headers = {"content-md5": _md5_b64(body)} if name == "DeleteObjects" else {}
            response = send(fds_target, method, path, query=query, body=body, headers=headers, client=http)
            assert response.status_code == 400, f"{name}: {response.status_code} {response.content[:300]!r}"
            code = s3_error(response)["Code"]
            assert code in {"MalformedXML", "InvalidRequest", "InvalidArgument"}, f"{name}: {code}"
            assert b"root:" not in response.content
    _unchanged(fds_target, scene)


@pytest.mark.parametrize("header", ["bytes=999999-", "bytes=18446744073709551616-", "bytes=-0", "bytes=0-0,-1",
                                    "bytes= 1-2", "bytes=1-2-3", "bytes=0x10-2", "bytes=-", "bytes=" + "9" * 400])
def test_bad_ranges(fds_target: S3Target, scene: Scene, header: str) -> None:
    """Ranges past the end are 416 InvalidRange; ones S3 cannot parse are ignored (200, the whole object)."""
    response = send(fds_target, "GET", f"/{scene.bucket}/k", headers={"range": header})
    assert response.status_code in (200, 206, 416), f"{response.status_code} {response.content[:300]!r}"
    if response.status_code == 416:
        assert s3_error(response)["Code"] == "InvalidRange"
    elif response.status_code == 200:
        assert response.content == BODY
    else:
        first, last = map(int, response.headers["content-range"].split()[1].split("/")[0].split("-"))
        assert response.content == BODY[first:last + 1]


@pytest.mark.parametrize("key", [
    "a\x02b",
    "tab\there", "del\x7f"])
def test_error_body_for_a_key_with_control_characters(fds_target: S3Target, scene: Scene, key: str) -> None:
    """S3 keys may hold control characters; an error naming such a key must still be XML a client can parse."""
    response = send(fds_target, "GET", f"/{scene.bucket}/{key}")
    assert response.status_code == 404
    assert s3_error(response)["Code"] == "NoSuchKey"
