"""Record the file operations a piece of code makes under one directory, as ALICE and CrashMonkey do.

:class:`Recorder` swaps the ``os`` functions that :mod:`fds.durable` and
:class:`fds.tractserver.TractStore` use (open, write, pwrite, ftruncate,
fsync, fdatasync, close, rename, replace, unlink, mkdir) for wrappers that
call the real function and then append what it did to a trace, for paths
under ``root`` only. RocksDB does its own I/O in C++, so the store's index
is wrapped instead (:meth:`Recorder.index`): each synced put or delete is
one atomic, durable step at its place in the trace.

A sync is recorded when it *returns*, and covers what was recorded before
it was *called*: an operation racing with an fsync is not assumed covered.
The test marks what the code under test promised with :meth:`Recorder.invoke`
and :meth:`Recorder.ack` (a write begun; a write acknowledged).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Mkdir", "Create", "Write", "Truncate", "Sync", "DirSync", "Rename", "Unlink", "Db", "Invoke", "Ack",
           "TraceOp", "Base", "Recorder", "INDEX_DIR"]

INDEX_DIR = "index.rocksdb"
"""The store's RocksDB directory: its files are RocksDB's business, modelled by :class:`Db` steps."""


@dataclass(frozen=True)
class Mkdir:
    path: str


@dataclass(frozen=True)
class Create:
    path: str
    ino: int


@dataclass(frozen=True)
class Write:
    ino: int
    offset: int
    data: bytes


@dataclass(frozen=True)
class Truncate:
    ino: int
    length: int


@dataclass(frozen=True)
class Sync:
    """fsync or fdatasync of a file: its data and size, as they were when the call began, are durable."""

    ino: int
    covers: int
    """Operations before this index in the trace are covered."""


@dataclass(frozen=True)
class DirSync:
    """fsync of a directory: entries made in it before the call began are durable."""

    path: str
    covers: int


@dataclass(frozen=True)
class Rename:
    src: str
    dst: str


@dataclass(frozen=True)
class Unlink:
    path: str


@dataclass(frozen=True)
class Db:
    """A synced RocksDB put (``value``) or delete (``None``): atomic and durable once it returned."""

    key: bytes
    value: bytes | None


@dataclass(frozen=True)
class Invoke:
    """The test began writing ``value`` to ``key`` (a name of its own: a tract, a record, a file)."""

    key: str
    value: bytes


@dataclass(frozen=True)
class Ack:
    """The write of ``value`` to ``key`` returned: it must survive any crash from here on."""

    key: str
    value: bytes


TraceOp = Mkdir | Create | Write | Truncate | Sync | DirSync | Rename | Unlink | Db | Invoke | Ack


@dataclass
class Base:
    """What was on disk, all of it durable, when recording began: paths relative to the root."""

    dirs: set[str] = field(default_factory=set)
    files: dict[str, int] = field(default_factory=dict)
    """Path -> inode number (the recorder's own numbering)."""
    contents: dict[int, bytes] = field(default_factory=dict)
    db: dict[bytes, bytes] = field(default_factory=dict)


_PATCHED = ("open", "write", "pwrite", "ftruncate", "fsync", "fdatasync", "close", "rename", "replace", "unlink",
            "mkdir")


class Recorder:
    """Traces file operations under ``root`` while :meth:`recording`; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(root)
        self.ops: list[TraceOp] = []
        self.base = Base()
        self._names: dict[str, int] = {}
        self._next_ino = 1
        self._fds: dict[int, tuple[str, Any]] = {}  # fd -> ("file", [ino, position]) or ("dir", path)
        self._lock = threading.RLock()
        self._real: dict[str, Callable[..., Any]] = {}

    # -- the trace ------------------------------------------------------------------------
    def _rel(self, path: Any) -> str | None:
        full = os.path.abspath(os.fspath(path))
        if full == self.root:
            return ""
        if not full.startswith(self.root + os.sep):
            return None
        rel = full[len(self.root) + 1:]
        return None if rel == INDEX_DIR or rel.startswith(INDEX_DIR + os.sep) else rel

    def _add(self, op: TraceOp) -> None:
        with self._lock:
            self.ops.append(op)

    def invoke(self, key: str, value: bytes) -> None:
        self._add(Invoke(key, value))

    def ack(self, key: str, value: bytes) -> None:
        self._add(Ack(key, value))

    def snapshot(self, db: Any = None) -> None:
        """Take what is under ``root`` now (and the index ``db``'s entries) as the durable base."""
        base = Base()
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = self._rel(dirpath)
            if rel_dir is None:
                dirnames[:] = []
                continue
            if rel_dir:
                base.dirs.add(rel_dir)
            for name in filenames:
                rel = os.path.join(rel_dir, name) if rel_dir else name
                ino = self._new_ino()
                base.files[rel] = ino
                with open(os.path.join(dirpath, name), "rb") as fh:
                    base.contents[ino] = fh.read()
        if db is not None:
            it = db.iter()
            it.seek_to_first()
            while it.valid():
                base.db[bytes(it.key())] = bytes(it.value())
                it.next()
        self.base = base
        self._names = dict(base.files)

    def _new_ino(self) -> int:
        with self._lock:
            ino, self._next_ino = self._next_ino, self._next_ino + 1
            return ino

    # -- the wrappers -----------------------------------------------------------------------
    @contextmanager
    def recording(self) -> Iterator[Recorder]:
        """Patch the ``os`` functions for the duration (every thread of the process sees them)."""
        self._real = {name: getattr(os, name) for name in _PATCHED}
        for name in _PATCHED:
            setattr(os, name, getattr(self, f"_{name}"))
        try:
            yield self
        finally:
            for name, fn in self._real.items():
                setattr(os, name, fn)

    def _open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        rel = self._rel(path) if dir_fd is None else None
        existed = rel is not None and rel in self._names
        fd: int = self._real["open"](path, flags, mode, dir_fd=dir_fd)
        if rel is None:
            return fd
        with self._lock:
            if flags & os.O_DIRECTORY or os.path.isdir(path):
                self._fds[fd] = ("dir", rel)
            elif flags & (os.O_WRONLY | os.O_RDWR):
                if not existed:
                    ino = self._names[rel] = self._new_ino()
                    self.ops.append(Create(rel, ino))
                ino = self._names[rel]
                if flags & os.O_TRUNC:
                    self.ops.append(Truncate(ino, 0))
                self._fds[fd] = ("file", [ino, 0])
        return fd

    def _file(self, fd: int) -> list[int] | None:
        entry = self._fds.get(fd)
        return entry[1] if entry is not None and entry[0] == "file" else None

    def _write(self, fd: int, data: Any) -> int:
        n: int = self._real["write"](fd, data)
        with self._lock:
            state = self._file(fd)
            if state is not None:
                self.ops.append(Write(state[0], state[1], bytes(memoryview(data)[:n])))
                state[1] += n
        return n

    def _pwrite(self, fd: int, data: Any, offset: int) -> int:
        n: int = self._real["pwrite"](fd, data, offset)
        with self._lock:
            state = self._file(fd)
            if state is not None:
                self.ops.append(Write(state[0], offset, bytes(memoryview(data)[:n])))
        return n

    def _ftruncate(self, fd: int, length: int) -> None:
        self._real["ftruncate"](fd, length)
        state = self._file(fd)
        if state is not None:
            self._add(Truncate(state[0], length))

    def _synced(self, name: str, fd: int) -> None:
        covers = len(self.ops)
        self._real[name](fd)
        entry = self._fds.get(fd)
        if entry is not None:
            self._add(Sync(entry[1][0], covers) if entry[0] == "file" else DirSync(entry[1], covers))

    def _fsync(self, fd: int) -> None:
        self._synced("fsync", fd)

    def _fdatasync(self, fd: int) -> None:
        self._synced("fdatasync", fd)

    def _close(self, fd: int) -> None:
        self._real["close"](fd)
        with self._lock:
            self._fds.pop(fd, None)

    def _rename(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._moved("rename", src, dst, **kwargs)

    def _replace(self, src: Any, dst: Any, **kwargs: Any) -> None:
        self._moved("replace", src, dst, **kwargs)

    def _moved(self, name: str, src: Any, dst: Any, **kwargs: Any) -> None:
        self._real[name](src, dst, **kwargs)
        rel_src, rel_dst = self._rel(src), self._rel(dst)
        if rel_src is not None and rel_dst is not None:
            with self._lock:
                if rel_src in self._names:
                    self._names[rel_dst] = self._names.pop(rel_src)
                self.ops.append(Rename(rel_src, rel_dst))

    def _unlink(self, path: Any, **kwargs: Any) -> None:
        self._real["unlink"](path, **kwargs)
        rel = self._rel(path)
        if rel is not None:
            with self._lock:
                self._names.pop(rel, None)
                self.ops.append(Unlink(rel))

    def _mkdir(self, path: Any, mode: int = 0o777, **kwargs: Any) -> None:
        self._real["mkdir"](path, mode, **kwargs)
        rel = self._rel(path)
        if rel is not None:
            self._add(Mkdir(rel))

    # -- the index -------------------------------------------------------------------------
    def index(self, db: Any) -> Any:
        """Wrap a store's RocksDB so that its synced puts and deletes are traced (:class:`Db`)."""
        return _TracedIndex(db, self)


class _TracedIndex:
    def __init__(self, db: Any, recorder: Recorder) -> None:
        self._db = db
        self._recorder = recorder

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def put(self, key: bytes, value: bytes, options: Any = None) -> None:
        _require_sync(options)
        self._db.put(key, value, options)
        self._recorder._add(Db(bytes(key), bytes(value)))

    def delete(self, key: bytes, options: Any = None) -> None:
        _require_sync(options)
        self._db.delete(key, options)
        self._recorder._add(Db(bytes(key), None))


def _require_sync(options: Any) -> None:
    """Only synced index writes are modelled; an unsynced one would itself be a durability finding."""
    if options is None or not options.sync:
        raise AssertionError("an index write without sync=True: it would not survive a power loss")


def relative_parent(path: str) -> str:
    """The directory a relative path's entry lives in ("" for the root)."""
    return os.path.dirname(path)


def ancestors(path: str) -> list[str]:
    """Every directory above a relative path, nearest last, the root ("") excluded."""
    parts = Path(path).parts[:-1]
    return [os.path.join(*parts[:i]) for i in range(1, len(parts) + 1)]
