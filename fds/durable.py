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
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from fds.buffers import ALIGN, aligned, is_aligned, padded

__all__ = ["write_durably", "create_durably", "read_direct", "fsync_dir", "remove_temporaries", "ensure_dir",
           "DirectorySync", "directory_sync", "TMP_SUFFIX"]

TMP_SUFFIX = ".tmp"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory, making renames and creations in it durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(path: str | os.PathLike[str], data: bytes | bytearray | memoryview | Iterable[bytes],
                  *, sync_dir: bool = True, direct: bool = False) -> None:
    """Atomically and durably replace ``path`` with ``data``.

    On return the new content is on stable storage under ``path``. On any
    error (ENOSPC included) the temporary file is removed and ``path`` is
    untouched, then the error propagates.

    ``direct=True`` writes with ``O_DIRECT``, bypassing the page cache: on our
    disks an 8 MiB tract then costs ~7 ms instead of ~30 ms (see
    docs/benchmarks.md). ``data`` must then be a view made by
    :func:`fds.buffers.aligned`; the write is padded to whole blocks and the
    padding cut off with ``ftruncate``. File systems without ``O_DIRECT``
    fall back to buffered I/O.
    """
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.{threading.get_ident():x}{TMP_SUFFIX}"
    try:
        _write_new_file(tmp, data, direct=direct, sync=os.fsync)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_dir:
        fsync_dir(os.path.dirname(path) or ".")


def create_durably(path: str | os.PathLike[str], data: bytes | bytearray | memoryview, *,
                   direct: bool = False) -> None:
    """Create a *new* file ``path`` holding ``data`` and make it durable, file and name.

    For files whose name is never reused (tract generations): no temporary
    and no rename, because until something durable points at the name, a
    half-written file under it is just an orphan for the start-up sweep. The
    directory fsync is shared (:class:`DirectorySync`): writers that create
    files in one directory at the same time ride on one fsync.
    """
    path = os.fspath(path)
    try:
        _write_new_file(path, data, direct=direct, sync=os.fdatasync)
    except FileExistsError:
        raise  # not ours: leave it alone
    except BaseException:
        try:
            os.unlink(path)
        except OSError:
            pass
        raise
    directory_sync.sync(os.path.dirname(path) or ".")


class DirectorySync:
    """Group commit for directory fsyncs.

    :meth:`sync` returns once an fsync of the directory that *started after
    the call* has finished, so every entry created before the call is
    durable. Concurrent callers share fsyncs instead of queueing one each.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._started: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._running: set[str] = set()

    def sync(self, directory: str) -> None:
        with self._cond:
            target = self._started.get(directory, 0) + 1
            while self._done.get(directory, 0) < target:
                if directory in self._running:
                    self._cond.wait()
                    continue
                self._running.add(directory)
                ticket = self._started[directory] = self._started.get(directory, 0) + 1
                self._cond.release()
                try:
                    fsync_dir(directory)
                    self._cond.acquire()
                    self._done[directory] = ticket
                except BaseException:
                    self._cond.acquire()
                    raise
                finally:
                    self._running.discard(directory)
                    self._cond.notify_all()


directory_sync = DirectorySync()
"""The process-wide directory syncer."""


def _write_new_file(path: str, data: bytes | bytearray | memoryview | Iterable[bytes], *, direct: bool,
                    sync: Callable[[int], None]) -> None:
    """Create ``path`` (it must not exist), write ``data``, and ``sync`` it; O_DIRECT if asked and possible."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    if direct and not is_aligned(data):
        raise ValueError("direct writes take views made by fds.buffers.aligned()")
    fd = -1
    if direct:
        try:
            fd = os.open(path, flags | os.O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            direct = False  # no O_DIRECT on this file system: buffered it is
    if fd < 0:
        fd = os.open(path, flags, 0o644)
    try:
        if direct:
            assert isinstance(data, memoryview)
            _write_all(fd, padded(data))
            if len(data) % ALIGN:
                os.ftruncate(fd, len(data))
        else:
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                _write_all(fd, memoryview(chunk))
        sync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, view: memoryview) -> None:
    done = 0
    while done < len(view):
        done += os.write(fd, view[done:])


def read_direct(path: str | os.PathLike[str], length: int, *, direct: bool = True) -> memoryview:
    """Read a file's first ``length`` bytes with O_DIRECT (buffered where unsupported, or if not ``direct``).

    The result is a view made by :func:`fds.buffers.aligned`: uninitialised
    heap memory, reused by the allocator from request to request. A short
    file gives a shorter view; a file longer than expected gives
    ``length + 1`` bytes, so the caller's length check refuses it rather
    than silently serving a prefix.
    """
    view = aligned(length + 1)
    window = padded(view)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_DIRECT if direct else 0))
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        done = 0
        while done < len(window):
            n = os.preadv(fd, [window[done:]], done)
            if n == 0:
                break
            done += n
    finally:
        os.close(fd)
    return view[:min(done, length + 1)]


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
    """Create ``path`` (and parents) if needed, durably: each directory made, its parent fsync'd.

    A caller that finds the directory already there returns at once, perhaps
    before its creator's fsync has made it durable: make directories before
    concurrent writers share them (as :class:`fds.tractserver.TractStore` does).
    """
    p = Path(path)
    if p.is_dir():
        return p
    missing = []
    level = p
    while not level.is_dir():
        missing.append(level)
        level = level.parent
    p.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):  # outermost first: each entry durable before the one inside it
        fsync_dir(made.parent)
    return p
