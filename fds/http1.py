"""HTTP/1.1 message heads, framed and parsed in one place for our client and the tract servers' data port.

Both ends speak the same small dialect: keep-alive, ``Content-Length``
bodies, no chunked encoding, no pipelining. :class:`HeadBuffer` collects a
head from bytes as sockets deliver them; :func:`parse_request` and
:func:`parse_response` turn it into its parts, or raise :class:`MalformedHead`
with a message that says what is wrong. The data port answers that as a 400
(or 411-like ``length_required`` for a chunked body); the client drops the
connection and reports a protocol error.

Hardening both ends rely on: every header line must have a colon; a
``Content-Length`` must be ASCII digits that fit in 64 bits (``int()`` alone
admits ``'²'``, ``'+1'``, ``' 1'`` and ``'1_0'``, and refuses 5,000 digits
with an error of its own); a request target ``urlsplit`` refuses is a bad
request, not an exception escaping the protocol.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qs, urlsplit

__all__ = ["HeadBuffer", "HeadTooLarge", "MalformedHead", "RequestHead", "ResponseHead", "parse_request",
           "parse_response"]

_MAX_LENGTH_DIGITS: Final = 18  # below 2**63: a length any buffer size check can compare safely


class HeadTooLarge(ValueError):
    """The message head grew past its limit without ending."""


class MalformedHead(ValueError):
    """A message head this dialect cannot accept. ``code`` is the fds error code a server answers with."""

    def __init__(self, message: str, code: str = "bad_request") -> None:
        super().__init__(message)
        self.code = code


class HeadBuffer:
    """Collects a message head (start line and headers) from received bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[bytes, bytes] | None:
        """Add received bytes; once the blank line has arrived, return ``(head, rest)`` and start over.

        ``head`` excludes the blank line; ``rest`` is whatever followed it
        (the start of the body). Raises :class:`HeadTooLarge` past ``limit``.
        """
        start = max(0, len(self._buf) - 3)
        self._buf += data
        end = self._buf.find(b"\r\n\r\n", start)
        # The limit holds however the bytes were split: a head whose end came in the same read counts too.
        if end > self.limit or (end < 0 and len(self._buf) > self.limit):
            self._buf = bytearray()
            raise HeadTooLarge(f"message head over {self.limit} bytes")
        if end < 0:
            return None
        head, rest = bytes(self._buf[:end]), bytes(self._buf[end + 4:])
        self._buf = bytearray()
        return head, rest

    def reset(self) -> None:
        self._buf = bytearray()


class RequestHead:
    """A parsed request head. ``headers`` has lower-case names; ``length`` is the body's Content-Length (0 if none)."""

    __slots__ = ("method", "path", "query", "headers", "length")

    def __init__(self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str],
                 length: int) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.length = length


class ResponseHead:
    """A parsed response head. ``length`` is the Content-Length, or ``None`` when the head has none."""

    __slots__ = ("status", "headers", "length")

    def __init__(self, status: int, headers: dict[str, str], length: int | None) -> None:
        self.status = status
        self.headers = headers
        self.length = length


def _fields(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise MalformedHead("malformed HTTP header line")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "identity").lower() != "identity":
        raise MalformedHead("send the body with a Content-Length header (chunked bodies are not accepted)",
                            code="length_required")
    return headers


def _length(declared: str) -> int:
    if not (declared.isascii() and declared.isdigit()) or len(declared) > _MAX_LENGTH_DIGITS:
        raise MalformedHead(f"bad Content-Length {declared[:20]!r}: want a byte count in ASCII digits")
    return int(declared)


def parse_request(raw: bytes) -> RequestHead:
    """Parse a request head (without its blank line), as :meth:`HeadBuffer.feed` returns it."""
    lines = raw.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise MalformedHead("malformed HTTP request line") from None
    if not version.startswith("HTTP/1."):
        raise MalformedHead(f"unsupported protocol {version[:20]!r}")
    headers = _fields(lines[1:])
    length = _length(headers.get("content-length", "0"))
    try:
        parts = urlsplit(target)
    except ValueError:  # e.g. an unclosed '[' in an absolute-form target
        raise MalformedHead(f"malformed request target {target[:60]!r}") from None
    return RequestHead(method, parts.path, parse_qs(parts.query), headers, length)


def parse_response(raw: bytes) -> ResponseHead:
    """Parse a response head (without its blank line), as :meth:`HeadBuffer.feed` returns it."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    status = rest[:3]
    if not version.startswith("HTTP/1.") or not (status.isascii() and status.isdigit()) or rest[3:4] not in ("", " "):
        raise MalformedHead(f"bad status line {lines[0][:80]!r}")
    headers = _fields(lines[1:])
    declared = headers.get("content-length")
    return ResponseHead(int(status), headers, None if declared is None else _length(declared))
