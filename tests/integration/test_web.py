"""Every answer fds.web and the data port make for a failure is the fds error body, 500s included.

The apps run in this process (httpx's ASGI transport, and the data port on a
loopback socket) with authentication switched to ``insecure`` for the test
only, so each failure can be provoked directly: a handler that raises, a
route that does not exist, a method it does not take, a framework
``HTTPException``, a request that fails validation.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import httpx
import orjson
import pytest
from fastapi import HTTPException

import fds.auth
from fds.errors import BlobExists
from fds.tractserver._fastpath import serve_data_port
from fds.tractserver._tracts import TractService
from fds.web import Metrics, create_app


@pytest.fixture
def insecure(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(fds.auth, "_insecure", True)
    monkeypatch.setattr(fds.auth, "_configured", True)
    yield


def _error(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json"
    body = orjson.loads(resp.content)
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in resp.text
    return str(body["error"]["message"])


async def _app_answers() -> dict[str, httpx.Response]:
    app = create_app("test", "errors of the web layer", role="test")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret detail")

    @app.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @app.post("/exists")
    async def exists() -> None:
        raise BlobExists("blob 1 exists", guid="1")

    @app.get("/number/{n}")
    async def number(n: int) -> dict[str, int]:
        return {"n": n}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return {
            "boom": await client.get("/boom"),
            "teapot": await client.get("/teapot"),
            "exists": await client.post("/exists"),
            "number": await client.get("/number/x"),
            "missing": await client.get("/nowhere"),
            "method": await client.delete("/boom"),
            "metrics": await client.get("/metrics"),
        }


def test_web_errors_are_fds_bodies(insecure: None) -> None:
    answers = asyncio.run(_app_answers())
    assert _error(answers["boom"], 500, "internal") == "internal error: RuntimeError"  # the detail stays in the log
    assert _error(answers["teapot"], 418, "http_error") == "short and stout"
    assert _error(answers["exists"], 409, "blob_exists") == "blob 1 exists"
    assert orjson.loads(answers["exists"].content)["error"]["guid"] == "1"  # details ride along
    assert "path.n" in _error(answers["number"], 400, "bad_request")
    assert "no route GET /nowhere" in _error(answers["missing"], 404, "no_such_route")
    _error(answers["method"], 405, "method_not_allowed")
    assert 'fds_requests_total{operation="GET /boom",status="500"} 1.0' in answers["metrics"].text


class _BrokenTracts(TractService):
    """A tract service with a bug: every operation raises something that is not an FDSError."""

    def __init__(self) -> None:
        pass

    def tract_size(self) -> int:
        return 1 << 20

    async def read(self, *args: object) -> tuple[memoryview, object]:  # type: ignore[override]
        raise RuntimeError("secret detail")


async def _data_port_answer(request: bytes) -> bytes:
    sock = socket.create_server(("127.0.0.1", 0))
    metrics = Metrics("test")
    server = await serve_data_port(_BrokenTracts(), sock, metrics)
    try:
        reader, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        writer.write(request)
        answer = await asyncio.wait_for(reader.read(), 10)  # the data port closes after a 500
        writer.close()
        return answer
    finally:
        server.close()
        await server.wait_closed()


def test_data_port_500_is_an_fds_body(insecure: None) -> None:
    answer = asyncio.run(_data_port_answer(
        b"GET /v1/tracts/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/0?version=1&incarnation=1 HTTP/1.1\r\n"
        b"x-request-id: rid-500\r\n\r\n"))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert b"connection: close" in head and b"x-request-id: rid-500" in head
    assert orjson.loads(body) == {"error": {"code": "internal", "message": "internal error"}}
