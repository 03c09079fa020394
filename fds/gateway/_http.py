"""What the gateway's blob routes (:mod:`fds.gateway._app`) and object routes (:mod:`fds.gateway._objects`)
share: the request's client, its declared length and body, the 416 answer, and OpenAPI fragments."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.requests import ClientDisconnect

from fds.client import Client
from fds.errors import BadRequest, PastEnd
from fds.web import error_response

__all__ = ["OCTETS", "ERROR", "BYTES", "raw_body", "client_of", "content_length", "request_body",
           "range_not_satisfiable"]

OCTETS = "application/octet-stream"
ERROR = {"description": "fds error body: `{\"error\": {\"code\": ..., \"message\": ...}}`"}
"""OpenAPI: an error answer."""
BYTES = {"content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}}}
"""OpenAPI: an answer of raw bytes."""


def raw_body(required: bool) -> dict[str, Any]:
    """OpenAPI ``openapi_extra`` for a route whose request body is raw bytes."""
    return {"requestBody": {"content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}},
                            "required": required}}


def client_of(request: Request) -> Client:
    """The gateway process's fds client (made at start-up by the app's lifespan)."""
    found: Client = request.app.state.client
    return found


def content_length(request: Request) -> int | None:
    """The request's ``Content-Length``; None for a chunked body; 400 if it is not a byte count."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.isdigit() or not declared.isascii():
        raise BadRequest(f"Content-Length {declared[:40]!r} is not a byte count", code="bad_content_length")
    return int(declared)


async def request_body(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives; a client that hangs up mid-body gets a clear error logged."""
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise BadRequest("the client disconnected before sending the whole body", code="incomplete_body") from None


def range_not_satisfiable(request: Request, what: str, length: int) -> Response:
    """416 for a ``Range`` that selects no byte of ``what`` (``length`` bytes long), with ``Content-Range``."""
    response = error_response(PastEnd(f"range {request.headers['range']!r} selects no byte of {what}, which is "
                                      f"{length} bytes long", code="range_not_satisfiable"))
    response.headers["content-range"] = f"bytes */{length}"
    return response
