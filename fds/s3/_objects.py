"""Bucket and object operations: S3 requests turned into fds's names, bodies streamed tract by tract.

- **PutObject** streams the body into a fresh blob as it arrives: the blob is created (at its full size
  and length) while the first bytes come in, each tract is written as soon as it is full, up to
  ``max_in_flight`` in flight, and the digests are computed 2 MiB at a time on a worker thread as the
  bytes arrive. The key switches to the blob (:meth:`fds.client.Bucket.link`) only once every tract is
  durable and every digest matched. A failed or refused upload deletes its blob: the key keeps its old
  object. A body of at most :data:`fds.names.INLINE_MAX` bytes is read whole, checked, and stored inline
  in its name record instead: one cluster round trip (the switch), no blob.
- **GetObject** looks the name up once and streams the tracts a range needs straight from the tract
  servers, many in flight, never the whole object in memory; an inline object's bytes come with the lookup.
- **CopyObject** copies tract to tract between tract servers (:meth:`fds.client.Bucket.copy`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from urllib.parse import quote, unquote

from fds.client import Blob, Bucket, FDSError, KeyNotFound, ObjectInfo, ObjectReader, PreconditionFailed
from fds.names import INLINE_MAX, check_bucket, check_key, meta_header_text, meta_header_value
from fds.ranges import parse_range, resolve_range
from fds.s3._app import Request, Response, S3Server, named, xml_response
from fds.s3._body import Body, Digests, HashChain, Window, cut_tracts
from fds.s3._xml import MAX_XML_BODY, S3Error, child_text, children, document, esc, iso_time, parse_xml
from fds.s3keys import SYSTEM_BUCKET

__all__ = [
    "list_buckets", "create_bucket", "delete_bucket", "head_bucket", "get_location", "get_versioning", "get_acl",
    "list_objects", "delete_objects", "put_object", "get_object", "head_object", "delete_object",
    "stream_to_blob", "new_blob_from", "object_headers", "user_meta", "write_conditions", "discard",
]

_META = "x-amz-meta-"
_META_BYTES = 2048
"""S3's limit on an object's user metadata: names and values together, in UTF-8."""
_OWNER = "<Owner><ID>fds</ID><DisplayName>fds</DisplayName></Owner>"
_STORED_HEADERS = ("content-type",)


# -- buckets --------------------------------------------------------------------------------
@named("ListBuckets")
async def list_buckets(s3: S3Server, req: Request) -> Response:
    buckets = [b for b in await s3.fds.list_buckets() if b.name != SYSTEM_BUCKET]
    parts = [_OWNER, "<Buckets>"]
    parts += [f"<Bucket><Name>{esc(b.name)}</Name><CreationDate>{iso_time(b.created)}</CreationDate></Bucket>"
              for b in buckets]
    parts.append("</Buckets>")
    return xml_response(document("ListAllMyBucketsResult", parts))


@named("CreateBucket")
async def create_bucket(s3: S3Server, req: Request) -> Response:
    body = await req.body().read_all(MAX_XML_BODY)
    if body.strip():
        config = parse_xml(body, "CreateBucketConfiguration")
        child_text(config, "LocationConstraint")  # any region is accepted: fds has one
    await s3.fds.create_bucket(req.bucket)
    return Response(200, {"location": f"/{req.bucket}"})


@named("DeleteBucket")
async def delete_bucket(s3: S3Server, req: Request) -> Response:
    await s3.fds.delete_bucket(req.bucket)
    return Response(204)


@named("HeadBucket")
async def head_bucket(s3: S3Server, req: Request) -> Response:
    await s3.fds.bucket(req.bucket).info()
    return Response(200, {"x-amz-bucket-region": s3.config.region})


@named("GetBucketLocation")
async def get_location(s3: S3Server, req: Request) -> Response:
    await s3.fds.bucket(req.bucket).info()
    region = "" if s3.config.region == "us-east-1" else s3.config.region
    return xml_response(document("LocationConstraint", [esc(region)]))


@named("GetBucketVersioning")
async def get_versioning(s3: S3Server, req: Request) -> Response:
    await s3.fds.bucket(req.bucket).info()
    return xml_response(document("VersioningConfiguration", []))


@named("GetBucketAcl")
async def get_acl(s3: S3Server, req: Request) -> Response:
    await s3.fds.bucket(req.bucket).info()
    grant = ('<Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser">'
             "<ID>fds</ID><DisplayName>fds</DisplayName></Grantee><Permission>FULL_CONTROL</Permission></Grant>")
    return xml_response(document("AccessControlPolicy", [_OWNER, f"<AccessControlList>{grant}</AccessControlList>"]))


# -- listing --------------------------------------------------------------------------------
def _max_keys(req: Request) -> int:
    text = req.query.get("max-keys", "1000")
    if not text.isdigit():
        raise S3Error("InvalidArgument", f"max-keys must be a whole number from 0 to 1000, not {text[:20]!r}")
    return min(int(text), 1000)


@named("ListObjects")
async def list_objects(s3: S3Server, req: Request) -> Response:
    q = req.query
    v2 = q.get("list-type") == "2"
    encoding = q.get("encoding-type")
    if encoding not in (None, "url"):
        raise S3Error("InvalidArgument", "encoding-type may only be 'url'")

    def enc(text: str) -> str:
        return esc(quote(text, safe="/") if encoding else text)

    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    max_keys = _max_keys(req)
    token = q.get("continuation-token") if v2 else None
    after = q.get("start-after", "") if v2 else q.get("marker", "")
    if v2 and "continuation-token" in q and not token:
        raise S3Error("InvalidArgument", "the continuation token provided is incorrect")
    bucket = s3.fds.bucket(req.bucket)
    if max_keys == 0:
        await bucket.info()
        objects, prefixes, next_token = [], [], None
    else:
        page = await bucket.list(prefix, delimiter=delimiter, start_after=after, page_token=token or None,
                                 limit=max_keys)
        objects, prefixes, next_token = page.objects, page.prefixes, page.next_token
    truncated = next_token is not None
    parts = [f"<Name>{esc(req.bucket)}</Name><Prefix>{enc(prefix)}</Prefix><MaxKeys>{max_keys}</MaxKeys>"]
    if delimiter:
        parts.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
    if encoding:
        parts.append("<EncodingType>url</EncodingType>")
    parts.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    if v2:
        parts.append(f"<KeyCount>{len(objects) + len(prefixes)}</KeyCount>")
        if token:
            parts.append(f"<ContinuationToken>{esc(token)}</ContinuationToken>")
        if next_token:
            parts.append(f"<NextContinuationToken>{esc(next_token)}</NextContinuationToken>")
        if "start-after" in q:
            parts.append(f"<StartAfter>{enc(after)}</StartAfter>")
    else:
        parts.append(f"<Marker>{enc(after)}</Marker>")
        if truncated:
            last = max([o.key for o in objects[-1:]] + prefixes[-1:])
            parts.append(f"<NextMarker>{enc(last)}</NextMarker>")
    owner = _OWNER if not v2 or q.get("fetch-owner") == "true" else ""
    for o in objects:
        parts.append(f"<Contents><Key>{enc(o.key)}</Key><LastModified>{iso_time(o.mtime)}</LastModified>"
                     f"<ETag>&quot;{esc(o.etag)}&quot;</ETag><Size>{o.size}</Size>{owner}"
                     "<StorageClass>STANDARD</StorageClass></Contents>")
    parts += [f"<CommonPrefixes><Prefix>{enc(p)}</Prefix></CommonPrefixes>" for p in prefixes]
    return xml_response(document("ListBucketResult", parts))


# -- deleting many ------------------------------------------------------------------------------
@named("DeleteObjects")
async def delete_objects(s3: S3Server, req: Request) -> Response:
    body = await req.body().read_all(MAX_XML_BODY)
    root = parse_xml(body, "Delete")
    quiet = (child_text(root, "Quiet") or "").strip().lower() == "true"
    keys = []
    for item in children(root, "Object"):
        key = child_text(item, "Key")
        if not key:
            raise S3Error("MalformedXML", "every <Object> of a <Delete> needs a <Key>")
        keys.append(key)
    if not keys:
        raise S3Error("MalformedXML", "a <Delete> document must name at least one <Object>")
    if len(keys) > 1000:
        raise S3Error("MalformedXML", f"a <Delete> may name at most 1000 objects, not {len(keys)}")
    bucket = s3.fds.bucket(req.bucket)
    await bucket.info()
    slots = asyncio.Semaphore(32)

    async def one(key: str) -> str:
        async with slots:
            try:
                check_key(key)
                await bucket.delete(key)
            except KeyNotFound:
                pass  # S3 reports a missing key as deleted
            except FDSError as exc:
                code = "InvalidArgument" if exc.status < 500 else "InternalError"
                return (f"<Error><Key>{esc(key)}</Key><Code>{code}</Code><Message>{esc(exc.message)}</Message>"
                        "</Error>")
            return "" if quiet else f"<Deleted><Key>{esc(key)}</Key></Deleted>"

    return xml_response(document("DeleteResult", await asyncio.gather(*(one(k) for k in keys))))


# -- objects ------------------------------------------------------------------------------------
def user_meta(req: Request) -> dict[str, str]:
    """The ``x-amz-meta-*`` headers (names lower-cased, without the prefix; RFC 2047 values decoded)."""
    out = {}
    for name, value in req.headers.items():
        if name.startswith(_META) and len(name) > len(_META):
            out[name[len(_META):]] = meta_header_text(value)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in out.items())
    if size > _META_BYTES:
        raise S3Error("MetadataTooLarge", f"the user metadata is {size} bytes (names and values, UTF-8); the "
                      f"limit is {_META_BYTES}", 400)
    return out


def object_headers(info: ObjectInfo) -> dict[str, str]:
    """ETag, Last-Modified, type, length and metadata headers of an object."""
    headers = {"etag": f'"{info.etag}"', "last-modified": formatdate(info.mtime, usegmt=True),
               "accept-ranges": "bytes", "content-type": info.content_type or "binary/octet-stream",
               "content-length": str(info.size)}
    for name, value in info.meta.items():
        headers[_META + name] = meta_header_value(value)
    return headers


def write_conditions(req: Request) -> tuple[str | None, bool]:
    """``(if_match, if_none_match)`` of a write: ``If-Match: ETAG`` and ``If-None-Match: *``."""
    if_match = req.headers.get("if-match")
    if_none = req.headers.get("if-none-match")
    if if_none is not None and if_none.strip() != "*":
        raise S3Error("NotImplemented", "on a write, If-None-Match takes only '*' (create the key only if it is "
                      "free)", 501)
    if if_match is not None:
        if_match = if_match.strip().removeprefix("W/").strip('"')
        if "," in if_match or not if_match:
            raise S3Error("InvalidArgument", "If-Match on a write takes one ETag")
    return if_match, if_none is not None


async def discard(s3: S3Server, blob: Blob) -> None:
    """Delete a blob no name refers to (an upload that failed or was refused)."""
    try:
        await s3.fds.delete_blob(blob.raw)
    except FDSError:
        pass


async def stream_to_blob(s3: S3Server, pieces: AsyncIterator[bytes | memoryview], digests: Digests,
                         blob: Blob | Awaitable[Blob], first: int, size: int) -> Blob:
    """Write ``size`` bytes of ``pieces`` into ``blob`` from tract ``first`` on (the blob is big enough), many
    tracts in flight, each hashed into ``digests`` as it arrives. ``blob`` may still be on its way (a task
    creating it while the body arrives): it is awaited when the first tract is full. Returns the blob; raises
    if anything failed (the caller then deletes the blob); the caller checks the digests
    (:meth:`Digests.finish`)."""
    tract_size = await s3.tract_size()
    chain = HashChain(digests)
    window = Window(s3.window)
    try:
        index = first
        async for buf in cut_tracts(pieces, size, tract_size, chain):
            if not isinstance(blob, Blob):
                blob = await blob
            await window.submit(blob.write_tract(index, buf))
            index += 1
        await window.drain()
        await chain.wait()
        if not isinstance(blob, Blob):
            blob = await blob
        return blob
    except BaseException:
        await window.cancel()
        chain.cancel()
        raise


async def new_blob_from(s3: S3Server, pieces: AsyncIterator[bytes | memoryview], digests: Digests, size: int,
                        *, before: Awaitable[Any] | None = None) -> Blob:
    """A fresh blob holding ``size`` bytes of ``pieces`` (hashed into ``digests``; the caller checks them and
    deletes the blob if they do not match). The blob is created, at its full size and length, while the body
    arrives: that round trip overlaps receiving. ``before`` (a check that the bucket exists, say) runs
    alongside and must pass before the first tract is written. Nothing is left behind on failure."""
    tract_size = await s3.tract_size()

    async def create() -> Blob:
        made = asyncio.ensure_future(s3.fds.create_blob(tracts=-(-size // tract_size), length=size))
        if before is not None:
            try:
                await before
            except BaseException:
                with contextlib.suppress(BaseException):
                    await discard(s3, await made)
                raise
        return await made

    creating = asyncio.ensure_future(create())
    try:
        return await stream_to_blob(s3, pieces, digests, creating, 0, size)
    except BaseException:
        # Let the creation finish (one round trip) rather than cancel it: a blob made behind a cancelled
        # request would be left with no name.
        with contextlib.suppress(BaseException):
            await discard(s3, await asyncio.shield(creating))
        raise


def _need_length(body: Body) -> int:
    if body.size is None:
        raise S3Error("MissingContentLength", "you must provide the Content-Length HTTP header", 411)
    return body.size


@named("PutObject")
async def put_object(s3: S3Server, req: Request) -> Response:
    if "x-amz-copy-source" in req.headers:
        return await _copy_object(s3, req)
    check_key(req.key)
    bucket = s3.fds.bucket(req.bucket)
    if_match, if_none_match = write_conditions(req)
    meta, content_type = user_meta(req), req.headers.get("content-type", "")
    body = req.body()
    size = _need_length(body)
    if size > 5 << 40:
        raise S3Error("EntityTooLarge", "an object may be at most 5 TiB")
    blob: Blob | None = None
    try:
        if size <= INLINE_MAX:  # small: buffered, checked, and kept inline in the name record (no blob)
            data = await body.read_all(INLINE_MAX)
            info = await bucket.put(req.key, data, content_type=content_type, meta=meta, etag=body.digests.etag,
                                    if_match=if_match, if_none_match=if_none_match)
            return Response(200, {"etag": f'"{info.etag}"'})
        tract_size = await s3.tract_size()
        # A body of more than one tract is stored only into a bucket that exists (a missing one for a one-tract
        # body is found when the key switches, without the extra round trip).
        check = bucket.info() if size > tract_size else None
        blob = await new_blob_from(s3, body.pieces(), body.digests, size, before=check)
        etag = body.digests.finish(body.trailers())
        info = await bucket.link(req.key, blob, size, content_type=content_type, meta=meta, etag=etag,
                                 if_match=if_match, if_none_match=if_none_match)
    except BaseException as exc:
        if blob is not None:
            await discard(s3, blob)
        if isinstance(exc, PreconditionFailed) and if_match is not None and not await bucket.exists(req.key):
            # S3: If-Match on a key with no object is 404 NoSuchKey, not 412 (fds's names answer 412 for both).
            raise S3Error("NoSuchKey", f"If-Match names an ETag, but there is no object {req.key[:200]!r} to "
                          "match; leave If-Match out to create it", 404) from None
        raise
    return Response(200, {"etag": f'"{info.etag}"'})


def _copy_source(req: Request) -> tuple[str, str]:
    raw = req.headers["x-amz-copy-source"]
    source, _, version = raw.partition("?")
    if version and version.removeprefix("versionId=") not in ("", "null"):
        raise S3Error("NoSuchVersion", "fds keeps one version of each object; the version named does not exist", 404)
    bucket, _, key = unquote(source).lstrip("/").partition("/")
    if not bucket or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be BUCKET/KEY (URL-encoded)")
    try:
        check_bucket(bucket)
    except FDSError:
        raise S3Error("InvalidArgument", f"x-amz-copy-source names the invalid bucket {bucket[:80]!r}") from None
    if bucket == SYSTEM_BUCKET:
        raise S3Error("AccessDenied", f"bucket {SYSTEM_BUCKET} is not served over S3", 403)
    return bucket, key


def copy_conditions(req: Request, info: ObjectInfo) -> None:
    """The ``x-amz-copy-source-if-*`` conditions on the source; PreconditionFailed if one does not hold."""
    _check_conditions(info, req.headers.get("x-amz-copy-source-if-match"),
                      req.headers.get("x-amz-copy-source-if-none-match"),
                      req.headers.get("x-amz-copy-source-if-modified-since"),
                      req.headers.get("x-amz-copy-source-if-unmodified-since"), copy=True)


async def _copy_object(s3: S3Server, req: Request) -> Response:
    check_key(req.key)
    source_bucket, source_key = _copy_source(req)
    info = await s3.fds.bucket(source_bucket).head(source_key)
    copy_conditions(req, info)
    directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE")
    if directive == "COPY" and (source_bucket, source_key) == (req.bucket, req.key):
        raise S3Error("InvalidRequest", "this copy request is illegal because it is trying to copy an object to "
                      "itself without changing the object's metadata, storage class, website redirect location "
                      "or encryption attributes")
    _, if_none_match = write_conditions(req)
    replace = directive == "REPLACE"
    result = await s3.fds.bucket(req.bucket).copy(
        source_key, req.key, source_bucket=source_bucket, if_none_match=if_none_match, source_info=info,
        content_type=req.headers.get("content-type", "") if replace else None,
        meta=user_meta(req) if replace else None)
    return xml_response(document("CopyObjectResult", [f"<LastModified>{iso_time(result.mtime)}</LastModified>"
                                                      f"<ETag>&quot;{esc(result.etag)}&quot;</ETag>"]))


def _http_time(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None  # S3 ignores a date it cannot read


def _etag_matches(header: str, info: ObjectInfo) -> bool:
    tags = [t.strip().removeprefix("W/").strip('"') for t in header.split(",")]
    return "*" in tags or info.etag in tags


def _check_conditions(info: ObjectInfo, if_match: str | None, if_none_match: str | None,
                      if_modified_since: str | None, if_unmodified_since: str | None, *, copy: bool = False) -> bool:
    """RFC 9110's order, as S3 applies it. False: 304 Not Modified (GET/HEAD); PreconditionFailed raised."""
    modified = int(info.mtime)
    failed = S3Error("PreconditionFailed", "at least one of the pre-conditions you specified did not hold", 412,
                     extra={"Condition": "If-Match" if if_match is not None else "If-Unmodified-Since"})
    if if_match is not None:
        if not _etag_matches(if_match, info):
            raise failed
    elif (since := _http_time(if_unmodified_since)) is not None and modified > since:
        raise failed
    if if_none_match is not None:
        if _etag_matches(if_none_match, info):
            if copy:
                raise failed
            return False
    elif (since := _http_time(if_modified_since)) is not None and modified <= since:
        if copy:
            raise failed
        return False
    return True


