"""An outage of every tract server (issue 11): nothing is declared dead, no copy is dropped, nothing is copied
once they return; with 3 of 4 back every byte is readable, and the fourth rejoins its rows copying nothing.

Real processes on loopback, paused with SIGSTOP and resumed with SIGCONT by PID (a paused process's kernel
still accepts connections and acknowledges TCP, as a hung or partitioned host's would).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from fds.client import Client
from fds.local import LocalCluster
from tests.support.clusters import SMALL_TRACT
from tests.support.credentials import AUTH

TRACTS = 40


def _status(cluster: LocalCluster) -> dict[str, Any]:
    return dict(httpx.get(f"{cluster.metaserver_url}/v1/cluster", headers=AUTH, timeout=10).json())


def _table(cluster: LocalCluster) -> dict[str, Any]:
    return dict(httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH, timeout=10).json())


def _copied(cluster: LocalCluster) -> dict[str, int]:
    """Bytes each tract server copied from row-mates since it started."""
    return {c.name: httpx.get(f"{c.url}/v1/stats", headers=AUTH, timeout=10).json()["copied_bytes"]
            for c in cluster.tract_children}


def _write_blob(cluster: LocalCluster) -> tuple[str, list[bytes]]:
    data = [os.urandom(SMALL_TRACT - i) for i in range(TRACTS)]

    async def write() -> str:
        async with Client(cluster.metaserver_url) as fds:
            blob = await fds.create_blob()
            await blob.extend(TRACTS)
            await blob.write_tracts(enumerate(data))
            return blob.guid

    return asyncio.run(write()), data


def _read_blob(cluster: LocalCluster, guid: str) -> list[bytes]:
    async def read() -> list[bytes]:
        async with Client(cluster.metaserver_url) as fds:
            blob = await fds.open_blob(guid)
            return [bytes(d) async for _, d in blob.read_tracts(range(TRACTS))]

    return asyncio.run(read())


@contextmanager
def _paused(cluster: LocalCluster, names: list[str]) -> Iterator[set[str]]:
    """SIGSTOP ``names``; on exit SIGCONT whichever are still paused (the caller may resume some earlier
    by removing them from the yielded set)."""
    paused = set(names)
    for name in names:
        os.kill(cluster.child(name).pid or 0, signal.SIGSTOP)
    try:
        yield paused
    finally:
        for name in paused:
            os.kill(cluster.child(name).pid or 0, signal.SIGCONT)


def _resume(cluster: LocalCluster, paused: set[str], name: str) -> None:
    os.kill(cluster.child(name).pid or 0, signal.SIGCONT)
    paused.discard(name)


def _wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_outage(cluster: LocalCluster, silent: int) -> dict[str, Any]:
    return dict(_wait_for("the outage to be reported", lambda: (s := _status(cluster))["outage"]
                          and len(s["outage"]["silent"]) == silent and s))


def test_outage_of_every_server_declares_none_dead_and_copies_nothing(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(tractservers=4, replicas=3)
    guid, data = _write_blob(cluster)
    before = _table(cluster)
    names = [c.name for c in cluster.tract_children]
    with _paused(cluster, names):
        status = _wait_outage(cluster, 4)
        assert status["outage"]["message"] == "outage: 4 of 4 servers silent, repair held"
        metrics = httpx.get(f"{cluster.metaserver_url}/metrics", headers=AUTH).text
        assert "fds_outage_silent_servers 4.0" in metrics.splitlines()
        time.sleep(1.0)  # well past the heartbeat timeout: still nobody declared dead
        assert all(s["state"] == "active" for s in _status(cluster)["servers"])
    status = cluster.wait_healthy()
    assert status["outage"] is None
    assert all(s["state"] == "active" for s in status["servers"])
    after = _table(cluster)
    assert (after["rows"], after["absent"], after["filling"]) == (before["rows"], {}, {})
    assert sum(_copied(cluster).values()) == 0
    assert _read_blob(cluster, guid) == data


def _fds(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``fds`` command against ``cluster``."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FDS_")},
           "FDS_SECRET_FILE": str(cluster.secret_file)}
    return subprocess.run([sys.executable, "-m", "fds", *args, "--metaserver", cluster.metaserver_url],
                          env=env, capture_output=True, text=True, timeout=60)


def test_three_of_four_return_then_the_fourth_rejoins_copying_nothing(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Interleaving: all four paused: an outage, repair held. The operator declares the fourth dead
    (`fds admin declare-dead`; its rows keep it as an absent holder); three resumed: the outage is over, the
    rows get replacements, and every byte is read from the three within 60 s. Declaring one of them dead is
    refused: it is alive. Then the fourth is resumed: it rejoins its rows as filling, copies nothing (its tracts
    are current), and the surplus holders go."""
    cluster = make_cluster(tractservers=4, replicas=3)
    guid, data = _write_blob(cluster)
    last = cluster.tract_children[-1]
    last_id = cluster.server_id(last.name)
    names = [c.name for c in cluster.tract_children]
    with _paused(cluster, names) as paused:
        _wait_outage(cluster, 4)
        assert "outage: 4 of 4 servers silent, repair held" in _fds(cluster, "status").stdout
        released = _fds(cluster, "admin", "declare-dead", last_id)
        assert released.returncode == 0, released.stderr
        assert f"{last_id} declared dead" in released.stdout
        table = _table(cluster)
        index = next(i for i, s in enumerate(table["servers"]) if s["id"] == last_id)
        assert all(index not in row for row in table["rows"])
        assert table["absent"] and all(v == [index] for v in table["absent"].values())
        for name in names[:-1]:
            _resume(cluster, paused, name)
        started = time.monotonic()
        assert _read_blob(cluster, guid) == data
        assert time.monotonic() - started < 60
        refused = _fds(cluster, "admin", "declare-dead", cluster.server_id(names[0]))
        assert refused.returncode == 1 and "alive" in refused.stderr, refused
        cluster.wait_healthy(timeout=60)  # the replacements have filled; it is still absent
        assert _table(cluster)["absent"]
    copied_before = _copied(cluster)[last.name]
    # Healthy already without it: wait for its heartbeats to bring it back, rather than read the state at once.
    _wait_for("the fourth server active again", lambda: {s["id"]: s["state"] for s in _status(cluster)["servers"]}
              [last_id] == "active")
    cluster.wait_healthy(timeout=60)
    _wait_for("the server to rejoin and the surplus holders to go", lambda: (t := _table(cluster)) and all(
        len(row) == 3 for row in t["rows"]) and not t["absent"] and not t["filling"])
    table = _table(cluster)
    assert any(index in row for row in table["rows"]), "the returning server was given none of its rows back"
    assert _copied(cluster)[last.name] == copied_before == 0, "the returning server copied tracts it had"
    assert _read_blob(cluster, guid) == data
