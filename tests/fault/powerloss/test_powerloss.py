"""Power loss, not only SIGKILL: every crash state the sync ordering allows, started and checked (issue 11).

SIGKILL leaves the page cache to be written back; a power loss drops whatever
was not yet synced. Each scenario runs real :class:`TractStore` (or
:func:`fds.durable.write_durably`) code on a real disk with its file operations
and synced index writes recorded (:mod:`.trace`); :mod:`.crash` builds every
state a power loss at any point could leave (un-synced blocks lost or kept, un-synced
directory entries lost or kept, in any combination the syncs allow). On each state a
fresh store starts, with its start-up sweep, and the test checks:

- every acknowledged tract, metadata record or file reads back byte for byte;
- a write not yet acknowledged reads back whole (old or new value) or is absent, or is
  refused by its checksum: never served torn;
- the sweep leaves no file the index does not name.

The enumeration is exhaustive at each crash point with at most ``LIMIT`` combinations
and sampled (seeded) beyond; each test prints its counts.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import fds.durable
from fds.buffers import aligned
from fds.durable import write_durably
from fds.errors import ChecksumMismatch, TractNotFound
from fds.models import MetaRecord
from fds.tractserver import TractStore
from fds.versions import TractVersion

from .crash import CrashState, Enumeration, Workspace, crash_states
from .trace import Ack, Recorder

LIMIT = 256
"""Crash states tried at one crash point before sampling."""

G1 = uuid.UUID("11111111-0000-4000-8000-000000000001").bytes
G2 = uuid.UUID("22222222-0000-4000-8000-000000000002").bytes
G3 = uuid.UUID("11113333-0000-4000-8000-000000000003").bytes  # same shard directory as G1 ("11")


def tract_bytes(tag: int, length: int) -> memoryview:
    """A tract's bytes in a buffer made for O_DIRECT (the request path's kind), all distinct per tag."""
    view = aligned(length)
    pattern = (tag.to_bytes(2, "big") + b"fds-powerloss") * (length // 15 + 1)
    view[:] = pattern[:length]
    return view


def tract_key(guid: bytes, tract: int) -> str:
    return f"tract {guid.hex()[:8]}/{tract}"


def meta_key(guid: bytes) -> str:
    return f"meta {guid.hex()[:8]}"


Reader = Callable[[TractStore, str], bytes | None]
"""Reads one key from a store on a crash state: its bytes, None if absent; raises ChecksumMismatch."""


def read_tract(guid: bytes, tract: int) -> Reader:
    def read(store: TractStore, _key: str) -> bytes | None:
        try:
            data, _entry = store.read(guid, tract)
        except TractNotFound:
            return None
        return bytes(data)
    return read


def read_meta(guid: bytes) -> Reader:
    def read(store: TractStore, _key: str) -> bytes | None:
        record = store.meta(guid)
        return None if record is None else record.model_dump_json().encode()
    return read


def record(tmp_path: Path, setup: Callable[[TractStore], None],
           action: Callable[[TractStore, Recorder], None]) -> Recorder:
    """Run ``setup`` (its result is the durable base), then ``action`` with every file operation traced."""
    root = tmp_path / "recorded"
    store = TractStore(root)
    setup(store)
    recorder = Recorder(root)
    recorder.snapshot(store._db)
    store._db = recorder.index(store._db)
    try:
        with recorder.recording():
            action(store, recorder)
    finally:
        store.close()
    return recorder


def check_states(tmp_path: Path, recorder: Recorder, readers: dict[str, Reader],
                 baseline: dict[str, bytes] | None = None) -> tuple[Enumeration, list[str]]:
    """Start a store on every crash state of ``recorder``'s trace and check ``readers``' keys."""
    stats = Enumeration()
    problems: list[str] = []
    workspace = Workspace(tmp_path / "state", tmp_path / "indexes")
    for state in crash_states(recorder.base, recorder.ops, limit=LIMIT, stats=stats):
        root = workspace.lay_out(state)
        try:
            store = TractStore(root)
            try:
                store.sweep()
                problems += [f"crash after op {state.point} (lost: {state.lost or 'nothing'}): {p}"
                             for p in _check_store(store, state, readers, baseline or {})]
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 - a store that cannot start on a crash state is a finding
            problems.append(f"crash after op {state.point}: the store did not start: {type(exc).__name__}: {exc}")
    return stats, problems


def _check_store(store: TractStore, state: CrashState, readers: dict[str, Reader],
                 baseline: dict[str, bytes]) -> list[str]:
    problems = []
    for key, read in readers.items():
        acked = [a for a in state.acked if a.key == key]
        allowed, required = _allowed(state, key, acked[-1] if acked else None, baseline.get(key))
        try:
            got = read(store, key)
        except ChecksumMismatch:
            if required:
                problems.append(f"{key}: acknowledged, but refused by its checksum")
            continue
        if got is None:
            if required:
                problems.append(f"{key}: acknowledged, but gone")
        elif got not in allowed:
            problems.append(f"{key}: served {len(got)} bytes that are no value written to it (torn)")
    named = {(g, t, e.generation) for g, _inc, t, e in store.tracts_where(lambda g, t: True)}
    for file in store.tract_dir.rglob("*"):
        if file.is_file():
            hexed, _inc, tract, gen = file.name.split(".")
            if (bytes.fromhex(hexed), int(tract), int(gen, 16)) not in named:
                problems.append(f"the sweep left {file.name}, which the index does not name")
    return problems


def _allowed(state: CrashState, key: str, ack: Ack | None, base: bytes | None) -> tuple[set[bytes], bool]:
    """The values ``key`` may hold, and whether it must hold one (it was acknowledged)."""
    invoked = [op.value for op in state.invoked if op.key == key]
    if ack is None:
        return set(invoked) | ({base} if base is not None else set()), base is not None
    return {ack.value, *invoked[invoked.index(ack.value) + 1:]}, True


def report(name: str, stats: Enumeration, problems: list[str]) -> None:
    print(f"\n{name}: {stats.points} crash points, {stats.combinations} combinations, {stats.distinct} distinct "
          f"states started and checked ({stats.sampled_points} points sampled at {LIMIT})")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:20])


def write_tract(store: TractStore, recorder: Recorder, guid: bytes, tract: int, data: memoryview,
                **options: Any) -> None:
    """``store.write`` with ``options``, marked in the trace: begun, and acknowledged if it wrote."""
    key = tract_key(guid, tract)
    recorder.invoke(key, bytes(data))
    if store.write(guid, tract, data, **options) is not None:
        recorder.ack(key, bytes(data))


def test_fresh_writes(tmp_path: Path) -> None:
    # Two new tracts in two new shard directories: file created, written (O_DIRECT, padded, then
    # cut to length), fdatasync'd, its directory fsync'd, then the index entry put. A crash anywhere
    # before the put leaves at most an orphan file; after it, the tract must be whole.
    def action(store: TractStore, rec: Recorder) -> None:
        write_tract(store, rec, G1, 0, tract_bytes(1, 2 * 4096 + 100))
        write_tract(store, rec, G2, 3, tract_bytes(2, 4096))

    recorder = record(tmp_path, lambda store: None, action)
    readers = {tract_key(G1, 0): read_tract(G1, 0), tract_key(G2, 3): read_tract(G2, 3)}
    report("fresh writes", *check_states(tmp_path, recorder, readers))


def test_overwrites(tmp_path: Path) -> None:
    # Overwriting writes a new generation's file and repoints the index; the old file is unlinked
    # after the commit point without a directory fsync, so it may come back: the sweep removes it.
    old = tract_bytes(1, 3 * 4096)

    def setup(store: TractStore) -> None:
        store.write(G1, 0, old)

    def action(store: TractStore, rec: Recorder) -> None:
        write_tract(store, rec, G1, 0, tract_bytes(2, 2 * 4096 + 7))
        write_tract(store, rec, G1, 0, tract_bytes(3, 4096 + 1))

    recorder = record(tmp_path, setup, action)
    readers = {tract_key(G1, 0): read_tract(G1, 0)}
    report("overwrites", *check_states(tmp_path, recorder, readers, {tract_key(G1, 0): bytes(old)}))


def test_recovery_and_repair_copies(tmp_path: Path) -> None:
    # A recovery copy (copy=True with the source's version: only if newer than what is here) as the
    # filler makes it, then a repair copy (replace=generation: only if the bad copy is still the one
    # stored) as the scrubber makes it.
    def action(store: TractStore, rec: Recorder) -> None:
        write_tract(store, rec, G2, 5, tract_bytes(1, 2 * 4096), version=TractVersion(1000, 7), copy=True)
        entry = store.entry(G2, 5)
        assert entry is not None
        write_tract(store, rec, G2, 5, tract_bytes(2, 2 * 4096), replace=entry.generation)

    recorder = record(tmp_path, lambda store: None, action)
    report("recovery and repair copies", *check_states(tmp_path, recorder, {tract_key(G2, 5): read_tract(G2, 5)}))


def test_metadata_records(tmp_path: Path) -> None:
    # Blob metadata records are index entries: one synced put each, atomic by the model.
    first = MetaRecord(guid=str(uuid.UUID(bytes=G1)), tracts=1, created=1.0, seq=1)

    def setup(store: TractStore) -> None:
        assert store.put_meta_if_newer(G1, first)

    def action(store: TractStore, rec: Recorder) -> None:
        key = meta_key(G1)
        for seq in (2, 3):
            newer = first.model_copy(update={"seq": seq, "tracts": seq * 10})
            rec.invoke(key, newer.model_dump_json().encode())
            assert store.put_meta_if_newer(G1, newer)
            rec.ack(key, newer.model_dump_json().encode())

    recorder = record(tmp_path, setup, action)
    report("metadata records", *check_states(tmp_path, recorder, {meta_key(G1): read_meta(G1)},
                                             {meta_key(G1): first.model_dump_json().encode()}))


def test_write_durably_replaces_whole(tmp_path: Path) -> None:
    # write_durably (server identity, cluster files): temporary, fsync, rename, directory fsync.
    # A crash leaves the old file or the new one, whole, plus at worst a temporary that
    # remove_temporaries sweeps; once it returned, the new one.
    root = tmp_path / "recorded"
    root.mkdir()
    target = root / "server.json"
    target.write_bytes(b'{"id": "old"}')
    recorder = Recorder(root)
    recorder.snapshot()
    new = b'{"id": "new", "padding": "' + b"x" * 5000 + b'"}'
    with recorder.recording():
        recorder.invoke("server.json", new)
        write_durably(target, new)
        recorder.ack("server.json", new)
    stats = Enumeration()
    problems = []
    workspace = Workspace(tmp_path / "state", tmp_path / "indexes")
    for state in crash_states(recorder.base, recorder.ops, limit=LIMIT, stats=stats):
        top = workspace.lay_out(state)
        fds.durable.remove_temporaries(top)
        got = (top / "server.json").read_bytes() if (top / "server.json").exists() else None
        acked = any(a.key == "server.json" for a in state.acked)
        if got != new and (acked or got != b'{"id": "old"}'):
            problems.append(f"crash after op {state.point} (lost: {state.lost}): server.json holds {got!r:.60}")
        if [p.name for p in top.iterdir() if p.name.endswith(".tmp")]:
            problems.append(f"crash after op {state.point}: a temporary survived remove_temporaries")
    report("write_durably", stats, problems)


def test_concurrent_first_writes_to_one_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Two writers, two new tracts whose files go in one shard directory ("11") that does not
    # exist yet. Interleaving forced here: writer A creates the directory and, before A's fsync of
    # its parent (tracts/) makes that entry durable, writer B finds the directory there, writes its
    # tract, fsyncs the shard and commits: B is acknowledged while the shard directory itself may
    # still vanish in a power loss, and B's file with it. The store must not let that happen (it
    # creates every shard directory durably at start-up, so no write creates one).
    made = threading.Event()
    b_acked = threading.Event()
    real_fsync_dir = fds.durable.fsync_dir

    def fsync_dir(path: str | Path) -> None:
        if threading.current_thread().name == "writer-a" and Path(path).name == "tracts":
            made.set()
            b_acked.wait(10)
        real_fsync_dir(path)

    def action(store: TractStore, rec: Recorder) -> None:
        monkeypatch.setattr(fds.durable, "fsync_dir", fsync_dir)
        a = threading.Thread(target=write_tract, name="writer-a", args=(store, rec, G1, 0, tract_bytes(1, 4096)))
        a.start()
        made.wait(0.5)  # with shard directories made at start-up, A never creates one: B just goes second
        write_tract(store, rec, G3, 0, tract_bytes(2, 4096))
        b_acked.set()
        a.join()

    recorder = record(tmp_path, lambda store: None, action)
    readers = {tract_key(G1, 0): read_tract(G1, 0), tract_key(G3, 0): read_tract(G3, 0)}
    report("concurrent first writes to one shard", *check_states(tmp_path, recorder, readers))
