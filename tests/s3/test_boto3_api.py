"""One boto3 suite, run against moto (a model of S3) and against fds: both must answer the same.

Every test runs once per target (``[moto]``, ``[fds]``) and asserts what S3 documents: the same
status codes, error codes, ETags and listing pages (pages checked against :func:`list_pages`).
Where moto is not a faithful model (it accepts ``Bad_Name`` as a bucket name), the test says so
and checks fds alone.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.s3._model import list_pages, md5_etag, multipart_etag, outcome
from tests.s3._targets import REGION, S3Target, new_bucket_name
from tests.s3.conftest import empty_and_delete

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


def _body(response: dict[str, Any]) -> bytes:
    return bytes(response["Body"].read())


def fds_only(target: S3Target, why: str) -> None:
    """Skip on moto where it is not a faithful model of S3 (``why`` says how), so fds alone is checked."""
    if target.name == "moto":
        pytest.skip(f"moto is not faithful here: {why}")


# -- buckets -----------------------------------------------------------------------------------------------------

def test_bucket_lifecycle(s3: Any) -> None:
    name = new_bucket_name()
    assert outcome(s3.head_bucket, Bucket=name) == (404, "404")
    assert outcome(s3.create_bucket, Bucket=name) == (200, "")
    try:
        assert outcome(s3.head_bucket, Bucket=name) == (200, "")
        assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert s3.get_bucket_location(Bucket=name).get("LocationConstraint") in (None, "", REGION)
        s3.put_object(Bucket=name, Key="k", Body=b"x")
        assert outcome(s3.delete_bucket, Bucket=name) == (409, "BucketNotEmpty")
        s3.delete_object(Bucket=name, Key="k")
        assert outcome(s3.delete_bucket, Bucket=name) == (204, "")
        assert outcome(s3.head_bucket, Bucket=name) == (404, "404")
        assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        assert outcome(s3.delete_bucket, Bucket=name) == (404, "NoSuchBucket")
        assert outcome(s3.list_objects_v2, Bucket=name) == (404, "NoSuchBucket")
        assert outcome(s3.put_object, Bucket=name, Key="k", Body=b"x") == (404, "NoSuchBucket")
        assert outcome(s3.get_object, Bucket=name, Key="k") == (404, "NoSuchBucket")
    finally:
        empty_and_delete(s3, name)


def test_create_bucket_twice(s3: Any, bucket: str) -> None:
    """S3 in us-east-1 answers 200 to its owner creating a bucket again (elsewhere 409 BucketAlreadyOwnedByYou).

    moto answers 200; fds may answer either, and must keep the bucket and its objects."""
    s3.put_object(Bucket=bucket, Key="kept", Body=b"still here")
    assert outcome(s3.create_bucket, Bucket=bucket) in {(200, ""), (409, "BucketAlreadyOwnedByYou")}
    assert _body(s3.get_object(Bucket=bucket, Key="kept")) == b"still here"


@pytest.mark.parametrize("name", ["ab", "a" * 64])
def test_invalid_bucket_names(s3: Any, name: str) -> None:
    assert outcome(s3.create_bucket, Bucket=name) == (400, "InvalidBucketName")


@pytest.mark.parametrize("name", ["Upper-case", "under_score", "double..dot", "192.168.5.4", "trailing-dash-",
                                  "-leading-dash"])
def test_invalid_bucket_names_fds(fds_target: S3Target, name: str) -> None:
    """Names S3 refuses and moto accepts: fds alone (moto is not faithful here)."""
    s3 = fds_target.client()
    assert outcome(s3.create_bucket, Bucket=name) == (400, "InvalidBucketName")


# -- objects -----------------------------------------------------------------------------------------------------

def test_put_get_head_delete(s3: Any, bucket: str) -> None:
    data = os.urandom(3 * MiB + 17)
    put = s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=data, ContentType="application/x-test",
                        Metadata={"colour": "blue", "Mixed-Case": "Value 1"})
    assert put["ETag"] == md5_etag(data)
    head = s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == md5_etag(data)
    assert head["ContentType"] == "application/x-test"
    assert head["Metadata"] == {"colour": "blue", "mixed-case": "Value 1"}
    assert isinstance(head["LastModified"], datetime.datetime)
    got = s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert _body(got) == data
    assert got["ETag"] == md5_etag(data) and got["Metadata"] == head["Metadata"]
    replaced = b"shorter"
    assert s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=replaced)["ETag"] == md5_etag(replaced)
    assert _body(s3.get_object(Bucket=bucket, Key="dir/obj.bin")) == replaced
    assert s3.head_object(Bucket=bucket, Key="dir/obj.bin")["Metadata"] == {}
    assert outcome(s3.delete_object, Bucket=bucket, Key="dir/obj.bin") == (204, "")
    assert outcome(s3.get_object, Bucket=bucket, Key="dir/obj.bin") == (404, "NoSuchKey")
    assert outcome(s3.head_object, Bucket=bucket, Key="dir/obj.bin") == (404, "404")
    assert outcome(s3.delete_object, Bucket=bucket, Key="dir/obj.bin") == (204, "")


def test_empty_object(s3: Any, bucket: str) -> None:
    assert s3.put_object(Bucket=bucket, Key="empty", Body=b"")["ETag"] == md5_etag(b"")
    assert s3.head_object(Bucket=bucket, Key="empty")["ContentLength"] == 0
    assert _body(s3.get_object(Bucket=bucket, Key="empty")) == b""
    assert outcome(s3.get_object, Bucket=bucket, Key="empty", Range="bytes=0-0") == (416, "InvalidRange")


ODD_KEYS = ["a b", "a+b", "plus+and space", "ünï/cödé", "x%2Fy", "q?x=1&y=2", "~!@$'()*,;=:", "tab\tkey",
            "dot/./seg", "dots/../up", "/leading", "trailing/", "double//slash", "k" * 1024]


def test_odd_keys(s3: Any, bucket: str) -> None:
    for key in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    for key in ODD_KEYS:
        assert _body(s3.get_object(Bucket=bucket, Key=key)) == key.encode(), key
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(ODD_KEYS, key=lambda k: k.encode())


def test_key_too_long(target: S3Target, s3: Any, bucket: str) -> None:
    fds_only(target, "it stores keys longer than 1024 bytes")
    assert outcome(s3.put_object, Bucket=bucket, Key="k" * 1025, Body=b"x") == (400, "KeyTooLongError")


# -- listings ----------------------------------------------------------------------------------------------------

LISTED = ["a", "a/1", "a/2", "a/b/1", "a/b/2", "a/c", "b", "b/x", "c/1/2/3", "c/1/4", "d", "e/", "e/f", "é"]
LISTINGS = [
    {},
    {"max_keys": 1},
    {"max_keys": 3},
    {"prefix": "a/"},
    {"prefix": "a/", "max_keys": 2},
    {"delimiter": "/"},
    {"delimiter": "/", "max_keys": 2},
    {"prefix": "a/", "delimiter": "/"},
    {"prefix": "c/", "delimiter": "/"},
    {"start_after": "a/b"},
    {"start_after": "a/c", "delimiter": "/", "max_keys": 2},
    {"start_after": "zz"},
    {"prefix": "nothing"},
    {"delimiter": "1"},
    {"prefix": "e", "delimiter": "/"},
]


@pytest.fixture(scope="module")
def listed_bucket(s3: Any) -> Iterator[str]:
    """A bucket holding LISTED (empty objects), shared by the listing tests of one target; they only read it."""
    name = new_bucket_name("list")
    s3.create_bucket(Bucket=name)
    for key in LISTED:
        s3.put_object(Bucket=name, Key=key, Body=b"")
    yield name
    empty_and_delete(s3, name)


@pytest.mark.parametrize("params", LISTINGS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "all")
def test_list_objects_v2_pages(s3: Any, listed_bucket: str, params: dict[str, Any]) -> None:
    args: dict[str, Any] = {"Bucket": listed_bucket, "Prefix": params.get("prefix", ""),
                            "Delimiter": params.get("delimiter", ""), "MaxKeys": params.get("max_keys", 1000)}
    if "start_after" in params:
        args["StartAfter"] = params["start_after"]
    pages = []
    token = None
    while True:
        response = s3.list_objects_v2(**args, **({"ContinuationToken": token} if token else {}))
        keys = tuple(o["Key"] for o in response.get("Contents", []))
        prefixes = tuple(p["Prefix"] for p in response.get("CommonPrefixes", []))
        assert response["KeyCount"] == len(keys) + len(prefixes)
        assert response["MaxKeys"] == args["MaxKeys"]
        assert response.get("Prefix", "") == args["Prefix"]
        assert response.get("Delimiter", "") == args["Delimiter"]
        if "start_after" in params and not pages:  # (moto leaves it out of later pages)
            assert response["StartAfter"] == params["start_after"]
        for obj in response.get("Contents", []):
            assert obj["Size"] == 0 and obj["ETag"] == md5_etag(b"")
        pages.append((keys, prefixes, response["IsTruncated"]))
        if not response["IsTruncated"]:
            assert "NextContinuationToken" not in response
            break
        token = response["NextContinuationToken"]
        assert len(pages) < 50
    expected = list_pages(LISTED, **params)
    assert pages == [(p.keys, p.prefixes, p.truncated) for p in expected]


@pytest.mark.parametrize("params", [{}, {"max_keys": 2}, {"delimiter": "/", "max_keys": 2}, {"prefix": "a/"},
                                    {"prefix": "a/", "delimiter": "/", "max_keys": 1}],
                         ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "all")
def test_list_objects_v1_pages(target: S3Target, s3: Any, listed_bucket: str, params: dict[str, Any]) -> None:
    """v1 pages by Marker: NextMarker when a delimiter is given, else the last key (as S3 documents)."""
    if "max_keys" in params:
        fds_only(target, "its v1 listing ignores max-keys with a delimiter, echoes no Marker, hashes NextMarker")
    args: dict[str, Any] = {"Bucket": listed_bucket, "Prefix": params.get("prefix", ""),
                            "Delimiter": params.get("delimiter", ""), "MaxKeys": params.get("max_keys", 1000)}
    pages = []
    marker = ""
    while True:
        response = s3.list_objects(**args, Marker=marker)
        keys = tuple(o["Key"] for o in response.get("Contents", []))
        prefixes = tuple(p["Prefix"] for p in response.get("CommonPrefixes", []))
        assert response.get("Marker", "") == marker
        pages.append((keys, prefixes, response["IsTruncated"]))
        if not response["IsTruncated"]:
            break
        if args["Delimiter"]:
            marker = response["NextMarker"]
            assert marker == max(keys + prefixes, key=lambda k: k.encode())
        else:
            marker = keys[-1]
        assert len(pages) < 50
    expected = [(p.keys, p.prefixes, p.truncated) for p in list_pages(LISTED, **params)]
    assert pages == expected


def test_list_v2_encoding_type(s3: Any, bucket: str) -> None:
    """boto3 asks for url-encoded names on every listing and decodes them, unless the caller asks itself."""
    s3.put_object(Bucket=bucket, Key="sp ace/ü", Body=b"12345")
    response = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [p["Prefix"] for p in response["CommonPrefixes"]] == ["sp ace/"]
    response = s3.list_objects_v2(Bucket=bucket, EncodingType="url", Delimiter="/")
    assert [p["Prefix"] for p in response["CommonPrefixes"]] == ["sp%20ace/"]
    response = s3.list_objects_v2(Bucket=bucket, EncodingType="url")
    assert [(o["Key"], o["Size"]) for o in response["Contents"]] == [("sp%20ace/%C3%BC", 5)]


def test_list_bad_max_keys(target: S3Target, s3: Any, bucket: str) -> None:
    fds_only(target, "it answers 500 to max-keys=-1")
    assert outcome(s3.list_objects_v2, Bucket=bucket, MaxKeys=-1)[0] == 400


def test_list_bad_continuation_token(target: S3Target, s3: Any, bucket: str) -> None:
    fds_only(target, "it takes any continuation token")
    assert outcome(s3.list_objects_v2, Bucket=bucket, ContinuationToken="not-a-token") == (400, "InvalidArgument")


# -- DeleteObjects and CopyObject --------------------------------------------------------------------------------

def test_delete_objects(target: S3Target, s3: Any, bucket: str) -> None:
    for key in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    response = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a"}, {"Key": "b"}, {"Key": "never"}]})
    assert sorted(d["Key"] for d in response["Deleted"]) == ["a", "b", "never"]
    assert response.get("Errors", []) == []
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["c"]
    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "c"}], "Quiet": True})
    if target.name != "moto":  # moto lists what it deleted even when asked to be quiet
        assert quiet.get("Deleted", []) == []
    assert quiet.get("Errors", []) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
    assert outcome(s3.delete_objects, Bucket=new_bucket_name(), Delete={"Objects": [{"Key": "a"}]}) == (
        404, "NoSuchBucket")


def test_copy_object(s3: Any, bucket: str) -> None:
    data = os.urandom(2 * MiB + 5)
    s3.put_object(Bucket=bucket, Key="src", Body=data, Metadata={"m": "1"}, ContentType="text/x-src")
    copied = s3.copy_object(Bucket=bucket, Key="same-meta", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == md5_etag(data)
    head = s3.head_object(Bucket=bucket, Key="same-meta")
    assert head["Metadata"] == {"m": "1"} and head["ContentType"] == "text/x-src"
    assert _body(s3.get_object(Bucket=bucket, Key="same-meta")) == data
    s3.copy_object(Bucket=bucket, Key="new-meta", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"n": "2"}, ContentType="text/x-new")
    head = s3.head_object(Bucket=bucket, Key="new-meta")
    assert head["Metadata"] == {"n": "2"} and head["ContentType"] == "text/x-new"
    # copying onto itself is refused unless the metadata changes
    assert outcome(s3.copy_object, Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"}) == (
        400, "InvalidRequest")
    assert outcome(s3.copy_object, Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"m": "3"}) == (200, "")
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"m": "3"}
    assert outcome(s3.copy_object, Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "nope"}) == (
        404, "NoSuchKey")
    assert outcome(s3.copy_object, Bucket=bucket, Key="x",
                   CopySource={"Bucket": new_bucket_name(), "Key": "src"}) == (404, "NoSuchBucket")
    # the source stays as it was, and the copy is independent of it
    s3.delete_object(Bucket=bucket, Key="src")
    assert _body(s3.get_object(Bucket=bucket, Key="same-meta")) == data


def test_copy_between_buckets(s3: Any, bucket: str) -> None:
    other = new_bucket_name()
    s3.create_bucket(Bucket=other)
    try:
        s3.put_object(Bucket=bucket, Key="k", Body=b"across")
        s3.copy_object(Bucket=other, Key="k2", CopySource={"Bucket": bucket, "Key": "k"})
        assert _body(s3.get_object(Bucket=other, Key="k2")) == b"across"
    finally:
        empty_and_delete(s3, other)


# -- ranges and conditions ---------------------------------------------------------------------------------------

RANGE_DATA = bytes(range(256)) * 40 + b"end"  # 10,243 bytes
N = len(RANGE_DATA)
RANGES = [  # header, status, first byte, bytes; a 200 is the whole object (S3 ignores ranges it cannot parse)
    ("bytes=0-9", 206, 0, RANGE_DATA[0:10]),
    ("bytes=10-", 206, 10, RANGE_DATA[10:]),
    ("bytes=-5", 206, N - 5, RANGE_DATA[-5:]),
    ("bytes=-100000", 206, 0, RANGE_DATA),
    ("bytes=10000-99999", 206, 10000, RANGE_DATA[10000:]),
    ("bytes=10242-10242", 206, N - 1, RANGE_DATA[-1:]),
    ("bytes=10243-", 416, 0, b""),
    ("bytes=99999-100000", 416, 0, b""),
    ("bytes=5-2", 200, 0, RANGE_DATA),
    ("bytes=abc", 200, 0, RANGE_DATA),
    ("items=0-3", 200, 0, RANGE_DATA),
    ("bytes=0-1,5-6", 200, 0, RANGE_DATA),     # S3 serves no multi-range: the whole object
]


@pytest.mark.parametrize(("header", "status", "first", "expected"), RANGES, ids=[r[0] for r in RANGES])
def test_range(target: S3Target, s3: Any, bucket: str, header: str, status: int, first: int, expected: bytes) -> None:
    if header.startswith("items="):
        fds_only(target, "it reads a range of any unit as bytes")
    s3.put_object(Bucket=bucket, Key="r", Body=RANGE_DATA)
    if status == 416:
        assert outcome(s3.get_object, Bucket=bucket, Key="r", Range=header) == (416, "InvalidRange")
        return
    response = s3.get_object(Bucket=bucket, Key="r", Range=header)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert _body(response) == expected
    assert response["ContentLength"] == len(expected)
    if status == 206:
        assert response["ContentRange"] == f"bytes {first}-{first + len(expected) - 1}/{N}"
    else:
        assert "ContentRange" not in response


def test_range_on_head_and_multi_tract(s3: Any, bucket: str) -> None:
    data = os.urandom(3 * MiB + 100)
    s3.put_object(Bucket=bucket, Key="big", Body=data)
    start = MiB - 10
    got = s3.get_object(Bucket=bucket, Key="big", Range=f"bytes={start}-{2 * MiB + 10}")
    assert _body(got) == data[start:2 * MiB + 11]
    head = s3.head_object(Bucket=bucket, Key="big", Range="bytes=0-99")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206 and head["ContentLength"] == 100


FUTURE = datetime.datetime(2100, 1, 1, tzinfo=datetime.UTC)
PAST = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)


def test_conditional_get(target: S3Target, s3: Any, bucket: str) -> None:
    data = b"conditional"
    etag = s3.put_object(Bucket=bucket, Key="c", Body=data)["ETag"]
    get = s3.get_object
    assert outcome(get, Bucket=bucket, Key="c", IfMatch=etag) == (200, "")
    assert outcome(get, Bucket=bucket, Key="c", IfMatch='"0123"') == (412, "PreconditionFailed")
    assert outcome(get, Bucket=bucket, Key="c", IfNoneMatch=etag) == (304, "304")
    assert outcome(get, Bucket=bucket, Key="c", IfNoneMatch='"0123"') == (200, "")
    assert outcome(get, Bucket=bucket, Key="c", IfModifiedSince=FUTURE) == (304, "304")
    assert outcome(get, Bucket=bucket, Key="c", IfModifiedSince=PAST) == (200, "")
    assert outcome(get, Bucket=bucket, Key="c", IfUnmodifiedSince=PAST) == (412, "PreconditionFailed")
    assert outcome(get, Bucket=bucket, Key="c", IfUnmodifiedSince=FUTURE) == (200, "")
    # If-Match true wins over If-Unmodified-Since false (moto answers 412); If-None-Match false wins over
    # If-Modified-Since true
    if target.name != "moto":
        assert outcome(get, Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=PAST) == (200, "")
    assert outcome(get, Bucket=bucket, Key="c", IfNoneMatch=etag, IfModifiedSince=PAST) == (304, "304")
    assert outcome(s3.head_object, Bucket=bucket, Key="c", IfMatch='"0123"') == (412, "412")
    assert outcome(s3.head_object, Bucket=bucket, Key="c", IfNoneMatch=etag) == (304, "304")


def test_if_match_star(target: S3Target, s3: Any, bucket: str) -> None:
    """``If-Match: *`` matches any object that exists (RFC 9110, and S3)."""
    fds_only(target, "it answers 412 to If-Match: * on an object that exists")
    s3.put_object(Bucket=bucket, Key="c", Body=b"x")
    assert outcome(s3.get_object, Bucket=bucket, Key="c", IfMatch="*") == (200, "")


def test_conditional_put(s3: Any, bucket: str) -> None:
    put = s3.put_object
    assert outcome(put, Bucket=bucket, Key="p", Body=b"first", IfNoneMatch="*") == (200, "")
    assert outcome(put, Bucket=bucket, Key="p", Body=b"second", IfNoneMatch="*") == (412, "PreconditionFailed")
    assert outcome(put, Bucket=bucket, Key="p", Body=b"third", IfMatch='"0123"') == (412, "PreconditionFailed")
    assert outcome(put, Bucket=bucket, Key="p", Body=b"fourth", IfMatch=md5_etag(b"first")) == (200, "")
    assert _body(s3.get_object(Bucket=bucket, Key="p")) == b"fourth"
    assert outcome(put, Bucket=bucket, Key="absent", Body=b"x", IfMatch=md5_etag(b"x")) == (404, "NoSuchKey")
    assert outcome(s3.head_object, Bucket=bucket, Key="absent") == (404, "404")


# -- multipart ---------------------------------------------------------------------------------------------------

def _upload(s3: Any, bucket: str, key: str, parts: list[bytes]) -> dict[str, Any]:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"via": "multipart"})["UploadId"]
    done = []
    for number, part in enumerate(parts, 1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=part)["ETag"]
        assert etag == md5_etag(part)
        done.append({"PartNumber": number, "ETag": etag})
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [
        (n, md5_etag(p), len(p)) for n, p in enumerate(parts, 1)]
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert (key, upload) in [(u["Key"], u["UploadId"]) for u in uploads]
    result: dict[str, Any] = s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                                           MultipartUpload={"Parts": done})
    assert upload not in [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    return result


@pytest.mark.parametrize("sizes", [[8 * MiB, 8 * MiB, 3 * MiB + 1], [5 * MiB + 1, 5 * MiB + 7, 3]],
                         ids=["8MiB-parts", "odd-parts"])
def test_multipart(s3: Any, bucket: str, sizes: list[int]) -> None:
    parts = [os.urandom(n) for n in sizes]
    result = _upload(s3, bucket, "mp", parts)
    assert result["ETag"] == multipart_etag(parts)
    whole = b"".join(parts)
    head = s3.head_object(Bucket=bucket, Key="mp")
    assert head["ContentLength"] == len(whole) and head["ETag"] == multipart_etag(parts)
    assert head["Metadata"] == {"via": "multipart"}
    assert _body(s3.get_object(Bucket=bucket, Key="mp")) == whole
    edge = len(parts[0])
    across = s3.get_object(Bucket=bucket, Key="mp", Range=f"bytes={edge - 3}-{edge + 2}")
    assert _body(across) == whole[edge - 3:edge + 3]
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("mp", len(whole), multipart_etag(parts))]


def test_multipart_errors(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    small = [b"x" * 10, b"y" * 10]
    etags = [s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=n, Body=p)["ETag"]
             for n, p in enumerate(small, 1)]
    complete = s3.complete_multipart_upload
    parts = [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
    assert outcome(complete, Bucket=bucket, Key="m", UploadId=upload, MultipartUpload={"Parts": parts}) == (
        400, "EntityTooSmall")
    assert outcome(complete, Bucket=bucket, Key="m", UploadId=upload,
                   MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]}) == (400, "InvalidPart")
    assert outcome(complete, Bucket=bucket, Key="m", UploadId=upload,
                   MultipartUpload={"Parts": [{"PartNumber": 3, "ETag": etags[0]}]}) == (400, "InvalidPart")
    # a last part alone may be small
    assert outcome(complete, Bucket=bucket, Key="m", UploadId=upload, MultipartUpload={"Parts": parts[:1]}) == (
        200, "")
    assert _body(s3.get_object(Bucket=bucket, Key="m")) == small[0]
    assert outcome(s3.list_parts, Bucket=bucket, Key="m", UploadId=upload) == (404, "NoSuchUpload")


def test_multipart_abort(target: S3Target, s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=upload, PartNumber=1, Body=b"abc")
    assert outcome(s3.abort_multipart_upload, Bucket=bucket, Key="gone", UploadId=upload) == (204, "")
    assert outcome(s3.list_parts, Bucket=bucket, Key="gone", UploadId=upload) == (404, "NoSuchUpload")
    if target.name != "moto":  # moto answers 500
        assert outcome(s3.upload_part, Bucket=bucket, Key="gone", UploadId=upload, PartNumber=2, Body=b"x") == (
            404, "NoSuchUpload")
    assert outcome(s3.abort_multipart_upload, Bucket=bucket, Key="gone", UploadId="no-such-upload") == (
        404, "NoSuchUpload")
    assert outcome(s3.head_object, Bucket=bucket, Key="gone") == (404, "404")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_multipart_replaces_part(s3: Any, bucket: str) -> None:
    """A part uploaded again under the same number replaces the first."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key="re")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="re", UploadId=upload, PartNumber=1, Body=b"old" * 100)
    etag = s3.upload_part(Bucket=bucket, Key="re", UploadId=upload, PartNumber=1, Body=b"new")["ETag"]
    s3.complete_multipart_upload(Bucket=bucket, Key="re", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert _body(s3.get_object(Bucket=bucket, Key="re")) == b"new"


def test_multipart_part_order(target: S3Target, s3: Any, bucket: str) -> None:
    fds_only(target, "it completes an upload whose parts are listed out of order")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="o")["UploadId"]
    parts = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=bucket, Key="o", UploadId=upload, PartNumber=n,
                                                      Body=bytes([n]) * (5 * MiB))["ETag"]} for n in (1, 2)]
    assert outcome(s3.complete_multipart_upload, Bucket=bucket, Key="o", UploadId=upload,
                   MultipartUpload={"Parts": parts[::-1]}) == (400, "InvalidPartOrder")


