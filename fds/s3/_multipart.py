"""Multipart uploads, where parts of one tract land as the tracts of the object without being copied again.

**Layout.** CreateMultipartUpload makes an *upload blob* of 10,000 tracts (S3's most parts; tract
numbers are only reserved, nothing is written). Part N of at most one tract is written as tract N-1 of
that blob, straight to its replicas. A larger part goes to a blob of its own. Each upload and each
part has a record in the reserved bucket (:data:`fds.s3keys.SYSTEM_BUCKET`), replicated like any name:

- ``up/BUCKET/ID``: the upload (key, upload blob, content type, metadata) as JSON;
- ``up/BUCKET/ID/NNNNN``: part N, its size and MD5 (its ETag) in the record; a part of its own blob is
  that blob's name, so a part uploaded again replaces it and the old blob is deleted with the name.

**Completing.** When the parts are 1..N, every one in the upload blob, and all but the last exactly one
tract (what the aws cli and boto3 send with 8 MiB parts on 8 MiB tracts), the object's key is pointed
at the upload blob itself: nothing is copied. Any other layout is assembled into a fresh blob, read
and written tract by tract with many in flight (so other part sizes come out right, at the cost of one
pass over the bytes). The ETag is S3's: the MD5 of the parts' MD5s, then ``-N``.

**Abandoned uploads** are aborted by :func:`sweep_once` (each S3 server runs it every
``sweep_interval`` seconds) once older than ``upload_expiry``: their records and blobs are deleted.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fds.client import Blob, Bucket, BucketNotFound, FDSError, KeyNotFound, ObjectInfo, ObjectReader
from fds.errors import BlobNotFound, PastEnd
from fds.guid import parse_guid
from fds.names import check_key
from fds.ranges import parse_range, resolve_range
from fds.s3._app import Request, Response, S3Server, named, xml_response
from fds.s3._body import Digests
from fds.s3._objects import (
    _copy_source,
    copy_conditions,
    discard,
    new_blob_from,
    stream_to_blob,
    user_meta,
    write_conditions,
)
from fds.s3._xml import MAX_XML_BODY, S3Error, child_text, children, document, esc, iso_time, parse_xml
from fds.s3keys import SYSTEM_BUCKET

__all__ = ["create_upload", "upload_part", "list_parts", "complete_upload", "abort_upload", "list_uploads",
           "sweep_once", "MAX_PARTS"]

MAX_PARTS = 10_000
_PREFIX = "up/"
_OWNER = "<Owner><ID>fds</ID><DisplayName>fds</DisplayName></Owner>"
_INITIATOR = "<Initiator><ID>fds</ID><DisplayName>fds</DisplayName></Initiator>"


@dataclass(frozen=True)
class Upload:
    """A multipart upload's record."""

    id: str
    bucket: str
    key: str
    blob: str
    incarnation: int
    content_type: str
    meta: dict[str, str]
    created: float

    def record_key(self) -> str:
        return f"{_PREFIX}{self.bucket}/{self.id}"

    def part_key(self, number: int) -> str:
        return f"{_PREFIX}{self.bucket}/{self.id}/{number:05d}"


@dataclass(frozen=True)
class Part:
    number: int
    size: int
    etag: str
    mtime: float
    in_upload_blob: bool
    info: ObjectInfo


def _system(s3: S3Server) -> Bucket:
    return s3.fds.bucket(SYSTEM_BUCKET)


def _no_upload(upload_id: str) -> S3Error:
    return S3Error("NoSuchUpload", "the specified multipart upload does not exist: it may have been aborted or "
                   "completed", 404, extra={"UploadId": upload_id[:100]})


