"""fds get's regular-file output: tracts at offsets (O_DIRECT or not), in any order, committed or aborted."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from fds.cli._output import OutputError, open_output

BLOCK = 4096


def _pieces(sizes: list[int]) -> list[tuple[int, bytes]]:
    out, offset = [], 0
    for size in sizes:
        out.append((offset, os.urandom(size)))
        offset += size
    return out


def _write(target: Path, sizes: list[int], *, shuffle: bool = False) -> bytes:
    output = open_output(str(target))
    pieces = _pieces(sizes)
    order = list(range(len(pieces)))
    if shuffle:
        random.Random(7).shuffle(order)
    threads = [threading.Thread(target=output.write_at, args=(*pieces[i], i == len(pieces) - 1)) for i in order]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    output.commit(sum(sizes))
    return b"".join(data for _, data in pieces)


@pytest.mark.parametrize("sizes", [
    [4 * BLOCK, 4 * BLOCK, 100],           # whole tracts and a short last one: padded, then cut to length
    [4 * BLOCK] * 3,                       # all whole
    [1000, 4 * BLOCK, 3 * BLOCK + 5, 77],  # short tracts inside: unaligned offsets go through the page cache
    [0, 5],                                # an empty tract
    [],                                    # an empty blob
])
def test_tracts_land_at_their_offsets(tmp_path: Path, sizes: list[int]) -> None:
    out = tmp_path / "out.bin"
    expected = _write(out, sizes, shuffle=True)
    assert out.read_bytes() == expected
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_writes_on_tmpfs_too(tmp_path: Path) -> None:
    """A file system that may refuse O_DIRECT (tmpfs) gets the same bytes through the page cache."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm")
    out = Path("/dev/shm") / f"fds-test-{os.getpid()}.bin"
    try:
        expected = _write(out, [4 * BLOCK, 4 * BLOCK, 9])
        assert out.read_bytes() == expected
    finally:
        out.unlink(missing_ok=True)


def test_abort_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    output = open_output(str(out))
    output.write_at(0, os.urandom(4 * BLOCK), False)
    assert len(list(tmp_path.iterdir())) == 2  # the temporary is beside the file, until...
    output.abort()
    output.abort()  # idempotent
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_missing_directory_is_refused_up_front(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match=r"cannot write .*/nowhere/out.bin: no directory .*/nowhere$"):
        open_output(str(tmp_path / "nowhere" / "out.bin"))


def test_write_errors_name_the_output(tmp_path: Path) -> None:
    output = open_output(str(tmp_path / "out.bin"))
    output._fd = os.open(os.devnull, os.O_RDONLY)  # type: ignore[attr-defined]  # a descriptor writes fail on
    try:
        with pytest.raises(OutputError, match=r"cannot write .*out.bin: Bad file descriptor"):
            output.write_at(0, b"x" * BLOCK, True)
    finally:
        output.abort()
