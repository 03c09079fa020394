"""The gateway's bucket and object routes: names over plain REST.

- ``GET /v1/buckets``; ``PUT | HEAD | DELETE /v1/buckets/{bucket}``.
- ``GET /v1/buckets/{bucket}/objects?prefix=&delimiter=&start_after=&page_token=&limit=``: one page of keys.
- ``PUT /v1/buckets/{bucket}/objects/{key}``: upload (atomic: the key switches once every byte is stored),
  or copy inside the cluster with ``X-FDS-Copy-Source: bucket/key``. ``If-None-Match: *`` creates only;
  ``If-Match: "etag"`` replaces only that object (412 otherwise). ``Content-Type`` and ``X-FDS-Meta-*``
  headers are kept with the object.
- ``GET | HEAD /v1/buckets/{bucket}/objects/{key}``: the bytes (``Range`` as for blobs), with ``ETag``,
  ``Last-Modified``, ``Content-Type`` and the metadata headers; ``If-None-Match`` (304) and ``If-Match`` (412).
- ``DELETE /v1/buckets/{bucket}/objects/{key}`` (``If-Match`` too); ``POST /v1/buckets/{bucket}/rename``.

Bodies stream through in tracts; nothing holds a whole object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from email.utils import formatdate
from urllib.parse import unquote

from fastapi import FastAPI, Query, Request
from fastapi.responses import Response, StreamingResponse

from fds.client import Bucket, BucketInfo, ObjectInfo, ObjectReader
from fds.errors import BadRequest, PreconditionFailed
from fds.gateway._http import (
    BYTES,
    ERROR,
    OCTETS,
    client_of,
    content_length,
    range_not_satisfiable,
    raw_body,
    request_body,
)
from fds.models import NameListing, RenameRequest
from fds.names import meta_header_text, meta_header_value
from fds.ranges import parse_range, resolve_range
from fds.web import json_response

__all__ = ["add_object_routes"]

_META = "x-fds-meta-"
_RAW_BODY = raw_body(required=False)  # a copy (X-FDS-Copy-Source) has none

_PUT_DOC = """Upload an object from the request body, or copy one (`X-FDS-Copy-Source: bucket/key`, no body).

The bytes go to a fresh blob; the key switches to it only once every byte is stored, in one step:
readers see the old object or the new one, never a mix, and a failed upload leaves the old object.
`If-None-Match: *` writes only a new key; `If-Match: "ETAG"` replaces only the object of that ETag
(`*`: any existing one). Otherwise **412** `precondition_failed`, and nothing changes.
`Content-Type` and `X-FDS-Meta-NAME: VALUE` headers are stored with the object (2 KiB of metadata at
most). Answers **200** with the object's info (its `etag` also in the `ETag` header).
"""

_GET_DOC = """Download an object, streamed as its tracts arrive (only the tracts a `Range` needs).

