"""Names survive what blob metadata survives: the namespace primary SIGKILLed, three times in a row.

Real processes, SIGKILL by PID. After each kill the bucket's namespace row gets a new holder that copies
the name records (the filler) and the next original holder leads. After the third kill every holder of
the row is one that filled it, so the listing and every read show that the copies were whole: every
acknowledged name reads back byte for byte, and the listing is exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
import random
import signal

import httpx
import pytest

from fds.client import Client, KeyNotFound
from fds.local import LocalCluster
from fds.models import RowListing, TableModel
from fds.names import INLINE_MAX, bucket_guid
from fds.placement import METADATA_TRACT
from fds.tlt import Table
from tests.fault.replication import wait_healthy
from tests.support.clusters import SMALL_TRACT
from tests.support.credentials import AUTH


def _payload(key: str, version: int) -> bytes:
    rng = random.Random(f"{key}/{version}")
    return rng.randbytes(rng.choice([0, 10, 5000, SMALL_TRACT + 7]))


async def _primary(client: Client, cluster: LocalCluster, bucket: str) -> str:
    table = await client.tables.refresh(0)
    server = table.holders(bucket_guid(bucket), METADATA_TRACT)[0].id
    return next(c.name for c in cluster.tract_children if cluster.server_id(c.name) == server)


async def _check(client: Client, bucket: str, acked: dict[str, bytes]) -> None:
    b = client.bucket(bucket)
    assert [o.key async for o in b.iter() if not isinstance(o, str)] == sorted(acked, key=str.encode)
    for key, data in acked.items():
        assert await b.get(key) == data, key


@pytest.mark.slow
def test_names_survive_three_primaries_killed_in_turn(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(tractservers=6, replicas=3)
    acked: dict[str, bytes] = {}

    async def writes(client: Client, round_: int, count: int) -> None:
        bucket = client.bucket("survive")
        sem = asyncio.Semaphore(8)

        async def one(i: int) -> None:
            key = f"r{round_}/k{i:03d}"
            async with sem:
                data = _payload(key, 0)
                await bucket.put(key, data)
                acked[key] = data
                if i % 5 == 0 and round_ > 0:  # overwrite and delete older keys too
                    old = f"r0/k{i:03d}"
                    data = _payload(old, round_)
                    await bucket.put(old, data)
                    acked[old] = data
                if i % 7 == 0 and round_ > 0:
                    old = f"r0/k{i + 1:03d}"
                    try:
                        await bucket.delete(old)
                    except KeyNotFound:
                        pass
                    acked.pop(old, None)

        await asyncio.gather(*(one(i) for i in range(count)))

    async def main() -> None:
        async with cluster.client(retry_for=120.0) as client:
            await client.create_bucket("survive")
            await writes(client, 0, 60)
            table = await client.tables.refresh(0)
            first_holders = {s.id for s in table.holders(bucket_guid("survive"), METADATA_TRACT)}
            for round_ in (1, 2, 3):
                victim = await _primary(client, cluster, "survive")
                cluster.kill(victim, signal.SIGKILL)
                # Writes while the primary is dead: the client waits for the row's new primary.
                await writes(client, round_, 20)
                await asyncio.to_thread(wait_healthy, cluster, 180.0)
                await _check(client, "survive", acked)
                assert await _primary(client, cluster, "survive") != victim
            table = await client.tables.refresh(0)
            assert not first_holders & {s.id for s in table.holders(bucket_guid("survive"), METADATA_TRACT)}

    asyncio.run(main())


@pytest.mark.slow
def test_inline_objects_survive_sigkill_of_each_holder_and_of_the_whole_cluster(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Small objects kept inline in their name records (no blob) are as durable as any record: each server of
    the bucket's row in turn is SIGKILLed and restarted (within the heartbeat timeout, so it keeps the row), and
    its own RocksDB still holds every acknowledged object byte for byte; then every process of the cluster is
    SIGKILLed at once and restarted, and every object reads back byte for byte."""
    cluster = make_cluster(tractservers=3, replicas=3, heartbeat_timeout=60.0)
    rng = random.Random(11)
    acked: dict[str, bytes] = {}

    async def write(client: Client, tag: str) -> None:
        bucket = client.bucket("inline-kill")

        async def one(i: int) -> None:
            key = f"k{i:03d}"
            data = rng.randbytes(rng.choice([0, 1, 100, INLINE_MAX]))
            info = await bucket.put(key, data, meta={"tag": tag})
            assert info.blob == ""
            acked[key] = data

        await asyncio.gather(*(one(i) for i in range(40)))

    def on_disk(name: str) -> dict[str, bytes]:
        """The inline objects the server ``name`` has of the bucket, from its own RocksDB (its row listing)."""
        model = TableModel.model_validate_json(httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH,
                                                         timeout=10).content)
        row = Table(model).row_of(bucket_guid("inline-kill"), METADATA_TRACT)
        resp = httpx.post(f"{cluster.child(name).url}/v1/internal/rows", headers=AUTH, timeout=30,
                          json={"rows": [row], "version": model.version})
        assert resp.status_code == 200, resp.text
        listing = RowListing.model_validate_json(resp.content)
        return {r.key: r.data for r in listing.names if r.key and not r.deleted and r.data is not None}

    async def check(client: Client) -> None:
        bucket = client.bucket("inline-kill")
        assert [o.key async for o in bucket.iter() if not isinstance(o, str)] == sorted(acked)
        for key, data in acked.items():
            assert await bucket.get(key) == data, key

    async def main() -> None:
        async with cluster.client(retry_for=120.0) as client:
            await client.create_bucket("inline-kill")
            await write(client, "first")
            await write(client, "second")  # inline over inline
            for child in list(cluster.tract_children):
                cluster.kill(child.name, signal.SIGKILL)
                await asyncio.to_thread(cluster.restart, child.name)
                await asyncio.to_thread(wait_healthy, cluster, 120.0)
                assert await asyncio.to_thread(on_disk, child.name) == acked, child.name
                await check(client)
                await write(client, child.name)
        for child in cluster.children:
            cluster.kill(child.name, signal.SIGKILL)
        for child in cluster.children:  # the metaserver first
            cluster.restart(child.name)
        wait_healthy(cluster, 120.0)
        async with cluster.client(retry_for=120.0) as client:
            await check(client)

    asyncio.run(main())