async def _upload(s3: S3Server, req: Request, *, fresh: bool = False) -> Upload:
    """The upload a request names. Records never change, so they are cached; ``fresh`` checks the record is
    still there (another S3 server may have completed or aborted the upload): parts, list, complete, abort."""
    upload_id = req.query.get("uploadId", "")
    if not upload_id.isalnum() or len(upload_id) > 64:
        raise _no_upload(upload_id)
    found = s3.uploads.get(upload_id)
    if found is not None and fresh:
        try:
            await _system(s3).head(found.record_key())
        except (KeyNotFound, BucketNotFound):
            s3.uploads.pop(upload_id, None)
            raise _no_upload(upload_id) from None
    if found is None:
        try:
            raw = await _system(s3).get(f"{_PREFIX}{req.bucket}/{upload_id}")
        except (KeyNotFound, BucketNotFound):
            raise _no_upload(upload_id) from None
        found = Upload(id=upload_id, **orjson.loads(raw))
        if len(s3.uploads) > 10_000:
            s3.uploads.clear()
        s3.uploads[upload_id] = found
    if found.bucket != req.bucket or found.key != req.key:
        raise _no_upload(upload_id)
    return found


# -- create ----------------------------------------------------------------------------------------
@named("CreateMultipartUpload")
async def create_upload(s3: S3Server, req: Request) -> Response:
    check_key(req.key)
    await s3.fds.bucket(req.bucket).info()
    meta, content_type = user_meta(req), req.headers.get("content-type", "")
    blob = await s3.fds.create_blob()
    try:
        await blob.extend(MAX_PARTS)
        upload = Upload(id=f"{int(time.time() * 1000):012x}{secrets.token_hex(12)}", bucket=req.bucket, key=req.key,
                        blob=blob.guid, incarnation=blob.incarnation, content_type=content_type, meta=meta,
                        created=time.time())
        record = {k: v for k, v in upload.__dict__.items() if k != "id"}
        await _system(s3).put(upload.record_key(), orjson.dumps(record), content_type="application/json",
                              meta={"key": req.key}, if_none_match=True)
    except BaseException:
        await discard(s3, blob)
        raise
    s3.uploads[upload.id] = upload
    return xml_response(document("InitiateMultipartUploadResult", [
        f"<Bucket>{esc(req.bucket)}</Bucket><Key>{esc(req.key)}</Key><UploadId>{upload.id}</UploadId>"]))


# -- parts ---------------------------------------------------------------------------------------
def _part_number(req: Request) -> int:
    text = req.query.get("partNumber", "")
    if not text.isdigit() or not 1 <= int(text) <= MAX_PARTS:
        raise S3Error("InvalidArgument", f"partNumber must be a whole number from 1 to {MAX_PARTS}")
    return int(text)


def _upload_blob(s3: S3Server, upload: Upload) -> Blob:
    return Blob(s3.fds, parse_guid(upload.blob), upload.incarnation)


@named("UploadPart")
async def upload_part(s3: S3Server, req: Request) -> Response:
    number = _part_number(req)
    upload = await _upload(s3, req)
    if "x-amz-copy-source" in req.headers:
        return await _upload_part_copy(s3, req, upload, number)
    body = req.body()
    if body.size is None:
        raise S3Error("MissingContentLength", "you must provide the Content-Length HTTP header", 411)
    tract_size = await s3.tract_size()
    if body.size > 5 << 30:
        raise S3Error("EntityTooLarge", "a part may be at most 5 GiB")
    try:
        if body.size <= tract_size:
            # Written over tract N-1 before the digests are checked: a part that fails them gets no record,
            # so Complete never names those bytes (a retry of the part writes the tract again).
            await stream_to_blob(s3, body.pieces(), body.digests, _upload_blob(s3, upload), number - 1, body.size)
            etag = body.digests.finish(body.trailers())
            await _system(s3).put(upload.part_key(number), b"", etag=etag,
                                  meta={"size": str(body.size), "place": "tract"})
        else:
            blob = await new_blob_from(s3, body.pieces(), body.digests, body.size)
            try:
                etag = body.digests.finish(body.trailers())
                await _system(s3).link(upload.part_key(number), blob, body.size, etag=etag,
                                       meta={"size": str(body.size), "place": "blob"})
            except BaseException:
                await discard(s3, blob)
                raise
    except (BlobNotFound, PastEnd):
        s3.uploads.pop(upload.id, None)
        raise _no_upload(upload.id) from None
    return Response(200, {"etag": f'"{etag}"'})


