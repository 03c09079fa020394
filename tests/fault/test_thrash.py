"""Thrash: for a bounded time, kill, restart, add and remove servers (and the metaserver) under load.

Run longer with ``pytest tests/fault/test_thrash.py --thrash-seconds 900``.
Every action is chosen by a seeded random generator (the seed is printed
on failure). The rules keep the cluster within what k=3 promises: a
tract server is killed only while the cluster is healthy (every row has 3
complete holders), so no row ever loses all of its copies; restarts,
additions and metaserver restarts happen at any time. At the end the test
waits for full replication and checks every acknowledged byte.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time

import httpx
import pytest

from tests.fault.replication import Acked, assert_fully_replicated, verify_all, wait_healthy, write_load
from tests.support.credentials import AUTH

SEED = 20261121


@pytest.mark.slow
def test_thrash(make_cluster, request: pytest.FixtureRequest) -> None:  # type: ignore[no-untyped-def]
    seconds = float(request.config.getoption("--thrash-seconds"))
    if seconds <= 0:
        pytest.skip("the thrash soak runs only when asked: --thrash-seconds 60 (or 900 for a long soak)")
    rng = random.Random(SEED)
    cluster = make_cluster(tractservers=6, replicas=3)
    ms = cluster.metaserver_url
    acked = Acked()
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()

    async def clients() -> None:
        await asyncio.gather(*(write_load(ms, acked, stop, seed=SEED + i, tracts_per_blob=4) for i in range(2)))

    runner = threading.Thread(target=loop.run_until_complete, args=(clients(),), daemon=True)
    runner.start()
    log: list[str] = []
    down: list[str] = []

    def healthy() -> bool:
        try:
            status = httpx.get(f"{ms}/v1/cluster", timeout=5, headers=AUTH).json()
        except httpx.HTTPError:
            return False
        return bool(status["healthy"]) and not status["recovery"]["rows_filling"]

    def active() -> list[str]:
        status = httpx.get(f"{ms}/v1/cluster", timeout=5, headers=AUTH).json()
        ids = {s["id"] for s in status["servers"] if s["state"] == "active" and s["alive"]}
        return [c.name for c in cluster.tract_children if c.alive() and cluster.server_id(c.name) in ids]

    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(2.0, 5.0))
            action = rng.choice(["kill", "kill", "restart", "add", "decommission", "metaserver"])
            if action == "kill" and healthy():
                live = active()
                if len(live) > 4:
                    victim = rng.choice(live)
                    cluster.kill(victim, signal.SIGKILL)
                    down.append(victim)
                    log.append(f"kill {victim}")
            elif action == "restart" and down:
                name = down.pop(rng.randrange(len(down)))
                cluster.restart(name)
                log.append(f"restart {name}")
            elif action == "add" and len(cluster.tract_children) < 9:
                child = cluster.add_tractserver()
                log.append(f"add {child.name}")
            elif action == "decommission" and healthy():
                live = active()
                if len(live) > 5:
                    name = rng.choice(live)
                    resp = httpx.post(f"{ms}/v1/servers/{cluster.server_id(name)}/decommission", timeout=10,
                                      headers=AUTH)
                    assert resp.status_code == 200, resp.text
                    log.append(f"decommission {name}")
            elif action == "metaserver":
                cluster.kill("metaserver", signal.SIGKILL)
                time.sleep(rng.uniform(0.2, 2.0))
                cluster.restart("metaserver")
                log.append("restart metaserver")
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(timeout=180)
    assert not runner.is_alive(), "clients did not stop"
    assert acked.failures == [], (log, acked.failures[:5])
    assert len(log) >= 5, log
    for name in down:  # bring the killed back, so every server can be checked
        cluster.restart(name)
    wait_healthy(cluster, timeout=180)
    assert_fully_replicated(cluster, acked)
    asyncio.run(verify_all(ms, acked))
    assert acked.reads > 0 and sum(len(t) for t in acked.tracts.values()) > 50, (acked.reads, log)
