"""Every state a power loss can leave, from a trace (:mod:`.trace`), and a directory holding each.

The model is POSIX's, as ALICE (OSDI 2014) and CrashMonkey (OSDI 2018) use:

- what was on disk when recording began is durable (:class:`.trace.Base`);
- file data and size are durable once an fsync/fdatasync of that file, called after they were
  written, has returned. Until then each ``BLOCK``-sized piece of each write may or may not have
  reached the disk (in program order where pieces overlap), and the size may be any it had;
  bytes past what reached the disk read as zeros;
- a directory entry (mkdir, create, rename, unlink) is durable once an fsync of its directory,
  called after it was made, has returned. Until then it may or may not have happened, each
  independently of the others; an entry in a directory whose own entry was lost is lost too;
- a synced RocksDB put or delete is atomic and durable where it stands in the trace.

:func:`crash_states` yields, for every crash point (after each operation of the trace), every
distinct state those rules allow: all combinations when there are at most ``limit`` of them at
that point, else ``limit`` drawn by a seeded generator (the extremes, nothing and everything
un-synced persisted, always among them).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import rocksdict

from .trace import (
    INDEX_DIR,
    Ack,
    Base,
    Create,
    Db,
    DirSync,
    Invoke,
    Mkdir,
    Rename,
    Sync,
    TraceOp,
    Truncate,
    Unlink,
    Write,
    ancestors,
    relative_parent,
)

__all__ = ["BLOCK", "CrashState", "Enumeration", "crash_states", "Workspace"]

BLOCK = 4096
"""The unit a write reaches the disk in: a block either has its new bytes or its old ones."""


@dataclass(frozen=True)
class CrashState:
    point: int
    """How many operations of the trace had happened."""
    dirs: frozenset[str]
    files: tuple[tuple[str, bytes], ...]
    db: tuple[tuple[bytes, bytes], ...]
    invoked: tuple[Invoke, ...]
    acked: tuple[Ack, ...]
    lost: str
    """What did not reach the disk, for the report."""

    def signature(self) -> bytes:
        h = hashlib.blake2b(digest_size=16)
        for d in sorted(self.dirs):
            h.update(b"d" + d.encode() + b"\0")
        for path, data in self.files:
            h.update(b"f" + path.encode() + b"\0" + hashlib.blake2b(data, digest_size=16).digest())
        for key, value in self.db:
            h.update(b"k" + key + b"\0" + value + b"\0")
        marks: list[Invoke | Ack] = [*self.invoked, *self.acked]
        for mark in marks:  # the same disk owes more once more was acknowledged
            h.update(type(mark).__name__.encode() + mark.key.encode() + b"\0" + mark.value)
        return h.digest()


@dataclass
class Enumeration:
    """What :func:`crash_states` went through: the report's figures."""

    points: int = 0
    combinations: int = 0
    sampled_points: int = 0
    distinct: int = 0


@dataclass
class _Piece:
    """A unit that may or may not have reached the disk: a block of a write, or a directory entry."""

    index: int
    op: TraceOp
    offset: int = 0
    data: bytes = b""

    def describe(self) -> str:
        if isinstance(self.op, Write):
            return f"#{self.index} ino {self.op.ino} bytes {self.offset}..{self.offset + len(self.data)}"
        return f"#{self.index} {self.op}"


@dataclass
class _Inode:
    content: bytearray = field(default_factory=bytearray)
    dirty: list[tuple[int, Write | Truncate]] = field(default_factory=list)


def crash_states(base: Base, ops: list[TraceOp], *, limit: int = 256, seed: int = 0,
                 stats: Enumeration | None = None) -> Iterator[CrashState]:
    """Every distinct crash state of ``ops`` over ``base`` (see the module docstring)."""
    stats = stats if stats is not None else Enumeration()
    rng = random.Random(seed)
    seen: set[bytes] = set()
    for point in range(len(ops) + 1):
        stats.points += 1
        for state in _states_at(base, ops[:point], limit, rng, stats):
            key = state.signature()
            if key not in seen:
                seen.add(key)
                stats.distinct += 1
                yield state


