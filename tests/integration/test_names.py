"""Buckets and keys through the client library, against a real k=3 cluster.

Objects are blobs with names: the bytes go to a fresh blob, the name switches in one committed step
(create-only, or on the current ETag), a replaced blob is deleted after the grace period, listing is
one ordered iterator on the bucket's namespace primary.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from fds.client import (
    BadRequest,
    BlobNotFound,
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    Client,
    KeyNotFound,
    PreconditionFailed,
)
from fds.client._names import ObjectReader
from fds.local import LocalCluster
from fds.names import INLINE_MAX
from tests.support.clusters import SMALL_TRACT, shared_cluster
from tests.support.credentials import AUTH

GRACE = 1.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from shared_cluster(tmp_path_factory, "names", replicas=3, env={"FDS_NAME_GRACE": str(GRACE)})


def run(cluster: LocalCluster, work):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        async with cluster.client() as client:
            return await work(client)

    return asyncio.run(main())


def collect_everywhere(cluster: LocalCluster) -> int:
    retired = 0
    for child in cluster.tract_children:
        retired += httpx.post(f"{child.url}/v1/admin/collect", headers=AUTH, timeout=60).json()["retired"]
    return retired


def test_bucket_lifecycle_and_its_errors(cluster: LocalCluster) -> None:
    async def work(client: Client) -> None:
        bucket = await client.create_bucket("life")
        assert await bucket.exists()
        assert "life" in [b.name for b in await client.list_buckets()]
        with pytest.raises(BucketExists, match="already exists"):
            await client.create_bucket("life")
        await bucket.put("k", b"v")
        with pytest.raises(BucketNotEmpty, match="not empty.*'k'"):
            await client.delete_bucket("life")
        await bucket.delete("k")
        await client.delete_bucket("life")
        assert not await bucket.exists()
        assert "life" not in [b.name for b in await client.list_buckets()]
        with pytest.raises(BucketNotFound, match="no bucket 'life'"):
            await client.delete_bucket("life")
        with pytest.raises(BucketNotFound):
            await bucket.put("k", b"v")
        with pytest.raises(BucketNotFound):
            await bucket.head("k")
        again = await client.create_bucket("life")  # a deleted name can be created again, empty
        assert (await again.list()).objects == []
        await client.delete_bucket("life")

    run(cluster, work)


@pytest.mark.parametrize("name", ["ab", "A-bucket", "-lead", "trail-", "a..b", "192.168.1.2", "xn--x", "b-s3alias",
                                  "under_score", "x" * 64, "sp ace"])
def test_bad_bucket_names_are_refused_with_the_rule(cluster: LocalCluster, name: str) -> None:
    async def work(client: Client) -> None:
        with pytest.raises(BadRequest, match="bad bucket name") as err:
            await client.create_bucket(name)
        assert err.value.code == "bad_bucket_name"

    run(cluster, work)


def test_bad_keys_are_refused(cluster: LocalCluster) -> None:
    async def work(client: Client) -> None:
        bucket = client.bucket("keys") if await client.bucket("keys").exists() else await client.create_bucket("keys")
        for key, why in [("", "empty"), ("x" * 1025, "limit is 1024"), ("a\x00b", "NUL"), ("\ud800", "UTF-8")]:
            with pytest.raises(BadRequest, match=why):
                await bucket.put(key, b"v")
        # the servers check too: a key that skips the client's check
        resp = httpx.get(f"{cluster.tract_children[0].url}/v1/buckets/keys/object",
                         params={"key": "", "version": 1}, headers=AUTH)
        assert resp.status_code in (400, 422) and "error" in resp.json()
        with pytest.raises(KeyNotFound, match="no object 'missing' in bucket 'keys'"):
            await bucket.head("missing")
        with pytest.raises(KeyNotFound):
            await bucket.get("missing")
        with pytest.raises(KeyNotFound):
            await bucket.delete("missing")

    run(cluster, work)


def test_objects_round_trip_with_ranges_streams_and_files(cluster: LocalCluster, tmp_path: Path) -> None:
    data = random.Random(1).randbytes(2 * SMALL_TRACT + 12345)
    path = tmp_path / "in.bin"
    path.write_bytes(data)

    async def work(client: Client) -> None:
        bucket = await client.create_bucket("objects")
        info = await bucket.put("dir/a.bin", data, content_type="application/x-test", meta={"owner": "me"})
        assert (info.size, info.content_type, info.meta) == (len(data), "application/x-test", {"owner": "me"})
        head = await bucket.head("dir/a.bin")
        assert head.etag == info.etag and head.size == len(data)
        assert await bucket.get("dir/a.bin") == data
        for start, end in [(0, 1), (SMALL_TRACT - 5, SMALL_TRACT + 5), (123, 2 * SMALL_TRACT + 100),
                           (len(data) - 7, len(data)), (len(data) - 7, len(data) + 100), (len(data), None)]:
            assert await bucket.get("dir/a.bin", start, end) == data[start:end]
        assert (await bucket.put("empty", b"")).size == 0
        assert await bucket.get("empty") == b""

        async def chunks():  # type: ignore[no-untyped-def]
            for i in range(0, len(data), 100_000):
                yield data[i:i + 100_000]

        streamed = await bucket.put("streamed", chunks())
        assert streamed.size == len(data) and await bucket.get("streamed") == data
        from_file = await bucket.put("file", path)
        assert from_file.size == len(data)
        await bucket.download("file", tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data

    run(cluster, work)


def test_overwrites_are_atomic_and_conditional(cluster: LocalCluster) -> None:
    """Blob to inline: the object in a blob is replaced by a small one kept in its name record, and the blob
    is still retired after the grace period."""
    big = b"one" * (INLINE_MAX // 2)

    async def work(client: Client) -> None:
        bucket = await client.create_bucket("cond")
        first = await bucket.put("k", big, if_none_match=True)
        assert first.blob
        with pytest.raises(PreconditionFailed, match="already exists") as err:
            await bucket.put("k", b"two", if_none_match=True)
        assert err.value.details["etag"] == first.etag
        with pytest.raises(PreconditionFailed, match="changed since you read it"):
            await bucket.put("k", b"two", if_match="0" * 32)
        assert await bucket.get("k") == big
        reader = await bucket.reader("k")  # looked up before the overwrite
        second = await bucket.put("k", b"two", if_match=f'"{first.etag}"')
        assert second.etag != first.etag and second.blob == ""
        assert await bucket.get("k") == b"two"
        assert await reader.read_range() == big  # the old blob lives through the grace period
        with pytest.raises(PreconditionFailed, match="no object 'nope'"):
            await bucket.put("nope", b"x", if_match="*")
        with pytest.raises(PreconditionFailed):
            await bucket.delete("k", if_match=first.etag)
        await bucket.delete("k", if_match=second.etag)
        with pytest.raises(KeyNotFound):
            await bucket.head("k")
        return reader.blob

    old_blob = run(cluster, work)

    async def gone(client: Client) -> None:
        # Past the grace period the namespace primary deletes the replaced blob (its loop, or a pass asked for).
        deadline = time.monotonic() + 30
        while True:
            try:
                await client.stat(old_blob.raw)
            except BlobNotFound:
                return
            assert time.monotonic() < deadline, "the replaced blob was never deleted"
            await asyncio.to_thread(collect_everywhere, cluster)
            await asyncio.sleep(0.2)

    run(cluster, gone)


def test_concurrent_create_only_writes_have_one_winner(cluster: LocalCluster) -> None:
    async def work(client: Client) -> None:
        bucket = await client.create_bucket("race")
        results = await asyncio.gather(*(bucket.put("lock", f"writer {i}".encode(), if_none_match=True)
                                         for i in range(8)), return_exceptions=True)
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert all(isinstance(r, PreconditionFailed) for r in results if r not in winners)
        assert await bucket.get("lock") == f"writer {results.index(winners[0])}".encode()

    run(cluster, work)


def test_concurrent_changes_to_one_bucket_lose_nothing(cluster: LocalCluster) -> None:
    """Many changes to one bucket at once share group commits on its primary: compare-and-swap increments
    of one counter by 6 writers lose none, while 60 other keys are written, overwritten and deleted."""
    async def work(client: Client) -> None:
        bucket = await client.create_bucket("crowd")
        await bucket.put("counter", b"0")

        async def increment(times: int) -> int:
            conflicts = 0
            for _ in range(times):
                while True:
                    info = await bucket.head("counter")
                    value = int(await bucket.get("counter"))
                    try:
                        await bucket.put("counter", str(value + 1).encode(), if_match=info.etag)
                        break
                    except PreconditionFailed:
                        conflicts += 1
            return conflicts

        async def churn(i: int) -> None:
            await bucket.put(f"k/{i:03d}", b"first")
            await bucket.put(f"k/{i:03d}", f"second {i}".encode())
            if i % 3 == 0:
                await bucket.delete(f"k/{i:03d}")

        results = await asyncio.gather(*(increment(3) for _ in range(6)), *(churn(i) for i in range(60)))
        assert int(await bucket.get("counter")) == 18
        assert sum(results[:6]) > 0  # the writers did race
        keys = [o.key async for o in bucket.iter("k/") if not isinstance(o, str)]
        assert keys == [f"k/{i:03d}" for i in range(60) if i % 3]
        assert await bucket.get("k/007") == b"second 7"

    run(cluster, work)


def test_listing_matches_a_sorted_model(cluster: LocalCluster) -> None:
    rng = random.Random(7)
    parts = ["a", "b", "é", "z", "日本", "a-b", "a.b"]
    keys = sorted({"/".join(rng.choice(parts) for _ in range(rng.randint(1, 3))) + str(rng.randint(0, 9))
                   for _ in range(400)}, key=str.encode)

    async def work(client: Client) -> None:
        bucket = await client.create_bucket("listing")
        sem = asyncio.Semaphore(32)

        async def put(key: str) -> None:
            async with sem:
                await bucket.put(key, key.encode())

        await asyncio.gather(*(put(k) for k in keys))
        deleted = set(keys[::7])
        await asyncio.gather(*(bucket.delete(k) for k in deleted))
        live = [k for k in keys if k not in deleted]
        assert [o.key for o in (await bucket.list(limit=10_000)).objects] == live
        # pages of 13, by token
        seen: list[str] = []
        token = None
        while True:
            page = await bucket.list(limit=13, page_token=token)
            assert len(page.objects) <= 13
            seen += [o.key for o in page.objects]
            if page.next_token is None:
                break
            token = page.next_token
        assert seen == live
        for prefix in ["a", "a/", "é/", "日本/a", "zz"]:
            want = [k for k in live if k.startswith(prefix)]
            assert [o.key for o in (await bucket.list(prefix)).objects] == want
            # with a delimiter, in pages of 3: objects plus common prefixes, each once, in order
            expect: list[str] = []
            for k in want:
                rest = k[len(prefix):]
                item = prefix + rest[:rest.index("/") + 1] if "/" in rest else k
                if not expect or expect[-1] != item:
                    expect.append(item)
            got = [item if isinstance(item, str) else item.key
                   async for item in bucket.iter(prefix, delimiter="/", page_size=3)]
            assert got == expect, prefix
        after = live[len(live) // 2]
        assert [o.key for o in (await bucket.list(start_after=after)).objects] == [k for k in live if k > after][:1000]

    run(cluster, work)


def test_copy_and_rename(cluster: LocalCluster) -> None:
    data = random.Random(3).randbytes(3 * SMALL_TRACT + 1)

    async def work(client: Client) -> None:
        src = await client.create_bucket("copy-src")
        dst = await client.create_bucket("copy-dst")
        original = await src.put("orig", data, content_type="text/x", meta={"m": "1"})
        copied = await dst.copy("orig", "copied", source_bucket="copy-src")
        assert copied.blob != original.blob and (copied.content_type, copied.meta) == ("text/x", {"m": "1"})
        assert await dst.get("copied") == data
        with pytest.raises(PreconditionFailed):
            await dst.copy("copied", "copied", if_none_match=True)
        await src.put("other", b"other")
        with pytest.raises(PreconditionFailed, match="already exists"):
            await src.rename("orig", "other", if_none_match=True)
        moved = await src.rename("orig", "renamed")
        assert moved.blob == original.blob and moved.etag == original.etag
        assert not await src.exists("orig")
        assert await src.get("renamed") == data
        with pytest.raises(KeyNotFound):
            await src.rename("orig", "again")
        with pytest.raises(BucketNotFound):
            await dst.copy("x", "y", source_bucket="no-such-bucket")

    run(cluster, work)


def test_small_objects_live_inline_in_their_name_record(cluster: LocalCluster, tmp_path: Path) -> None:
    """Objects of at most INLINE_MAX bytes have no blob: their bytes are in the name record (put and get are
    one request each); every operation on them behaves as on any object, and listings never carry them."""
    small = random.Random(5).randbytes(INLINE_MAX)
    big = random.Random(6).randbytes(INLINE_MAX + 1)

    async def work(client: Client) -> None:
        bucket = await client.create_bucket("inline")
        info = await bucket.put("s", small, content_type="text/x", meta={"m": "é"}, if_none_match=True)
        assert (info.blob, info.incarnation, info.size) == ("", 0, INLINE_MAX)
        assert len(info.etag) == 32 and (await bucket.head("s")) == info
        assert await bucket.get("s") == small
        for start, end in [(0, 1), (100, 200), (INLINE_MAX - 7, None), (INLINE_MAX, None), (5, INLINE_MAX + 9)]:
            assert await bucket.get("s", start, end) == small[start:end]
        with pytest.raises(PreconditionFailed, match="already exists"):
            await bucket.put("s", b"x", if_none_match=True)
        with pytest.raises(PreconditionFailed, match="changed since you read it"):
            await bucket.put("s", b"x", if_match="0" * 32)
        given = await bucket.put("md5", b"abc", etag="900150983cd24fb0d6963f7d28e17f72")
        assert given.etag == "900150983cd24fb0d6963f7d28e17f72"
        # a stream, a file and a sized writer that stay small go inline; one byte more makes a blob
        async def chunks(data: bytes):  # type: ignore[no-untyped-def]
            for i in range(0, len(data), 1000):
                yield data[i:i + 1000]

        assert (await bucket.put("streamed", chunks(small))).blob == ""
        assert (await bucket.put("streamed-big", chunks(big))).blob != ""
        assert await bucket.get("streamed-big") == big
        (tmp_path / "small").write_bytes(small)
        assert (await bucket.put("file", tmp_path / "small")).blob == ""
        writer = await bucket.writer("sized", size=3)
        await writer.write(b"abc")
        assert (await writer.close()).blob == "" and await bucket.get("sized") == b"abc"
        assert (await bucket.put("empty", b"")).blob == "" and await bucket.get("empty") == b""
        # overwrites: inline to inline, inline to blob (nothing to retire), and back (the blob is retired)
        stale = await bucket.head("s")
        again = await bucket.put("s", b"second", if_match=info.etag)
        assert again.etag != info.etag and await bucket.get("s") == b"second"
        with pytest.raises(PreconditionFailed, match="changed since it was looked up"):
            await ObjectReader(client, stale, bucket="inline").read_range()
        grown = await bucket.put("s", big)
        assert grown.blob and await bucket.get("s") == big
        shrunk = await bucket.put("s", small, meta={"m": "é"})
        assert shrunk.blob == "" and await bucket.get("s", 10, 20) == small[10:20]
        # rename and copy carry the bytes (inside a bucket and across buckets); delete leaves nothing
        moved = await bucket.rename("s", "t")
        assert (moved.blob, moved.etag) == ("", shrunk.etag) and await bucket.get("t") == small
        assert not await bucket.exists("s")
        other = await client.create_bucket("inline-copy")
        copied = await other.copy("t", "c", source_bucket="inline")
        assert (copied.blob, copied.etag, copied.meta) == ("", shrunk.etag, {"m": "é"})
        assert await other.get("c") == small
        copied_stale = await bucket.copy("t", "t2", source_info=await bucket.head("t"))
        assert copied_stale.blob == "" and await bucket.get("t2") == small
        await bucket.delete("t")
        with pytest.raises(KeyNotFound):
            await bucket.get("t")
        # listing pages carry the listed fields only, never the inline bytes
        page = await bucket._call("GET", "/objects", "limit=10000")
        assert {o["key"] for o in page["objects"]} >= {"t2", "md5", "file", "sized"}
        assert all(set(o) == {"key", "size", "etag", "mtime", "content_type", "meta", "blob", "incarnation"}
                   for o in page["objects"])
        assert len(orjson.dumps(page)) < 8000

    run(cluster, work)