def test_part_number_out_of_range(target: S3Target, s3: Any, bucket: str) -> None:
    fds_only(target, "it takes part numbers 0 and 10001")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="n")["UploadId"]
    for number in (0, 10001):
        assert outcome(s3.upload_part, Bucket=bucket, Key="n", UploadId=upload, PartNumber=number, Body=b"x") == (
            400, "InvalidArgument")


# -- more of the API: part and upload listings, UploadPartCopy, overrides, digests, limits ------------------------

def test_list_parts_pages(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="lp")["UploadId"]
    for number in (1, 2, 3):
        s3.upload_part(Bucket=bucket, Key="lp", UploadId=upload, PartNumber=number, Body=bytes([number]) * 10)
    first = s3.list_parts(Bucket=bucket, Key="lp", UploadId=upload, MaxParts=2)
    assert [p["PartNumber"] for p in first["Parts"]] == [1, 2]
    assert first["IsTruncated"] is True and int(first["NextPartNumberMarker"]) == 2
    rest = s3.list_parts(Bucket=bucket, Key="lp", UploadId=upload, PartNumberMarker=2)
    assert [p["PartNumber"] for p in rest["Parts"]] == [3] and rest["IsTruncated"] is False


def test_list_multipart_uploads_pages(target: S3Target, s3: Any, bucket: str) -> None:
    fds_only(target, "it ignores max-uploads")
    uploads = {key: s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"] for key in ("a", "b/1", "c")}
    first = s3.list_multipart_uploads(Bucket=bucket, MaxUploads=2)
    assert [(u["Key"], u["UploadId"]) for u in first["Uploads"]] == [("a", uploads["a"]), ("b/1", uploads["b/1"])]
    assert first["IsTruncated"] is True and first["NextKeyMarker"] == "b/1"
    rest = s3.list_multipart_uploads(Bucket=bucket, KeyMarker=first["NextKeyMarker"],
                                     UploadIdMarker=first["NextUploadIdMarker"])
    assert [u["Key"] for u in rest["Uploads"]] == ["c"] and rest["IsTruncated"] is False
    assert [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket, Prefix="b/")["Uploads"]] == ["b/1"]


