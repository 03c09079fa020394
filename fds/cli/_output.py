"""Where ``fds get`` writes: a regular file replaced atomically, or anything else written straight into.

- **A regular file** (new or existing; a symlink is followed to its target,
  as ``cp`` does): the blob goes into a temporary ``.NAME.XXXXXXXX.part``
  beside the target, which is fsynced and renamed over it only once
  complete, then the directory is fsynced. A failed or interrupted download
  leaves the old file (or none) and no temporary. Tracts are written in
  parallel at their offsets with ``O_DIRECT`` where the file system allows
  it: on this kind of VM a page-cache write of a fresh file, made durable,
  ran at 0.3 GiB/s, ``O_DIRECT`` at 1.1-1.5 GiB/s (docs/benchmarks.md).
- **Modes**: a new file gets ``0o666 & ~umask``, as ``cp`` and ``curl`` give
  it. Replacing an existing file keeps its permission bits (not setuid,
  setgid or sticky) and, where we may (as root), its owner and group. Other
  hard links to the old file keep the old content: it is replaced, not
  rewritten in place.
- **Anything else** (stdout, a character or block device, a FIFO, a Unix
  socket): written straight into, in order; never replaced. A FIFO's open
  waits for a reader, as ``cat > FIFO`` does; a block device is fsynced.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import queue
import secrets
import select
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from fds.buffers import ALIGN, aligned, padded
from fds.client import Blob, Progress
from fds.durable import fsync_dir

__all__ = ["Output", "OutputError", "open_output", "download"]

WRITERS = 4
"""Tract writes in flight into a regular file: O_DIRECT wants several outstanding to keep the disk busy."""

Data = bytes | bytearray | memoryview


class OutputError(OSError):
    """OUT cannot be written; the message names it and says why."""


class Output:
    """A download's destination. :meth:`write_at` gets each tract's bytes and offset, in blob order."""

    parallel = False
    """Whether :meth:`write_at` may run on several threads at once, finishing in any order."""

    def __init__(self, name: str) -> None:
        self.name = name
        """OUT as the user gave it, for messages."""

    def write_at(self, offset: int, data: Data, last: bool) -> None:
        """Write ``data`` at ``offset`` (``last``: the blob's final tract). Raises :class:`OutputError`."""
        with self._explained():
            self._write_at(offset, memoryview(data).cast("B"), last)

    def commit(self, length: int) -> None:
        """All ``length`` bytes are written: make them durable and visible under OUT."""
        with self._explained():
            self._commit(length)

    def abort(self) -> None:
        """Release everything and leave OUT as it was (a stream keeps what it got). Idempotent; after a
        commit, a no-op."""

    def _write_at(self, offset: int, view: memoryview, last: bool) -> None:
        raise NotImplementedError

    def _commit(self, length: int) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _explained(self) -> Iterator[None]:
        try:
            yield
        except (BrokenPipeError, OutputError):
            raise  # a reader that went away is not a write error: the command ends quietly
        except OSError as exc:
            raise OutputError(f"cannot write {self.name}: {exc.strerror or exc}") from exc


def open_output(out: str) -> Output:
    """The destination for OUT (``-`` is stdout). Raises :class:`OutputError` saying what is wrong."""
    if out == "-":
        with contextlib.suppress(ValueError, OSError):
            sys.stdout.flush()
        return _Stream("stdout", sys.stdout.fileno(), close=False)
    target = Path(os.path.realpath(out))
    try:
        return _open(out, target)
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None


def _open(out: str, target: Path) -> Output:
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is None or stat.S_ISREG(st.st_mode):
        if not target.parent.is_dir():
            raise OutputError(f"cannot write {out}: no directory {Path(out).parent}")
        return _RegularFile(out, target, st)
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {out}: it is a directory; name the output file")
    if stat.S_ISSOCK(st.st_mode):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(target))
            return _Stream(out, sock.detach(), close=True)
    fd = os.open(target, os.O_WRONLY | os.O_CLOEXEC)  # a FIFO waits here for its reader
    return _Stream(out, fd, close=True, sync=stat.S_ISBLK(st.st_mode))


async def download(blob: Blob, tracts: int, output: Output, progress: Progress | None = None) -> int:
    """Read tracts ``0..tracts-1`` of ``blob`` (its bytes are its tracts concatenated) into ``output``.

    Returns the number of bytes written. Reads keep the client's window of
    requests in flight; writes overlap them, up to :data:`WRITERS` at once
    where the output takes writes at offsets. The caller commits or aborts
    ``output``.
    """
    limit = WRITERS if output.parallel else 1
    writing: set[asyncio.Future[None]] = set()

    async def write(offset: int, data: bytes | bytearray, last: bool) -> None:
        await asyncio.to_thread(output.write_at, offset, data, last)
        if progress is not None:
            progress(len(data))

    async def wait_until(most: int) -> None:
        while len(writing) > most:
            done, _ = await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
            writing.difference_update(done)
            for task in done:
                task.result()  # the first failed write ends the download

    offset = 0
    try:
        async for index, data in blob.read_tracts(range(tracts)):
            await wait_until(limit - 1)
            writing.add(asyncio.ensure_future(write(offset, data, index == tracts - 1)))
            offset += len(data)
        await wait_until(0)
    finally:
        if writing:  # a thread cannot be stopped mid-write: let them finish before the caller aborts
            await asyncio.wait(writing)
            for task in writing:
                if not task.cancelled():
                    task.exception()  # retrieved: the error that ended the download is already on its way
    return offset


