"""The nemesis's metaserver proxy on real sockets: it forwards, a cut drops and black-holes, a heal mends."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from .nemesis import MetaProxy


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def proxy() -> Iterator[MetaProxy]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proxy = MetaProxy(f"http://127.0.0.1:{server.server_address[1]}")
    proxy.start()
    yield proxy
    proxy.close()
    server.shutdown()
    server.server_close()


def _connect(proxy: MetaProxy) -> socket.socket:
    host, port = proxy.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=2)


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4) == b""
    except ConnectionResetError:
        return True


def test_cut_drops_open_connections_black_holes_new_ones_and_heal_mends(proxy: MetaProxy) -> None:
    before = _connect(proxy)
    before.sendall(b"ping")
    assert before.recv(4) == b"ping"
    proxy.cut()
    assert _closed(before), "an open connection survived the cut"
    during = _connect(proxy)  # accepted, as a partition would not refuse it ...
    during.sendall(b"ping")
    during.settimeout(0.5)
    with pytest.raises(TimeoutError):  # ... but never answered
        during.recv(4)
    proxy.heal()
    during.settimeout(2)
    assert _closed(during)  # the held connection is closed, so the caller retries
    after = _connect(proxy)
    after.sendall(b"pong")
    assert after.recv(4) == b"pong"
    for s in (before, during, after):
        s.close()