`Range` as for blobs: a single range gets **206**; one that selects no byte **416**. `ETag`,
`Last-Modified`, `Content-Type` and `X-FDS-Meta-*` describe the object. `If-None-Match` matching the
ETag gets **304**; `If-Match` not matching gets **412**.
"""


def _etag(info: ObjectInfo) -> str:
    return f'"{info.etag}"'


def _headers(info: ObjectInfo) -> dict[str, str]:
    headers = {"etag": _etag(info), "last-modified": formatdate(info.mtime, usegmt=True), "accept-ranges": "bytes",
               "content-type": info.content_type or OCTETS, "content-length": str(info.size)}
    for name, value in info.meta.items():
        headers[_META + name] = meta_header_value(value)
    return headers


def _matches(header: str, info: ObjectInfo) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or _etag(info) in tags or info.etag in tags


def _meta_headers(request: Request) -> dict[str, str]:
    return {name[len(_META):].lower(): meta_header_text(value) for name, value in request.headers.items()
            if name.lower().startswith(_META)}


def _conditions(request: Request) -> tuple[str | None, bool]:
    if_match = request.headers.get("if-match")
    if_none = request.headers.get("if-none-match")
    if if_none is not None and if_none.strip() != "*":
        raise BadRequest("on a write, If-None-Match takes only '*' (create the key only if it is free)",
                         code="bad_condition")
    if if_match is not None:
        if_match = if_match.strip().removeprefix("W/")
        if "," in if_match:
            raise BadRequest("If-Match on a write takes one ETag (or '*')", code="bad_condition")
    return if_match, if_none is not None


def add_object_routes(app: FastAPI, window: int) -> None:
    """Add the bucket and object routes; each request moves at most ``window`` tracts at once."""

    @app.get("/v1/buckets", response_model=list[BucketInfo], tags=["objects"], summary="Every bucket, by name.")
    async def list_buckets(request: Request) -> Response:
        return json_response([b.model_dump() for b in await client_of(request).list_buckets()])

    @app.put("/v1/buckets/{bucket}", status_code=201, response_model=BucketInfo, tags=["objects"],
             responses={400: ERROR, 409: ERROR}, summary="Create a bucket (S3's naming rules).")
    async def create_bucket(bucket: str, request: Request) -> Response:
        made = await client_of(request).create_bucket(bucket)
        return json_response(await made.info(), status=201)

    @app.head("/v1/buckets/{bucket}", tags=["objects"], responses={404: ERROR}, summary="Whether a bucket exists.")
    async def head_bucket(bucket: str, request: Request) -> Response:
        info = await client_of(request).bucket(bucket).info()
        return Response(status_code=200, headers={"x-fds-created": f"{info.created:.6f}"})

    @app.delete("/v1/buckets/{bucket}", status_code=204, tags=["objects"], responses={404: ERROR, 409: ERROR},
                summary="Delete an empty bucket (409 bucket_not_empty otherwise).")
    async def delete_bucket(bucket: str, request: Request) -> Response:
        await client_of(request).delete_bucket(bucket)
        return Response(status_code=204)

    @app.get("/v1/buckets/{bucket}/objects", tags=["objects"], responses={400: ERROR, 404: ERROR},
             response_model=NameListing, summary="One page of keys in UTF-8 order (prefix, delimiter, pages).")
    async def list_objects(bucket: str, request: Request, prefix: str = Query(default="", max_length=1024),
                           delimiter: str = Query(default="", max_length=64),
                           start_after: str = Query(default="", max_length=1024),
                           page_token: str | None = Query(default=None, max_length=2048),
                           limit: int = Query(default=1000, ge=1, le=10_000)) -> Response:
        page = await client_of(request).bucket(bucket).list(prefix, delimiter=delimiter, start_after=start_after,
                                                      page_token=page_token, limit=limit)
        return json_response({"objects": [o.model_dump() for o in page.objects], "prefixes": page.prefixes,
                              "next_token": page.next_token})

    @app.put("/v1/buckets/{bucket}/objects/{key:path}", response_model=ObjectInfo, tags=["objects"],
             openapi_extra=_RAW_BODY, responses={400: ERROR, 404: ERROR, 412: ERROR},
             summary="Upload an object atomically (or copy one inside the cluster).", description=_PUT_DOC)
    async def put_object(bucket: str, key: str, request: Request) -> Response:
        target = client_of(request).bucket(bucket)
        if_match, if_none_match = _conditions(request)
        source = request.headers.get("x-fds-copy-source")
        if source is not None:
            src_bucket, _, src_key = unquote(source).lstrip("/").partition("/")
            if not src_key:
                raise BadRequest("X-FDS-Copy-Source is bucket/key", code="bad_copy_source")
            if if_match is not None:
                raise BadRequest("a copy takes If-None-Match: * only", code="bad_condition")
            info = await target.copy(src_key, key, source_bucket=src_bucket, if_none_match=if_none_match)
        else:
            length = content_length(request)
            writer = await target.writer(key, size=length, content_type=request.headers.get("content-type", ""),
                                         meta=_meta_headers(request), if_match=if_match,
                                         if_none_match=if_none_match, window=window)
            info = await writer.write_all(request_body(request))
        response = json_response(info)
        response.headers["etag"] = _etag(info)
        return response

    async def _object(bucket: Bucket, key: str, request: Request, *,
                      read: bool = False) -> tuple[ObjectInfo, ObjectReader | None, Response | None]:
        reader = await bucket.reader(key) if read else None  # an inline object's bytes come with the lookup
        info = reader.info if reader is not None else await bucket.head(key)
        if (header := request.headers.get("if-match")) is not None and not _matches(header, info):
            raise PreconditionFailed(f"object {key!r} has ETag {info.etag!r}, not {header!r}", etag=info.etag)
        if (header := request.headers.get("if-none-match")) is not None and _matches(header, info):
            return info, None, Response(status_code=304, headers={"etag": _etag(info)})
        return info, reader, None

    @app.head("/v1/buckets/{bucket}/objects/{key:path}", tags=["objects"], responses={404: ERROR},
              summary="An object's size, ETag, time, type and metadata, as headers.")
    async def head_object(bucket: str, key: str, request: Request) -> Response:
        info, _, early = await _object(client_of(request).bucket(bucket), key, request)
        return early or Response(status_code=200, headers=_headers(info))

    @app.get("/v1/buckets/{bucket}/objects/{key:path}", tags=["objects"], response_class=StreamingResponse,
             responses={200: BYTES, 206: BYTES, 304: {}, 404: ERROR, 412: ERROR, 416: ERROR},
             summary="Download an object, whole or one byte range.", description=_GET_DOC)
    async def get_object(bucket: str, key: str, request: Request) -> Response:
        info, reader, early = await _object(client_of(request).bucket(bucket), key, request, read=True)
        if early is not None:
            return early
        assert reader is not None
        headers = _headers(info)
        spec = None if "if-range" in request.headers else parse_range(request.headers.get("range"))
        start, end, status = 0, info.size, 200
        if spec is not None:
            selected = resolve_range(spec, info.size)
            if selected is None:
                return range_not_satisfiable(request, repr(key), info.size)
            start, end, status = selected.start, selected.end, 206
            headers["content-range"] = selected.content_range(info.size)
            headers["content-length"] = str(end - start)

        async def body() -> AsyncIterator[bytes | memoryview]:
            if start < end:
                async for _, piece in reader.iter_ranges(start, end, window=window):
                    yield memoryview(piece)

        return StreamingResponse(body(), status_code=status, headers=headers, media_type=headers["content-type"])

    @app.delete("/v1/buckets/{bucket}/objects/{key:path}", status_code=204, tags=["objects"],
                responses={404: ERROR, 412: ERROR}, summary="Delete an object (If-Match: only that version).")
    async def delete_object(bucket: str, key: str, request: Request) -> Response:
        if_match = request.headers.get("if-match")
        await client_of(request).bucket(bucket).delete(key, if_match=if_match.strip() if if_match else None)
        return Response(status_code=204)

    @app.post("/v1/buckets/{bucket}/rename", response_model=ObjectInfo, tags=["objects"],
              responses={404: ERROR, 412: ERROR}, summary="Move an object to another key of the bucket, atomically.")
    async def rename_object(bucket: str, req: RenameRequest, request: Request) -> Response:
        info = await client_of(request).bucket(bucket).rename(req.source, req.target, if_match=req.if_match,
                                                        if_none_match=req.if_none_match)
        return json_response(info)
