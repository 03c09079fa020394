"""Adding and decommissioning tract servers while clients write and read.

Both are two-phase hand-overs: the new holder joins a row as *filling* and
the old one as *leaving*; both take writes; the leaving one goes when the
new one has every tract, and then removes its copies.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.fault.replication import Acked, assert_fully_replicated, verify_all, wait_healthy, write_load
from tests.support.credentials import AUTH


def _rows_per_server(ms: str) -> dict[str, int]:
    table = httpx.get(f"{ms}/v1/table", headers=AUTH).json()
    counts = {s["id"]: 0 for s in table["servers"]}
    for row in table["rows"]:
        for i in row:
            counts[table["servers"][i]["id"]] += 1
    return counts


@pytest.mark.slow
def test_add_two_servers_and_decommission_one_under_load(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(tractservers=4, replicas=3)
    ms = cluster.metaserver_url
    acked = Acked()

    async def main() -> None:
        stop = asyncio.Event()
        loads = [asyncio.create_task(write_load(ms, acked, stop, seed=21 + i)) for i in range(2)]
        await asyncio.sleep(2.0)
        new = [cluster.add_tractserver(), cluster.add_tractserver()]
        new_ids = {cluster.server_id(c.name) for c in new}
        # The new servers get their share while the clients keep going.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            counts = _rows_per_server(ms)
            status = httpx.get(f"{ms}/v1/cluster", headers=AUTH).json()
            if all(counts[i] > 0 for i in new_ids) and status["healthy"] and not status["recovery"]["rows_filling"]:
                break
            await asyncio.sleep(0.2)
        counts = _rows_per_server(ms)
        assert all(counts[i] > 0 for i in new_ids), counts
        assert max(counts.values()) - min(counts.values()) <= 4, f"rows not spread evenly: {counts}"
        # Decommission one of the original servers, still under load.
        leaving = cluster.server_id("ts0")
        resp = httpx.post(f"{ms}/v1/servers/{leaving}/decommission", headers=AUTH)
        assert resp.status_code == 200, resp.text
        assert resp.json()["rows_moving"] > 0
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            states = {s["id"]: s["state"] for s in httpx.get(f"{ms}/v1/cluster", headers=AUTH).json()["servers"]}
            if states[leaving] == "decommissioned":
                break
            await asyncio.sleep(0.2)
        assert states[leaving] == "decommissioned"
        stop.set()
        await asyncio.gather(*loads)

    asyncio.run(main())
    assert acked.failures == [], acked.failures[:5]
    wait_healthy(cluster)
    assert _rows_per_server(ms)[cluster.server_id("ts0")] == 0
    assert_fully_replicated(cluster, acked)
    asyncio.run(verify_all(ms, acked))
    # The decommissioned server removes its copies.
    ts0 = cluster.child("ts0")
    deadline = time.monotonic() + 30
    while httpx.get(f"{ts0.url}/v1/stats", headers=AUTH).json()["tracts"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert httpx.get(f"{ts0.url}/v1/stats", headers=AUTH).json()["tracts"] == 0
