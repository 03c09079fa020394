"""The S3 port's HTTP/1.1: an :class:`asyncio.BufferedProtocol` that runs the S3 app (ASGI) and reads request
bodies straight from the socket into the buffers that become tracts.

uvicorn hands a body to the app as ~130 messages per 8 MiB, each a ``bytes`` built from the socket's buffer,
appended to the last and copied once more into the tract buffer; profiled, that was a third of the S3 server's
event loop on a PUT. Here a handler asks the body source (:class:`BodySource`, in the scope's extensions as
``fds.body``) to fill a buffer, and the event loop ``recv_into``s that buffer: one copy, kernel to tract. The
ASGI ``receive`` still works (bodies of small requests, and ``/healthz`` and ``/metrics``, which go to the
fds app behind), reading through the same source.

What it speaks: HTTP/1.0 and 1.1, keep-alive, ``Content-Length`` and chunked request bodies,
``Expect: 100-continue`` (sent when the app first reads the body, so a refused request is answered before the
client sends it), pipelined requests one after another, TLS (the transport's), responses with a length or
chunked. A malformed request is answered with S3's XML error and the connection closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from email.utils import formatdate
from typing import Any, Final
from urllib.parse import unquote_to_bytes

from fds.buffers import uninitialized
from fds.http1 import HeadBuffer, HeadTooLarge
from fds.logs import new_request_id
from fds.s3._xml import S3Error, error_body
from fds.web._types import ASGIApp, Message

__all__ = ["BodySource", "S3Protocol", "Connections"]

log = logging.getLogger("fds.s3")


_HEAD_LIMIT: Final = 64 * 1024
_SCRATCH: Final = 256 * 1024
_READ: Final = 1 << 20
"""The most a body read for ``receive`` or an aws-chunked body asks for at once."""
_DRAIN_LIMIT: Final = 1 << 20
"""After the answer, up to this much of an unread body is read and dropped to keep the connection; more closes it."""
KEEP_ALIVE: Final = 75.0
_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS: Final = {
    100: "Continue", 200: "OK", 204: "No Content", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
    403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 411: "Length Required",
    412: "Precondition Failed", 413: "Content Too Large", 416: "Range Not Satisfiable", 500: "Internal Server Error",
    501: "Not Implemented", 503: "Service Unavailable",
}
_TOKEN: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Date:
    """The ``date`` header, formatted once a second."""

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


def _bad(message: str, code: str = "InvalidRequest", status: int = 400) -> S3Error:
    return S3Error(code, message, status)


class Connections:
    """Every open connection of one server, so that a shutdown can let requests finish and close the idle."""

    def __init__(self, app: ASGIApp, state: dict[str, Any], scheme: str) -> None:
        self.app = app
        self.state = state
        self.scheme = scheme
        self.open: set[S3Protocol] = set()

    def protocol(self) -> S3Protocol:
        return S3Protocol(self)

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now; give busy ones ``timeout`` seconds to finish their request."""
        for conn in list(self.open):
            conn.closing = True
            if conn.idle:
                conn.close()
        deadline = time.monotonic() + timeout
        while any(not c.idle for c in self.open) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.open):
            conn.close()


