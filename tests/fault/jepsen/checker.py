"""What a history of tract reads and writes may not show.

Each tract is a register, and every write puts a unique value, so each read
says which write it saw. The checker reports, per tract:

- **garbage**: a read returned bytes no write made (torn, mixed, foreign);
- **phantom / future read**: a value no one wrote to this tract, or from a
  write invoked only after the read had returned;
- **stale read**: a read returned a value older than a write that was
  acknowledged before the read began ("older": its write had returned,
  acknowledged or failed, before the newer write was invoked). Reads may
  return a concurrent or newer write;
- **unreadable at the end**: the final read of a tract failed;
- **replicas differ**: at the end, the replicas of a tract (each read on its
  own data port) do not hold the same bytes.

That is what fds promises. It does not promise linearizability: a client
writes every replica at once and readers read any one, so while a write is
in flight one reader can see the new value and a later reader the old one.
``linearizable=True`` checks that stricter model too, to measure how often
it is broken: the stale-read rule with "seen by a read that ended before
this read began" in place of "acknowledged" (and a value seen counting as
done), and the zone test of Gibbons
and Korach (SIAM J. Comput. 26(4), 1997), exact for registers whose values
are unique, for the rest (two writers' values alternating).

A write that raised is *info*: it may have reached some replicas, or land
later, so it counts once some read has seen it and never otherwise.
Violations carry the excerpt of the history that shows them.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from .history import NIL, Garbage, History, Op, ReadValue, ValueId

__all__ = ["Violation", "check", "check_replicas", "FINAL"]

FINAL = "final"
"""The process name of the reads made after the run, once the cluster is healed."""

_Report = Callable[[str, str, Iterable[Op]], None]

_MAX_PER_KIND_AND_KEY = 3
"""Violations of one kind on one tract reported in full; the rest are counted."""


@dataclass(frozen=True)
class Violation:
    kind: str
    key: int | None
    message: str
    excerpt: str = ""

    def __str__(self) -> str:
        where = "" if self.key is None else f" (tract {self.key})"
        text = f"{self.kind}{where}: {self.message}"
        return f"{text}\n{_indent(self.excerpt)}" if self.excerpt else text


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


@dataclass
class _Cluster:
    """A write and the reads that returned its value."""

    value: ValueId | None
    write: Op | None
    reads: list[Op]

    @property
    def ops(self) -> list[Op]:
        return ([self.write] if self.write is not None else []) + self.reads

    def effective_end(self) -> float:
        """By when the write surely took effect: acknowledged, or seen by a read that returned."""
        if self.value is NIL:
            return -math.inf
        return min([op.end for op in self.ops], default=math.inf)

    def returned(self) -> float:
        """When the write's client returned, acknowledged or not (``inf`` if it never did)."""
        if self.value is NIL:
            return -math.inf
        if self.write is None or self.write.complete is None:
            return math.inf
        return self.write.complete.time

    def start(self) -> float:
        return -math.inf if self.write is None else self.write.start


def check(history: History, *, final: str = FINAL, linearizable: bool = False) -> list[Violation]:
    """Every violation in ``history`` (reads and writes of each tract), in the order of tracts; with
    ``linearizable``, of that stricter model too."""
    by_key: dict[int, list[Op]] = defaultdict(list)
    for op in history.ops():
        if op.key is not None:
            by_key[op.key].append(op)
    out: list[Violation] = []
    for key in sorted(by_key):
        out += _check_key(history, key, by_key[key], final, linearizable)
    return out


def _check_key(history: History, key: int, ops: list[Op], final: str, linearizable: bool) -> list[Violation]:
    found: list[Violation] = []
    counts: dict[str, int] = defaultdict(int)

    def report(kind: str, message: str, shown: Iterable[Op]) -> None:
        counts[kind] += 1
        if counts[kind] <= _MAX_PER_KIND_AND_KEY:
            found.append(Violation(kind, key, message, history.excerpt(list(shown))))

    writes: dict[ValueId, Op] = {}
    for op in ops:
        if op.f == "write":
            assert isinstance(op.value, ValueId), f"write without a value: {op}"
            if op.value in writes:
                raise ValueError(f"two writes of {op.value} to tract {key}: the harness must write unique values")
            writes[op.value] = op
    clusters: dict[ValueId | None, _Cluster] = {v: _Cluster(v, w, []) for v, w in writes.items()}
    for op in ops:
        if op.f != "read":
            continue
        if op.process == final and op.status != "ok":
            detail = op.complete.detail if op.complete is not None else "never completed"
            report("unreadable at the end", f"the final read of tract {key} failed: {detail}", [op])
            continue
        if op.status != "ok":
            continue
        value = op.value
        if isinstance(value, Garbage):
            report("garbage", f"a read returned bytes that no write made: {value}", [op])
        elif value is not NIL and value not in writes:
            report("phantom", f"a read returned {value}, which was never written to tract {key}", [op])
        elif value is not NIL and writes[value].status == "fail":
            report("phantom", f"a read returned {value}, whose write failed", [op, writes[value]])
        elif value is not NIL and op.end < writes[value].start:
            report("future read", f"a read returned {value} before that write was invoked", [op, writes[value]])
        else:
            cluster = clusters.get(value)
            if cluster is None:
                cluster = clusters[value] = _Cluster(value, None, [])
            cluster.reads.append(op)

    _stale_reads(clusters, report, observed=linearizable)
    if linearizable and not counts:  # the zone test explains what the rules above did not
        _zones(clusters, report)
    for kind, count in counts.items():
        if count > _MAX_PER_KIND_AND_KEY:
            found.append(Violation(kind, key, f"... and {count - _MAX_PER_KIND_AND_KEY} more like it"))
    return found


