"""Blobs round-trip through real tract servers, at k=1 and k=3."""

from __future__ import annotations

import asyncio
import io
import os
import random

import pytest

from fds.client import BlobExists, BlobNotFound, Client, PastEnd, SyncClient, TractTooLarge
from fds.local import LocalCluster
from tests.support.clusters import SMALL_TRACT
from tests.support.credentials import AUTH


def _sizes(rng: random.Random) -> list[int]:
    fixed = [0, 1, SMALL_TRACT - 1, SMALL_TRACT, SMALL_TRACT + 1, 3 * SMALL_TRACT]
    return fixed + [rng.randrange(0, 5 * SMALL_TRACT) for _ in range(8)]


@pytest.mark.parametrize("which", ["cluster_k1", "cluster_k3"])
def test_many_blobs_round_trip(which: str, request: pytest.FixtureRequest) -> None:
    cluster: LocalCluster = request.getfixturevalue(which)
    rng = random.Random(1234)

    async def main() -> None:
        async with Client(cluster.metaserver_url) as fds:
            written = {}
            for size in _sizes(rng):
                data = rng.randbytes(size)
                blob = await fds.create_blob()
                info = await blob.write_from(io.BytesIO(data))
                assert info.length == size
                assert info.tracts == -(-size // SMALL_TRACT)
                written[blob.guid] = data
            for guid, data in written.items():
                out = io.BytesIO()
                blob = await fds.open_blob(guid)
                assert await blob.read_into(out) == len(data)
                assert out.getvalue() == data

    asyncio.run(main())


def test_tract_api_short_tracts_and_order(cluster_k3: LocalCluster) -> None:
    """Whole-tract writes of any length up to the tract size read back exactly, in any order."""
    rng = random.Random(7)

    async def main() -> None:
        async with Client(cluster_k3.metaserver_url, max_in_flight=8) as fds:
            blob = await fds.create_blob()
            assert await blob.size() == 0
            assert await blob.extend(5) == 0
            tracts = {i: rng.randbytes(rng.choice([0, 100, SMALL_TRACT - 100, SMALL_TRACT])) for i in range(5)}
            await blob.write_tracts(reversed(list(tracts.items())))
            got = {i: bytes(d) async for i, d in blob.read_tracts([4, 0, 3, 1, 2])}
            assert got == tracts
            with pytest.raises(PastEnd, match="extend it first"):
                await blob.write_tract(5, b"x")
            with pytest.raises(PastEnd):
                await blob.read_tract(7)
            with pytest.raises(TractTooLarge):
                await blob.write_tract(0, b"x" * (SMALL_TRACT + 1))
            # Rewriting a tract replaces it whole.
            await blob.write_tract(2, b"new")
            assert await blob.read_tract(2) == b"new"

    asyncio.run(main())


def test_create_open_delete(cluster_k3: LocalCluster) -> None:
    async def main() -> None:
        async with Client(cluster_k3.metaserver_url) as fds:
            guid = "0123456789abcdef0123456789abcdef"
            blob = await fds.create_blob(guid)
            assert blob.guid == "01234567-89ab-cdef-0123-456789abcdef"
            with pytest.raises(BlobExists):
                await fds.create_blob(guid)
            await blob.extend(1)
            await blob.write_tract(0, b"hello")
            await fds.delete_blob(guid)
            with pytest.raises(BlobNotFound):
                await fds.open_blob(guid)
            with pytest.raises(BlobNotFound):
                await fds.delete_blob(guid)
            # The GUID can be used again; the new blob starts empty.
            again = await fds.create_blob(guid)
            assert await again.size() == 0

    asyncio.run(main())


def test_sync_client_and_files(cluster_k1: LocalCluster, tmp_path: os.PathLike[str]) -> None:
    src = os.path.join(tmp_path, "in.bin")
    dst = os.path.join(tmp_path, "out.bin")
    data = os.urandom(2 * SMALL_TRACT + 12345)
    with open(src, "wb") as fh:
        fh.write(data)
    with SyncClient(cluster_k1.metaserver_url) as fds:
        blob = fds.create_blob()
        seen: list[int] = []
        info = blob.write_from(src, progress=seen.append)
        assert info.length == len(data) and sum(seen) == len(data)
        assert fds.open_blob(blob.guid).read_into(dst) == len(data)
    with open(dst, "rb") as fh:
        assert fh.read() == data


def test_tracts_spread_over_all_servers(cluster_k1: LocalCluster) -> None:
    """A blob's consecutive tracts land on every tract server, evenly (k=1: one copy each)."""
    import httpx

    async def main() -> None:
        async with Client(cluster_k1.metaserver_url) as fds:
            blob = await fds.create_blob()
            table = await fds.table()
            n = len(table.rows)
            await blob.extend(n)
            await blob.write_tracts((i, b"x" * 10) for i in range(n))

    before = {c.name: httpx.get(f"{c.url}/v1/stats", headers=AUTH).json()["tracts"] for c in cluster_k1.tract_children}
    asyncio.run(main())
    after = {c.name: httpx.get(f"{c.url}/v1/stats", headers=AUTH).json()["tracts"] for c in cluster_k1.tract_children}
    added = [after[name] - before[name] for name in before]
    # 80 rows = 20 permutations of 4 servers: one full pass gives each server exactly 20.
    assert added == [20, 20, 20, 20]
