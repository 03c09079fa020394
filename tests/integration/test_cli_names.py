"""The real ``fds`` command on ``fds://`` names, as a subprocess, against a real cluster found through ./.fds:
mb, rb, ls, cp (both ways and fds to fds, recursive), mv, cat, rm, and a clear message for every mistake."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fds.local import LocalCluster
from fds.names import INLINE_MAX
from tests.support.clusters import DEFAULTS, SMALL_TRACT


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project directory whose ./.fds holds a running k=2 cluster."""
    base = Path(tmp_path_factory.mktemp("cli-names"))
    cluster = LocalCluster(base / ".fds", **{**DEFAULTS, "replicas": 2, "secret_file": None})
    try:
        cluster.start()
        yield base
    finally:
        cluster.stop()


def fds(*args: str, cwd: Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}
    return subprocess.run([sys.executable, "-m", "fds", *args], cwd=cwd, env=env, input=stdin, capture_output=True,
                          timeout=120)


def ok(*args: str, cwd: Path, stdin: bytes | None = None) -> bytes:
    proc = fds(*args, cwd=cwd, stdin=stdin)
    assert proc.returncode == 0, proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
    return proc.stdout


def fails(code: int, *args: str, cwd: Path) -> str:
    proc = fds(*args, cwd=cwd)
    err = proc.stderr.decode()
    assert proc.returncode == code, (proc.returncode, err)
    assert "Traceback" not in err, err
    return err


def test_buckets_objects_and_copies(root: Path, tmp_path: Path) -> None:
    data = random.Random(2).randbytes(2 * SMALL_TRACT + 77)
    src = tmp_path / "data.bin"
    src.write_bytes(data)
    ok("mb", "fds://cli", cwd=root)
    assert b"fds://cli" in ok("ls", cwd=root)
    ok("cp", str(src), "fds://cli/dir/data.bin", cwd=root)
    ok("cp", str(src), "fds://cli/dir/", cwd=root)  # a trailing / takes the file's name
    ok("cp", "-", "fds://cli/stdin.txt", cwd=root, stdin=b"from stdin")
    listing = ok("ls", "fds://cli/", cwd=root).decode()
    assert "PRE" in listing and "dir/" in listing and "stdin.txt" in listing
    entries = [json.loads(line) for line in ok("ls", "-r", "--json", "fds://cli/dir/", cwd=root).splitlines()]
    assert [e["key"] for e in entries] == ["dir/data.bin"] and entries[0]["size"] == len(data)
    out = tmp_path / "out.bin"
    ok("cp", "fds://cli/dir/data.bin", str(out), cwd=root)
    assert out.read_bytes() == data
    assert ok("cat", "fds://cli/stdin.txt", cwd=root) == b"from stdin"
    assert ok("cp", "fds://cli/stdin.txt", "-", cwd=root) == b"from stdin"
    ok("mb", "fds://cli-two", cwd=root)
    ok("cp", "fds://cli/dir/data.bin", "fds://cli-two/copy.bin", cwd=root)  # inside the cluster
    assert ok("cat", "fds://cli-two/copy.bin", cwd=root) == data
    ok("mv", "fds://cli-two/copy.bin", "fds://cli-two/moved.bin", cwd=root)
    # a small file is kept inline in its name record (no blob): the same commands, byte for byte
    small = random.Random(3).randbytes(INLINE_MAX)
    (tmp_path / "small.bin").write_bytes(small)
    ok("cp", str(tmp_path / "small.bin"), "fds://cli/small.bin", cwd=root)
    ok("cp", "fds://cli/small.bin", str(tmp_path / "small-out.bin"), cwd=root)
    assert (tmp_path / "small-out.bin").read_bytes() == small
    ok("cp", "fds://cli/small.bin", "fds://cli-two/small-copy.bin", cwd=root)
    ok("mv", "fds://cli-two/small-copy.bin", "fds://cli-two/small-moved.bin", cwd=root)
    assert ok("cat", "fds://cli-two/small-moved.bin", cwd=root) == small
    assert b"moved.bin" in ok("ls", "fds://cli-two/", cwd=root)
    assert "no object 'copy.bin'" in fails(1, "cat", "fds://cli-two/copy.bin", cwd=root)
    # recursive: a directory up, a prefix down
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "top.txt").write_bytes(b"top")
    (tree / "a" / "b" / "deep.txt").write_bytes(b"deep")
    ok("cp", "-r", str(tree), "fds://cli-two/tree", cwd=root)
    down = tmp_path / "down"
    ok("cp", "-r", "fds://cli-two/tree/", str(down), cwd=root)
    assert (down / "top.txt").read_bytes() == b"top" and (down / "a" / "b" / "deep.txt").read_bytes() == b"deep"
    assert "not empty" in fails(1, "rb", "fds://cli-two", cwd=root)
    ok("rb", "--force", "fds://cli-two", cwd=root)
    ok("rm", "-r", "fds://cli/", cwd=root)
    ok("rb", "fds://cli", cwd=root)
    assert b"fds://cli" not in ok("ls", cwd=root)


def test_mistakes_get_one_clear_line(root: Path) -> None:
    assert "bad bucket name" in fails(1, "mb", "fds://No", cwd=root)
    ok("mb", "fds://errs", cwd=root)
    assert "already exists" in fails(1, "mb", "fds://errs", cwd=root)
    assert "no bucket 'nope'" in fails(1, "ls", "fds://nope/", cwd=root)
    assert "no object 'missing'" in fails(1, "cat", "fds://errs/missing", cwd=root)
    assert "no object 'missing'" in fails(1, "rm", "fds://errs/missing", cwd=root)
    assert "not an object" in fails(2, "rm", "fds://errs", cwd=root)
    assert "one of SOURCE and TARGET" in fails(2, "cp", "a", "b", cwd=root)
    assert "cannot read" in fails(1, "cp", "/no/such/file", "fds://errs/k", cwd=root)
    assert "is a directory; add -r" in fails(2, "cp", str(root), "fds://errs/k", cwd=root)
    assert "cannot read" in fails(1, "put", str(root), cwd=root)  # fds put has no -r: a directory is unreadable
    ok("cp", "-", "fds://errs/k", cwd=root, stdin=b"1")
    proc = fds("cp", "--no-clobber", "-", "fds://errs/k", cwd=root, stdin=b"2")
    assert proc.returncode == 1 and "already exists" in proc.stderr.decode()
    assert "malformed GUID" in fails(1, "rm", "1234", cwd=root)  # fds rm GUID still deletes blobs
    ok("rm", "fds://errs/k", cwd=root)
    ok("rb", "fds://errs", cwd=root)
