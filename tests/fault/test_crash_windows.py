"""Crash windows of a tract write, one by one, on a real disk and a real RocksDB.

A write is: (1) data to a temp file, fsync, rename to a new generation's
name, fsync the directory; (2) the index entry, synced: the commit point;
(3) unlink the previous generation. Each test stops a write inside one
window and reopens the store, as a restart after SIGKILL would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import xxhash

from fds.errors import ChecksumMismatch
from fds.tractserver import TractStore

GUID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes


class Crash(BaseException):
    """Stands in for the process dying at this instant."""


class _CrashingPut:
    """The index, but the process dies at the next put."""

    def __init__(self, db: object) -> None:
        self._db = db

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)

    def put(self, *args: object, **kwargs: object) -> None:
        raise Crash


def _files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "tracts").rglob("*") if p.is_file())


def test_killed_before_index_entry_keeps_old_tract(tmp_path: Path) -> None:
    # Killed after the new data file is renamed into place but before the
    # index entry is written: the index still names the old generation, so
    # recovery must serve the old tract and sweep the new file as an orphan.
    store = TractStore(tmp_path)
    store.write(GUID, 0, b"old" * 100)

    real_db = store._db
    store._db = _CrashingPut(real_db)  # type: ignore[assignment]
    with pytest.raises(Crash):
        store.write(GUID, 0, b"new" * 100)
    assert len(_files(tmp_path)) == 2  # old and the orphaned new generation
    real_db.close()

    reopened = TractStore(tmp_path)
    assert reopened.sweep() == 1
    assert reopened.read(GUID, 0)[0] == b"old" * 100
    assert len(_files(tmp_path)) == 1
    reopened.close()


def test_killed_after_index_entry_serves_new_tract(tmp_path: Path) -> None:
    # Killed after the index entry commits but before the old generation's
    # file is unlinked: the new tract is the truth; the old file is swept.
    store = TractStore(tmp_path)
    store.write(GUID, 0, b"old" * 100)

    def crash(path: object) -> None:
        raise Crash

    store._unlink = crash  # type: ignore[method-assign]
    with pytest.raises(Crash):
        store.write(GUID, 0, b"new" * 100)
    store._db.close()

    reopened = TractStore(tmp_path)
    assert reopened.sweep() == 1
    assert reopened.read(GUID, 0)[0] == b"new" * 100
    assert reopened.tracts == 1 and reopened.bytes_used == 300
    reopened.close()


def test_killed_mid_data_write_leaves_only_an_orphan(tmp_path: Path) -> None:
    # Killed while the new generation's file is half written (before its
    # fdatasync): nothing names it, the old tract stands, and the sweep
    # removes the partial file (and any temporary of write_durably).
    store = TractStore(tmp_path)
    store.write(GUID, 3, b"a" * 4096)
    shard = tmp_path / "tracts" / GUID.hex()[:2]
    (shard / f"{GUID.hex()}.0.3.ffffffffffff").write_bytes(b"partial")
    (shard / f"{GUID.hex()}.0.3.ffff.123.abc.tmp").write_bytes(b"partial")
    store.close()
    reopened = TractStore(tmp_path)
    assert reopened.sweep() == 2
    assert reopened.read(GUID, 3)[0] == b"a" * 4096
    reopened.close()


def test_corrupt_file_is_refused(tmp_path: Path) -> None:
    store = TractStore(tmp_path)
    store.write(GUID, 1, b"x" * 10000)
    (path,) = (tmp_path / "tracts").rglob(f"{GUID.hex()}.0.1.*")
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ChecksumMismatch, match="read another replica"):
        store.read(GUID, 1)
    path.write_bytes(bytes(raw[:100]))  # truncated is refused too
    with pytest.raises(ChecksumMismatch):
        store.read(GUID, 1)
    store.close()


_WRITER = textwrap.dedent("""
    import sys, uuid
    from fds.tractserver import TractStore
    guid = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff").bytes
    store = TractStore(sys.argv[1])
    i = 0
    while True:
        data = bytes([i % 251]) * (65536 + i % 4096)
        store.write(guid, 0, data)
        print(i, flush=True)
        i += 1
""")


@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_random_instants_never_tears(tmp_path: Path, seed: int) -> None:
    """A real process rewrites one tract in a loop and is SIGKILLed at a random instant.

    After each kill the store must reopen to exactly one complete version: the
    last acknowledged one or the one in flight, never a mix.
    """
    import random

    rng = random.Random(seed)
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        last_acked = int(proc.stdout.readline())
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(proc.pid, signal.SIGKILL)
        for line in proc.stdout:
            last_acked = int(line)
    finally:
        proc.kill()
        proc.wait()
    store = TractStore(tmp_path)
    store.sweep()
    data, entry = store.read(GUID, 0)
    version = data[0]
    assert version in (last_acked % 251, (last_acked + 1) % 251)
    expected_len = 65536 + (last_acked if version == last_acked % 251 else last_acked + 1) % 4096
    assert data == bytes([version]) * expected_len
    assert xxhash.xxh3_64_intdigest(data) == entry.checksum
    assert len(_files(tmp_path)) == 1
    store.close()
