"""A tract server dies under load: clients notice nothing, and every server helps re-replicate its rows.

Real processes on loopback, SIGKILL by PID, seeded randomness.
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.fault.replication import (
    Acked,
    assert_fully_replicated,
    fill_cluster,
    read_load,
    verify_all,
    wait_healthy,
    write_load,
)
from tests.support.credentials import AUTH


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11])
def test_kill_one_server_under_load_recovers_everything(make_cluster, seed: int) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL one of six servers (k=3) while three clients write and read.

    Interleaving: the kill lands with writes in flight to the victim. The
    clients retry them on the new table once the metaserver declares the
    victim dead (3 s here); reads fail over to other replicas at once. Then
    the new holders copy the victim's rows from the survivors.
    """
    cluster = make_cluster(tractservers=6, replicas=3)
    acked = Acked()
    victim = cluster.server_id("ts2")

    async def main() -> None:
        stop = asyncio.Event()
        loads = [asyncio.create_task(write_load(cluster.metaserver_url, acked, stop, seed=seed + i))
                 for i in range(3)]
        await asyncio.sleep(3.0)
        before = sum(len(t) for t in acked.tracts.values())
        cluster.kill("ts2", signal.SIGKILL)
        await asyncio.sleep(8.0)  # through detection and into recovery
        stop.set()
        await asyncio.gather(*loads)
        assert sum(len(t) for t in acked.tracts.values()) > before  # writes went on after the kill

    asyncio.run(main())
    assert acked.failures == [], acked.failures[:5]
    status = wait_healthy(cluster)
    states = {s["id"]: s["state"] for s in status["servers"]}
    assert states[victim] == "dead"
    assert status["recovery"]["last_seconds"] is not None
    assert_fully_replicated(cluster, acked)
    asyncio.run(verify_all(cluster.metaserver_url, acked))


@pytest.mark.slow
def test_every_survivor_helps_and_healthy_flag_tracks_repair(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """The dead server's rows go to all survivors, and `healthy` is false from detection until repaired."""
    cluster = make_cluster(tractservers=6, replicas=3)
    acked = Acked()

    fill_cluster(cluster, acked, 90, seed=5)
    ms = cluster.metaserver_url
    assert httpx.get(f"{ms}/v1/cluster", headers=AUTH).json()["healthy"] is True
    victim = cluster.server_id("ts0")
    table_before = httpx.get(f"{ms}/v1/table", headers=AUTH).json()
    cluster.kill("ts0", signal.SIGKILL)
    seen_unhealthy = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = httpx.get(f"{ms}/v1/cluster", headers=AUTH).json()
        if not status["healthy"]:
            seen_unhealthy = True
        elif seen_unhealthy:
            break
        time.sleep(0.05)
    assert seen_unhealthy
    status = wait_healthy(cluster)
    # Every survivor took some of the victim's rows: recovery is spread over all of them.
    survivors = {s["id"] for s in status["servers"] if s["id"] != victim}
    table = httpx.get(f"{ms}/v1/table", headers=AUTH).json()
    assert table["version"] > table_before["version"]
    index = {s["id"]: i for i, s in enumerate(table["servers"])}
    # The new holder of each of the victim's rows is whoever joined that row: every survivor must be one.
    lost = [r for r, row in enumerate(table_before["rows"]) if index[victim] in row]
    takers = {table["servers"][i]["id"] for r in lost for i in set(table["rows"][r]) - set(table_before["rows"][r])}
    assert takers == survivors, (takers, survivors)
    assert all(index[victim] not in row for row in table["rows"])
    assert_fully_replicated(cluster, acked)


@pytest.mark.slow
def test_server_declared_dead_comes_back_and_copies_only_what_changed(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """A server killed, declared dead and restarted keeps its tracts (it stayed an absent holder of its rows),
    rejoins those rows as filling, copies only the tracts written while it was away, and serves them all.

    (Before issue 11 it removed every tract of the rows it lost and rejoined empty.)
    """
    cluster = make_cluster(tractservers=5, replicas=3)
    acked = Acked()

    fill_cluster(cluster, acked, 60, seed=9)
    ts1 = next(c for c in cluster.tract_children if c.name == "ts1")
    held_before = httpx.get(f"{ts1.url}/v1/stats", headers=AUTH).json()["tracts"]
    assert held_before > 0
    victim = cluster.server_id("ts1")
    cluster.kill("ts1", signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = {s["id"]: s["state"] for s in httpx.get(f"{cluster.metaserver_url}/v1/cluster",
                                                         headers=AUTH).json()["servers"]}
        if states[victim] == "dead":
            break
        time.sleep(0.1)
    assert states[victim] == "dead"
    wait_healthy(cluster)
    before = sum(len(t) for t in acked.tracts.values())
    fill_cluster(cluster, acked, before + 30, seed=10)  # written while it is away
    away = sum(len(t) for t in acked.tracts.values()) - before
    wait_healthy(cluster)
    cluster.restart("ts1")
    status = wait_healthy(cluster)
    me = next(s for s in status["servers"] if s["id"] == victim)
    assert me["state"] == "active" and me["alive"] and me["rows"] > 0
    stats = httpx.get(f"{ts1.url}/v1/stats", headers=AUTH).json()
    assert 0 < stats["copied_tracts"] <= away, (stats, away)  # only what was written meanwhile, in its rows
    assert stats["tracts"] >= held_before
    assert_fully_replicated(cluster, acked)
    asyncio.run(verify_all(cluster.metaserver_url, acked))


@pytest.mark.slow
def test_metaserver_down_clients_go_on_and_recovery_waits(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Kill the metaserver under load, then a tract server while it is down.

    Interleaving: with no metaserver nobody can declare the tract server
    dead, so the table stays as it was: reads fail over to the other two
    replicas, writes to the dead server's rows wait (retrying). Once the
    tract servers' leases run out (2.4 s here) they stop serving (503
    lease_expired) and clients wait, retrying. When the metaserver is back,
    leases resume; the tract server's heartbeat has long timed out (every
    member gets a timeout and a lease of grace after the metaserver's
    restart), it is declared dead, and recovery runs. No call fails and
    nothing is lost.
    """
    cluster = make_cluster(tractservers=5, replicas=3)
    ms = cluster.metaserver_url
    acked = Acked()

    async def main() -> None:
        stop = asyncio.Event()
        loads = [asyncio.create_task(write_load(ms, acked, stop, seed=31 + i, verify_reads=False))
                 for i in range(2)]
        loads.append(asyncio.create_task(read_load(ms, acked, stop, seed=33)))
        await asyncio.sleep(2.0)
        cluster.kill("metaserver", signal.SIGKILL)
        await asyncio.sleep(1.0)
        reads_before = acked.reads
        cluster.kill("ts3", signal.SIGKILL)
        await asyncio.sleep(4.0)
        assert acked.reads > reads_before, "reads stopped while the tract servers' leases lasted"
        cluster.restart("metaserver")
        await asyncio.sleep(6.0)
        stop.set()
        await asyncio.gather(*loads)

    asyncio.run(main())
    assert acked.failures == [], acked.failures[:5]
    status = wait_healthy(cluster)
    assert {s["id"]: s["state"] for s in status["servers"]}[cluster.server_id("ts3")] == "dead"
    assert_fully_replicated(cluster, acked)
    asyncio.run(verify_all(ms, acked))
