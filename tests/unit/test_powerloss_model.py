"""The power-loss model (tests/fault/powerloss/crash.py) on hand-made traces: what may and may not be lost."""

from __future__ import annotations

from tests.fault.powerloss.crash import BLOCK, crash_states
from tests.fault.powerloss.trace import Ack, Base, Create, Db, DirSync, Mkdir, Rename, Sync, TraceOp, Truncate, Write


def final_states(base: Base, ops: list[TraceOp]) -> list[dict[str, bytes]]:
    """The files of every crash state after the whole trace. (States are listed once, at the first
    point they occur with the same marks; a last mark makes every state at the end new.)"""
    marked = [*ops, Ack("end", b"")]
    return [dict(s.files) for s in crash_states(base, marked) if s.point == len(marked)]


def test_a_created_file_needs_its_directory_synced() -> None:
    ops: list[TraceOp] = [Create("f", 1), Write(1, 0, b"x"), Sync(1, 2)]
    assert {"f" in files for files in final_states(Base(), ops)} == {True, False}
    assert all(files == {"f": b"x"} for files in final_states(Base(), [*ops, DirSync("", 3)]))


def test_a_directory_sync_covers_only_what_came_before_it_was_called() -> None:
    # The create is recorded after the fsync of its directory was called (covers=0): not covered.
    ops: list[TraceOp] = [Create("f", 1), Sync(1, 1)]
    assert {"f" in files for files in final_states(Base(), [DirSync("", 0), *ops])} == {True, False}


def test_unsynced_blocks_each_may_be_lost_and_the_size_may_be_any_it_had() -> None:
    base = Base(files={"f": 1}, contents={1: b"a" * (2 * BLOCK)})
    states = final_states(base, [Write(1, 0, b"b" * (2 * BLOCK + 10))])
    contents = {files["f"] for files in states}
    assert b"a" * (2 * BLOCK) in contents  # nothing reached the disk
    assert b"b" * (2 * BLOCK + 10) in contents  # everything did
    assert b"b" * BLOCK + b"a" * BLOCK in contents  # the first block only
    assert b"a" * BLOCK + b"b" * BLOCK + b"\0" * 10 in contents  # the size, not the last piece
    assert len(contents) == 2 ** 3 * 2 - 4  # 3 pieces x 2 sizes; at the old size the third is cut off
    assert {files["f"] for files in final_states(base, [Write(1, 0, b"b" * 5), Sync(1, 1)])} == {
        b"bbbbb" + b"a" * (2 * BLOCK - 5)}


def test_a_truncate_before_a_sync_is_durable_after_it() -> None:
    base = Base(files={"f": 1}, contents={1: b"abcdef"})
    assert {files["f"] for files in final_states(base, [Truncate(1, 2)])} == {b"abcdef", b"ab"}
    assert {files["f"] for files in final_states(base, [Truncate(1, 2), Sync(1, 1)])} == {b"ab"}


def test_a_rename_is_atomic_and_a_lost_directory_loses_its_files() -> None:
    base = Base(files={"new.tmp": 1, "f": 2}, contents={1: b"new", 2: b"old"})
    assert {files["f"] for files in final_states(base, [Rename("new.tmp", "f")])} == {b"old", b"new"}
    ops: list[TraceOp] = [Mkdir("d"), Create("d/f", 3), Write(3, 0, b"z"), Sync(3, 3), DirSync("d", 4)]
    assert {"d/f" in files for files in final_states(Base(), ops)} == {True, False}
    assert all("d/f" in files for files in final_states(Base(), [*ops, DirSync("", 5)]))


def test_index_writes_are_atomic_and_marks_distinguish_states() -> None:
    ops: list[TraceOp] = [Db(b"k", b"v1"), Ack("k", b"v1"), Db(b"k", b"v2")]
    states = list(crash_states(Base(db={b"k": b"v0"}), ops))
    assert [dict(s.db)[b"k"] for s in states] == [b"v0", b"v1", b"v1", b"v2"]
    assert [len(s.acked) for s in states] == [0, 0, 1, 1]  # same disk, but more was promised