def test_upload_part_copy(s3: Any, bucket: str) -> None:
    source = os.urandom(6 * MiB + 11)
    s3.put_object(Bucket=bucket, Key="src", Body=source)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    cut = 5 * MiB
    parts = []
    for number, (first, last) in enumerate([(0, cut - 1), (cut, len(source) - 1)], 1):
        result = s3.upload_part_copy(Bucket=bucket, Key="dst", UploadId=upload, PartNumber=number,
                                     CopySource={"Bucket": bucket, "Key": "src"},
                                     CopySourceRange=f"bytes={first}-{last}")
        assert result["CopyPartResult"]["ETag"] == md5_etag(source[first:last + 1])
        parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload, MultipartUpload={"Parts": parts})
    assert _body(s3.get_object(Bucket=bucket, Key="dst")) == source
    assert s3.head_object(Bucket=bucket, Key="dst")["ETag"] == multipart_etag([source[:cut], source[cut:]])


def test_response_header_overrides(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"override me", ContentType="application/x-stored")
    got = s3.get_object(Bucket=bucket, Key="o", ResponseContentType="text/plain",
                        ResponseContentDisposition='attachment; filename="o.txt"', ResponseCacheControl="no-cache")
    assert got["ContentType"] == "text/plain"
    assert got["ContentDisposition"] == 'attachment; filename="o.txt"'
    assert got["CacheControl"] == "no-cache"
    assert s3.head_object(Bucket=bucket, Key="o")["ContentType"] == "application/x-stored"