class BodySource:
    """One request's body as the connection delivers it: :meth:`readinto` fills the caller's buffer straight
    from the socket (``Content-Length`` bodies); :meth:`read` returns the next piece (any body)."""

    def __init__(self, conn: S3Protocol, length: int | None) -> None:
        self._conn = conn
        self.direct = length is not None
        """Whether :meth:`readinto` may be used (a ``Content-Length`` body, not a chunked one)."""
        self.left = length if length is not None else -1
        """Bytes of the body not yet handed out (-1: unknown, a chunked body not finished)."""
        self.consumed = 0
        self.broken = False
        """Whether reading failed (the client went, or the chunked framing is bad): the connection cannot go on."""
        self._chunk = 0
        self._chunk_state = "size"

    @property
    def done(self) -> bool:
        return self.left == 0

    async def readinto(self, view: memoryview) -> int:
        """Fill ``view`` from the body (straight from the socket once buffered bytes are used up); the bytes
        filled, fewer than ``len(view)`` only at the body's end. S3Error IncompleteBody if the client goes."""
        if not self.direct:
            raise RuntimeError("readinto on a chunked body")
        want = min(len(view), self.left)
        got = self._conn.take_pending(view[:want])
        if got < want:
            self._conn.expect_continue()
            try:
                got += await self._conn.recv_into(view[got:want])
            except S3Error:
                self.broken = True
                raise
        self.left -= got
        self.consumed += got
        return got

    async def read(self, limit: int = _READ) -> bytes | bytearray:
        """The body's next bytes (at most ``limit``); empty at its end."""
        if self.left == 0:
            return b""
        if self.direct:
            buf = uninitialized(min(limit, self.left))
            got = await self.readinto(memoryview(buf))
            return buf if got == len(buf) else buf[:got]
        self._conn.expect_continue()
        try:
            return await self._read_chunked(limit)
        except S3Error:
            self.broken = True
            raise

    async def _read_chunked(self, limit: int) -> bytes | bytearray:
        conn = self._conn
        while True:
            if self._chunk_state == "data":
                if not conn.pending:
                    await conn.fill()
                piece = conn.pop_pending(min(limit, self._chunk))
                self._chunk -= len(piece)
                if self._chunk == 0:
                    self._chunk_state = "crlf"
                self.consumed += len(piece)
                return piece
            line = await conn.read_line()
            if self._chunk_state == "crlf":
                if line:
                    raise S3Error("IncompleteBody", "a chunk of the chunked body is longer than its size says")
                self._chunk_state = "size"
            elif self._chunk_state == "size":
                text = line.partition(b";")[0].strip()
                if not text or len(text) > 16 or any(c not in b"0123456789abcdefABCDEF" for c in text):
                    raise S3Error("IncompleteBody", f"malformed chunk size {line[:20]!r} in a chunked body")
                self._chunk = int(text, 16)
                self._chunk_state = "data" if self._chunk else "trailer"
            elif not line:  # the blank line after the trailers
                self.left = 0
                return b""