async def _upload_part_copy(s3: S3Server, req: Request, upload: Upload, number: int) -> Response:
    source_bucket, source_key = _copy_source(req)
    info = await s3.fds.bucket(source_bucket).head(source_key)
    copy_conditions(req, info)
    start, end = 0, info.size
    header = req.headers.get("x-amz-copy-source-range")
    if header is not None:
        spec = parse_range(header)
        selected = resolve_range(spec, info.size) if spec is not None and spec.suffix is None else None
        if selected is None or (spec is not None and spec.last is not None and spec.last >= info.size):
            raise S3Error("InvalidRange", f"x-amz-copy-source-range {header[:80]!r} is not a range bytes=FIRST-LAST "
                          f"inside the source object of {info.size} bytes", 416)
        start, end = selected.start, selected.end
    size = end - start
    tract_size = await s3.tract_size()
    reader = ObjectReader(s3.fds, info, bucket=source_bucket)  # (an inline source is looked up again, by ETag)

    async def pieces() -> AsyncIterator[bytes | memoryview]:
        async for _, piece in reader.iter_ranges(start, end, window=s3.window):
            yield piece if isinstance(piece, (bytes, memoryview)) else memoryview(piece)

    digests = Digests({}, "")
    try:
        if size <= tract_size:
            data = await reader.read_range(start, end) if size else b""
            digests.update(data)
            etag = digests.finish()
            await _upload_blob(s3, upload).write_tract(number - 1, data)
            part = await _system(s3).put(upload.part_key(number), b"", etag=etag,
                                         meta={"size": str(size), "place": "tract"})
        else:
            blob = await new_blob_from(s3, pieces(), digests, size)
            try:
                etag = digests.finish()
                part = await _system(s3).link(upload.part_key(number), blob, size, etag=etag,
                                              meta={"size": str(size), "place": "blob"})
            except BaseException:
                await discard(s3, blob)
                raise
    except (BlobNotFound, PastEnd):
        s3.uploads.pop(upload.id, None)
        raise _no_upload(upload.id) from None
    return xml_response(document("CopyPartResult", [f"<LastModified>{iso_time(part.mtime)}</LastModified>"
                                                    f"<ETag>&quot;{etag}&quot;</ETag>"]))


async def _parts(s3: S3Server, upload: Upload) -> dict[int, Part]:
    out: dict[int, Part] = {}
    prefix = upload.record_key() + "/"
    async for item in _system(s3).iter(prefix):
        if isinstance(item, str):
            continue
        number = item.key[len(prefix):]
        if number.isdigit():
            out[int(number)] = Part(int(number), int(item.meta.get("size", item.size)), item.etag, item.mtime,
                                    item.meta.get("place") == "tract", item)
    return out


