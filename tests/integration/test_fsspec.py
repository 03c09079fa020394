"""``fds://`` through fsspec against a real cluster: found by protocol, ranged reads that fetch only
their tracts (many in flight), concurrent cat_ranges, writes streamed tract by tract and switched
atomically, info with ETag, pickling onto another process, and fork."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

from fds.fs import FdsFileSystem
from fds.local import LocalCluster
from fds.names import INLINE_MAX
from tests.support.clusters import SMALL_TRACT, shared_cluster
from tests.support.credentials import SECRET_FILE

BUCKET = "fsspec"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from shared_cluster(tmp_path_factory, "fsspec", replicas=2)


@pytest.fixture(scope="module")
def fs(cluster: LocalCluster) -> FdsFileSystem:
    fs = fsspec.filesystem("fds", metaserver=cluster.metaserver_url, secret_file=str(SECRET_FILE))
    assert isinstance(fs, FdsFileSystem)
    fs.makedirs(BUCKET, exist_ok=True)
    return fs


class Spy:
    """Counts the tract requests the filesystem's (real) client makes, and how many were in flight at once."""

    def __init__(self, fs: FdsFileSystem, method: str) -> None:
        self.tracts: list[int] = []
        self.most = 0
        self._now = 0
        self._fs = fs
        self._method = method

    def __enter__(self) -> Spy:
        client = asyncio.run_coroutine_threadsafe(self._fs._get_client(), self._fs.loop).result()
        real = getattr(client, self._method)

        async def spied(guid: bytes, incarnation: int, tract: int, *args: Any, **kwargs: Any) -> Any:
            self.tracts.append(tract)
            self._now += 1
            self.most = max(self.most, self._now)
            try:
                return await real(guid, incarnation, tract, *args, **kwargs)
            finally:
                self._now -= 1

        setattr(client, self._method, spied)
        self._undo = lambda: delattr(client, self._method)
        return self

    def __exit__(self, *exc: object) -> None:
        self._undo()


def test_found_by_protocol_and_url(cluster: LocalCluster, fs: FdsFileSystem) -> None:
    with fsspec.open(f"fds://{BUCKET}/hello.txt", "wt", metaserver=cluster.metaserver_url,
                     secret_file=str(SECRET_FILE)) as out:
        out.write("hello, fds")
    assert fs.cat(f"fds://{BUCKET}/hello.txt") == b"hello, fds"
    assert f"{BUCKET}/hello.txt" in fs.ls(BUCKET, detail=False)
    assert BUCKET in fs.ls("", detail=False)


def test_ranged_reads_fetch_only_their_tracts_many_in_flight(fs: FdsFileSystem) -> None:
    data = random.Random(1).randbytes(12 * SMALL_TRACT + 999)
    fs.pipe(f"{BUCKET}/big.bin", data)
    start, end = 3 * SMALL_TRACT + 5, 5 * SMALL_TRACT + 7  # tracts 3, 4 and 5
    with Spy(fs, "_read_tract") as spy:
        assert fs.cat_file(f"{BUCKET}/big.bin", start, end) == data[start:end]
    assert sorted(spy.tracts) == [3, 4, 5]
    with Spy(fs, "_read_tract") as spy, fs.open(f"{BUCKET}/big.bin", "rb", cache_type="none") as f:
        f.seek(10 * SMALL_TRACT + 1)
        assert f.read(100) == data[10 * SMALL_TRACT + 1:10 * SMALL_TRACT + 101]
        f.seek(0)
        assert f.read() == data
    assert spy.tracts[0] == 10 and sorted(spy.tracts) == list(range(13))  # tract 10 was kept, not fetched again
    assert spy.most > 4, spy.most  # the whole read had many tracts in flight
    assert fs.cat_file(f"{BUCKET}/big.bin", -10) == data[-10:]
    assert fs.cat_file(f"{BUCKET}/big.bin", len(data) + 5) == b""


