"""HTTP/1.1 heads: framing fed the way sockets deliver bytes (in arbitrary pieces), and parsing both ways."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fds.http1 import HeadBuffer, HeadTooLarge, MalformedHead, parse_request, parse_response


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


def test_the_limit_holds_however_the_head_is_split() -> None:
    head = b"GET / HTTP/1.1\r\nx: " + b"a" * 40 + b"\r\n\r\n"
    for cut in range(1, len(head)):
        buf = HeadBuffer(32)
        with pytest.raises(HeadTooLarge):
            buf.feed(head[:cut])
            buf.feed(head[cut:])
    assert HeadBuffer(len(head) - 4).feed(head) is not None  # exactly at the limit is fine


def test_request_head() -> None:
    req = parse_request(b"PUT /v1/tracts/ab/3?version=7&incarnation=2 HTTP/1.1\r\nHost: x:1\r\n"
                        b"Content-Length:  8388608 \r\nX-Request-Id: r1")
    assert (req.method, req.path, req.length) == ("PUT", "/v1/tracts/ab/3", 8388608)
    assert req.query == {"version": ["7"], "incarnation": ["2"]}
    assert req.headers == {"host": "x:1", "content-length": "8388608", "x-request-id": "r1"}
    assert parse_request(b"GET / HTTP/1.0").length == 0


@pytest.mark.parametrize(("raw", "message", "code"), [
    (b"GET /", "malformed HTTP request line", "bad_request"),
    (b"GET  / HTTP/1.1", "malformed HTTP request line", "bad_request"),
    (b"GET / HTTP/2", "unsupported protocol 'HTTP/2'", "bad_request"),
    (b"GET / HTTP/1.1\r\nno colon", "malformed HTTP header line", "bad_request"),
    (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked", "Content-Length", "length_required"),
    (b"PUT / HTTP/1.1\r\nContent-Length: -1", "bad Content-Length '-1'", "bad_request"),
    (b"PUT / HTTP/1.1\r\nContent-Length: \xb2", "bad Content-Length", "bad_request"),
    (b"PUT / HTTP/1.1\r\nContent-Length: +1", "bad Content-Length", "bad_request"),
    (b"PUT / HTTP/1.1\r\nContent-Length: 1_0", "bad Content-Length", "bad_request"),
    (b"PUT / HTTP/1.1\r\nContent-Length: " + b"9" * 19, "bad Content-Length", "bad_request"),
    (b"PUT / HTTP/1.1\r\nContent-Length: " + b"0" * 5000, "bad Content-Length", "bad_request"),
    (b"GET http://[/v1/tracts/a/0 HTTP/1.1", "malformed request target", "bad_request"),
])
def test_bad_request_heads_say_what_is_wrong(raw: bytes, message: str, code: str) -> None:
    with pytest.raises(MalformedHead) as caught:
        parse_request(raw)
    assert message in str(caught.value)
    assert caught.value.code == code


def test_response_head() -> None:
    head = parse_response(b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 5\r\n"
                          b"x-fds-checksum: 00ff")
    assert (head.status, head.length, head.headers["x-fds-checksum"]) == (200, 5, "00ff")
    assert parse_response(b"HTTP/1.1 204").length is None  # no reason phrase, no length: both allowed
    assert parse_response(b"HTTP/1.0 404 Not Found\r\nConnection: close").headers == {"connection": "close"}


@pytest.mark.parametrize(("raw", "message"), [
    (b"HTTP/2 200 OK", "bad status line"),
    (b"HTTP/1.1 2000 OK", "bad status line"),
    (b"HTTP/1.1 2x0 OK", "bad status line"),
    (b"HTTP/1.1 \xb2\xb2\xb2 OK", "bad status line"),
    (b"HTTP/1.1", "bad status line"),
    (b"ICY 200 OK", "bad status line"),
    (b"HTTP/1.1 200 OK\r\nbroken", "malformed HTTP header line"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked", "chunked"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 5x", "bad Content-Length"),
])
def test_bad_response_heads_say_what_is_wrong(raw: bytes, message: str) -> None:
    with pytest.raises(MalformedHead, match=message):
        parse_response(raw)


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(st.binary(max_size=200),
                     st.lists(st.sampled_from([b"GET / HTTP/1.1", b"HTTP/1.1 200 OK", b"content-length: 3", b":",
                                               b"transfer-encoding: identity", b"\xff\xfe", b" ", b"x: y"]),
                              max_size=6).map(b"\r\n".join)))
def test_any_bytes_parse_or_raise_malformed_head(raw: bytes) -> None:
    # Nothing else may escape: on either end an unexpected exception drops the connection without an answer.
    for parse in (parse_request, parse_response):
        try:
            parse(raw)
        except MalformedHead:
            pass