def test_copy_source_conditions(target: S3Target, s3: Any, bucket: str) -> None:
    fds_only(target, "it ignores x-amz-copy-source-if-*")
    etag = s3.put_object(Bucket=bucket, Key="s", Body=b"source")["ETag"]
    source = {"Bucket": bucket, "Key": "s"}
    copy = s3.copy_object
    assert outcome(copy, Bucket=bucket, Key="d", CopySource=source, CopySourceIfMatch='"0123"') == (
        412, "PreconditionFailed")
    assert outcome(copy, Bucket=bucket, Key="d", CopySource=source, CopySourceIfNoneMatch=etag) == (
        412, "PreconditionFailed")
    assert outcome(s3.head_object, Bucket=bucket, Key="d") == (404, "404")
    assert outcome(copy, Bucket=bucket, Key="d", CopySource=source, CopySourceIfMatch=etag) == (200, "")


def test_content_md5(target: S3Target, s3: Any, bucket: str) -> None:
    fds_only(target, "it does not check Content-MD5")
    import base64
    import hashlib

    good = base64.b64encode(hashlib.md5(b"payload").digest()).decode()
    wrong = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    assert outcome(s3.put_object, Bucket=bucket, Key="m", Body=b"payload", ContentMD5=good) == (200, "")
    assert outcome(s3.put_object, Bucket=bucket, Key="m", Body=b"changed", ContentMD5=wrong) == (400, "BadDigest")
    assert outcome(s3.put_object, Bucket=bucket, Key="m", Body=b"changed", ContentMD5="not-base64!") == (
        400, "InvalidDigest")
    assert _body(s3.get_object(Bucket=bucket, Key="m")) == b"payload"


