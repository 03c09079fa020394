"""Corrupt copies are refused and read elsewhere; a full disk refuses cleanly."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest

from fds.client import Client, DiskFull
from fds.models import TableModel
from fds.placement import tract_row
from tests.support.clusters import SMALL_TRACT
from tests.support.credentials import AUTH


def test_flipped_bytes_detected_served_elsewhere_and_repaired_by_scrub(make_cluster) -> None:  # type: ignore[no-untyped-def]
    # No tract cache: this test is about what is on disk.
    cluster = make_cluster(tractservers=4, replicas=3, cache_bytes=0)
    data = bytes(range(256)) * (SMALL_TRACT // 256)

    async def write() -> str:
        async with Client(cluster.metaserver_url) as fds:
            blob = await fds.create_blob()
            await blob.extend(1)
            await blob.write_tract(0, data)
            return blob.guid

    guid = asyncio.run(write())
    raw = bytes.fromhex(guid.replace("-", ""))
    table = TableModel.model_validate(httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH).json())
    holders = [table.servers[i] for i in table.rows[tract_row(raw, 0, len(table.rows))]]
    dirs = {c.url: Path(c.dir) for c in cluster.tract_children}
    # Corrupt two of the three copies.
    for server in holders[:2]:
        (path,) = (dirs[server.url] / "tracts").rglob(f"{raw.hex()}.1.0.*")
        buf = bytearray(path.read_bytes())
        buf[12345] ^= 0x01
        path.write_bytes(bytes(buf))
        resp = httpx.get(f"{server.url}/v1/tracts/{guid}/0", params={"incarnation": 1, "version": table.version},
                         headers=AUTH)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "checksum_mismatch"

    async def read_many() -> None:
        async with Client(cluster.metaserver_url) as fds:
            blob = await fds.open_blob(guid)
            for _ in range(10):  # random replica choice: every read must still be right
                assert await blob.read_tract(0) == data

    asyncio.run(read_many())
    # One scrub pass on each corrupt holder re-reads every tract, finds the bad copy and repairs it
    # from the good replica; a second pass finds nothing.
    for server in holders[:2]:
        report = httpx.post(f"{server.url}/v1/admin/scrub", params={"rate": 0}, timeout=60, headers=AUTH).json()
        assert report["bad"] == 1 and report["repaired"] == 1, report
        resp = httpx.get(f"{server.url}/v1/tracts/{guid}/0", params={"incarnation": 1, "version": table.version},
                         headers=AUTH)
        assert resp.status_code == 200 and resp.content == data
        again = httpx.post(f"{server.url}/v1/admin/scrub", params={"rate": 0}, timeout=60, headers=AUTH).json()
        assert again["bad"] == 0 and again["checked"] >= 1
    metrics = httpx.get(f"{holders[0].url}/metrics", headers=AUTH).text
    (line,) = [m for m in metrics.splitlines() if m.startswith("fds_checksum_failures_total{")]
    assert float(line.split()[1]) >= 2  # the refused read and the scrub both counted it


def test_scrub_copies_a_missing_copy_and_collects_moved_rows(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """A holder that lost a tract (its index entry and file are gone) gets it back from a row-mate."""
    import rocksdict

    # A long heartbeat timeout: the holder is stopped and restarted, and must not be declared dead meanwhile
    # (it would then rejoin as a filling holder, and its fill, not the scrub, would copy the tract back).
    cluster = make_cluster(tractservers=4, replicas=3, cache_bytes=0, heartbeat_timeout=20.0)

    async def write() -> tuple[str, int]:
        async with Client(cluster.metaserver_url) as fds:
            blob = await fds.create_blob()
            await blob.extend(4)
            await blob.write_tracts((i, bytes([i + 1]) * 5000) for i in range(4))
            return blob.guid, blob.incarnation

    guid, incarnation = asyncio.run(write())
    raw = bytes.fromhex(guid.replace("-", ""))
    table = TableModel.model_validate(httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH).json())
    holder = table.servers[table.rows[tract_row(raw, 2, len(table.rows))][1]]
    child = next(c for c in cluster.tract_children if c.url == holder.url)
    cluster.kill(child.name, signal.SIGTERM)
    db = rocksdict.Rdict(str(Path(child.dir) / "index.rocksdb"), rocksdict.Options(raw_mode=True))
    db.delete(b"t" + raw + incarnation.to_bytes(8, "big") + (2).to_bytes(8, "big"))
    db.close()
    cluster.restart(child.name)
    cluster.wait_healthy()
    url = cluster.child(child.name).url
    params = {"incarnation": incarnation, "version": table.version}
    assert httpx.get(f"{url}/v1/tracts/{guid}/2", params=params, headers=AUTH).status_code == 404
    report = httpx.post(f"{url}/v1/admin/scrub", params={"rate": 0}, timeout=60, headers=AUTH).json()
    assert report["missing_copied"] == 1, report
    version = httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH).json()["version"]
    resp = httpx.get(f"{url}/v1/tracts/{guid}/2", params={**params, "version": version}, headers=AUTH)
    assert resp.status_code == 200 and resp.content == bytes([3]) * 5000


def test_disk_full_is_507_and_nothing_partial(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(tractservers=2, replicas=1, capacity_bytes=3 * SMALL_TRACT)
    tracts = 12

    async def main() -> None:
        async with Client(cluster.metaserver_url, attempts=1, retry_for=0) as fds:
            blob = await fds.create_blob()
            await blob.extend(tracts)
            written = {}
            full = 0
            for i in range(tracts):
                try:
                    await blob.write_tract(i, bytes([i]) * SMALL_TRACT)
                    written[i] = bytes([i]) * SMALL_TRACT
                except DiskFull as exc:
                    full += 1
                    assert "nothing was written" in str(exc)
            assert full > 0 and 0 < len(written) <= 6
            for i, data in written.items():  # reads go on working
                assert await blob.read_tract(i) == data

    asyncio.run(main())
    for child in cluster.tract_children:
        stats = httpx.get(f"{child.url}/v1/stats", headers=AUTH).json()
        assert stats["bytes_used"] <= 3 * SMALL_TRACT
        files = [p for p in (Path(child.dir) / "tracts").rglob("*") if p.is_file()]
        assert len(files) == stats["tracts"]  # no partial or temp files left behind


@pytest.mark.parametrize("k", [1, 3])
def test_collector_removes_tracts_of_deleted_blobs(make_cluster, k: int) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(tractservers=4, replicas=k)

    async def main() -> tuple[str, str]:
        async with Client(cluster.metaserver_url) as fds:
            gone = await fds.create_blob()
            await gone.extend(8)
            await gone.write_tracts((i, b"g" * 1000) for i in range(8))
            kept = await fds.create_blob()
            await kept.extend(4)
            await kept.write_tracts((i, b"k" * 1000) for i in range(4))
            await fds.delete_blob(gone.guid)
            return gone.guid, kept.guid

    gone, kept = asyncio.run(main())
    removed = sum(httpx.post(f"{c.url}/v1/admin/collect",
                             headers=AUTH).json()["removed"] for c in cluster.tract_children)
    assert removed == 8 * k
    total = sum(httpx.get(f"{c.url}/v1/stats", headers=AUTH).json()["tracts"] for c in cluster.tract_children)
    assert total == 4 * k

    async def check() -> None:
        async with Client(cluster.metaserver_url) as fds:
            blob = await fds.open_blob(kept)
            assert [bytes(d) async for _, d in blob.read_tracts(range(4))] == [b"k" * 1000] * 4

    asyncio.run(check())


def test_recreated_blob_never_sees_old_tracts(make_cluster) -> None:  # type: ignore[no-untyped-def]
    """Delete a blob, create the same GUID again: the old tracts are gone to readers and collected."""
    from fds.client import BlobNotFound, TractNotFound

    cluster = make_cluster(tractservers=4, replicas=3)

    async def main() -> None:
        async with Client(cluster.metaserver_url) as fds:
            old = await fds.create_blob()
            await old.extend(3)
            await old.write_tracts((i, f"old{i}".encode()) for i in range(3))
            await fds.delete_blob(old.guid)
            new = await fds.create_blob(old.guid)
            assert new.incarnation != old.incarnation
            await new.extend(3)
            await new.write_tract(0, b"new0")
            assert await new.read_tract(0) == b"new0"
            with pytest.raises(TractNotFound):
                await new.read_tract(1)  # never the predecessor's bytes
            # A handle on the old incarnation is refused wherever a server asks the
            # metadata primary (here: a tract the old blob never wrote, past its cache).
            stale = type(old)(fds, old.raw, old.incarnation)
            await new.extend(2)
            with pytest.raises(BlobNotFound, match="open it again"):
                await stale.write_tract(4, b"stale handle")

    asyncio.run(main())
    removed = sum(httpx.post(f"{c.url}/v1/admin/collect",
                             headers=AUTH).json()["removed"] for c in cluster.tract_children)
    assert removed == 3 * 3  # the old incarnation's three tracts, three replicas each
    total = sum(httpx.get(f"{c.url}/v1/stats", headers=AUTH).json()["tracts"] for c in cluster.tract_children)
    assert total == 3  # new0 on its three replicas
