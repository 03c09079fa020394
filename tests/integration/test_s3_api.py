"""The S3 endpoint against a real cluster, through boto3 (and raw signed requests where boto3 will not send
what is tested): buckets, objects, ranges, conditions, listing, copy, multipart (parts landing in place),
aws-chunked bodies and checksums, and S3's XML refusal for every bad or unauthorised request."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore import UNSIGNED
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from fds.local import Child, LocalCluster, wait_ready
from fds.names import INLINE_MAX
from fds.s3keys import SYSTEM_BUCKET
from tests.support.clusters import SMALL_TRACT, shared_cluster

_CONFIG = Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"})


def _client(cluster: LocalCluster, key: tuple[str, str] | None = None, **options: Any) -> Any:
    access, secret = key or cluster.s3_credentials()
    return boto3.client("s3", endpoint_url=cluster.s3_url, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", config=options.pop("config", _CONFIG), **options)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from shared_cluster(tmp_path_factory, "s3-api", s3=True,
                              s3_args=["--min-part-size", str(SMALL_TRACT), "--sweep-interval", "0",
                                       "--key-cache-seconds", "0.3"])


@pytest.fixture(scope="module")
def s3(cluster: LocalCluster) -> Any:
    client = _client(cluster)
    client.create_bucket(Bucket="s3t")
    return client


def _code(exc: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    return exc.value.response["ResponseMetadata"]["HTTPStatusCode"], exc.value.response["Error"]["Code"]


def _refused(status: int, code: str, call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    assert _code(caught) == (status, code), caught.value.response


def test_credentials_file_and_cluster_file(cluster: LocalCluster) -> None:
    path = cluster.s3_credentials_file
    assert path.stat().st_mode & 0o777 == 0o600
    assert "[fds]" in path.read_text()
    stored = json.loads((cluster.dir / "cluster.json").read_text())
    assert stored["s3"] == cluster.s3_url and any(c["role"] == "s3" for c in stored["children"])
    assert LocalCluster.open(cluster.dir).s3_url == cluster.s3_url


def test_buckets(s3: Any) -> None:
    s3.create_bucket(Bucket="s3t-other")
    names = [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "s3t" in names and "s3t-other" in names and SYSTEM_BUCKET not in names
    s3.head_bucket(Bucket="s3t-other")
    assert s3.get_bucket_location(Bucket="s3t-other")["LocationConstraint"] is None  # us-east-1
    _refused(409, "BucketAlreadyOwnedByYou", s3.create_bucket, Bucket="s3t-other")
    _refused(400, "InvalidBucketName", s3.create_bucket, Bucket="Bad_Name")
    s3.put_object(Bucket="s3t-other", Key="k", Body=b"x")
    _refused(409, "BucketNotEmpty", s3.delete_bucket, Bucket="s3t-other")
    s3.delete_object(Bucket="s3t-other", Key="k")
    s3.delete_object(Bucket="s3t-other", Key="k")  # S3 answers 204 for a missing key too
    s3.delete_bucket(Bucket="s3t-other")
    _refused(404, "NoSuchBucket", s3.delete_bucket, Bucket="s3t-other")
    _refused(404, "404", s3.head_bucket, Bucket="s3t-other")  # HEAD has no body: boto3 reports the status
    _refused(404, "NoSuchBucket", s3.list_objects_v2, Bucket="no-such-bucket")
    _refused(403, "AccessDenied", s3.list_objects_v2, Bucket=SYSTEM_BUCKET)


def test_objects_ranges_metadata_and_read_conditions(s3: Any) -> None:
    data = random.Random(1).randbytes(2 * SMALL_TRACT + SMALL_TRACT // 2)
    put = s3.put_object(Bucket="s3t", Key="dir/obj.bin", Body=data, ContentType="application/x-test",
                        Metadata={"owner": "ann", "note": "plain"})
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket="s3t", Key="dir/obj.bin")
    assert got["Body"].read() == data and got["ETag"] == put["ETag"]
    assert got["ContentType"] == "application/x-test" and got["Metadata"] == {"owner": "ann", "note": "plain"}
    head = s3.head_object(Bucket="s3t", Key="dir/obj.bin")
    assert head["ContentLength"] == len(data)
    for spec, want in ((f"bytes={SMALL_TRACT - 5}-{SMALL_TRACT + 5}", data[SMALL_TRACT - 5:SMALL_TRACT + 6]),
                       ("bytes=-7", data[-7:]), (f"bytes={len(data) - 3}-", data[-3:]),
                       (f"bytes=10-{10 * len(data)}", data[10:])):
        part = s3.get_object(Bucket="s3t", Key="dir/obj.bin", Range=spec)
        assert part["Body"].read() == want and part["ResponseMetadata"]["HTTPStatusCode"] == 206
    _refused(416, "InvalidRange", s3.get_object, Bucket="s3t", Key="dir/obj.bin", Range=f"bytes={len(data)}-")
    _refused(412, "PreconditionFailed", s3.get_object, Bucket="s3t", Key="dir/obj.bin", IfMatch='"nope"')
    _refused(304, "304", s3.get_object, Bucket="s3t", Key="dir/obj.bin", IfNoneMatch=put["ETag"])
    _refused(304, "304", s3.get_object, Bucket="s3t", Key="dir/obj.bin", IfModifiedSince=time.time() + 60)
    assert s3.get_object(Bucket="s3t", Key="dir/obj.bin", IfMatch=put["ETag"])["Body"].read() == data
    _refused(404, "NoSuchKey", s3.get_object, Bucket="s3t", Key="dir/missing")
    empty = s3.put_object(Bucket="s3t", Key="empty", Body=b"")
    assert empty["ETag"] == f'"{hashlib.md5(b"").hexdigest()}"'
    assert s3.get_object(Bucket="s3t", Key="empty")["Body"].read() == b""


def test_small_objects_are_inline(cluster: LocalCluster, s3: Any) -> None:
    """A body of at most INLINE_MAX bytes is checked and kept in its name record (no blob); GET with Range,
    conditions, metadata, CopyObject, UploadPartCopy and overwrites by and of blob objects all work on it."""
    data = random.Random(9).randbytes(4096)
    put = s3.put_object(Bucket="s3t", Key="small", Body=data, ContentType="text/x", Metadata={"m": "1"})
    assert put["ETag"] == f'"{hashlib.md5(data).hexdigest()}"' and _object_blob(cluster, "s3t", "small") == ""
    got = s3.get_object(Bucket="s3t", Key="small")
    assert got["Body"].read() == data and got["ContentType"] == "text/x" and got["Metadata"] == {"m": "1"}
    for spec, want in (("bytes=0-0", data[:1]), ("bytes=-7", data[-7:]), ("bytes=4000-", data[4000:]),
                       ("bytes=100-99999", data[100:])):
        assert s3.get_object(Bucket="s3t", Key="small", Range=spec)["Body"].read() == want
    _refused(416, "InvalidRange", s3.get_object, Bucket="s3t", Key="small", Range="bytes=4096-")
    _refused(304, "304", s3.get_object, Bucket="s3t", Key="small", IfNoneMatch=put["ETag"])
    _refused(412, "PreconditionFailed", s3.put_object, Bucket="s3t", Key="small", Body=b"x", IfNoneMatch="*")
    whole = s3.put_object(Bucket="s3t", Key="at-limit", Body=data * 4)  # INLINE_MAX exactly
    over = s3.put_object(Bucket="s3t", Key="over-limit", Body=data * 4 + b"!")
    assert (len(data * 4), _object_blob(cluster, "s3t", "at-limit")) == (INLINE_MAX, "")
    assert _object_blob(cluster, "s3t", "over-limit") != "" and whole["ETag"] != over["ETag"]
    copied = s3.copy_object(Bucket="s3t", Key="small-copy", CopySource="s3t/small")
    assert copied["CopyObjectResult"]["ETag"] == put["ETag"] and _object_blob(cluster, "s3t", "small-copy") == ""
    s3.copy_object(Bucket="s3t", Key="small-copy", CopySource="s3t/small-copy", MetadataDirective="REPLACE",
                   Metadata={"new": "2"})
    head = s3.head_object(Bucket="s3t", Key="small-copy")
    assert head["Metadata"] == {"new": "2"} and head["ContentLength"] == len(data)
    upload = s3.create_multipart_upload(Bucket="s3t", Key="from-small")["UploadId"]
    part = s3.upload_part_copy(Bucket="s3t", Key="from-small", UploadId=upload, PartNumber=1,
                               CopySource="s3t/small", CopySourceRange="bytes=10-109")
    s3.complete_multipart_upload(Bucket="s3t", Key="from-small", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert s3.get_object(Bucket="s3t", Key="from-small")["Body"].read() == data[10:110]
    s3.put_object(Bucket="s3t", Key="small", Body=data * 300)  # inline -> blob -> inline
    assert s3.get_object(Bucket="s3t", Key="small")["Body"].read() == data * 300
    s3.put_object(Bucket="s3t", Key="small", Body=b"tiny")
    assert s3.get_object(Bucket="s3t", Key="small")["Body"].read() == b"tiny"
    for key in ("small", "small-copy", "at-limit", "over-limit", "from-small"):
        s3.delete_object(Bucket="s3t", Key=key)
    _refused(404, "NoSuchKey", s3.get_object, Bucket="s3t", Key="small")


def test_conditional_writes(s3: Any) -> None:
    first = s3.put_object(Bucket="s3t", Key="cond", Body=b"one", IfNoneMatch="*")
    _refused(412, "PreconditionFailed", s3.put_object, Bucket="s3t", Key="cond", Body=b"two", IfNoneMatch="*")
    _refused(412, "PreconditionFailed", s3.put_object, Bucket="s3t", Key="cond", Body=b"two", IfMatch='"0000"')
    s3.put_object(Bucket="s3t", Key="cond", Body=b"two", IfMatch=first["ETag"])
    assert s3.get_object(Bucket="s3t", Key="cond")["Body"].read() == b"two"
    # If-Match on a key with no object: S3 (and moto) answer 404 NoSuchKey, not 412.
    _refused(404, "NoSuchKey", s3.put_object, Bucket="s3t", Key="cond-absent", Body=b"x", IfMatch=first["ETag"])
    _refused(404, "404", s3.head_object, Bucket="s3t", Key="cond-absent")


def test_listing_pages_prefixes_and_encoding(s3: Any) -> None:
    s3.create_bucket(Bucket="s3t-list")
    keys = ["a/1", "a/2", "b", "c d+e", "ü/x", "z/deep/er"]
    for key in keys:
        s3.put_object(Bucket="s3t-list", Key=key, Body=key.encode())
    page = s3.list_objects_v2(Bucket="s3t-list", Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/", "z/", "ü/"]
    assert [o["Key"] for o in page["Contents"]] == ["b", "c d+e"]
    assert page["KeyCount"] == 5 and not page["IsTruncated"]
    seen, token = [], None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket="s3t-list", MaxKeys=2, **extra)
        seen += [o["Key"] for o in page.get("Contents", [])]
        if not page["IsTruncated"]:
            break
        token = page["NextContinuationToken"]
    assert seen == sorted(keys, key=str.encode)
    v1 = [o["Key"] for p in s3.get_paginator("list_objects").paginate(Bucket="s3t-list", PaginationConfig={
        "PageSize": 2}) for o in p.get("Contents", [])]
    assert v1 == seen
    after = s3.list_objects_v2(Bucket="s3t-list", StartAfter="b", Prefix="")
    assert [o["Key"] for o in after["Contents"]][0] == "c d+e"
    sizes = {o["Key"]: o["Size"] for o in s3.list_objects(Bucket="s3t-list", Prefix="a/")["Contents"]}
    assert sizes == {"a/1": 3, "a/2": 3}
    _refused(400, "InvalidArgument", s3.list_objects_v2, Bucket="s3t-list", ContinuationToken="***")


def test_delete_objects_and_copy(s3: Any) -> None:
    for key in ("d1", "d2"):
        s3.put_object(Bucket="s3t", Key=key, Body=b"bye")
    result = s3.delete_objects(Bucket="s3t", Delete={"Objects": [{"Key": "d1"}, {"Key": "d2"}, {"Key": "never"}]})
    assert sorted(d["Key"] for d in result["Deleted"]) == ["d1", "d2", "never"] and not result.get("Errors")
    _refused(404, "404", s3.head_object, Bucket="s3t", Key="d1")
    data = random.Random(2).randbytes(SMALL_TRACT * 2 + 17)
    src = s3.put_object(Bucket="s3t", Key="src", Body=data, Metadata={"k": "v"}, ContentType="text/x-src")
    copied = s3.copy_object(Bucket="s3t", Key="dst", CopySource={"Bucket": "s3t", "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == src["ETag"]
    got = s3.get_object(Bucket="s3t", Key="dst")
    assert got["Body"].read() == data and got["Metadata"] == {"k": "v"} and got["ContentType"] == "text/x-src"
    s3.copy_object(Bucket="s3t", Key="dst", CopySource="s3t/dst", MetadataDirective="REPLACE",
                   Metadata={"new": "1"}, ContentType="text/plain")
    head = s3.head_object(Bucket="s3t", Key="dst")
    assert head["Metadata"] == {"new": "1"} and head["ContentType"] == "text/plain"
    _refused(400, "InvalidRequest", s3.copy_object, Bucket="s3t", Key="dst", CopySource="s3t/dst")
    _refused(404, "NoSuchKey", s3.copy_object, Bucket="s3t", Key="x", CopySource="s3t/missing")
    _refused(412, "PreconditionFailed", s3.copy_object, Bucket="s3t", Key="x", CopySource="s3t/src",
             CopySourceIfMatch='"nope"')


def _upload_blob(cluster: LocalCluster, bucket: str, upload_id: str) -> str:
    with cluster.sync_client() as fds:
        record = fds._loop.run(fds._client.bucket(SYSTEM_BUCKET).get(f"up/{bucket}/{upload_id}"))
    return str(json.loads(record)["blob"])


def _object_blob(cluster: LocalCluster, bucket: str, key: str) -> str:
    with cluster.sync_client() as fds:
        return str(fds._loop.run(fds._client.bucket(bucket).head(key)).blob)


def test_multipart_parts_of_one_tract_land_in_place(cluster: LocalCluster, s3: Any) -> None:
    parts = [random.Random(i).randbytes(SMALL_TRACT) for i in range(3)] + [b"tail" * 1000]
    upload = s3.create_multipart_upload(Bucket="s3t", Key="mp/in-place", Metadata={"m": "1"})["UploadId"]
    listed = s3.list_multipart_uploads(Bucket="s3t")["Uploads"]
    assert any(u["UploadId"] == upload and u["Key"] == "mp/in-place" for u in listed)
    etags = [s3.upload_part(Bucket="s3t", Key="mp/in-place", UploadId=upload, PartNumber=n + 1, Body=p)["ETag"]
             for n, p in enumerate(parts)]
    assert [p["Size"] for p in s3.list_parts(Bucket="s3t", Key="mp/in-place", UploadId=upload)["Parts"]] == \
        [len(p) for p in parts]
    blob = _upload_blob(cluster, "s3t", upload)
    done = s3.complete_multipart_upload(Bucket="s3t", Key="mp/in-place", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]})
    expected = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-4"
    assert done["ETag"] == f'"{expected}"'
    got = s3.get_object(Bucket="s3t", Key="mp/in-place")
    assert got["Body"].read() == b"".join(parts) and got["Metadata"] == {"m": "1"}
    assert _object_blob(cluster, "s3t", "mp/in-place") == blob  # no byte was copied: the upload blob is the object
    assert not any(u["UploadId"] == upload for u in s3.list_multipart_uploads(Bucket="s3t").get("Uploads", []))
    _refused(404, "NoSuchUpload", s3.list_parts, Bucket="s3t", Key="mp/in-place", UploadId=upload)


def test_multipart_other_part_sizes_come_out_right(cluster: LocalCluster, s3: Any) -> None:
    rng = random.Random(9)
    sizes = {1: SMALL_TRACT + SMALL_TRACT // 2, 3: SMALL_TRACT, 4: 3 * SMALL_TRACT, 7: 12345}
    parts = {n: rng.randbytes(size) for n, size in sizes.items()}
    upload = s3.create_multipart_upload(Bucket="s3t", Key="mp/mixed")["UploadId"]
    s3.upload_part(Bucket="s3t", Key="mp/mixed", UploadId=upload, PartNumber=3, Body=b"replaced later")
    etags = {n: s3.upload_part(Bucket="s3t", Key="mp/mixed", UploadId=upload, PartNumber=n, Body=p)["ETag"]
             for n, p in parts.items()}
    order = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(parts)]
    _refused(400, "InvalidPartOrder", s3.complete_multipart_upload, Bucket="s3t", Key="mp/mixed", UploadId=upload,
             MultipartUpload={"Parts": order[::-1]})
    _refused(400, "InvalidPart", s3.complete_multipart_upload, Bucket="s3t", Key="mp/mixed", UploadId=upload,
             MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"00"'}]})
    s3.complete_multipart_upload(Bucket="s3t", Key="mp/mixed", UploadId=upload, MultipartUpload={"Parts": order})
    assert s3.get_object(Bucket="s3t", Key="mp/mixed")["Body"].read() == b"".join(parts[n] for n in sorted(parts))
    small = s3.create_multipart_upload(Bucket="s3t", Key="mp/small")["UploadId"]
    tags = [s3.upload_part(Bucket="s3t", Key="mp/small", UploadId=small, PartNumber=n, Body=b"x" * 100)["ETag"]
            for n in (1, 2)]
    _refused(400, "EntityTooSmall", s3.complete_multipart_upload, Bucket="s3t", Key="mp/small", UploadId=small,
             MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": t} for n, t in enumerate(tags)]})
    s3.abort_multipart_upload(Bucket="s3t", Key="mp/small", UploadId=small)
    _refused(404, "NoSuchUpload", s3.upload_part, Bucket="s3t", Key="mp/small", UploadId=small, PartNumber=1,
             Body=b"late")


def test_upload_part_copy_and_transfer_manager(s3: Any) -> None:
    data = random.Random(4).randbytes(5 * SMALL_TRACT + 99)
    s3.put_object(Bucket="s3t", Key="copy-src", Body=data)
    upload = s3.create_multipart_upload(Bucket="s3t", Key="copy-dst")["UploadId"]
    cut = 2 * SMALL_TRACT + 5
    tags = [s3.upload_part_copy(Bucket="s3t", Key="copy-dst", UploadId=upload, PartNumber=1, CopySource="s3t/copy-src",
                                CopySourceRange=f"bytes=0-{cut - 1}")["CopyPartResult"]["ETag"],
            s3.upload_part_copy(Bucket="s3t", Key="copy-dst", UploadId=upload, PartNumber=2, CopySource="s3t/copy-src",
                                CopySourceRange=f"bytes={cut}-{len(data) - 1}")["CopyPartResult"]["ETag"]]
    listing = [{"PartNumber": n + 1, "ETag": t} for n, t in enumerate(tags)]
    s3.complete_multipart_upload(Bucket="s3t", Key="copy-dst", UploadId=upload, MultipartUpload={"Parts": listing})
    assert s3.get_object(Bucket="s3t", Key="copy-dst")["Body"].read() == data
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=SMALL_TRACT, multipart_chunksize=SMALL_TRACT)
    s3.upload_fileobj(io.BytesIO(data), "s3t", "managed", Config=config)
    out = io.BytesIO()
    s3.download_fileobj("s3t", "managed", out, Config=config)
    assert out.getvalue() == data


class _Signer(S3SigV4Auth):
    """botocore's signer, keeping the x-amz-content-sha256 the test chose (a streaming mode, a wrong hash)."""

    def payload(self, request: AWSRequest) -> str:
        return str(request.context.get("payload") or super().payload(request))


