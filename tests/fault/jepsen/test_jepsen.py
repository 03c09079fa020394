"""The Jepsen-style run: writers and readers, a seeded nemesis, then the checker (issue 11).

``pytest tests/fault/jepsen -s`` prints the seed and what the nemesis did;
``--jepsen-seconds 600`` adds ten minutes of random faults after the one of each kind, ``--jepsen-seed N`` replays a
schedule (the faults and their targets; the timing of the operations around them
varies from run to run). A failure lists each violation with the stretch of
history that shows it; the whole history is written to ``history.txt`` in the
test's temporary directory.

The run, on a k=3 cluster of 4 tract servers with 1 MiB tracts:

1. create one blob of ``KEYS`` tracts; start 3 writers, 2 readers that pick replicas at random
   and one reader next to each tract server (it reads that server first), each its own client;
2. the nemesis injects one fault of each kind, then random ones for ``--jepsen-seconds``; after
   each, the writers leave one more tract alone (until half are left alone), so the state
   each fault left, replicas that disagree for instance, is still there at the end;
3. heal every fault, crash one more writer after its first replica, let the clients run on a
   moment, stop them;
4. wait for the cluster to be healthy (every row k live, complete holders);
5. read every tract through a fresh client; run one scrub pass on every server (the
   anti-entropy meant to reconcile replicas), then read each replica on its own data port;
6. check: no garbage, no stale or non-linearizable read, every tract readable at the end,
   every replica of every tract holds the same bytes.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from fds.client import Client
from tests.fault.replication import wait_healthy
from tests.support.clusters import SMALL_TRACT
from tests.support.credentials import AUTH, SECRET_FILE

from .checker import Violation, check, check_replicas
from .history import History
from .nemesis import Nemesis, ProxiedCluster
from .workload import Workload, crashed_write, final_reads, replica_values

KEYS = 12
"""Tracts the clients share: few, so writers race on the same tract often. Half of them are frozen, one
after each of the first faults; the other half are written to the end."""

HEAL_TIMEOUT = 120.0
"""Seconds the healed cluster has to become healthy before that is itself a failure."""


@pytest.mark.slow
def test_jepsen(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    seed = int(request.config.getoption("--jepsen-seed"))
    seconds = float(request.config.getoption("--jepsen-seconds"))
    print(f"\njepsen: seed {seed}, one fault of each kind then {seconds:.0f} s more (replay: --jepsen-seed {seed})")
    cluster = ProxiedCluster(tmp_path / "cluster", tractservers=4, replicas=3, tract_size=SMALL_TRACT, port=0,
                             gateway=False, heartbeat_interval=0.2, secret_file=SECRET_FILE)
    try:
        cluster.start()
        report = _run(cluster, tmp_path, seed, seconds)
    finally:
        cluster.stop()
        for child in cluster.children:
            if child.dir:
                shutil.rmtree(child.dir, ignore_errors=True)
    print(report.text)
    assert not report.violations, report.text


class _Report:
    def __init__(self, seed: int, violations: list[Violation], text: str) -> None:
        self.seed, self.violations, self.text = seed, violations, text


def _run(cluster: ProxiedCluster, tmp_path: Path, seed: int, seconds: float) -> _Report:
    ms = cluster.metaserver_url
    history = History()
    guid = asyncio.run(_create_blob(ms, KEYS))
    workload = Workload(ms, guid, KEYS, history, seed,
                        nearest=tuple(cluster.server_id(c.name) for c in cluster.tract_children))
    detect = max(3.0, 6 * cluster.heartbeat_interval)  # LocalCluster's default heartbeat timeout
    nemesis = Nemesis(cluster, history, random.Random(seed), detect, AUTH, after_fault=workload.freeze_one,
                      crash_writer=lambda rng: crashed_write(workload, AUTH, rng))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    clients = threading.Thread(target=loop.run_until_complete, args=(workload.run(stop),), daemon=True)
    clients.start()
    violations: list[Violation] = []
    try:
        time.sleep(1.0)  # some history before the first fault
        nemesis.run(seconds)
    finally:
        nemesis.heal()
        nemesis.crashed_writer()  # once more, so that no later fault moves what it left
        time.sleep(detect)  # the clients go on a while against the healed cluster
        loop.call_soon_threadsafe(stop.set)
        clients.join(workload.retry_for + workload.timeout + 30)
    if clients.is_alive():
        violations.append(Violation("stuck", None, "the clients did not finish their last operations"))
    try:
        wait_healthy(cluster, timeout=HEAL_TIMEOUT, settle=1.0)
    except AssertionError as exc:
        violations.append(Violation("did not heal", None, f"after every fault ended: {exc}"))
    asyncio.run(final_reads(ms, guid, KEYS, history))
    _scrub(cluster)
    replicas = replica_values(ms, guid, KEYS, AUTH)
    violations += check(history) + check_replicas(replicas)
    strict = [v for v in check(history, linearizable=True) if v.kind == "not linearizable" or v not in violations]
    (tmp_path / "history.txt").write_text("\n".join(history.format(e) for e in history.events) + "\n")
    first = cluster.tract_children[:len(workload.nearest)]  # the servers there were when the clients started
    near = [f"r{workload.readers + i} next to {c.name}" for i, c in enumerate(first)]
    text = _describe(seed, history, nemesis, violations, strict, tmp_path, f"readers: {', '.join(near)}")
    return _Report(seed, violations, text)


async def _create_blob(metaserver: str, keys: int) -> str:
    async with Client(metaserver) as client:
        blob = await client.create_blob()
        await blob.extend(keys)
        return blob.guid


def _scrub(cluster: ProxiedCluster) -> None:
    """One scrub pass on every running tract server: the anti-entropy that reconciles replicas."""
    for child in cluster.tract_children:
        if child.alive():
            httpx.post(f"{child.url}/v1/admin/scrub", headers=AUTH, timeout=60).raise_for_status()


def _describe(seed: int, history: History, nemesis: Nemesis, violations: list[Violation], strict: list[Violation],
              tmp_path: Path, readers: str) -> str:
    counts = Counter((op.f, op.status) for op in history.ops())
    ops = ", ".join(f"{f} {status}: {n}" for (f, status), n in sorted(counts.items()))
    lines = [f"jepsen seed {seed}: {len(violations)} violation(s)", f"operations: {ops}", readers, "nemesis:"]
    lines += [f"  {line}" for line in nemesis.done]
    lines.append(f"not linearizable (fds does not promise it; for information): {len(strict)} place(s)")
    lines += [str(v) for v in violations[:12]]
    if len(violations) > 12:
        lines.append(f"... and {len(violations) - 12} more")
    lines.append(f"history: {tmp_path / 'history.txt'}")
    return "\n".join(lines)
