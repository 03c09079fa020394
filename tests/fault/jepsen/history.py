"""Unique tract values, and the history of operations on them.

Every write puts a value no other write puts: its bytes name the writer and
its sequence number and carry a checksum of the whole, so a read can say
exactly which write it saw, or that it saw bytes no write made (torn, mixed
or foreign). The history is Jepsen's: each operation is an *invoke* event
and then one completion, *ok* (it happened), *fail* (it certainly did not)
or *info* (unknown: a write that raised may have reached some replicas),
all stamped with ``time.monotonic()``. Nemesis actions go in the same
history, so a violation's excerpt shows the faults around it.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import xxhash

__all__ = ["ValueId", "encode_value", "decode_value", "Garbage", "Event", "Op", "History", "NIL"]

_MAGIC = b"FDSJEPSN"
_HEADER = struct.Struct(">8sIIIIQ")  # magic, writer, seq, key, body length, xxh3 of the body


@dataclass(frozen=True, order=True, slots=True)
class ValueId:
    """Which write made a value: writer number and that writer's sequence number."""

    writer: int
    seq: int

    def __str__(self) -> str:
        return f"w{self.writer}#{self.seq}"


NIL = None
"""What a read of a tract that was never written returns (the register's initial value)."""


@dataclass(frozen=True, slots=True)
class Garbage:
    """Bytes that are not any write's value: why, and their length."""

    why: str
    length: int

    def __str__(self) -> str:
        return f"<garbage: {self.why}, {self.length} bytes>"


ReadValue = ValueId | Garbage | None


def encode_value(value: ValueId, key: int, length: int) -> bytes:
    """The bytes of write ``value`` to tract ``key``: a header, then ``length`` seeded bytes."""
    body = random.Random(value.writer * 1_000_003 + value.seq * 7919 + key).randbytes(length)
    return _HEADER.pack(_MAGIC, value.writer, value.seq, key, length, xxhash.xxh3_64_intdigest(body)) + body


def decode_value(data: bytes | bytearray | memoryview, key: int) -> ValueId | Garbage:
    """Which write made ``data`` (read from tract ``key``), or why no write did."""
    data = bytes(data)
    if len(data) < _HEADER.size:
        return Garbage("shorter than a header", len(data))
    magic, writer, seq, wrote_key, length, checksum = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        return Garbage("no header", len(data))
    body = data[_HEADER.size:]
    if len(body) != length:
        return Garbage(f"w{writer}#{seq} cut to {len(body)} of {length} body bytes", len(data))
    if xxhash.xxh3_64_intdigest(body) != checksum:
        return Garbage(f"w{writer}#{seq} with a body that fails its checksum", len(data))
    if wrote_key != key:
        return Garbage(f"w{writer}#{seq} was written to tract {wrote_key}, not {key}", len(data))
    return ValueId(writer, seq)


Kind = Literal["invoke", "ok", "fail", "info"]


@dataclass(frozen=True, slots=True)
class Event:
    """One line of the history."""

    index: int
    time: float
    process: str
    kind: Kind
    f: str
    """``write``, ``read``, or a nemesis action (``kill``, ``pause``, ...)."""
    key: int | None = None
    value: ReadValue = None
    detail: str = ""


@dataclass(slots=True)
class Op:
    """An invocation paired with its completion (``complete`` is None if it never completed)."""

    process: str
    f: str
    key: int | None
    invoke: Event
    complete: Event | None = None

    @property
    def status(self) -> Kind:
        return self.complete.kind if self.complete is not None else "info"

    @property
    def value(self) -> ReadValue:
        """A write's value; a read's result (only meaningful when ok)."""
        if self.f == "write" or self.complete is None:
            return self.invoke.value
        return self.complete.value

    @property
    def start(self) -> float:
        return self.invoke.time

    @property
    def end(self) -> float:
        """When it completed; ``inf`` for an info op (its effect may land at any later time)."""
        if self.complete is None or self.complete.kind == "info":
            return float("inf")
        return self.complete.time


@dataclass
class History:
    """An append-only, thread-safe list of events; times are ``time.monotonic()``."""

    events: list[Event] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, process: str, kind: Kind, f: str, key: int | None = None, value: ReadValue = None,
            detail: str = "", at: float | None = None) -> Event:
        with self._lock:
            event = Event(len(self.events), time.monotonic() if at is None else at, process, kind, f, key, value,
                          detail)
            self.events.append(event)
            return event

    def ops(self) -> list[Op]:
        """Client operations (reads and writes) as invoke/completion pairs, in invocation order."""
        open_ops: dict[str, Op] = {}
        out: list[Op] = []
        for event in self.events:
            if event.f not in ("read", "write"):
                continue
            if event.kind == "invoke":
                if event.process in open_ops:
                    raise ValueError(f"process {event.process} invoked event {event.index} with one still open")
                op = open_ops[event.process] = Op(event.process, event.f, event.key, event)
                out.append(op)
            else:
                op_or_none = open_ops.pop(event.process, None)
                if op_or_none is None:
                    raise ValueError(f"event {event.index} completes nothing: process {event.process} has no open op")
                op_or_none.complete = event
        return out

    def format(self, event: Event) -> str:
        """One event as a line: seconds since the start, process, kind, what."""
        what = event.f if event.key is None else f"{event.f} t{event.key}"
        shown = "" if event.kind == "invoke" and event.f == "read" else (
            " nil" if event.value is None and event.f in ("read", "write") and event.kind == "ok" else
            f" {event.value}" if event.value is not None else "")
        detail = f"  ({event.detail})" if event.detail else ""
        return f"{event.time - self.started:9.3f}  {event.process:<10} {event.kind:<6} {what}{shown}{detail}"

    def excerpt(self, ops: list[Op], *, margin: float = 0.5, limit: int = 40) -> str:
        """The events of ``ops``, every nemesis event from ``margin`` s before the first to ``margin`` s
        after the last, and the start of any fault in force then, in time order: what a reader needs to
        see why ``ops`` are a violation."""
        chosen: dict[int, Event] = {}
        for op in ops:
            chosen[op.invoke.index] = op.invoke
            if op.complete is not None:
                chosen[op.complete.index] = op.complete
        if not chosen:
            return ""
        low = min(e.time for e in chosen.values()) - margin
        high = max(e.time for e in chosen.values()) + margin
        in_force: dict[str, Event] = {}  # faults injected before the excerpt and not yet healed
        nemesis = []
        for e in self.events:
            if e.f in ("read", "write") or e.time > high:
                continue
            if e.time >= low:
                nemesis.append(e)
            elif e.kind == "invoke":
                in_force[e.f] = e
            elif e.kind in ("ok", "fail"):
                in_force.pop(e.f, None)
        nemesis += in_force.values()
        lines = sorted([*chosen.values(), *nemesis], key=lambda e: (e.time, e.index))
        text = [self.format(e) for e in lines]
        if len(text) > limit:
            text = [*text[:limit // 2], f"    ... {len(text) - limit} lines left out ...", *text[-(limit // 2):]]
        return "\n".join(text)