async def _read_conditions(s3: S3Server, req: Request, *, read: bool = False
                           ) -> tuple[ObjectInfo, ObjectReader | None, Response | None]:
    """The object (and with ``read``, a reader of it: an inline object's bytes come with the one lookup), or the
    304 its conditions answer."""
    check_key(req.key)
    bucket = s3.fds.bucket(req.bucket)
    reader = await bucket.reader(req.key) if read else None
    info = reader.info if reader is not None else await bucket.head(req.key)
    h = req.headers
    if not _check_conditions(info, h.get("if-match"), h.get("if-none-match"), h.get("if-modified-since"),
                             h.get("if-unmodified-since")):
        return info, None, Response(304, {"etag": f'"{info.etag}"',
                                          "last-modified": formatdate(info.mtime, usegmt=True)})
    return info, reader, None


_OVERRIDES = {"response-content-type": "content-type", "response-content-language": "content-language",
              "response-expires": "expires", "response-cache-control": "cache-control",
              "response-content-disposition": "content-disposition", "response-content-encoding": "content-encoding"}


def _overrides(req: Request, headers: dict[str, str]) -> None:
    for param, header in _OVERRIDES.items():
        if param in req.query:
            headers[header] = req.query[param]


def _selected(req: Request, info: ObjectInfo, headers: dict[str, str]) -> tuple[int, int, int]:
    """``(start, end, status)`` of the bytes a GET or HEAD answers with (``Range`` applied to ``headers``)."""
    spec = parse_range(req.headers.get("range"))
    if spec is None:
        return 0, info.size, 200
    selected = resolve_range(spec, info.size)
    if selected is None:
        raise S3Error("InvalidRange", "the requested range is not satisfiable", 416,
                      headers={"content-range": f"bytes */{info.size}"},
                      extra={"RangeRequested": req.headers.get("range", "")[:200],
                             "ActualObjectSize": str(info.size)})
    headers["content-range"] = selected.content_range(info.size)
    headers["content-length"] = str(selected.end - selected.start)
    return selected.start, selected.end, 206


