"""The gateway's HTTP API: whole blobs over plain REST, for clients without the fds library.

The gateway is stateless: each process holds one :class:`fds.client.Client`
(created at start-up, closed at shutdown) and turns whole-blob requests into
tract reads and writes. Any number of gateways can serve one cluster.

- ``POST /v1/blobs`` creates an empty blob with a random GUID.
- ``PUT /v1/blobs/{guid}`` uploads a whole blob, replacing any blob of that GUID.
- ``GET /v1/blobs/{guid}`` downloads it, with single-range ``Range`` support.
- ``HEAD /v1/blobs/{guid}`` gives its length and size in tracts.
- ``DELETE /v1/blobs/{guid}`` deletes it.

Objects by name (buckets and keys) are in :mod:`fds.gateway._objects`
(``/v1/buckets/...``).

Errors are the fds JSON body ``{"error": {"code", "message"}}`` with the
status of :mod:`fds.errors`: a malformed GUID is 400, an unknown blob 404.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from starlette.requests import ClientDisconnect

from fds.auth import process_credentials
from fds.client import DEFAULT_IN_FLIGHT, Blob, BlobExists, BlobInfo, BlobNotFound, Client, FDSError
from fds.config import GatewayConfig
from fds.errors import BadRequest, Conflict, PastEnd
from fds.gateway._objects import add_object_routes
from fds.gateway._transfer import download, upload
from fds.guid import parse_guid
from fds.models import CreatedBlob
from fds.ranges import parse_range, resolve_range
from fds.web import create_app as create_base_app
from fds.web import error_response, json_response

__all__ = ["create_app"]

log = logging.getLogger("fds.gateway")

_OCTETS = "application/octet-stream"
_RAW_BODY = {"requestBody": {"content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}},
                             "required": True}}
_ERROR = {"description": "fds error body: `{\"error\": {\"code\": ..., \"message\": ...}}`"}
_BYTES = {"content": {_OCTETS: {"schema": {"type": "string", "format": "binary"}}}}

_PUT_DOC = """Upload a whole blob from the request body, creating it if missing.

If a blob with this GUID exists it is **replaced: deleted, then created
again** and written. This is *not atomic*: a reader may see 404 or the new
blob while it is partly written, and if the upload fails the old content is
already gone. A failed upload deletes the partial blob, so it never leaves
a blob whose bytes are wrong.

With `Content-Length` the blob is extended once and tracts are written as
they fill; without it (chunked upload) the blob grows a tract at a time.
Either way the gateway holds only a few tracts of the body in memory.
The byte length is recorded, so the blob can be read back with `Range`.
"""

_GET_DOC = """Download a blob's bytes, streamed as tracts arrive.

`Content-Length` is sent when the blob has a recorded byte length (every
blob uploaded through this gateway does); a blob written through the tract
API without a length is sent whole, as its tracts concatenated, chunked.

`Range` (RFC 9110): a single range `bytes=a-b`, `bytes=a-` or `bytes=-n`
gets **206** with `Content-Range`. A range that selects no byte gets **416**
with `Content-Range: bytes */length` and an fds error body. A malformed
`Range`, another unit, several ranges, or any `If-Range` (the gateway has no
validators to compare) are ignored: **200** with the whole blob. A range on
a blob without a recorded length is **400** `range_needs_length`.

No `ETag` is sent: blobs can change through the tract API without any
change the gateway could see, so a validator would be a promise it cannot keep.
"""


def _known_length(info: BlobInfo) -> int | None:
    """The blob's byte length if known: recorded, or 0 for a blob with no tracts."""
    if info.length is not None:
        return info.length
    return 0 if info.tracts == 0 else None


def _blob_headers(info: BlobInfo) -> dict[str, str]:
    length = _known_length(info)
    headers = {"accept-ranges": "bytes" if length is not None else "none",
               "x-fds-tracts": str(info.tracts), "x-fds-created": f"{info.created:.6f}"}
    if length is not None:
        headers["content-length"] = str(length)
    return headers


def _content_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit() or not declared.isascii():
        raise BadRequest(f"Content-Length {declared[:40]!r} is not a byte count", code="bad_content_length")
    return int(declared)


async def _body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that hangs up mid-body gets a clear error logged."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise BadRequest("the client disconnected before sending the whole body", code="incomplete_body") from None


async def _fresh_blob(client: Client, guid: bytes) -> Blob:
    """An empty blob under ``guid``: created, or deleted and created again if it exists."""
    try:
        return await client.create_blob(guid)
    except BlobExists:
        pass
    with contextlib.suppress(BlobNotFound):  # someone else deleted it meanwhile: fine
        await client.delete_blob(guid)
    try:
        return await client.create_blob(guid)
    except BlobExists:
        raise Conflict("another upload to this blob started at the same time; retry",
                       code="concurrent_upload") from None


