"""The data port: the tract routes of the tract server's HTTP API, without the framework.

Same URLs, parameters, bodies and errors as ``PUT``/``GET``/``HEAD
/v1/tracts/{guid}/{tract}`` on the API port (documented at ``/docs``), served
by a small HTTP/1.1 :class:`asyncio.BufferedProtocol`. It exists for speed:
uvicorn hands a request body to the app in 64 KiB pieces that are copied
again, about 130 steps per 8 MiB tract; here the event loop ``recv_into``s
the body straight into the block-aligned buffer that goes to disk with
O_DIRECT, and a tract read goes to the socket as one write. Everything else
(metadata, stats, docs) stays on the API port; a request for any other path
gets a 404 that says so. Clients use the data port when a server advertises
one (``ServerRef.data_url``).

Deliberately small: keep-alive, Content-Length bodies, one request at a time
per connection (no pipelining), no chunked encoding.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Final

import orjson

from fds import tls
from fds.auth import check as check_auth
from fds.buffers import aligned
from fds.errors import BadRequest, FDSError, NotFound, TractTooLarge
from fds.http1 import HeadBuffer, HeadTooLarge, MalformedHead, RequestHead, parse_request
from fds.logs import HEADER, new_request_id, request_id, valid_request_id
from fds.tractserver._tracts import TractService, tract_version
from fds.web import MethodNotAllowed, Metrics, log_request

__all__ = ["DataProtocol", "serve_data_port"]

log = logging.getLogger("fds.tractserver")

_HEAD_LIMIT: Final = 16 * 1024
_DRAIN_LIMIT_TRACTS: Final = 4
_PREFIX: Final = "/v1/tracts/"
_ROUTE: Final = "/v1/tracts/{guid}/{tract}"
_METHODS: Final = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"})
_REASONS: Final = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 416: "Range Not Satisfiable", 500: "Internal Server Error",
    503: "Service Unavailable", 507: "Insufficient Storage",
}


def _int_param(req: RequestHead, name: str, what: str, *, required: bool = True) -> int | None:
    values = req.query.get(name)
    if not values:
        if not required:
            return None
        raise BadRequest(f"invalid request: query.{name}: Field required ({what})")
    try:
        value = int(values[0])
    except ValueError:
        raise BadRequest(f"invalid request: query.{name}: Input should be a valid integer") from None
    if not 0 <= value < 2**63:
        raise BadRequest(f"invalid request: query.{name}: Input should be between 0 and 2**63-1")
    return value


class DataProtocol(asyncio.BufferedProtocol):
    """One client connection to the data port."""

    def __init__(self, tracts: TractService, metrics: Metrics | None = None) -> None:
        self.tracts = tracts
        self.metrics = metrics
        self.transport: asyncio.Transport | None = None
        self._scratch = bytearray(64 * 1024)
        self._head = HeadBuffer(_HEAD_LIMIT)
        self._req: RequestHead | None = None
        self._body: memoryview | None = None
        self._filled = 0
        self._discard = 0
        self._error: FDSError | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0
        self._operation = ""
        self._rid = ""
        self._method = ""
        self._path = ""
        self._bytes_in = 0

    # -- asyncio callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self.transport = None

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body is not None:
            return self._body[self._filled:]
        if self._discard:
            return memoryview(self._scratch)[:self._discard]
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        if self._body is not None:
            self._filled += nbytes
            if self._filled == len(self._body):
                self._dispatch()
            return
        if self._discard:
            self._discard -= nbytes
            if not self._discard:
                self._dispatch()
            return
        try:
            framed = self._head.feed(memoryview(self._scratch)[:nbytes])
        except HeadTooLarge:
            self._respond_error(BadRequest("request header too large"), close=True)
            return
        if framed is None:
            return
        raw_head, rest = framed
        try:
            self._req = req = parse_request(raw_head)
        except MalformedHead as exc:
            self._respond_error(BadRequest(str(exc), code=exc.code), close=True)
            return
        self._begin(req)
        if len(rest) > req.length:
            self._respond_error(BadRequest("pipelined requests are not supported on the data port"), close=True)
            return
        if req.method == "PUT":
            try:
                self.tracts.check_length(req.length)
            except FDSError as exc:
                if isinstance(exc, TractTooLarge) and req.length > _DRAIN_LIMIT_TRACTS * self.tracts.tract_size():
                    self._bytes_in = len(rest)
                    self._respond_error(exc, close=True)
                    return
                self._error = exc  # answer once the body is drained, so the connection stays usable
        if req.length:
            if self._error is not None or req.method != "PUT":
                self._discard = req.length - len(rest)
                if self._discard:
                    return
            else:
                self._body = aligned(req.length)
                self._body[:len(rest)] = rest
                self._filled = len(rest)
                if self._filled < req.length:
                    return
        self._dispatch()

    # -- handling --------------------------------------------------------------
    def _begin(self, req: RequestHead) -> None:
        """Start timing a request, from its head on, as the API port's middleware does."""
        self._started = time.perf_counter()
        method = req.method if req.method in _METHODS else "other"  # the label set stays bounded
        route = _ROUTE if req.path.startswith(_PREFIX) and req.path.count("/") == 4 else "unmatched"
        self._operation = f"data {method} {route}"
        self._bytes_in = req.length
        self._rid = valid_request_id(req.headers.get(HEADER))
        self._method, self._path = req.method[:16], req.path[:256]

    def _dispatch(self) -> None:
        assert self.transport is not None and self._req is not None
        self.transport.pause_reading()
        req, body, error = self._req, self._body, self._error
        self._req, self._body, self._error, self._filled = None, None, None, 0
        self._task = asyncio.get_running_loop().create_task(self._handle(req, body, error))

    async def _handle(self, req: RequestHead, body: memoryview | None, error: FDSError | None) -> None:
        close = req.headers.get("connection", "").lower() == "close"
        request_id.set(self._rid)  # this task's context: copies and prepares it causes carry the id
        try:
            if error is not None:
                raise error
            check_auth(req.method, req.path, req.headers)
            await self._route(req, body)
        except FDSError as exc:
            self._respond_error(exc, close=close)
        except Exception:
            log.exception("data port: unexpected error on %s %s", req.method, req.path)
            self._respond_error(FDSError("internal error"), close=True)  # the base class is the 500
            return
        if self.transport is not None and not close:
            self.transport.resume_reading()

    async def _route(self, req: RequestHead, body: memoryview | None) -> None:
        if not req.path.startswith(_PREFIX) or req.path.count("/") != 4:
            raise NotFound(f"no route {req.method} {req.path} on the data port, which serves only "
                           "/v1/tracts/{guid}/{tract}; use the API port for everything else", code="no_such_route")
        guid, tract = req.path[len(_PREFIX):].split("/")
        version = _int_param(req, "version", "the table version you used")
        incarnation = _int_param(req, "incarnation", "the blob's incarnation")
        assert version is not None and incarnation is not None
        close = req.headers.get("connection", "").lower() == "close"
        if req.method == "PUT":
            written = tract_version(_int_param(req, "stamp", "", required=False),
                                    _int_param(req, "writer", "", required=False))
            entry = await self.tracts.write(guid, tract, version, incarnation, body if body is not None else aligned(0),
                                            written)
            payload = orjson.dumps({"length": entry.length, "checksum": f"{entry.checksum:016x}",
                                    "stamp": entry.stamp, "writer": entry.writer})
            self._respond(200, payload, "application/json", close=close)
        elif req.method == "GET":
            data, entry = await self.tracts.read(guid, tract, version, incarnation)
            self._respond(200, data, "application/octet-stream", close=close,
                          extra=f"x-fds-checksum: {entry.checksum:016x}\r\nx-fds-version: {entry.version}\r\n")
        elif req.method == "HEAD":
            found = await self.tracts.entry(guid, tract, version, incarnation)
            if found is None:
                self._respond(404, b"", "application/json", close=close, head_only=True)
            else:
                self._respond(200, b"", "application/octet-stream", close=close, head_only=True, length=found.length,
                              extra=f"x-fds-checksum: {found.checksum:016x}\r\nx-fds-version: {found.version}\r\n")
        else:
            raise MethodNotAllowed(f"method {req.method} is not allowed on {req.path}")

    def _respond_error(self, exc: FDSError, *, close: bool) -> None:
        extra = 'www-authenticate: Bearer realm="fds"\r\n' if exc.status == 401 else ""
        self._respond(exc.status, exc.to_body(), "application/json", close=close, extra=extra)

    def _respond(self, status: int, body: bytes | memoryview, media: str, *, close: bool,
                 extra: str = "", head_only: bool = False, length: int | None = None) -> None:
        if self.transport is None:
            return
        size = len(body) if length is None else length
        elapsed = time.perf_counter() - self._started if self._started else 0.0
        if self.metrics is not None:
            if not self._started:  # the request head could not be parsed
                self._operation, self._started, self._bytes_in = "data malformed", time.perf_counter(), 0
            self.metrics.observe(self._operation, status, time.perf_counter() - self._started, self._bytes_in,
                                 0 if head_only else len(body))
            self._started = 0.0
        log_request(self._method or "?", self._path or "?", status, elapsed, self._rid or new_request_id())
        connection = "connection: close\r\n" if close else ""
        if self._rid:
            extra += f"x-request-id: {self._rid}\r\n"
        self._rid, self._method, self._path = "", "", ""
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: {media}\r\n"
                f"content-length: {size}\r\n{extra}{connection}\r\n")
        if head_only or not body:
            self.transport.write(head.encode("latin-1"))
        else:
            self.transport.writelines((head.encode("latin-1"), body))
        if close:
            self.transport.close()


async def serve_data_port(tracts: TractService, sock: socket.socket, metrics: Metrics | None = None) -> asyncio.Server:
    """Start serving the data port on an already bound, listening socket."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: DataProtocol(tracts, metrics), sock=sock, ssl=tls.server_context())