@named("ListParts")
async def list_parts(s3: S3Server, req: Request) -> Response:
    upload = await _upload(s3, req, fresh=True)
    marker_text = req.query.get("part-number-marker", "0") or "0"
    max_text = req.query.get("max-parts", "1000") or "1000"
    if not marker_text.isdigit() or not max_text.isdigit():
        raise S3Error("InvalidArgument", "part-number-marker and max-parts must be whole numbers")
    marker, max_parts = int(marker_text), min(int(max_text), 1000)
    parts = sorted((p for p in (await _parts(s3, upload)).values() if p.number > marker), key=lambda p: p.number)
    shown, truncated = parts[:max_parts], len(parts) > max_parts
    out = [f"<Bucket>{esc(upload.bucket)}</Bucket><Key>{esc(upload.key)}</Key><UploadId>{upload.id}</UploadId>",
           _INITIATOR, _OWNER, "<StorageClass>STANDARD</StorageClass>",
           f"<PartNumberMarker>{marker}</PartNumberMarker>",
           f"<NextPartNumberMarker>{shown[-1].number if shown else marker}</NextPartNumberMarker>",
           f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"]
    out += [f"<Part><PartNumber>{p.number}</PartNumber><LastModified>{iso_time(p.mtime)}</LastModified>"
            f"<ETag>&quot;{p.etag}&quot;</ETag><Size>{p.size}</Size></Part>" for p in shown]
    return xml_response(document("ListPartsResult", out))


# -- complete ------------------------------------------------------------------------------------
def _requested(body: bytes) -> list[tuple[int, str]]:
    root = parse_xml(body, "CompleteMultipartUpload")
    wanted: list[tuple[int, str]] = []
    for item in children(root, "Part"):
        number, etag = child_text(item, "PartNumber"), child_text(item, "ETag")
        if number is None or not number.strip().isdigit() or etag is None:
            raise S3Error("MalformedXML", "every <Part> needs a <PartNumber> and an <ETag>")
        wanted.append((int(number), etag.strip().strip('"')))
    if not wanted:
        raise S3Error("MalformedXML", "a CompleteMultipartUpload must name at least one part")
    if any(b[0] <= a[0] for a, b in zip(wanted, wanted[1:], strict=False)):
        raise S3Error("InvalidPartOrder", "the list of parts was not in ascending order; parts must be ordered by "
                      "part number")
    return wanted


@named("CompleteMultipartUpload")
async def complete_upload(s3: S3Server, req: Request) -> Response:
    upload = await _upload(s3, req, fresh=True)
    wanted = _requested(await req.body().read_all(MAX_XML_BODY))
    if_match, if_none_match = write_conditions(req)
    stored = await _parts(s3, upload)
    chosen: list[Part] = []
    for number, etag in wanted:
        part = stored.get(number)
        if part is None or part.etag != etag:
            raise S3Error("InvalidPart", f"part {number} was not uploaded, or its ETag is not {etag[:40]!r}",
                          extra={"PartNumber": str(number), "ETag": etag[:40]})
        chosen.append(part)
    for part in chosen[:-1]:
        if part.size < s3.config.min_part_size:
            raise S3Error("EntityTooSmall", f"part {part.number} is {part.size} bytes; every part but the last must be "
                          f"at least {s3.config.min_part_size}", extra={"PartNumber": str(part.number),
                                                                          "ProposedSize": str(part.size)})
    etag = hashlib.md5(b"".join(bytes.fromhex(p.etag) for p in chosen)).hexdigest() + f"-{len(chosen)}"
    total = sum(p.size for p in chosen)
    tract_size = await s3.tract_size()
    bucket = s3.fds.bucket(upload.bucket)
    in_place = (all(p.in_upload_blob for p in chosen) and [p.number for p in chosen] == list(range(1, len(chosen) + 1))
                and all(p.size == tract_size for p in chosen[:-1]))
    options: dict[str, Any] = {"content_type": upload.content_type, "meta": upload.meta, "etag": etag,
                               "if_match": if_match, "if_none_match": if_none_match}
    if in_place:
        await bucket.link(upload.key, _upload_blob(s3, upload), total, **options)
    else:
        await _assemble(s3, upload, chosen, total, bucket, options)
    await _forget(s3, upload, stored, keep_blob=in_place)
    return xml_response(document("CompleteMultipartUploadResult", [
        f"<Location>/{esc(upload.bucket)}/{esc(upload.key)}</Location><Bucket>{esc(upload.bucket)}</Bucket>"
        f"<Key>{esc(upload.key)}</Key><ETag>&quot;{etag}&quot;</ETag>"]))


async def _assemble(s3: S3Server, upload: Upload, parts: list[Part], total: int, bucket: Bucket,
                    options: dict[str, Any]) -> None:
    """Write the parts, in order, into a fresh blob and point the key at it (a layout that is not the object)."""
    tract_size = await s3.tract_size()
    source = _upload_blob(s3, upload)
    reads: list[Callable[[], Awaitable[bytes | bytearray | memoryview]]] = []
    for part in parts:
        if part.in_upload_blob:
            reads.append(functools.partial(_tract_prefix, source, part.number - 1, part.size))
        else:
            blob = Blob(s3.fds, parse_guid(part.info.blob), part.info.incarnation)
            for index in range(-(-part.size // tract_size)):
                length = min(tract_size, part.size - index * tract_size)
                reads.append(functools.partial(_tract_prefix, blob, index, length))
    blob = await new_blob_from(s3, _ahead(reads, s3.window), Digests({}, "", md5=False), total)
    try:
        await bucket.link(upload.key, blob, total, **options)
    except BaseException:
        await discard(s3, blob)
        raise


async def _tract_prefix(blob: Blob, index: int, size: int) -> bytes | bytearray | memoryview:
    if size == 0:
        return b""
    data = await blob.read_tract(index)
    if len(data) < size:
        raise FDSError(f"tract {index} of blob {blob.guid} holds {len(data)} bytes, not the part's {size}",
                       code="length_mismatch")
    return memoryview(data)[:size] if len(data) != size else data


async def _ahead(reads: list[Callable[[], Awaitable[bytes | bytearray | memoryview]]],
                 window: int) -> AsyncIterator[bytes | memoryview]:
    """The results of ``reads`` in order, ``window`` of them running ahead."""
    pending: list[asyncio.Future[bytes | bytearray | memoryview]] = []
    position = 0
    try:
        while position < len(reads) or pending:
            while position < len(reads) and len(pending) < window:
                pending.append(asyncio.ensure_future(reads[position]()))
                position += 1
            data = await pending.pop(0)
            yield data if isinstance(data, (bytes, memoryview)) else memoryview(data)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _forget(s3: S3Server, upload: Upload, parts: dict[int, Part], *, keep_blob: bool) -> None:
    """Delete an upload's part records (their blobs go with them) and its record; its blob unless kept."""
    system = _system(s3)
    s3.uploads.pop(upload.id, None)
    try:
        await system.delete(upload.record_key())
    except KeyNotFound:
        pass
    slots = asyncio.Semaphore(16)

    async def drop(number: int) -> None:
        async with slots:
            try:
                await system.delete(upload.part_key(number))
            except KeyNotFound:
                pass

    await asyncio.gather(*(drop(n) for n in parts))
    if not keep_blob:
        try:
            named = await s3.fds.bucket(upload.bucket).head(upload.key)
        except (KeyNotFound, BucketNotFound):
            named = None
        if named is None or named.blob.replace("-", "") != upload.blob.replace("-", ""):
            await discard(s3, _upload_blob(s3, upload))


# -- abort and list --------------------------------------------------------------------------------
@named("AbortMultipartUpload")
async def abort_upload(s3: S3Server, req: Request) -> Response:
    upload = await _upload(s3, req, fresh=True)
    await _forget(s3, upload, await _parts(s3, upload), keep_blob=False)
    return Response(204)


async def _uploads_of(s3: S3Server, bucket: str) -> tuple[list[Upload], set[str]]:
    """The uploads recorded for ``bucket``, and the ids that have part records."""
    uploads: list[Upload] = []
    with_parts: set[str] = set()
    prefix = f"{_PREFIX}{bucket}/"
    async for item in _system(s3).iter(prefix, delimiter="/"):
        if isinstance(item, str):
            with_parts.add(item[len(prefix):].rstrip("/"))
            continue
        upload_id = item.key[len(prefix):]
        key = item.meta.get("key")
        if key is None:
            continue
        uploads.append(Upload(id=upload_id, bucket=bucket, key=key, blob="", incarnation=0,
                              content_type="", meta={}, created=item.mtime))
    return uploads, with_parts


@named("ListMultipartUploads")
async def list_uploads(s3: S3Server, req: Request) -> Response:
    await s3.fds.bucket(req.bucket).info()
    q = req.query
    prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
    key_marker, id_marker = q.get("key-marker", ""), q.get("upload-id-marker", "")
    max_text = q.get("max-uploads", "1000") or "1000"
    if not max_text.isdigit():
        raise S3Error("InvalidArgument", "max-uploads must be a whole number")
    max_uploads = min(int(max_text), 1000)
    uploads, _ = await _uploads_of(s3, req.bucket)
    uploads.sort(key=lambda u: (u.key.encode(), u.created, u.id))
    entries: list[str] = []
    prefixes: list[str] = []
    last: Upload | None = None
    truncated = False
    for upload in uploads:
        if not upload.key.startswith(prefix):
            continue
        if key_marker and (upload.key < key_marker or (upload.key == key_marker and upload.id <= id_marker)):
            continue
        cut = upload.key.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            common = upload.key[:cut + len(delimiter)]
            if common not in prefixes:
                prefixes.append(common)
            continue
        if len(entries) + len(prefixes) >= max_uploads:
            truncated = True
            break
        entries.append(f"<Upload><Key>{esc(upload.key)}</Key><UploadId>{upload.id}</UploadId>{_INITIATOR}{_OWNER}"
                       f"<StorageClass>STANDARD</StorageClass><Initiated>{iso_time(upload.created)}</Initiated>"
                       "</Upload>")
        last = upload
    out = [f"<Bucket>{esc(req.bucket)}</Bucket><KeyMarker>{esc(key_marker)}</KeyMarker>"
           f"<UploadIdMarker>{esc(id_marker)}</UploadIdMarker>"]
    if truncated and last is not None:
        out.append(f"<NextKeyMarker>{esc(last.key)}</NextKeyMarker><NextUploadIdMarker>{last.id}</NextUploadIdMarker>")
    if prefix:
        out.append(f"<Prefix>{esc(prefix)}</Prefix>")
    if delimiter:
        out.append(f"<Delimiter>{esc(delimiter)}</Delimiter>")
    out.append(f"<MaxUploads>{max_uploads}</MaxUploads><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
    out += entries
    out += [f"<CommonPrefixes><Prefix>{esc(p)}</Prefix></CommonPrefixes>" for p in prefixes]
    return xml_response(document("ListMultipartUploadsResult", out))


# -- abandoned uploads ------------------------------------------------------------------------------
async def sweep_once(s3: S3Server, now: float | None = None) -> int:
    """Abort every upload older than ``upload_expiry``, and delete part records whose upload is gone; returns
    how many uploads were aborted. Safe to run on several S3 servers at once."""
    now = time.time() if now is None else now
    system = _system(s3)
    aborted = 0
    buckets = [item[len(_PREFIX):].rstrip("/") async for item in system.iter(_PREFIX, delimiter="/")
               if isinstance(item, str)]
    for bucket in buckets:
        uploads, with_parts = await _uploads_of(s3, bucket)
        known = {u.id for u in uploads}
        for listed in uploads:
            if now - listed.created < s3.config.upload_expiry:
                continue
            try:
                raw = await system.get(listed.record_key())
            except KeyNotFound:
                continue
            upload = Upload(id=listed.id, **orjson.loads(raw))
            await _forget(s3, upload, await _parts(s3, upload), keep_blob=False)
            aborted += 1
        for orphan in with_parts - known:  # parts written after their upload was aborted
            stray = Upload(id=orphan, bucket=bucket, key="", blob="", incarnation=0, content_type="", meta={},
                           created=0)
            for part in list((await _parts(s3, stray)).values()):
                if now - part.mtime > 60:
                    try:
                        await system.delete(stray.part_key(part.number))
                    except KeyNotFound:
                        pass
    return aborted