def _stale_reads(clusters: Mapping[ValueId | None, _Cluster], report: _Report, *, observed: bool) -> None:
    """A read of v is stale if a write w was acknowledged before the read began, and v's write had
    returned (acknowledged or failed) before w was invoked: w must come between v and the read.
    (``observed``: w may also be one a read returned, and v counts as done once acknowledged or seen.
    fds does not promise that: a write still in flight may be seen on one replica, lose to a newer
    write on another, and win in the end as last writer.) Writes sorted by when they took effect, with a
    running maximum of their invocation times, find such a w for each read in one bisection."""
    def took_effect(c: _Cluster) -> float:
        if observed:
            return c.effective_end()
        return c.write.end if c.write is not None and c.write.status == "ok" else math.inf

    newer = sorted((c for c in clusters.values() if c.write is not None and took_effect(c) < math.inf),
                   key=took_effect)
    ends = [took_effect(c) for c in newer]
    latest: list[_Cluster] = []  # latest[i]: of newer[:i+1], the one invoked last
    for c in newer:
        latest.append(c if not latest or _start(c) > _start(latest[-1]) else latest[-1])
    for cluster in clusters.values():
        v_end = cluster.effective_end() if observed else cluster.returned()
        for read in cluster.reads:
            i = bisect.bisect_left(ends, read.start)
            if i == 0 or not v_end < _start(latest[i - 1]):
                continue
            other = latest[i - 1]
            assert other.write is not None
            shown = cluster.value if cluster.value is not NIL else "nil (never written)"
            if other.write.status == "ok" and other.write.end < read.start:
                why = f"{other.value} was acknowledged before the read began"
                evidence = [read, other.write]
            else:
                seen = min(other.reads, key=lambda r: r.end)
                why = f"{other.value} was returned by a read that ended before this read began"
                evidence = [read, other.write, seen]
            done = "had taken effect" if observed else "had been written (its client had returned)"
            report("stale read", f"read returned {shown}, but {why}, and {shown} {done} before "
                   f"{other.value} was invoked", [*evidence, *cluster.ops[:1]])


def _start(cluster: _Cluster) -> float:
    return cluster.start()


def _zones(clusters: Mapping[ValueId | None, _Cluster], report: _Report) -> None:
    """Gibbons-Korach: a cluster (a write and its reads) spans at least [f, s], f the earliest completion
    and s the latest invocation in it. Clusters must take turns, so no two such forward zones (f < s) may
    overlap, and no cluster that fits in a point (a backward zone, s <= f) may lie inside a forward zone."""
    zones: list[tuple[float, float, _Cluster]] = []
    for cluster in clusters.values():
        if cluster.value is not NIL and cluster.write is not None and cluster.write.status != "ok" \
                and not cluster.reads:
            continue  # a write that raised and was never seen: it may never have happened
        ends = [-math.inf] if cluster.value is NIL else []
        f = min([op.end for op in cluster.ops] + ends)
        s = max(op.start for op in cluster.ops)
        zones.append((f, s, cluster))
    forward = [z for z in zones if z[0] < z[1]]
    backward = [z for z in zones if z[0] >= z[1]]
    for i, (f1, s1, c1) in enumerate(forward):
        for f2, s2, c2 in forward[i + 1:]:
            if f1 < s2 and f2 < s1:
                report("not linearizable", f"the reads of {c1.value} and of {c2.value} interleave: no order of "
                       "writes explains both", [*c1.ops[:3], *c2.ops[:3]])
        for s2, f2, c2 in ((z[1], z[0], z[2]) for z in backward):
            if f1 < s2 and f2 < s1:
                report("not linearizable", f"{c2.value} and its reads all happened while {c1.value}'s reads were "
                       f"being served: no order puts {c2.value} anywhere", [*c1.ops[:3], *c2.ops[:3]])


def check_replicas(replicas: Mapping[int, Mapping[str, ReadValue | str]]) -> list[Violation]:
    """Per tract, every replica (server id -> its value, or why it has none) must hold the same value."""
    out: list[Violation] = []
    for key in sorted(replicas):
        seen = replicas[key]
        for server, value in seen.items():
            if isinstance(value, Garbage):
                out.append(Violation("garbage", key, f"replica {server} holds bytes no write made: {value}"))
        if len({str(v) for v in seen.values()}) > 1:
            listing = ", ".join(f"{server}: {value}" for server, value in sorted(seen.items()))
            out.append(Violation("replicas differ", key, f"the replicas of tract {key} disagree: {listing}"))
    return out