def _raw(cluster: LocalCluster, method: str, path: str, body: bytes, headers: dict[str, str],
         key: tuple[str, str] | None = None) -> httpx.Response:
    """A request signed by botocore's SigV4 signer with the headers given (x-amz-content-sha256 among them)."""
    access, secret = key or cluster.s3_credentials()
    request = AWSRequest(method=method, url=cluster.s3_url + path, data=body, headers=headers)
    request.context["payload"] = headers.get("x-amz-content-sha256")
    _Signer(Credentials(access, secret), "s3", "us-east-1").add_auth(request)
    prepared = request.prepare()
    return httpx.request(method, prepared.url, content=body, headers=dict(prepared.headers.items()), timeout=30)


def test_aws_chunked_upload_with_trailing_checksum(cluster: LocalCluster, s3: Any) -> None:
    payload = random.Random(3).randbytes(SMALL_TRACT + 1000)

    def chunked(crc: int) -> bytes:
        out = b""
        for i in range(0, len(payload), 64 * 1024):
            piece = payload[i:i + 64 * 1024]
            out += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        return out + f"0\r\nx-amz-checksum-crc32:{base64.b64encode(crc.to_bytes(4, 'big')).decode()}\r\n\r\n".encode()

    headers = {"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER", "content-encoding": "aws-chunked",
               "x-amz-trailer": "x-amz-checksum-crc32", "x-amz-decoded-content-length": str(len(payload))}
    bad = _raw(cluster, "PUT", "/s3t/chunked", chunked(zlib.crc32(payload) ^ 1), headers)
    assert bad.status_code == 400 and b"<Code>BadDigest</Code>" in bad.content
    with pytest.raises(ClientError):
        s3.head_object(Bucket="s3t", Key="chunked")  # a refused upload stores nothing
    good = _raw(cluster, "PUT", "/s3t/chunked", chunked(zlib.crc32(payload)), headers)
    assert good.status_code == 200, good.text
    assert s3.get_object(Bucket="s3t", Key="chunked")["Body"].read() == payload
    wrong = _raw(cluster, "PUT", "/s3t/x", b"abc", {"x-amz-content-sha256": hashlib.sha256(b"abd").hexdigest()})
    assert wrong.status_code == 400 and b"XAmzContentSHA256Mismatch" in wrong.content