class S3Protocol(asyncio.BufferedProtocol):
    """One client connection: request heads parsed here, each request run as a task of the ASGI app."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self.transport: asyncio.Transport | None = None
        self._scratch = bytearray(_SCRATCH)
        self._head = HeadBuffer(_HEAD_LIMIT)
        self.pending = bytearray()
        """Bytes received but not yet used: the start of a body, or of the next request."""
        self._target: memoryview | None = None
        self._target_filled = 0
        self._waiter: asyncio.Future[None] | None = None
        self._write_ready: asyncio.Future[None] | None = None
        self._paused_writing = False
        self._lost = False
        self.gone: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        """Done when the connection is lost (what ``receive`` answers ``http.disconnect`` on)."""
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._continue = False
        self.idle = True
        self.closing = False
        self._client: Any = None
        self._server: Any = None

    # -- asyncio callbacks -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = transport.get_extra_info("peername")
        self._server = transport.get_extra_info("sockname")
        self.connections.open.add(self)
        self._arm_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.transport = None
        if not self.gone.done():
            self.gone.set_result(None)
        self.connections.open.discard(self)
        if self._timer is not None:
            self._timer.cancel()
        for future in (self._waiter, self._write_ready):
            if future is not None and not future.done():
                future.set_exception(ConnectionResetError("the client closed the connection"))
        self._waiter = self._write_ready = None

    def pause_writing(self) -> None:
        self._paused_writing = True

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)
        self._write_ready = None

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._target is not None:
            return self._target[self._target_filled:]
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        if self._target is not None:
            self._target_filled += nbytes
            if self._target_filled == len(self._target):
                self._wake()
            return
        if self._waiter is not None:  # a body or line read wanted more bytes
            self.pending += memoryview(self._scratch)[:nbytes]
            self._wake()
            return
        self.pending += memoryview(self._scratch)[:nbytes]
        self._next_request()

    def eof_received(self) -> bool | None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionResetError("the client closed its side mid-request"))
            self._waiter = None
        return None  # close the transport

    # -- reading -------------------------------------------------------------------------------------
    def _wake(self) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
        self._waiter = None

    async def _wait_readable(self) -> None:
        if self._lost or self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.resume_reading()
        await self._waiter

    def take_pending(self, view: memoryview) -> int:
        """Move buffered bytes into ``view``; how many."""
        if not self.pending:
            return 0
        n = min(len(view), len(self.pending))
        view[:n] = memoryview(self.pending)[:n]
        del self.pending[:n]
        return n

    def pop_pending(self, limit: int) -> bytes:
        piece = bytes(memoryview(self.pending)[:limit])
        del self.pending[:len(piece)]
        return piece

    async def recv_into(self, view: memoryview) -> int:
        """Fill ``view`` from the socket, with no copy in between."""
        self._target, self._target_filled = view, 0
        try:
            await self._wait_readable()
        except ConnectionResetError:
            raise S3Error("IncompleteBody", "the client disconnected before sending the whole body") from None
        finally:
            self._target = None
        return self._target_filled

    async def fill(self) -> None:
        """Receive more bytes into :attr:`pending`."""
        try:
            await self._wait_readable()
        except ConnectionResetError:
            raise S3Error("IncompleteBody", "the client disconnected before sending the whole body") from None

    async def read_line(self) -> bytes:
        while True:
            end = self.pending.find(b"\n")
            if end >= 0:
                line = bytes(self.pending[:end]).rstrip(b"\r")
                del self.pending[:end + 1]
                return line
            if len(self.pending) > 8192:
                raise S3Error("IncompleteBody", "a line of the chunked body is too long")
            await self.fill()

    @property
    def continue_pending(self) -> bool:
        """Whether the client waits for a 100 Continue not yet sent."""
        return self._continue

    def expect_continue(self) -> None:
        """Tell a client waiting on ``Expect: 100-continue`` to send the body (once)."""
        if self._continue and self.transport is not None:
            self._continue = False
            self.transport.write(_CONTINUE)

    # -- requests --------------------------------------------------------------------------------------
    def _arm_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(KEEP_ALIVE, self._idle_timeout)

    def _idle_timeout(self) -> None:
        if self.idle:
            self.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _next_request(self) -> None:
        """Parse a request head out of :attr:`pending` if one is there; start the request if so."""
        if not self.pending or self._task is not None and not self._task.done():
            return
        try:
            framed = self._head.feed(bytes(self.pending))
        except HeadTooLarge:
            self._refuse(_bad(f"the request head is over {_HEAD_LIMIT} bytes", "RequestHeaderSectionTooLarge"))
            return
        self.pending.clear()
        if framed is None:
            return
        head, rest = framed
        self.pending += rest
        try:
            scope, length, keep_alive = self._parse(head)
        except S3Error as exc:
            self._refuse(exc)
            return
        assert self.transport is not None
        self.transport.pause_reading()
        self.idle = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._run(scope, length, keep_alive))

    def _parse(self, head: bytes) -> tuple[dict[str, Any], int | None, bool]:
        """The ASGI scope of a request head, its body's length (None: chunked) and whether to keep the connection."""
        line, _, rest = head.partition(b"\r\n")
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[0] or not parts[1] or any(c not in _TOKEN for c in parts[0]):
            raise _bad("malformed HTTP request line")
        method, target, version = parts
        if version not in (b"HTTP/1.1", b"HTTP/1.0"):
            raise _bad(f"unsupported protocol {version[:20]!r}: HTTP/1.1 or 1.0", "HttpVersionNotSupported", 505)
        headers: list[tuple[bytes, bytes]] = []
        length: int | None = 0
        chunked = False
        connection = b""
        expect = b""
        for raw in rest.split(b"\r\n") if rest else ():
            name, sep, value = raw.partition(b":")
            if not sep or not name or any(c not in _TOKEN for c in name):
                raise _bad("malformed HTTP header line")
            name, value = name.lower(), value.strip(b" \t")
            headers.append((name, value))
            if name == b"content-length":
                if not value.isdigit() or len(value) > 18 or (length and int(value) != length):
                    raise _bad(f"bad Content-Length {value[:20]!r}: want one byte count in ASCII digits")
                length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() != b"chunked":
                    raise _bad(f"Transfer-Encoding {value[:30]!r} is not supported; send a Content-Length",
                               "NotImplemented", 501)
                chunked = True
            elif name == b"connection":
                connection = value.lower()
            elif name == b"expect":
                expect = value.lower()
        if chunked:
            length = None
        if version == b"HTTP/1.1":
            keep_alive = b"close" not in connection
        else:
            keep_alive = b"keep-alive" in connection
        self._continue = expect == b"100-continue" and version == b"HTTP/1.1" and length != 0
        if target.startswith((b"http://", b"https://")):
            target = b"/" + target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"/"
        raw_path, _, query = target.partition(b"?")
        try:
            path = unquote_to_bytes(raw_path).decode("utf-8") if b"%" in raw_path else raw_path.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("the request path is not UTF-8 once percent-decoded") from None
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": version[5:].decode(),
            "method": method.decode("latin-1"), "scheme": self.connections.scheme, "path": path, "raw_path": raw_path,
            "query_string": query, "root_path": "", "headers": headers, "client": self._client,
            "server": self._server, "state": dict(self.connections.state),
        }
        return scope, length, keep_alive

    def _refuse(self, error: S3Error) -> None:
        """Answer a request that could not be parsed, and close."""
        self._head.reset()
        self.pending.clear()
        if self.transport is None:
            return
        rid = new_request_id()
        body = error_body(error, "/", rid)
        status = error.status
        self.transport.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\ncontent-type: application/xml\r\n"
            f"content-length: {len(body)}\r\nx-amz-request-id: {rid}\r\nconnection: close\r\n\r\n".encode()
            + body)
        self.transport.close()

    async def _run(self, scope: dict[str, Any], length: int | None, keep_alive: bool) -> None:
        source = BodySource(self, length)
        scope["extensions"] = {"fds.body": source}
        response = _Response(self, source, scope["method"] == "HEAD", keep_alive and not self.closing)
        given = False

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not source.done or not given:
                given = True
                try:
                    piece = await source.read()
                except S3Error:
                    return {"type": "http.disconnect"}
                return {"type": "http.request", "body": bytes(piece), "more_body": not source.done}
            await asyncio.shield(self.gone)  # the body is done: what is left to hear of is the client leaving
            return {"type": "http.disconnect"}

        try:
            await self.connections.app(scope, receive, response.send)
        except Exception:
            if not self._lost:
                log.exception("S3 connection: unexpected error serving %s %s", scope["method"], scope["path"])
        finally:
            self._continue = False
        if not response.finished:
            if not response.started and not self._lost:
                rid = new_request_id()
                error = S3Error("InternalError", "we encountered an internal error; please try again", 500)
                body = error_body(error, scope["path"], rid)
                response.keep_alive = False
                await response.send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"application/xml"), (b"content-length", str(len(body)).encode()),
                    (b"x-amz-request-id", rid.encode())]})
                await response.send({"type": "http.response.body", "body": body})
            self.close()
            return
        if not response.keep_alive or self.closing or self._lost:
            self.close()
            return
        try:
            while not source.done:  # a small refused body (_Response._start closes on any other)
                await source.read(_SCRATCH)
        except S3Error:
            self.close()
            return
        self.idle = True
        self._task = None
        self._arm_timer()
        if self.transport is not None:
            self.transport.resume_reading()
            self._next_request()