async def _discard(client: Client, guid: bytes) -> None:
    """Best-effort delete of a blob whose upload failed."""
    try:
        await client.delete_blob(guid)
    except FDSError as exc:
        log.warning("could not delete partial blob after a failed upload: %s", exc)


def create_app(config: GatewayConfig, *, client: Client | None = None) -> FastAPI:
    """The gateway app. ``client`` is for tests; by default one is made at start-up from ``config``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = client is None
        app.state.client = client or Client(config.metaserver,
                                            max_in_flight=max(DEFAULT_IN_FLIGHT, config.max_in_flight),
                                            credentials=process_credentials())
        try:
            yield
        finally:
            if own:
                await app.state.client.aclose()

    app = create_base_app(
        "fds gateway",
        "Whole blobs and objects by name (buckets and keys) over plain REST: PUT uploads (atomic for objects, "
        "conditional on ETags), GET downloads (with Range), HEAD, DELETE, listing. "
        "A stateless front for clients that do not use the fds client library.",
        role="gateway",
    )
    app.router.lifespan_context = lifespan
    window = config.max_in_flight

    def fds(request: Request) -> Client:
        found: Client = request.app.state.client
        return found

    @app.post("/v1/blobs", status_code=201, response_model=CreatedBlob, tags=["blobs"],
              responses={503: _ERROR}, summary="Create an empty blob with a random GUID.")
    async def create_blob(request: Request) -> Response:
        blob = await fds(request).create_blob()
        return json_response(CreatedBlob(guid=blob.guid), status=201)

    @app.put("/v1/blobs/{guid}", status_code=201, response_model=BlobInfo, tags=["blobs"],
             openapi_extra=_RAW_BODY, responses={400: _ERROR, 409: _ERROR, 503: _ERROR},
             summary="Upload a whole blob (replaces one that exists; not atomic).", description=_PUT_DOC)
    async def put_blob(guid: str, request: Request) -> Response:
        raw = parse_guid(guid)
        length = _content_length(request)
        client = fds(request)
        tract_size = (await client.table()).tract_size
        blob = await _fresh_blob(client, raw)
        try:
            await upload(blob, _body(request), tract_size=tract_size, window=window, length=length)
        except BaseException:
            await _discard(client, raw)
            raise
        return json_response(await blob.stat(), status=201)

    @app.head("/v1/blobs/{guid}", tags=["blobs"], responses={404: _ERROR},
              summary="A blob's length (Content-Length, when recorded) and tracts (X-FDS-Tracts).")
    async def head_blob(guid: str, request: Request) -> Response:
        info = await fds(request).stat(parse_guid(guid))
        response = Response(status_code=200, headers=_blob_headers(info), media_type=_OCTETS)
        if _known_length(info) is None:
            del response.headers["content-length"]  # unknown, not zero
        return response

    @app.get("/v1/blobs/{guid}", tags=["blobs"], response_class=StreamingResponse,
             responses={200: _BYTES, 206: _BYTES, 400: _ERROR, 404: _ERROR, 416: _ERROR},
             summary="Download a blob, whole or one byte range.", description=_GET_DOC)
    async def get_blob(guid: str, request: Request) -> Response:
        raw = parse_guid(guid)
        client = fds(request)
        info = await client.stat(raw)
        tract_size = (await client.table()).tract_size
        blob = Blob(client, raw, info.incarnation)
        length = _known_length(info)
        headers = _blob_headers(info)
        spec = None if "if-range" in request.headers else parse_range(request.headers.get("range"))
        if spec is None:
            body = download(blob, start=0, end=length, tracts=info.tracts, tract_size=tract_size, window=window)
            return StreamingResponse(body, headers=headers, media_type=_OCTETS)
        if length is None:
            raise BadRequest(f"blob {blob.guid} has no recorded byte length (it was written through the tract "
                             "API), so byte ranges are undefined; GET it without Range", code="range_needs_length")
        selected = resolve_range(spec, length)
        if selected is None:
            response = error_response(PastEnd(f"range {request.headers['range']!r} selects no byte of blob "
                                              f"{blob.guid}, which is {length} bytes long",
                                              code="range_not_satisfiable"))
            response.headers["content-range"] = f"bytes */{length}"
            return response
        headers["content-length"] = str(selected.end - selected.start)
        headers["content-range"] = selected.content_range(length)
        body = download(blob, start=selected.start, end=selected.end, tracts=info.tracts, tract_size=tract_size,
                        window=window)
        return StreamingResponse(body, status_code=206, headers=headers, media_type=_OCTETS)

    @app.delete("/v1/blobs/{guid}", status_code=204, tags=["blobs"], responses={404: _ERROR},
                summary="Delete a blob; its tracts are collected later.")
    async def delete_blob(guid: str, request: Request) -> Response:
        await fds(request).delete_blob(parse_guid(guid))
        return Response(status_code=204)

    add_object_routes(app, window)
    return app