def _states_at(base: Base, prefix: list[TraceOp], limit: int, rng: random.Random,
               stats: Enumeration) -> Iterator[CrashState]:
    synced_data: dict[int, int] = {}  # ino -> ops before this index are durable
    synced_dirs: dict[str, int] = {}
    for op in prefix:
        if isinstance(op, Sync):
            synced_data[op.ino] = max(synced_data.get(op.ino, 0), op.covers)
        elif isinstance(op, DirSync):
            synced_dirs[op.path] = max(synced_dirs.get(op.path, 0), op.covers)
    inodes = {ino: _Inode(bytearray(data)) for ino, data in base.contents.items()}
    dir_ops: list[tuple[int, Mkdir | Create | Rename | Unlink, bool]] = []  # (index, op, durable)
    pieces: list[_Piece] = []
    db = dict(base.db)
    for index, op in enumerate(prefix):
        if isinstance(op, (Write, Truncate)):
            inode = inodes.setdefault(op.ino, _Inode())
            if index < synced_data.get(op.ino, 0):
                _apply(inode.content, op)
            else:
                inode.dirty.append((index, op))
                if isinstance(op, Write):
                    pieces += _blocks(index, op)
        elif isinstance(op, (Mkdir, Create, Rename, Unlink)):
            if isinstance(op, Create):
                inodes.setdefault(op.ino, _Inode())
            durable = all(index < synced_dirs.get(d, 0) for d in _dirs_touched(op))
            dir_ops.append((index, op, durable))
            if not durable:
                pieces.append(_Piece(index, op))
        elif isinstance(op, Db):
            if op.value is None:
                db.pop(op.key, None)
            else:
                db[op.key] = op.value
    sizes = {ino: _sizes(inode) for ino, inode in inodes.items() if inode.dirty}
    size_inos = sorted(sizes)
    total = 2 ** len(pieces)
    for ino in size_inos:
        total *= len(sizes[ino])
    stats.combinations += total
    invoked = tuple(op for op in prefix if isinstance(op, Invoke))
    acked = tuple(op for op in prefix if isinstance(op, Ack))
    db_items = tuple(sorted(db.items()))

    def choices() -> Iterator[tuple[tuple[bool, ...], tuple[int, ...]]]:
        if total <= limit:
            yield from itertools.product(itertools.product((False, True), repeat=len(pieces)),
                                         itertools.product(*(range(len(sizes[i])) for i in size_inos)))
            return
        stats.sampled_points += 1
        yield (False,) * len(pieces), tuple(0 for _ in size_inos)
        yield (True,) * len(pieces), tuple(len(sizes[i]) - 1 for i in size_inos)
        for _ in range(limit - 2):
            yield (tuple(rng.random() < 0.5 for _ in pieces),
                   tuple(rng.randrange(len(sizes[i])) for i in size_inos))

    for kept, size_choice in choices():
        chosen = {p.index * 1_000_000 + p.offset // BLOCK for p, k in zip(pieces, kept, strict=True) if k}
        lost = [p.describe() for p, k in zip(pieces, kept, strict=True) if not k]
        dirs = set(base.dirs)
        names = dict(base.files)
        for index, op, durable in dir_ops:
            if durable or index * 1_000_000 in chosen:
                _apply_entry(dirs, names, op)
        files: list[tuple[str, bytes]] = []
        for path, ino in sorted(names.items()):
            if not all(a in dirs for a in ancestors(path)):
                continue
            inode = inodes[ino]
            content = bytearray(inode.content)
            for index, op in inode.dirty:
                if isinstance(op, Write):
                    for piece in _blocks(index, op):
                        if index * 1_000_000 + piece.offset // BLOCK in chosen:
                            _apply(content, Write(op.ino, piece.offset, piece.data))
            if ino in sizes:
                size = sizes[ino][size_choice[size_inos.index(ino)]]
                content = content[:size] + bytes(max(0, size - len(content)))
            files.append((path, bytes(content)))
        reachable = frozenset(d for d in dirs if all(a in dirs for a in ancestors(d)))
        yield CrashState(len(prefix), reachable, tuple(files), db_items, invoked, acked, "; ".join(lost))


def _dirs_touched(op: Mkdir | Create | Rename | Unlink) -> set[str]:
    if isinstance(op, Rename):
        return {relative_parent(op.src), relative_parent(op.dst)}
    return {relative_parent(op.path)}


def _apply_entry(dirs: set[str], names: dict[str, int], op: Mkdir | Create | Rename | Unlink) -> None:
    if isinstance(op, Mkdir):
        dirs.add(op.path)
    elif isinstance(op, Create):
        names[op.path] = op.ino
    elif isinstance(op, Rename):
        if op.src in names:
            names[op.dst] = names.pop(op.src)
    else:
        names.pop(op.path, None)


def _apply(content: bytearray, op: Write | Truncate) -> None:
    if isinstance(op, Truncate):
        del content[op.length:]
        content.extend(bytes(op.length - len(content)))
        return
    end = op.offset + len(op.data)
    if end > len(content):
        content.extend(bytes(end - len(content)))
    content[op.offset:end] = op.data


def _blocks(index: int, op: Write) -> list[_Piece]:
    """A write cut at block boundaries: each piece reaches the disk or not."""
    out = []
    offset = op.offset
    while offset < op.offset + len(op.data):
        end = min((offset // BLOCK + 1) * BLOCK, op.offset + len(op.data))
        out.append(_Piece(index, op, offset, op.data[offset - op.offset:end - op.offset]))
        offset = end
    return out


def _sizes(inode: _Inode) -> list[int]:
    """Every size the file had since its last sync, the synced one first."""
    size = len(inode.content)
    out = [size]
    for _index, op in inode.dirty:
        size = op.length if isinstance(op, Truncate) else max(size, op.offset + len(op.data))
        if size not in out:
            out.append(size)
    return out


class Workspace:
    """One directory that is made to hold each crash state in turn (:meth:`lay_out`).

    Rebuilding a whole tree per state costs hundreds of directory operations
    (a store has 256 shard directories); this one changes only what differs
    from the state laid out before, and copies each distinct RocksDB index
    from a cache instead of building it again.
    """

    def __init__(self, root: str | os.PathLike[str], cache: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.cache = Path(cache)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)

    def lay_out(self, state: CrashState) -> Path:
        """Make the workspace hold exactly ``state``'s directories, files and index; returns its root."""
        wanted = dict(state.files)
        for dirpath, dirnames, filenames in os.walk(self.root, topdown=True):
            rel_dir = os.path.relpath(dirpath, self.root)
            rel_dir = "" if rel_dir == "." else rel_dir
            for name in list(dirnames):
                rel = os.path.join(rel_dir, name) if rel_dir else name
                if rel == INDEX_DIR or rel not in state.dirs:
                    shutil.rmtree(os.path.join(dirpath, name))
                    dirnames.remove(name)
            for name in filenames:
                rel = os.path.join(rel_dir, name) if rel_dir else name
                if rel not in wanted:
                    os.unlink(os.path.join(dirpath, name))
        for d in sorted(state.dirs, key=len):
            (self.root / d).mkdir(exist_ok=True)
        for path, data in wanted.items():
            (self.root / path).write_bytes(data)
        shutil.copytree(self._index(state.db), self.root / INDEX_DIR)
        return self.root

    def _index(self, entries: tuple[tuple[bytes, bytes], ...]) -> Path:
        h = hashlib.blake2b(digest_size=16)
        for key, value in entries:
            h.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        path = self.cache / h.hexdigest()
        if not path.exists():
            db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
            try:
                for key, value in entries:
                    db.put(key, value)
            finally:
                db.close()
        return path
