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

from fds.auth import process_credentials
from fds.client import DEFAULT_IN_FLIGHT, Blob, BlobExists, BlobInfo, BlobNotFound, Client, FDSError
from fds.config import GatewayConfig
from fds.errors import BadRequest, Conflict
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
from fds.gateway._objects import add_object_routes
from fds.gateway._transfer import download, upload
from fds.guid import parse_guid
from fds.models import CreatedBlob
from fds.ranges import parse_range, resolve_range
from fds.web import create_app as create_base_app
from fds.web import json_response

__all__ = ["create_app"]

log = logging.getLogger("fds.gateway")

_RAW_BODY = raw_body(required=True)

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

    @app.post("/v1/blobs", status_code=201, response_model=CreatedBlob, tags=["blobs"],
              responses={503: ERROR}, summary="Create an empty blob with a random GUID.")
    async def create_blob(request: Request) -> Response:
        blob = await client_of(request).create_blob()
        return json_response(CreatedBlob(guid=blob.guid), status=201)

    @app.put("/v1/blobs/{guid}", status_code=201, response_model=BlobInfo, tags=["blobs"],
             openapi_extra=_RAW_BODY, responses={400: ERROR, 409: ERROR, 503: ERROR},
             summary="Upload a whole blob (replaces one that exists; not atomic).", description=_PUT_DOC)
    async def put_blob(guid: str, request: Request) -> Response:
        raw = parse_guid(guid)
        length = content_length(request)
        client = client_of(request)
        tract_size = (await client.table()).tract_size
        blob = await _fresh_blob(client, raw)
        try:
            await upload(blob, request_body(request), tract_size=tract_size, window=window, length=length)
        except BaseException:
            await _discard(client, raw)
            raise
        return json_response(await blob.stat(), status=201)

    @app.head("/v1/blobs/{guid}", tags=["blobs"], responses={404: ERROR},
              summary="A blob's length (Content-Length, when recorded) and tracts (X-FDS-Tracts).")
    async def head_blob(guid: str, request: Request) -> Response:
        info = await client_of(request).stat(parse_guid(guid))
        response = Response(status_code=200, headers=_blob_headers(info), media_type=OCTETS)
        if _known_length(info) is None:
            del response.headers["content-length"]  # unknown, not zero
        return response

    @app.get("/v1/blobs/{guid}", tags=["blobs"], response_class=StreamingResponse,
             responses={200: BYTES, 206: BYTES, 400: ERROR, 404: ERROR, 416: ERROR},
             summary="Download a blob, whole or one byte range.", description=_GET_DOC)
    async def get_blob(guid: str, request: Request) -> Response:
        raw = parse_guid(guid)
        client = client_of(request)
        info = await client.stat(raw)
        tract_size = (await client.table()).tract_size
        blob = Blob(client, raw, info.incarnation)
        length = _known_length(info)
        headers = _blob_headers(info)
        spec = None if "if-range" in request.headers else parse_range(request.headers.get("range"))
        if spec is None:
            body = download(blob, start=0, end=length, tracts=info.tracts, tract_size=tract_size, window=window)
            return StreamingResponse(body, headers=headers, media_type=OCTETS)
        if length is None:
            raise BadRequest(f"blob {blob.guid} has no recorded byte length (it was written through the tract "
                             "API), so byte ranges are undefined; GET it without Range", code="range_needs_length")
        selected = resolve_range(spec, length)
        if selected is None:
            return range_not_satisfiable(request, f"blob {blob.guid}", length)
        headers["content-length"] = str(selected.end - selected.start)
        headers["content-range"] = selected.content_range(length)
        body = download(blob, start=selected.start, end=selected.end, tracts=info.tracts, tract_size=tract_size,
                        window=window)
        return StreamingResponse(body, status_code=206, headers=headers, media_type=OCTETS)

    @app.delete("/v1/blobs/{guid}", status_code=204, tags=["blobs"], responses={404: ERROR},
                summary="Delete a blob; its tracts are collected later.")
    async def delete_blob(guid: str, request: Request) -> Response:
        await client_of(request).delete_blob(parse_guid(guid))
        return Response(status_code=204)

    add_object_routes(app, window)
    return app
