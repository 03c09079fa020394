"""The one durable-write helper: temp file, fsync, rename, fsync the directory."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fds.durable import TMP_SUFFIX, ensure_dir, fsync_dir, remove_temporaries, write_durably


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(TMP_SUFFIX))


@pytest.mark.parametrize(
    "data",
    [b"new content", bytearray(b"new content"), memoryview(b"xxnew contentxx")[2:-2],
     [b"new ", b"", b"content"], (chunk for chunk in [b"new", b" content"])],
    ids=["bytes", "bytearray", "memoryview", "list", "generator"],
)
def test_writes_every_kind_of_data(tmp_path: Path, data: object) -> None:
    target = tmp_path / "f"
    write_durably(target, data)  # type: ignore[arg-type]
    assert target.read_bytes() == b"new content"
    assert leftovers(tmp_path) == []


def test_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old" * 1000)
    inode_before = target.stat().st_ino
    write_durably(str(target), b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != inode_before  # a new file renamed over, not rewritten in place
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_large_body_is_written_whole(tmp_path: Path) -> None:
    body = os.urandom(8 * 1024 * 1024 + 13)
    write_durably(tmp_path / "big", body)
    assert (tmp_path / "big").read_bytes() == body


def test_order_is_write_fsync_rename_then_fsync_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        is_dir = os.path.isdir(os.readlink(f"/proc/self/fd/{fd}"))
        events.append("fsync-dir" if is_dir else "fsync-file")
        real_fsync(fd)

    def rename(src: str, dst: str) -> None:
        events.append("rename")
        assert Path(src).read_bytes() == b"payload"  # complete before it takes the final name
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    write_durably(tmp_path / "f", b"payload")
    assert events == ["fsync-file", "rename", "fsync-dir"]

    events.clear()
    write_durably(tmp_path / "g", b"payload", sync_dir=False)
    assert events == ["fsync-file", "rename"]


def test_error_midway_keeps_old_content_and_removes_tmp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old content")

    def chunks() -> Iterator[bytes]:
        yield b"half of the new"
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        write_durably(target, chunks())
    assert target.read_bytes() == b"old content"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_error_midway_with_no_old_file_leaves_nothing(tmp_path: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"x" * 100_000
        raise KeyboardInterrupt  # BaseException too

    with pytest.raises(KeyboardInterrupt):
        write_durably(tmp_path / "f", chunks())
    assert os.listdir(tmp_path) == []


def test_disk_full_keeps_old_content(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")
    real_write = os.write
    calls = 0

    def write(fd: int, data: memoryview) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data[:5])  # a short write first: the helper must loop

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError) as info:
        write_durably(target, b"0123456789")
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:3]))
    write_durably(tmp_path / "f", [b"0123456789", b"abcdefg"])
    assert (tmp_path / "f").read_bytes() == b"0123456789abcdefg"


def test_failed_rename_removes_tmp(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "occupied").write_bytes(b"")  # renaming a file over a non-empty dir fails
    with pytest.raises(OSError):
        write_durably(tmp_path / "target", b"data")
    assert leftovers(tmp_path) == []


def test_remove_temporaries(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["x.tmp", "a/y.123.7f.tmp", "a/b/z.tmp", "keep", "a/keep.tmp.bak", "a/b/tmp"]:
        (tmp_path / name).write_bytes(b"1")
    assert remove_temporaries(tmp_path) == 3
    remaining = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert remaining == ["a/b/tmp", "a/keep.tmp.bak", "keep"]
    assert remove_temporaries(tmp_path) == 0


def test_remove_temporaries_sweeps_what_an_interrupted_write_left(tmp_path: Path) -> None:
    # Killed after the temp file was written but before the rename: the old file
    # is intact and the temp file is a leftover that start-up sweeps away.
    (tmp_path / "f").write_bytes(b"old")
    (tmp_path / f"f.{os.getpid()}.abc{TMP_SUFFIX}").write_bytes(b"new, never renamed")
    assert remove_temporaries(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == ["f"]
    assert (tmp_path / "f").read_bytes() == b"old"


def test_ensure_dir_and_fsync_dir(tmp_path: Path) -> None:
    made = ensure_dir(tmp_path / "p" / "q")
    assert made.is_dir() and made == tmp_path / "p" / "q"
    assert ensure_dir(made) == made  # idempotent
    fsync_dir(made)
    with pytest.raises(OSError):
        fsync_dir(tmp_path / "absent")


def test_directory_sync_shares_fsyncs_and_covers_every_caller(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Many threads creating files in one directory: each returns only after an fsync that
    started after its call, and they share far fewer fsyncs than there are callers."""
    import threading
    import time

    from fds import durable

    calls: list[tuple[float, float]] = []

    def slow_fsync(path: object) -> None:
        start = time.monotonic()
        time.sleep(0.02)
        calls.append((start, time.monotonic()))

    monkeypatch.setattr(durable, "fsync_dir", slow_fsync)
    syncer = durable.DirectorySync()
    seen: list[tuple[float, float]] = []

    def caller() -> None:
        asked = time.monotonic()
        syncer.sync(str(tmp_path))
        seen.append((asked, time.monotonic()))

    threads = [threading.Thread(target=caller) for _ in range(40)]
    for t in threads:
        t.start()
        time.sleep(0.001)
    for t in threads:
        t.join()
    assert len(seen) == 40
    assert len(calls) < 20
    for asked, returned in seen:
        assert any(start >= asked and end <= returned for start, end in calls)
