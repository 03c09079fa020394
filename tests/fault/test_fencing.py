"""Fenced reads (issue 11): a tract server cut off from the metaserver, but not from clients, stops serving
within its lease, so once its rows are given away it never serves a stale copy.

The server's only paths to and from the metaserver run through two small TCP proxies the test cuts: its
``--metaserver`` URL (heartbeats), and its advertised API URL (the metaserver's pushes and nudges, and its
row-mates' calls). Its data port stays reachable to clients directly, as a server on the far side of a
partition from the metaserver would be.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from fds.client import Client
from fds.guid import parse_guid
from fds.local import LocalCluster
from fds.models import TableModel
from fds.tlt import Table
from tests.support.credentials import AUTH


class Proxy:
    """Forwards TCP connections from a loopback port to ``target``; :meth:`cut` drops every connection and
    refuses new ones (the port closes)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self._listener.close()
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


@contextmanager
def _behind_proxies(cluster: LocalCluster, name: str) -> Iterator[tuple[Proxy, Proxy]]:
    """Restart tract server ``name`` so that it reaches the metaserver, and is reached at its API URL, only
    through proxies; yields (to the metaserver, to its API)."""
    child = cluster.child(name)
    own_port = _port(child.url)
    to_meta = Proxy(("127.0.0.1", _port(cluster.metaserver_url)))
    to_api = Proxy(("127.0.0.1", own_port))
    cluster.kill(name, 15)
    args = child.args
    args[args.index("--metaserver") + 1] = to_meta.url
    args += ["--advertise-url", to_api.url]
    try:
        cluster.restart(name)
        yield to_meta, to_api
    finally:
        to_meta.cut()
        to_api.cut()


def _table(cluster: LocalCluster) -> Table:
    return Table(TableModel.model_validate_json(httpx.get(f"{cluster.metaserver_url}/v1/table",
                                                          headers=AUTH).content))


def test_a_server_cut_off_from_the_metaserver_serves_no_stale_read(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Interleaving: the victim holds tract 0 of a blob (value OLD). Both proxies are cut. A reader polls the
    victim's data port directly, with the table it had, all along. The metaserver declares the victim dead
    after the heartbeat timeout, and publishes the table without it once its lease is surely over; once it
    is published, a writer writes NEW to the tract's new holders and is acknowledged. The victim must not
    serve OLD after that acknowledgement (it refuses everything, 503 lease_expired, once its lease is over),
    and readers with either table read NEW."""
    cluster = make_cluster(tractservers=4, replicas=3)
    victim = cluster.tract_children[1]
    with _behind_proxies(cluster, victim.name) as (to_meta, to_api):
        cluster.wait_healthy()
        victim_id = cluster.server_id(victim.name)
        table = _table(cluster)

        async def setup() -> tuple[str, int]:
            async with Client(cluster.metaserver_url) as fds:
                while True:  # a blob whose tract 0 the victim holds
                    blob = await fds.create_blob()
                    await blob.extend(1)
                    if victim_id in {s.id for s in table.holders(blob.raw, 0)}:
                        await blob.write_tract(0, b"OLD" * 1000)
                        return blob.guid, blob.incarnation
                    await fds.delete_blob(blob.guid)

        guid, incarnation = asyncio.run(setup())
        ref = table.server(victim_id)
        assert ref is not None
        direct = f"{ref.data_url}/v1/tracts/{guid}/0"
        params = {"version": table.version, "incarnation": incarnation}
        assert httpx.get(direct, params=params, headers=AUTH).content == b"OLD" * 1000
        seen: list[tuple[float, int, bytes, str]] = []
        stop = threading.Event()

        def poll() -> None:
            with httpx.Client(headers=AUTH, timeout=5) as http:
                while not stop.is_set():
                    try:
                        resp = http.get(direct, params=params)
                        code = resp.json()["error"]["code"] if resp.status_code != 200 else ""
                        seen.append((time.monotonic(), resp.status_code, resp.content, code))
                    except httpx.HTTPError:
                        pass
                    time.sleep(0.02)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            to_meta.cut()
            to_api.cut()
            cut = time.monotonic()
            deadline = cut + 30
            while victim_id in {s.id for s in _table(cluster).holders(parse_guid(guid), 0)}:
                assert time.monotonic() < deadline, "the cut-off server was never taken out of the row"
                time.sleep(0.05)

            async def write_new() -> float:
                async with Client(cluster.metaserver_url) as fds:
                    blob = await fds.open_blob(guid)
                    await blob.write_tract(0, b"NEW" * 1000)
                    return time.monotonic()

            acked = asyncio.run(write_new())
            time.sleep(1.0)
        finally:
            stop.set()
            poller.join()
        status: dict[str, Any] = httpx.get(f"{cluster.metaserver_url}/v1/cluster", headers=AUTH).json()
        assert {s["id"]: s["state"] for s in status["servers"]}[victim_id] == "dead"
        assert victim_id not in {s.id for s in _table(cluster).holders(parse_guid(guid), 0)}
        stale = [(round(t - acked, 3), status) for t, status, body, _ in seen if t > acked and body == b"OLD" * 1000]
        assert not stale, f"the cut-off server served the old value after the new one was acknowledged: {stale[:5]}"
        fenced = [t for t, status, _, code in seen if status == 503 and code == "lease_expired"]
        assert fenced and fenced[0] - cut < 0.8 * 3.0 + 1.0, "the server did not stop serving within its lease"
        assert any(t > acked for t in fenced)

        async def read(fresh: bool) -> bytes:
            async with Client(cluster.metaserver_url) as fds:
                if not fresh:  # a reader still holding the table from before the cut
                    fds.tables._table = table
                blob = await fds.open_blob(guid)
                return bytes(await blob.read_tract(0))

        assert asyncio.run(read(fresh=True)) == b"NEW" * 1000
        assert asyncio.run(read(fresh=False)) == b"NEW" * 1000
