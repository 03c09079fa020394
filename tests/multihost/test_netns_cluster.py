"""A cluster over several "hosts" (network namespaces) that talk over a private network, not loopback.

The metaserver, the gateway, the test's client and three hosts of two tract servers each (k=2,
each host its own failure domain) each live in their own namespace on one switch
(``tests/multihost/netns.py``). Blobs go through the client library and the gateway; then one
host's cable is pulled while a client keeps writing, and the cluster must re-replicate without it
and give back every acknowledged blob, byte for byte. Authentication is on, as in production: every
server is given the cluster secret, the client mints its tokens from it, and a request without one
is refused from across the network.

Skips itself, with the reason, where namespaces cannot be made (not root, no ``ip``, no netns).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.multihost.cluster import Agent, NetCluster
from tests.multihost.netns import Network, remove_stale, unavailable_reason

PRIVATE = IPv4Network("10.77.0.0/24")
TRACT = 64 * 1024


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NetCluster]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    remove_stale()
    with Network() as net:
        cluster = NetCluster(net, tmp_path_factory.mktemp("netns"), hosts=3, per_host=2, replicas=2,
                             tract_size=TRACT, heartbeat_timeout=2.0)
        try:
            cluster.start()
            yield cluster
        finally:
            if cluster.agent is not None:
                cluster.agent.close()


def _agent(cluster: NetCluster) -> Agent:
    assert cluster.agent is not None
    return cluster.agent


def _on_private_network(url: str) -> bool:
    host = urlsplit(url).hostname
    return host is not None and IPv4Address(host) in PRIVATE


def _payloads(directory: Path, sizes: list[int], seed: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i, size in enumerate(sizes):
        path = directory / f"blob{i}-{size}.bin"
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


def _wait_until(what: str, predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.2)


def _read_back(agent: Agent, via: str, guid: str, out: Path) -> bytes:
    if via == "client":
        agent.call("get_client", guid=guid, path=str(out))
    else:
        agent.call("get_gateway", guid=guid, path=str(out))
    return out.read_bytes()


def test_servers_listen_and_advertise_private_addresses(cluster: NetCluster) -> None:
    """Every server is reached at its host's 10.77.0.x address, never loopback."""
    for server in cluster.servers:
        assert _on_private_network(server.url), (server.name, server.url)
        assert urlsplit(server.url).hostname == cluster.net.hosts[server.host].address
    status = cluster.status()
    assert len(status["servers"]) == cluster.hosts * cluster.per_host
    for member in status["servers"]:
        assert _on_private_network(member["url"]), member
    table: dict[str, Any] = cluster.table()
    for member in table["servers"]:
        assert _on_private_network(member["url"]) and _on_private_network(member["data_url"]), member
    # each host is one failure domain, and no row holds two servers of one host
    assert {s["domain"] for s in status["servers"]} == set(cluster.tract_hosts())
    domain = {s["id"]: s["domain"] for s in status["servers"]}
    ids = [s["id"] for s in table["servers"]]
    for row in table["rows"]:
        holders = [domain[ids[i]] for i in row]
        assert len(set(holders)) == len(holders) == cluster.replicas, holders


def test_requests_without_credentials_are_refused_across_hosts(cluster: NetCluster) -> None:
    """The servers were started with the cluster secret: from another host, no token means 401."""
    agent = _agent(cluster)
    server = cluster.tract_servers()[0]
    for url in (f"{cluster.metaserver_url}/v1/cluster", f"{cluster.gateway_url}/v1/blobs/{'0' * 32}",
                f"{server.url}/v1/meta/{'0' * 32}"):
        answer = agent.call("http", method="GET", url=url, auth=False)
        assert answer["status"] == 401, (url, answer)
        assert "error" in answer["body"], (url, answer)