def test_a_reader_that_reads_on_has_tracts_fetched_ahead(fs: FdsFileSystem) -> None:
    """pyarrow reads a file one ``read`` at a time: reads that follow each other open a window of tracts in
    flight ahead of them; reads that skip about fetch only their own tracts."""
    data = random.Random(3).randbytes(24 * SMALL_TRACT + 5)
    fs.pipe(f"{BUCKET}/scan.bin", data)
    with Spy(fs, "_read_tract") as spy, fs.open(f"{BUCKET}/scan.bin", "rb") as f:
        pieces = []
        while piece := f.read(SMALL_TRACT // 2):  # half a tract per read
            pieces.append(piece)
    assert b"".join(pieces) == data
    assert sorted(spy.tracts) == list(range(25)), "every tract once"
    assert spy.most > 2, spy.most  # tracts ahead of the reader were in flight
    with Spy(fs, "_read_tract") as spy, fs.open(f"{BUCKET}/scan.bin", "rb") as f:
        for tract in (2, 9, 15, 20):  # a column here and there: no read-ahead past what is asked
            f.seek(tract * SMALL_TRACT + 3)
            assert f.read(10) == data[tract * SMALL_TRACT + 3:tract * SMALL_TRACT + 13]
    assert sorted(spy.tracts) == [2, 9, 15, 20]


def test_small_files_are_inline_and_read_without_tracts(fs: FdsFileSystem, tmp_path: Path) -> None:
    """Files of at most INLINE_MAX bytes live in their name records: written, opened, ranged, copied, renamed
    and downloaded with no tract read at all."""
    data = random.Random(4).randbytes(INLINE_MAX)
    path = f"{BUCKET}/inline/one.bin"
    with Spy(fs, "_read_tract") as spy:
        with fs.open(path, "wb") as out:  # a file written in pieces, small in the end
            out.write(data[:1000])
            out.write(data[1000:])
        info = fs.info(path)
        assert (info["blob"], info["incarnation"], info["size"]) == ("", 0, INLINE_MAX)
        with fs.open(path, "rb") as f:
            f.seek(100)
            assert f.read(50) == data[100:150]
            f.seek(0)
            assert f.read() == data
        assert fs.cat_file(path, -10) == data[-10:]
        fs.cp_file(path, f"{BUCKET}/inline/two.bin")
        fs.mv(f"{BUCKET}/inline/two.bin", f"{BUCKET}/inline/three.bin")
        fs.get_file(f"{BUCKET}/inline/three.bin", str(tmp_path / "three.bin"))
        fs.pipe(f"{BUCKET}/inline/piped.bin", b"piped")
        assert fs.cat([f"{BUCKET}/inline/piped.bin", f"{BUCKET}/inline/three.bin"]) == {
            f"{BUCKET}/inline/piped.bin": b"piped", f"{BUCKET}/inline/three.bin": data}
    assert (tmp_path / "three.bin").read_bytes() == data
    assert spy.tracts == []
    fs.rm(f"{BUCKET}/inline", recursive=True)
    assert not fs.exists(path)


def test_cat_ranges_runs_ranges_at_once(fs: FdsFileSystem) -> None:
    data = random.Random(2).randbytes(8 * SMALL_TRACT)
    fs.pipe(f"{BUCKET}/ranges.bin", data)
    fs.pipe(f"{BUCKET}/small.bin", b"0123456789")
    starts = [i * SMALL_TRACT + 1 for i in range(8)] + [2]
    ends = [s + 100 for s in starts[:8]] + [5]
    paths = [f"{BUCKET}/ranges.bin"] * 8 + [f"{BUCKET}/small.bin"]
    with Spy(fs, "_read_tract") as spy:
        out = fs.cat_ranges(paths, starts, ends)
    assert out[:8] == [data[s:e] for s, e in zip(starts[:8], ends[:8], strict=True)] and out[8] == b"234"
    assert spy.most > 1 and sorted(spy.tracts) == list(range(8))  # small.bin is inline: no tract read
    missing = fs.cat_ranges([f"{BUCKET}/nope", f"{BUCKET}/small.bin"], [0, 0], [1, 1])
    assert isinstance(missing[0], FileNotFoundError) and missing[1] == b"0"


def test_info_carries_etag_and_changes_with_every_write(fs: FdsFileSystem) -> None:
    path = f"{BUCKET}/info/one.txt"
    fs.pipe(path, b"first")
    first = fs.info(path)
    assert first["type"] == "file" and first["size"] == 5 and first["mtime"] > 0 and first["ETag"]
    fs.pipe(path, b"second!")
    second = fs.info(path)
    assert second["ETag"] != first["ETag"] and second["size"] == 7
    assert fs.ukey(path) == second["ETag"]
    assert fs.info(f"{BUCKET}/info") == {"name": f"{BUCKET}/info", "size": 0, "type": "directory"}
    assert fs.isdir(f"{BUCKET}/info") and fs.isfile(path) and not fs.exists(f"{BUCKET}/info/none")
    assert fs.modified(path).timestamp() == pytest.approx(second["mtime"])


def test_writes_stream_tract_by_tract_and_switch_on_close(fs: FdsFileSystem) -> None:
    path = f"{BUCKET}/stream.bin"
    fs.pipe(path, b"old")
    data = random.Random(3).randbytes(5 * SMALL_TRACT + 123)
    with Spy(fs, "_write_tract") as spy:
        with fs.open(path, "wb", block_size=SMALL_TRACT) as f:
            for i in range(0, len(data), 300_000):
                f.write(data[i:i + 300_000])
            # all but the last block (< 1 tract still buffered) went to the writer as tracts filled: at least
            # 4 of the 6 tracts go out before close
            deadline = time.monotonic() + 30
            while len(spy.tracts) < 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert sorted(spy.tracts)[:4] == [0, 1, 2, 3]
            assert fs.cat(path) == b"old"  # the key switches only on close
    assert sorted(spy.tracts) == [0, 1, 2, 3, 4, 5]
    assert fs.cat(path) == data
    with pytest.raises(RuntimeError), fs.open(path, "wb", block_size=SMALL_TRACT) as f:
        f.write(b"x" * (3 * SMALL_TRACT))
        raise RuntimeError("the writer fails half way")
    assert fs.cat(path) == data  # a failed write leaves the old object
    with pytest.raises(FileExistsError):
        fs.open(path, "xb")
    with pytest.raises(NotImplementedError, match="written whole"):
        fs.open(path, "ab")


def test_missing_and_bad_names_are_clear(fs: FdsFileSystem) -> None:
    with pytest.raises(FileNotFoundError, match="no bucket 'absent'"):
        fs.cat("fds://absent/x")
    with pytest.raises(FileNotFoundError, match="no object 'none.txt'"):
        fs.cat(f"fds://{BUCKET}/none.txt")
    with pytest.raises(FileNotFoundError):
        fs.open(f"{BUCKET}/none.txt")
    with pytest.raises(Exception, match="bad bucket name"):
        fs.cat("fds://Bad_Bucket/x")
    with pytest.raises(IsADirectoryError):
        fs.open(f"{BUCKET}/info")


def test_pickled_instance_rebuilds_in_another_process(fs: FdsFileSystem, tmp_path: Path) -> None:
    fs.pipe(f"{BUCKET}/pickled.txt", b"from afar")
    code = ("import pickle, sys; fs = pickle.loads(sys.stdin.buffer.read()); "
            f"sys.stdout.buffer.write(fs.cat('{BUCKET}/pickled.txt'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}  # found nothing itself: all in the pickle
    proc = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(fs), capture_output=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"from afar"


def _child_reads(fs: FdsFileSystem, path: str, out: Any) -> None:
    out.put(fs.cat(path))


def test_survives_fork(fs: FdsFileSystem) -> None:
    fs.pipe(f"{BUCKET}/forked.txt", b"parent wrote")
    assert fs.cat(f"{BUCKET}/forked.txt") == b"parent wrote"  # the parent's client and loop are live
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_reads, args=(fs, f"{BUCKET}/forked.txt", queue))
    child.start()
    try:
        assert queue.get(timeout=60) == b"parent wrote"
    finally:
        child.join(60)
    assert child.exitcode == 0
    assert fs.cat(f"{BUCKET}/forked.txt") == b"parent wrote"  # and the parent's still works