class _Response:
    """The ASGI ``send`` of one request: the head written with the first body bytes, chunked if no length."""

    def __init__(self, conn: S3Protocol, source: BodySource, head_only: bool, keep_alive: bool) -> None:
        self.conn = conn
        self.source = source
        self.head_only = head_only
        self.keep_alive = keep_alive
        self.started = False
        self.finished = False
        self._head = b""
        self._chunked = False

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            self._start(message["status"], message.get("headers", []))
            return
        if kind != "http.response.body" or self.finished:
            return
        body = message.get("body", b"")
        more = message.get("more_body", False)
        transport = self.conn.transport
        if transport is None:
            raise ConnectionResetError("the client closed the connection")
        pieces: list[bytes | bytearray | memoryview] = []
        if self._head:
            pieces.append(self._head)
            self._head = b""
        if body and not self.head_only:
            if self._chunked:
                pieces += [f"{len(body):x}\r\n".encode(), body, b"\r\n"]
            else:
                pieces.append(body)
        if not more:
            self.finished = True
            if self._chunked and not self.head_only:
                pieces.append(b"0\r\n\r\n")
        if len(pieces) == 1:
            transport.write(pieces[0])
        elif pieces:
            transport.writelines(pieces)
        if self.conn._paused_writing:
            await self._drain()

    async def _drain(self) -> None:
        conn = self.conn
        if conn.transport is None:
            raise ConnectionResetError("the client closed the connection")
        if conn._write_ready is None:
            conn._write_ready = asyncio.get_running_loop().create_future()
        await asyncio.shield(conn._write_ready)

    def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        source = self.source
        # An unread body: a small one is read and dropped after the answer; the connection is closed rather than
        # read a large one, one of unknown length, one whose framing broke, or one the client has not sent (it
        # waits for 100 Continue, which a refusal never sends).
        if not source.done and (source.broken or self.conn.continue_pending or not source.direct
                                or source.left > _DRAIN_LIMIT):
            self.keep_alive = False
        length = next((v for n, v in headers if n.lower() == b"content-length"), None)
        no_body = self.head_only or status in (204, 304) or 100 <= status < 200
        self._chunked = length is None and not no_body
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode(), b"date: ", _Date.now(), b"\r\n"]
        for name, value in headers:
            lines += [name, b": ", value, b"\r\n"]
        if self._chunked:
            lines.append(b"transfer-encoding: chunked\r\n")
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        self._head = b"".join(lines)