def test_refusals_are_s3_xml(cluster: LocalCluster, s3: Any) -> None:
    anonymous = _client(cluster, config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))
    _refused(403, "AccessDenied", anonymous.list_buckets)
    _refused(403, "AccessDenied", anonymous.get_object, Bucket="s3t", Key="cond")
    access, secret = cluster.s3_credentials()
    _refused(403, "SignatureDoesNotMatch", _client(cluster, (access, secret[:-1] + "x")).list_buckets)
    _refused(403, "InvalidAccessKeyId", _client(cluster, ("FDSNOSUCHKEY00000000", secret)).list_buckets)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "s3t", "Key": "cond"}, ExpiresIn=1)
    time.sleep(1.1)
    expired = httpx.get(url, timeout=10)
    assert expired.status_code == 403 and b"expired" in expired.content
    v4 = _client(cluster, config=Config(signature_version="s3v4", retries={"max_attempts": 1}))
    put_url = v4.generate_presigned_url("put_object", Params={"Bucket": "s3t", "Key": "presigned"}, ExpiresIn=60)
    assert httpx.put(put_url, content=b"via url", timeout=10).status_code == 200
    assert httpx.get(v4.generate_presigned_url("get_object", Params={"Bucket": "s3t", "Key": "presigned"}),
                     timeout=10).content == b"via url"
    for method, path, body in (("POST", "/s3t?delete", b"<Delete><Object>"), ("POST", "/s3t?delete", b""),
                               ("PUT", "/s3t-newbucket", b"<nope/>")):
        resp = _raw(cluster, method, path, body, {"x-amz-content-sha256": hashlib.sha256(body).hexdigest()})
        assert resp.status_code == 400 and b"<Code>MalformedXML</Code>" in resp.content, resp.text
    for path, status, code in (("/s3t?policy", 501, "NotImplemented"), ("/s3t?max-keys=x", 400, "InvalidArgument")):
        resp = _raw(cluster, "GET", path, b"", {"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
        assert resp.status_code == status and f"<Code>{code}</Code>".encode() in resp.content, resp.text
    resp = httpx.post(cluster.s3_url + "/", timeout=10)
    assert resp.status_code in (403, 405) and resp.headers["content-type"] == "application/xml"


def test_read_only_and_deleted_keys(cluster: LocalCluster, s3: Any) -> None:
    reader = _client(cluster, cluster.s3_key(read_only=True))
    assert reader.get_object(Bucket="s3t", Key="cond")["Body"].read() == b"two"
    _refused(403, "AccessDenied", reader.put_object, Bucket="s3t", Key="ro", Body=b"no")
    _refused(403, "AccessDenied", reader.delete_object, Bucket="s3t", Key="cond")
    key = cluster.s3_key()
    writer = _client(cluster, key)
    writer.put_object(Bucket="s3t", Key="by-second-key", Body=b"ok")
    with cluster.sync_client() as fds:
        from fds.s3keys import delete_key
        fds._loop.run(delete_key(fds._client, key[0]))
    deadline = time.monotonic() + 10
    while True:  # the server trusts a looked-up key for --key-cache-seconds (0.3 here)
        try:
            writer.list_buckets()
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "InvalidAccessKeyId"
            break
        assert time.monotonic() < deadline, "a deleted key was still admitted after 10 s"
        time.sleep(0.1)


def test_abandoned_uploads_are_swept_by_a_second_server(cluster: LocalCluster, s3: Any, tmp_path: Path) -> None:
    upload = s3.create_multipart_upload(Bucket="s3t", Key="abandoned")["UploadId"]
    s3.upload_part(Bucket="s3t", Key="abandoned", UploadId=upload, PartNumber=1, Body=b"x" * 1000)
    second = Child("s3", "s3-sweeper", "", ["s3", "--metaserver", cluster.metaserver_url, "--port", "0",
                                            "--upload-expiry", "0.5", "--sweep-interval", "0.3",
                                            "--secret-file", str(cluster.secret_file)])
    second.start(log=tmp_path / "s3-sweeper.log", ready_file=tmp_path / "s3-sweeper.ready")
    try:
        wait_ready([second])
        other = boto3.client("s3", endpoint_url=second.url, aws_access_key_id=cluster.s3_credentials()[0],
                             aws_secret_access_key=cluster.s3_credentials()[1], region_name="us-east-1",
                             config=_CONFIG)
        assert other.head_object(Bucket="s3t", Key="cond")["ContentLength"] == 3  # side by side, same keys
        deadline = time.monotonic() + 30
        while any(u["UploadId"] == upload for u in s3.list_multipart_uploads(Bucket="s3t").get("Uploads", [])):
            assert time.monotonic() < deadline, "the abandoned upload was not aborted within 30 s"
            time.sleep(0.2)
        _refused(404, "NoSuchUpload", s3.list_parts, Bucket="s3t", Key="abandoned", UploadId=upload)
    finally:
        assert second.proc is not None
        second.proc.terminate()
        second.proc.wait(15)


def test_head_object_takes_a_range(s3: Any) -> None:
    data = random.Random(9).randbytes(SMALL_TRACT + 500)
    s3.put_object(Bucket="s3t", Key="head-range", Body=data)
    head = s3.head_object(Bucket="s3t", Key="head-range", Range="bytes=0-99")
    assert head["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert head["ContentLength"] == 100 and head["ContentRange"] == f"bytes 0-99/{len(data)}"
    assert s3.head_object(Bucket="s3t", Key="head-range")["ContentLength"] == len(data)
    _refused(416, "416", s3.head_object, Bucket="s3t", Key="head-range", Range=f"bytes={len(data)}-")


def test_streamed_puts_refused_mid_body_keep_the_old_object(cluster: LocalCluster, s3: Any) -> None:
    # A PUT's blob is created while its body arrives and its tracts are written as they fill; a refusal found
    # only at the end (a digest) or by the bucket check alongside must leave the key as it was.
    for size in (SMALL_TRACT // 3, SMALL_TRACT, 2 * SMALL_TRACT + 7):
        key = f"streamed-{size}"
        old = random.Random(size).randbytes(size)
        assert s3.put_object(Bucket="s3t", Key=key, Body=old)["ETag"] == f'"{hashlib.md5(old).hexdigest()}"'
        new = random.Random(size + 1).randbytes(size)
        wrong_md5 = base64.b64encode(hashlib.md5(old).digest()).decode()
        _refused(400, "BadDigest", s3.put_object, Bucket="s3t", Key=key, Body=new, ContentMD5=wrong_md5)
        wrong_sha = _raw(cluster, "PUT", f"/s3t/{key}", new,
                         {"x-amz-content-sha256": hashlib.sha256(old).hexdigest()})
        assert wrong_sha.status_code == 400 and b"XAmzContentSHA256Mismatch" in wrong_sha.content
        assert s3.get_object(Bucket="s3t", Key=key)["Body"].read() == old
        _refused(404, "NoSuchBucket", s3.put_object, Bucket="s3t-missing", Key=key, Body=new)
        put = s3.put_object(Bucket="s3t", Key=key, Body=new, ChecksumAlgorithm="CRC32")
        assert put["ETag"] == f'"{hashlib.md5(new).hexdigest()}"'
        assert s3.get_object(Bucket="s3t", Key=key)["Body"].read() == new


def test_s3_requests_are_counted_and_carry_request_ids(cluster: LocalCluster, s3: Any) -> None:
    resp = _raw(cluster, "PUT", "/s3t/counted", b"abc",
                {"x-amz-content-sha256": hashlib.sha256(b"abc").hexdigest(), "x-request-id": "s3-test-id-1"})
    assert resp.status_code == 200
    assert resp.headers["x-request-id"] == resp.headers["x-amz-request-id"] == "s3-test-id-1"
    missing = _raw(cluster, "GET", "/s3t/no-such-key", b"", {"x-amz-content-sha256": hashlib.sha256(b"").hexdigest()})
    assert missing.status_code == 404 and missing.headers["x-request-id"]
    metrics = httpx.get(cluster.s3_url + "/metrics", headers=cluster.headers(), timeout=10)
    assert metrics.status_code == 200
    assert 'operation="PUT S3 PutObject",status="200"' in metrics.text
    assert 'operation="GET S3 GetObject",status="404"' in metrics.text