@named("HeadObject")
async def head_object(s3: S3Server, req: Request) -> Response:
    info, _, early = await _read_conditions(s3, req)
    if early is not None:
        return early
    headers = object_headers(info)
    _overrides(req, headers)
    _, _, status = _selected(req, info, headers)  # HeadObject takes Range too: 206 and the range's length
    return Response(status, headers)


@named("GetObject")
async def get_object(s3: S3Server, req: Request) -> Response:
    info, reader, early = await _read_conditions(s3, req, read=True)
    if early is not None:
        return early
    assert reader is not None
    headers = object_headers(info)
    _overrides(req, headers)
    start, end, status = _selected(req, info, headers)
    if start >= end:
        return Response(status, headers)

    async def stream() -> AsyncIterator[bytes | memoryview]:
        async for _, piece in reader.iter_ranges(start, end, window=s3.window):
            yield piece if isinstance(piece, (bytes, memoryview)) else memoryview(piece)

    return Response(status, headers, stream=stream())


@named("DeleteObject")
async def delete_object(s3: S3Server, req: Request) -> Response:
    check_key(req.key)
    bucket: Bucket = s3.fds.bucket(req.bucket)
    if_match = req.headers.get("if-match")
    try:
        await bucket.delete(req.key, if_match=if_match.strip().strip('"') if if_match else None)
    except KeyNotFound:
        await bucket.info()  # a missing bucket is an error; a missing key is not (S3 answers 204)
    return Response(204)
