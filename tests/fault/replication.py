"""Helpers for the replication fault tests: load generators and a full-replication check."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from fds.client import Client
from fds.guid import format_guid
from fds.local import LocalCluster
from fds.models import TableModel
from fds.tlt import Table
from tests.support.clusters import SMALL_TRACT
from tests.support.credentials import AUTH


def payload(seed: int, tract: int, version: int = 0) -> bytes:
    """Deterministic tract contents, of varying length."""
    rng = random.Random(seed * 1_000_003 + tract * 1009 + version)
    return rng.randbytes(SMALL_TRACT - rng.randrange(0, 4096))


@dataclass
class Acked:
    """Every write a client saw acknowledged: blob guid -> tract -> payload seed/version."""

    tracts: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    reads: int = 0

    def record(self, guid: str, tract: int, seed: int, version: int) -> None:
        self.tracts.setdefault(guid, {})[tract] = (seed, version)


async def write_load(url: str, acked: Acked, stop: asyncio.Event, *, seed: int, tracts_per_blob: int = 6,
                     verify_reads: bool = True) -> None:
    """Create blobs and write (then read back) tracts until ``stop``; every failure is recorded."""
    rng = random.Random(seed)
    async with Client(url, max_in_flight=8) as fds:
        n = 0
        while not stop.is_set():
            n += 1
            blob_seed = seed * 10_000 + n
            try:
                blob = await fds.create_blob()
                await blob.extend(tracts_per_blob)
                await blob.write_tracts((t, payload(blob_seed, t)) for t in range(tracts_per_blob))
                for t in range(tracts_per_blob):
                    acked.record(blob.guid, t, blob_seed, 0)
                if verify_reads and acked.tracts:
                    guid = rng.choice(list(acked.tracts))
                    other = await fds.open_blob(guid)
                    tract, (s, v) = rng.choice(list(acked.tracts[guid].items()))
                    data = await other.read_tract(tract)
                    acked.reads += 1
                    if data != payload(s, tract, v):
                        acked.failures.append(f"read of {guid}/{tract} returned wrong bytes")
            except Exception as exc:  # noqa: BLE001 - the test asserts there are none
                acked.failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(0)


def fill_cluster(cluster: LocalCluster, acked: Acked, tracts: int, *, seed: int) -> None:
    """Write blobs until at least ``tracts`` tracts are acknowledged."""

    async def fill() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(write_load(cluster.metaserver_url, acked, stop, seed=seed, verify_reads=False))
        while sum(len(t) for t in acked.tracts.values()) < tracts and not task.done():
            await asyncio.sleep(0.1)
        stop.set()
        await task

    asyncio.run(fill())


async def read_load(url: str, acked: Acked, stop: asyncio.Event, *, seed: int) -> None:
    """Read random acknowledged tracts until ``stop``; wrong bytes and failures are recorded."""
    rng = random.Random(seed)
    async with Client(url, max_in_flight=4) as fds:
        while not stop.is_set():
            if not acked.tracts:
                await asyncio.sleep(0.05)
                continue
            guid = rng.choice(list(acked.tracts))
            tract, (s, v) = rng.choice(list(acked.tracts[guid].items()))
            try:
                blob = await fds.open_blob(guid)
                data = await blob.read_tract(tract)
            except Exception as exc:  # noqa: BLE001 - the test asserts there are none
                acked.failures.append(f"read: {type(exc).__name__}: {exc}")
                continue
            acked.reads += 1
            if data != payload(s, tract, v):
                acked.failures.append(f"read of {guid}/{tract} returned wrong bytes")


async def verify_all(url: str, acked: Acked) -> None:
    """Every acknowledged tract reads back byte for byte."""
    async with Client(url) as fds:
        for guid, tracts in acked.tracts.items():
            blob = await fds.open_blob(guid)
            for tract, (s, v) in tracts.items():
                data = await blob.read_tract(tract)
                assert data == payload(s, tract, v), f"blob {guid} tract {tract} differs"


def wait_healthy(cluster: LocalCluster, timeout: float = 120.0, settle: float = 2.0) -> dict[str, Any]:
    """Wait until the cluster is healthy, nothing is filling, and the table has not changed for ``settle``
    seconds (a server that came back may be handed rows right after a repair)."""
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    stable_since: float | None = None
    version = -1
    while time.monotonic() < deadline:
        try:
            status = httpx.get(f"{cluster.metaserver_url}/v1/cluster", timeout=10, headers=AUTH).json()
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if status["healthy"] and not status["recovery"]["rows_filling"]:
            if status["table_version"] != version:
                version, stable_since = status["table_version"], time.monotonic()
            elif stable_since is not None and time.monotonic() - stable_since >= settle:
                return status
        else:
            stable_since, version = None, -1
        time.sleep(0.2)
    raise AssertionError(f"cluster not healthy after {timeout}s: {status}")


def assert_fully_replicated(cluster: LocalCluster, acked: Acked) -> None:
    """Every row has k live holders, none filling, and each holds every acknowledged tract with the same bytes."""
    table = Table(TableModel.model_validate_json(httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH).content))
    status = httpx.get(f"{cluster.metaserver_url}/v1/cluster", headers=AUTH).json()
    alive = {s["id"] for s in status["servers"] if s["alive"]}
    assert not table.filling, f"rows still filling: {table.filling}"
    for r, row in enumerate(table.rows):
        ids = [table.servers[i].id for i in row]
        assert len(ids) == table.replicas, f"row {r} has {len(ids)} holders"
        assert all(i in alive for i in ids), f"row {r} has a dead holder: {ids}"
        assert len({table.servers[i].domain for i in row}) == len(row), f"row {r} repeats a failure domain"
    with httpx.Client(timeout=30, headers=AUTH) as http:
        for guid, tracts in acked.tracts.items():
            raw = bytes.fromhex(guid.replace("-", ""))
            info = http.get(f"{table.holders(raw, -1)[0].url}/v1/meta/{guid}",
                            params={"version": table.version}).json()
            for tract, (s, v) in tracts.items():
                want = payload(s, tract, v)
                for server in table.holders(raw, tract):
                    resp = http.get(f"{server.url}/v1/tracts/{format_guid(raw)}/{tract}",
                                    params={"version": table.version, "incarnation": info["incarnation"]})
                    assert resp.status_code == 200, f"{server.id} lacks {guid}/{tract}: {resp.text}"
                    assert resp.content == want, f"{server.id} has different bytes for {guid}/{tract}"
