"""Durability in one helper: every file that must survive a crash goes through here.

The recipe (as OpenStack Swift's ``renamer``/``fsync_dir``): write to a
temporary name in the same directory, fsync the file, rename it over its
final name, then fsync the directory so the rename itself is durable. A
process killed at any instant leaves either the old file or the new one,
plus at worst a ``*.tmp`` that :func:`remove_temporaries` sweeps up.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["write_durably", "fsync_dir", "remove_temporaries", "ensure_dir", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, making renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str | os.PathLike[str], data: bytes | bytearray | memoryview | Iterable[bytes],
                  *, sync_dir: bool = True) -> None:
    """Atomically and durably replace ``path`` with ``data``.

    On return the new content is on stable storage under ``path``. On any
    error (ENOSPC included) the temporary file is removed and ``path`` is
    untouched, then the error propagates.
    """
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.{id(data):x}{TMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(os.path.dirname(path) or ".")


def remove_temporaries(root: str | os.PathLike[str]) -> int:
    """Delete ``*.tmp`` leftovers of interrupted writes under ``root``; returns how many."""
    removed = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(TMP_SUFFIX):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except OSError as exc:
                    if exc.errno != errno.ENOENT:
                        raise
    return removed


def ensure_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) if needed, durably."""
    p = Path(path)
    if not p.is_dir():
        p.mkdir(parents=True, exist_ok=True)
        fsync_dir(p.parent)
    return p