@pytest.mark.parametrize("put_via", ["client", "gateway"])
def test_blobs_round_trip_through_client_and_gateway(cluster: NetCluster, tmp_path: Path, put_via: str) -> None:
    """Blobs written one way read back byte for byte both ways, and a Range through the gateway."""
    agent = _agent(cluster)
    sizes = [1, TRACT - 1, TRACT, TRACT + 1, 7 * TRACT + 12345, 300_001]
    for path in _payloads(tmp_path / "in", sizes, seed=len(put_via)):
        guid = agent.call(f"put_{put_via}", path=str(path))
        for via in ("client", "gateway"):
            assert _read_back(agent, via, guid, tmp_path / f"{path.name}.{via}") == path.read_bytes(), (path, via)
        if path.stat().st_size > 2 * TRACT + 9:
            first, last = TRACT - 10, 2 * TRACT + 9  # across two tract boundaries
            got = agent.call("get_gateway", guid=guid, path=str(tmp_path / "range"), range=f"bytes={first}-{last}")
            assert got["status"] == 206
            assert got["content_range"] == f"bytes {first}-{last}/{path.stat().st_size}"
            assert (tmp_path / "range").read_bytes() == path.read_bytes()[first:last + 1]


@pytest.mark.slow
def test_host_cut_off_is_replaced_and_every_blob_survives(cluster: NetCluster, tmp_path: Path) -> None:
    """Pull one host's cable while a client writes: its servers are declared dead, their rows are
    copied to the other hosts, the cluster is healthy again, and every acknowledged blob reads back.

    The cut host's processes keep running (a partition, not a crash): nothing it holds is reachable,
    so every byte read afterwards comes from the copies on the other two hosts.
    """
    agent = _agent(cluster)
    victim = "h2"
    before = _payloads(tmp_path / "before", [3 * TRACT + 7, 5 * TRACT, 100, 2 * TRACT + 1], seed=11)
    written = [(agent.call("put_client", path=str(p)), p) for p in before]
    written += [(agent.call("put_gateway", path=str(p)), p) for p in before[:2]]
    status = cluster.wait_healthy()
    victims = {s["id"] for s in status["servers"] if s["domain"] == victim}
    assert len(victims) == cluster.per_host
    table_before = cluster.table()
    ids_before = [s["id"] for s in table_before["servers"]]
    rows_lost = sum(1 for row in table_before["rows"] if any(ids_before[i] in victims for i in row))
    assert rows_lost > 0

    during = _payloads(tmp_path / "during", [2 * TRACT + 3, TRACT, 4 * TRACT - 1], seed=12)
    agent.call("load_start", paths=[str(p) for p in during])
    cluster.net.cut(victim)
    dead = cluster.wait_for(f"{victim}'s servers declared dead", lambda st: all(
        s["state"] == "dead" for s in st["servers"] if s["id"] in victims), timeout=30)
    assert not any(s["alive"] for s in dead["servers"] if s["id"] in victims)
    healthy = cluster.wait_healthy(timeout=60)
    _wait_until("the writer goes on with the host still cut off",
                lambda: agent.call("load_count") >= 2 * len(during), timeout=60)
    load = agent.call("load_stop")
    assert load["failures"] == [], load["failures"][:5]
    written += [(guid, Path(path)) for guid, path in load["acked"]]
    # the new table leaves the cut host out: every row is back to k holders on the two other hosts
    table_after = cluster.table()
    ids_after = [s["id"] for s in table_after["servers"]]
    for row in table_after["rows"]:
        assert not any(ids_after[i] in victims for i in row), row
        assert len(row) == cluster.replicas
    assert table_after["version"] > table_before["version"]
    assert healthy["recovery"] is None or healthy["recovery"]["rows_under_replicated"] == 0

    for n, (guid, path) in enumerate(written):
        for via in ("client", "gateway"):
            assert _read_back(agent, via, guid, tmp_path / f"out{n}") == path.read_bytes(), (guid, path, via)

    # cable back in: the host's servers (which never stopped) heartbeat again and rejoin
    cluster.net.restore(victim)
    cluster.wait_for(f"{victim}'s servers alive again", lambda st: all(
        s["alive"] and s["state"] == "active" for s in st["servers"] if s["id"] in victims), timeout=30)
    cluster.wait_healthy(timeout=60)
