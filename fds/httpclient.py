"""A small, fast asyncio HTTP/1.1 client for the tract data path.

Why not httpx here: httpx moves a large body through many small pure-Python
steps; reading 8 MiB responses it reached only 0.25-0.65 GiB/s on our
machine (see docs/benchmarks.md). This client does one thing: keep-alive
requests with ``Content-Length`` bodies to our own servers. It is a
:class:`asyncio.BufferedProtocol`, so the event loop ``recv_into``s response
bodies straight into one preallocated ``bytearray``: no per-chunk objects,
no joins, no copies after the kernel's.

It deliberately does not implement chunked transfer encoding, redirects,
cookies or proxies; our servers never need them. httpx stays in use for the
control plane (metaserver, blob metadata), where bodies are small.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from fds.buffers import uninitialized
from fds.http1 import HeadBuffer, HeadTooLarge, MalformedHead, parse_response

__all__ = ["HTTPPool", "HTTPResponse", "ConnectError", "ProtocolError"]

_HEADER_LIMIT: Final = 64 * 1024
_IDLE_SECONDS: Final = 20.0  # below the servers' keep-alive timeout
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "PUT", "DELETE"})
_SILENT_PEER_SECONDS: Final = 5
"""A server that acknowledges nothing for this long, not even TCP keepalive probes, is gone: its host
crashed or was cut off. Connecting is bounded by it too. A busy server still acknowledges at the TCP
level, so this never cuts short a slow answer; the request ``timeout`` does that."""


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


_MEMORY: Final = _physical_memory()
"""No response body larger than this machine's memory is even tried."""


class ConnectError(OSError):
    """The server could not be reached, or the connection broke mid-request."""


class ProtocolError(ConnectError):
    """The server sent something this client does not speak."""


@dataclass(slots=True)
class HTTPResponse:
    status: int
    headers: dict[str, str]
    body: bytes | bytearray


