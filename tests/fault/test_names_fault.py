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

import pytest

from fds.client import Client, KeyNotFound
from fds.local import LocalCluster
from fds.names import bucket_guid
from fds.placement import METADATA_TRACT
from tests.fault.replication import wait_healthy
from tests.support.clusters import SMALL_TRACT


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