class _Stream(Output):
    """Stdout, a device, a FIFO or a socket: bytes in order, from the current position."""

    def __init__(self, name: str, fd: int, *, close: bool, sync: bool = False) -> None:
        super().__init__(name)
        self._fd = fd
        self._close = close
        self._sync = sync

    def _write_at(self, offset: int, view: memoryview, last: bool) -> None:
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except BlockingIOError:  # a non-blocking stdout (some terminals and pipes): wait for room
                select.select([], [self._fd], [])

    def _commit(self, length: int) -> None:
        try:
            if self._sync:
                os.fsync(self._fd)
        finally:
            self.abort()

    def abort(self) -> None:
        if self._close:
            self._close = False
            os.close(self._fd)


_memmove = ctypes.memmove  # releases the GIL while it copies, unlike a slice assignment


class _RegularFile(Output):
    """A temporary beside ``target``, written at offsets (O_DIRECT where it can), then renamed over it."""

    parallel = True

    def __init__(self, name: str, target: Path, existing: os.stat_result | None) -> None:
        super().__init__(name)
        self._target = target
        self._done = False
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        while True:
            self._temp = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
            try:
                # The mode is 0o666 less the umask, as for any file a program creates; O_DIRECT where allowed.
                self._fd = os.open(self._temp, flags | os.O_DIRECT, 0o666)
                self._direct = True
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._fd = os.open(self._temp, flags, 0o666)  # no O_DIRECT on this file system
                self._direct = False
            break
        self._buffered_fd = -1
        self._buffers: queue.SimpleQueue[memoryview] = queue.SimpleQueue()
        try:
            if existing is not None:
                self._keep_owner_and_mode(existing)
        except BaseException:
            self.abort()
            raise

    def _keep_owner_and_mode(self, existing: os.stat_result) -> None:
        mine = os.fstat(self._fd)
        if (mine.st_uid, mine.st_gid) != (existing.st_uid, existing.st_gid):
            with contextlib.suppress(PermissionError):  # only root may give a file away
                os.fchown(self._fd, existing.st_uid, existing.st_gid)
        os.fchmod(self._fd, stat.S_IMODE(existing.st_mode) & 0o777)

    def _write_at(self, offset: int, view: memoryview, last: bool) -> None:
        if not view:
            return
        # O_DIRECT needs an aligned offset and whole blocks: a last tract is padded (the padding lies past
        # the end and is cut off by commit); a short tract inside the blob goes through the page cache.
        if self._direct and offset % ALIGN == 0 and (last or len(view) % ALIGN == 0):
            try:
                self._write_direct(offset, view)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._direct = False  # the file system took O_DIRECT at open but not for I/O
        _pwrite_all(self._buffered(), view, offset)

    def _write_direct(self, offset: int, data: memoryview) -> None:
        try:
            buf = self._buffers.get_nowait()
        except queue.Empty:
            buf = aligned(len(data))
        if len(buf) < len(data):
            buf = aligned(len(data))
        try:
            _copy(buf, data)
            _pwrite_all(self._fd, padded(buf[:len(data)]), offset)
        finally:
            self._buffers.put(buf)

    def _buffered(self) -> int:
        if self._buffered_fd < 0:
            self._buffered_fd = os.open(self._temp, os.O_WRONLY | os.O_CLOEXEC)
        return self._buffered_fd

    def _commit(self, length: int) -> None:
        try:
            os.ftruncate(self._fd, length)
            os.fsync(self._fd)
            os.rename(self._temp, self._target)
        except BaseException:
            self.abort()
            raise
        self._done = True
        self._close()
        fsync_dir(self._target.parent)

    def abort(self) -> None:
        self._close()
        if not self._done:
            self._done = True
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)

    def _close(self) -> None:
        for fd in (self._fd, self._buffered_fd):
            if fd >= 0:
                os.close(fd)
        self._fd = self._buffered_fd = -1


def _copy(dst: memoryview, src: memoryview) -> None:
    """``dst[:len(src)] = src``, without holding the GIL for the copy where the source is writable memory."""
    if src.readonly:
        dst[:len(src)] = src
    elif len(src):
        _memmove(ctypes.addressof(ctypes.c_char.from_buffer(dst)), ctypes.addressof(ctypes.c_char.from_buffer(src)),
                 len(src))


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n