class _Connection(asyncio.BufferedProtocol):
    """One keep-alive connection; at most one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = time.monotonic()
        self.used = False
        self._scratch = bytearray(_HEADER_LIMIT)
        self._head = HeadBuffer(_HEADER_LIMIT)
        self._body: bytearray | None = None
        self._filled = 0
        self._status = 0
        self._headers: dict[str, str] = {}
        self._expect_body = True
        self._waiter: asyncio.Future[HTTPResponse] | None = None
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio protocol callbacks -------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _detect_silent_peer(sock)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        err = ConnectError(f"connection lost: {exc or 'closed by peer'}")
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(err)
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(err)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._body is not None:
            return memoryview(self._body)[self._filled :]
        return memoryview(self._scratch)

    def buffer_updated(self, nbytes: int) -> None:
        if self._body is not None:
            self._filled += nbytes
            if self._filled == len(self._body):
                self._finish()
            return
        if self._waiter is None:  # out of step: bytes nobody asked for must not pass for the next answer
            self._fail(ProtocolError("the server sent data with no request outstanding"))
            return
        try:
            framed = self._head.feed(memoryview(self._scratch)[:nbytes])
        except HeadTooLarge:
            self._fail(ProtocolError("response header too large"))
            return
        if framed is None:
            return
        head, rest = framed
        try:
            length = self._parse_head(head)
        except ProtocolError as exc:
            self._fail(exc)
            return
        if len(rest) > length:
            self._fail(ProtocolError("server sent more than Content-Length"))
            return
        if length > _MEMORY:  # refused before asking: a failed huge allocation is noisy in CPython
            self._fail(ProtocolError(f"response body of {length} bytes: no memory for it"))
            return
        try:
            self._body = uninitialized(length)  # recv_into overwrites it all: skip zero-filling 8 MiB
        except MemoryError:
            self._fail(ProtocolError(f"response body of {length} bytes: no memory for it"))
            return
        self._body[: len(rest)] = rest
        self._filled = len(rest)
        if self._filled == length:
            self._finish()

    def eof_received(self) -> bool | None:
        return None

    # -- helpers --------------------------------------------------------
    def _parse_head(self, raw: bytes) -> int:
        """Take the status and headers; return the length of the body that follows."""
        try:
            head = parse_response(raw)
        except MalformedHead as exc:
            raise ProtocolError(f"malformed response: {exc}") from None
        self._status, self._headers = head.status, head.headers
        if not self._expect_body or self._status in (204, 304) or 100 <= self._status < 200:
            return 0
        if head.length is None:
            raise ProtocolError("response without a Content-Length")
        return head.length

    def _finish(self) -> None:
        body = self._body if self._body is not None else bytearray()
        self._body = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(HTTPResponse(self._status, self._headers, body))
        if self._headers.get("connection", "").lower() == "close" and self.transport:
            self.transport.close()
            self.closed = True

    def _fail(self, exc: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.close()
        self.closed = True

    async def request(self, head: bytes, body: bytes | bytearray | memoryview | None,
                      expect_body: bool) -> HTTPResponse:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._expect_body = expect_body
        self._head.reset()
        self._body = None
        self.used = True
        if body:
            self.transport.writelines((head, body))
        else:
            self.transport.write(head)
        if self._drain is not None and not self._drain.done():
            await self._drain
        return await self._waiter


def _detect_silent_peer(sock: socket.socket) -> None:
    """Make the kernel drop the connection (ETIMEDOUT) once the peer has been silent for
    ``_SILENT_PEER_SECONDS``: data unacknowledged that long (TCP_USER_TIMEOUT), or, while we wait
    for an answer, keepalive probes unanswered. Without it a partitioned server holds each request
    for the whole request timeout, and the client neither retries nor reads another replica."""
    if not hasattr(socket, "TCP_USER_TIMEOUT"):
        return  # not Linux: the request timeout alone bounds the wait
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, _SILENT_PEER_SECONDS * 1000)


class HTTPPool:
    """Keep-alive connections to many servers, addressed by base URL.

    ``request`` is safe to call from many tasks at once; each request takes
    a connection of its own, so the number of connections to a server grows
    to the number of requests in flight to it.
    """

    def __init__(self, *, timeout: float = 60.0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._idle: dict[tuple[str, int, bool], deque[_Connection]] = {}
        self._timeout = timeout
        self._ssl = ssl_context

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | bytearray | memoryview | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> HTTPResponse:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if tls else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}"]
        size = len(body) if body is not None else 0
        if body is not None or method in ("PUT", "POST"):
            lines.append(f"Content-Length: {size}")
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        key = (host, port, tls)
        async with asyncio.timeout(timeout if timeout is not None else self._timeout):
            for attempt in range(2):
                conn = await self._acquire(key)
                reused = conn.used
                try:
                    response = await conn.request(head, body, method != "HEAD")
                except (ConnectError, OSError) as exc:
                    conn.closed = True
                    if conn.transport is not None:
                        conn.transport.close()
                    # A reused connection may have been closed by the server's
                    # keep-alive timer just as we sent; retry once if safe.
                    if attempt == 0 and reused and method in _IDEMPOTENT:
                        continue
                    raise ConnectError(f"{method} {url}: {exc}") from exc
                except BaseException:
                    # Cancelled or timed out mid-request: the connection's
                    # state is unknown, so it must not be reused.
                    conn.closed = True
                    if conn.transport is not None:
                        conn.transport.close()
                    raise
                self._release(key, conn)
                return response
        raise AssertionError("unreachable")

    async def _acquire(self, key: tuple[str, int, bool]) -> _Connection:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < _IDLE_SECONDS:
                return conn
            if conn.transport is not None:
                conn.transport.close()
        loop = asyncio.get_running_loop()
        host, port, tls = key
        try:
            async with asyncio.timeout(_SILENT_PEER_SECONDS):
                _, protocol = await loop.create_connection(
                    _Connection, host, port, ssl=(self._ssl or True) if tls else None
                )
        except OSError as exc:
            raise ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
        except TimeoutError:
            raise ConnectError(f"cannot connect to {host}:{port}: no answer in {_SILENT_PEER_SECONDS} s") from None
        assert isinstance(protocol, _Connection)
        return protocol

    def _release(self, key: tuple[str, int, bool], conn: _Connection) -> None:
        if conn.closed:
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(key, deque()).append(conn)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
