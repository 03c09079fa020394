"""HTTP/1.1 head framing, fed the way sockets deliver bytes: in arbitrary pieces."""

from __future__ import annotations

import pytest

from fds.http1 import HeadBuffer, HeadTooLarge


def test_head_split_anywhere() -> None:
    message = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
    head_end = message.index(b"\r\n\r\n") + 4
    for cut in range(1, len(message)):
        buf = HeadBuffer(1024)
        first = buf.feed(message[:cut])
        if cut >= head_end:
            assert first == (message[:head_end - 4], message[head_end:cut])
        else:
            assert first is None
            assert buf.feed(message[cut:]) == (message[:head_end - 4], b"hello")


def test_byte_by_byte_and_reuse() -> None:
    buf = HeadBuffer(1024)
    results = [buf.feed(bytes([b])) for b in b"GET / HTTP/1.1\r\n\r\n"]
    assert results[:-1] == [None] * (len(results) - 1)
    assert results[-1] == (b"GET / HTTP/1.1", b"")
    assert buf.feed(b"PUT /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz") == (b"PUT /x HTTP/1.1\r\nContent-Length: 1", b"z")


def test_too_large() -> None:
    buf = HeadBuffer(32)
    with pytest.raises(HeadTooLarge):
        buf.feed(b"x" * 40)