def test_metadata_too_large(request: pytest.FixtureRequest, target: S3Target, s3: Any, bucket: str) -> None:
    """User metadata is limited to 2 KB (names and values together)."""
    fds_only(target, "it takes any amount of metadata")
    assert outcome(s3.put_object, Bucket=bucket, Key="meta", Body=b"x", Metadata={"big": "v" * 2100}) == (
        400, "MetadataTooLarge")
    assert outcome(s3.put_object, Bucket=bucket, Key="meta", Body=b"x", Metadata={"ok": "v" * 1000}) == (200, "")


def test_delete_objects_limit(target: S3Target, s3: Any, bucket: str) -> None:
    """DeleteObjects takes at most 1000 keys."""
    fds_only(target, "it deletes 1001 keys in one request")
    keys = [{"Key": f"k{i}"} for i in range(1001)]
    assert outcome(s3.delete_objects, Bucket=bucket, Delete={"Objects": keys}) == (400, "MalformedXML")


def test_checksum_mismatch(target: S3Target, s3: Any, bucket: str) -> None:
    """A body whose x-amz-checksum-crc32 does not match is refused (400 BadDigest), and the old object stays."""
    fds_only(target, "it does not check x-amz-checksum-crc32")
    s3.put_object(Bucket=bucket, Key="c", Body=b"old")
    assert outcome(s3.put_object, Bucket=bucket, Key="c", Body=b"new", ChecksumCRC32="AAAAAA==") == (
        400, "BadDigest")
    assert _body(s3.get_object(Bucket=bucket, Key="c")) == b"old"


def test_empty_lists_are_malformed(s3: Any, bucket: str) -> None:
    assert outcome(s3.delete_objects, Bucket=bucket, Delete={"Objects": []}) == (400, "MalformedXML")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="e")["UploadId"]
    assert outcome(s3.complete_multipart_upload, Bucket=bucket, Key="e", UploadId=upload,
                   MultipartUpload={"Parts": []}) == (400, "MalformedXML")


def test_copy_odd_source_key(s3: Any, bucket: str) -> None:
    for key in ("a b/ü+x", "q?x=1&y=%2F"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        s3.copy_object(Bucket=bucket, Key=f"copy/{key}", CopySource={"Bucket": bucket, "Key": key})
        assert _body(s3.get_object(Bucket=bucket, Key=f"copy/{key}")) == key.encode()


def test_overwrite_shows_in_listing(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"1234567890")
    s3.put_object(Bucket=bucket, Key="o", Body=b"123")
    [listed] = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert (listed["Size"], listed["ETag"]) == (3, md5_etag(b"123"))
    [v1] = s3.list_objects(Bucket=bucket)["Contents"]
    assert (v1["Size"], v1["ETag"]) == (3, md5_etag(b"123"))
