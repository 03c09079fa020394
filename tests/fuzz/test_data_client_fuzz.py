"""Fuzz the other end of the data path: our HTTP client (fds/httpclient.py) against raw responses.

A loopback server answers each request with bytes Hypothesis builds: good
responses, and ones broken the ways a confused or hostile peer breaks them
(status lines, Content-Length, chunked, header lines, bodies too short or
too long, heads too large). The client must return a good response exactly
as sent, and refuse a bad one with :class:`fds.httpclient.ConnectError`
(``ProtocolError`` is one), promptly: no other exception, no hang, no
connection reused after the server got out of step.
"""

from __future__ import annotations

import socket
import threading
import zlib
from collections.abc import Iterator
from typing import Literal

import pytest
import uvloop
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from fds.httpclient import ConnectError, HTTPPool, HTTPResponse, ProtocolError

Expect = Literal["ok", "error", "either"]
_SAFE_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40)
_BAD_LENGTHS = ["-1", "\u00b2", "1" * 30, "0x10", "1.5", "", "12 34", "+5", "1_0", "9" * 5000]


class RawServer:
    """Accepts connections on loopback; answers each request head with the next canned reply, then closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.reply = b""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            with conn:
                conn.settimeout(5)
                seen = b""
                try:
                    while b"\r\n\r\n" not in seen:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        seen += chunk
                    conn.sendall(self.reply)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() the thread is blocked in
        self.sock.close()
        self._thread.join(timeout=5)


@pytest.fixture(scope="module")
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


def _responses() -> st.SearchStrategy[tuple[bytes, Expect, int, bytes]]:
    """(raw response, what the client must do, status, body) for a GET."""
    body = st.binary(max_size=4096)
    headers = st.lists(st.builds(lambda n, v: f"{n}: {v}", st.text(alphabet="abcdefghijklmnopqrstuvwxyz-",
                                                                   min_size=1, max_size=12), _SAFE_TEXT), max_size=3)
    status = st.sampled_from([200, 200, 404, 409, 503])
    mutation = st.sampled_from(["none"] * 6 + ["status_line", "bad_length", "chunked", "no_colon", "no_length",
                                               "short_body", "long_body", "huge_length", "huge_head", "nothing"])
    garbage_status = st.one_of(st.sampled_from(["HTTP/2 200 OK", "HTTP/1.1 2000 OK", "HTTP/1.1 2x0 OK", "HTTP/1.1",
                                                "HTTP/1.1  200 OK", "ICY 200 OK", "", "HTTP/1.1 \u00b2\u00b2\u00b2"]),
                               _SAFE_TEXT.filter(lambda t: not t.startswith("HTTP/1.")))

    def build(code: int, payload: bytes, extra: list[str], how: str, bad_status: str,
              bad_length: str) -> tuple[bytes, Expect, int, bytes]:
        extra = [line for line in extra if not line.startswith(("content-length", "transfer-encoding"))]
        start = f"HTTP/1.1 {code} Whatever"
        length: str | None = str(len(payload))
        sent = payload
        expect: Expect = "ok"
        if how == "status_line":
            start, expect = bad_status, "error"
        elif how == "bad_length":
            length, expect = bad_length, "error"
        elif how == "chunked":
            extra.append("transfer-encoding: chunked")
            expect = "error"
        elif how == "no_colon":
            extra.append("no colon here")
            expect = "error"
        elif how == "no_length":
            length, expect = None, "error"
        elif how == "short_body" and payload:
            sent, expect = payload[:-1], "error"  # then the server closes: the connection is lost mid-body
        elif how == "long_body":
            sent, expect = payload + b"extra", "either"  # refused if it arrives with the body, else the conn is dropped
        elif how == "huge_length":
            length, sent, expect = "9" * 17, b"", "error"  # no memory for 10**17 bytes: refused, not a MemoryError
        elif how == "huge_head":
            extra.append("x-big: " + "a" * (70 * 1024))
            expect = "error"
        elif how == "nothing":
            return b"", "error", code, payload
        lines = [start, *extra, *([f"content-length: {length}"] if length is not None else [])]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + sent
        return raw, expect, code, payload

    return st.builds(build, status, body, headers, mutation, garbage_status, st.sampled_from(_BAD_LENGTHS))


async def _get(port: int) -> HTTPResponse | ConnectError:
    pool = HTTPPool(timeout=10)
    try:
        return await pool.request("GET", f"http://127.0.0.1:{port}/v1/tracts/x/0?version=1&incarnation=1")
    except ConnectError as exc:
        return exc
    finally:
        await pool.aclose()


def test_client_against_raw_responses(raw_server: RawServer, fuzz_examples: int, fuzz_seed: int) -> None:
    bugs: list[str] = []

    @settings(max_examples=fuzz_examples * 20, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @seed(zlib.crc32(b"data client") ^ fuzz_seed)
    @given(case=_responses())
    def run(case: tuple[bytes, Expect, int, bytes]) -> None:
        raw, expect, status, body = case
        raw_server.reply = raw
        try:
            outcome = uvloop.run(_get(raw_server.port))
        except BaseException as exc:  # anything but an answer or a ConnectError is a bug
            bugs.append(f"{raw[:200]!r}: raised {type(exc).__name__}: {exc}")
            return
        if isinstance(outcome, ConnectError):
            if expect == "ok":
                bugs.append(f"{raw[:200]!r}: refused a good response: {outcome}")
        elif expect == "error":
            bugs.append(f"{raw[:200]!r}: accepted a bad response as {outcome.status}")
        elif (outcome.status, bytes(outcome.body)) != (status, body):
            bugs.append(f"{raw[:200]!r}: got {outcome.status} {bytes(outcome.body)[:40]!r}")

    run()
    assert not bugs, "\n".join(bugs[:20])


@pytest.mark.parametrize(("raw", "message"), [
    (b"HTTP/2 200 OK\r\ncontent-length: 0\r\n\r\n", "bad status line"),
    (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n", "chunked"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: \xc2\xb2\r\n\r\n", "bad Content-Length"),
    (b"HTTP/1.1 200 OK\r\n\r\nbody", "without a Content-Length"),
    (b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999\r\n\r\n", "no memory"),
])
def test_client_says_what_is_wrong(raw_server: RawServer, raw: bytes, message: str) -> None:
    raw_server.reply = raw
    outcome = uvloop.run(_get(raw_server.port))
    assert isinstance(outcome, ConnectError) and isinstance(outcome.__cause__, ProtocolError), outcome
    assert message in str(outcome)
