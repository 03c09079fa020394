"""The head's bookkeeping: which worker does what next, what is delivered, and what a death costs.

No I/O here: :mod:`apps.minutesort._head` calls these methods as messages
arrive and answers with what they return, so every rule below is tested
without processes (``tests/unit/test_schedule.py``).

**Units and attempts.** The input is cut into units (a few tracts each,
:mod:`apps.minutesort._layout`), plus one *deal* unit holding the records
that straddle unit boundaries, once their fragments are all in. Every task
given out is an **attempt** with its own id, which the worker puts on every
bin it sends. An attempt's records count only once the worker **commits**
it, after every bin was taken: the head then records, per bucket, a
*delivery* (the attempt, the records now in the home worker's memory, the
pieces written to fds). A bucket's records are exactly those of its
deliveries, one per unit, so a bin from an attempt that failed, or was
cancelled, or came from a worker declared dead, is ignored wherever it
landed.

**Buckets on demand.** A bucket is ready once every unit has delivered it.
A worker asks for work; it reads while input is left (up to two units at a
time), then sorts: its own buckets first, largest first; then, with
on-demand buckets (the default), buckets that spilled to fds, and then
buckets still in a slower worker's memory, which it fetches from there. A
bucket is only given to a worker whose memory it fits.

**A worker dies** (its process exits, its service reports it, or it falls
silent). The **epoch** goes up and every read in progress is cancelled
(bins to the dead worker are lost, so those units are read again). Buckets
whose records were in the dead worker's memory are given a new home (or
spill, if no one has room) and rebuilt by **lineage**: every unit is read
again, dealing only those buckets. Buckets that spilled are in fds already
(materialised) and need nothing; buckets already written are done.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from apps.minutesort._budget import SLACK, SORT_EXTRA, Plan
from apps.minutesort._gensort import RECORD_SIZE
from apps.minutesort._layout import Layout, UnitSpan, join_fragments
from apps.minutesort._protocol import Commit, Part, Sorted, Task

__all__ = ["Schedule", "MAX_FAILURES"]

MAX_FAILURES = 4
"""Attempts of one unit or bucket that may fail (with every worker alive) before the sort gives up."""


@dataclass
class _Delivery:
    attempt: int
    home: int | None
    """The worker whose memory took this unit's records of the bucket (None: none went to memory)."""
    home_records: int
    pieces: list[tuple[int, int]]

    @property
    def records(self) -> int:
        return self.home_records + sum(count for _, count in self.pieces)


@dataclass
class _Attempt:
    id: int
    worker: int
    epoch: int
    kind: Literal["read", "deal", "sort"]
    unit: int = -1
    bucket: int = -1
    only: frozenset[int] | None = None
    source: int = -1
    expected: int = 0


@dataclass
class _Worker:
    capacity: int
    alive: bool = True
    tracts_given: int = 0
    buckets_sorted: int = 0


@dataclass
class Schedule:
    layout: Layout
    plan: Plan
    workers: int
    unit_tracts: int = 4
    static: bool = False
    """Input units split among the workers up front (for comparison); else handed out on demand."""
    on_demand: bool = True
    """Buckets handed out on demand; False: each worker sorts the buckets it holds (for comparison)."""
    epoch: int = 0
    abort: str | None = None
    spans: list[UnitSpan] = field(init=False)
    stitch: bool = field(init=False)

    def __post_init__(self) -> None:
        self.spans = self.layout.units(self.unit_tracts)
        self.stitch = any(span.skip for span in self.spans[1:])
        self.units = len(self.spans) + (1 if self.stitch else 0)
        buckets = self.plan.buckets
        self.homes = list(self.plan.homes)
        self.location = list(self.plan.homes)
        """Who holds each bucket's records in memory now (-1: no one)."""
        self.state = [_Worker(capacity=c) for c in self.plan.capacity]
        self.deliveries: dict[tuple[int, int], _Delivery] = {}
        self.delivered = [0] * buckets
        self.need = [set(range(buckets)) for _ in range(self.units)]
        self.heads: dict[int, bytes] = {}
        self.tails: dict[int, bytes] = {}
        self.active: dict[int, _Attempt] = {}
        self.unit_busy: dict[int, int] = {}
        self.sorting: dict[int, int] = {}
        self.done: dict[int, tuple[str, int]] = {}
        self.failures: Counter[tuple[str, int]] = Counter()
        self.lineage_units = 0
        """Units read again to rebuild buckets lost with a worker."""
        self.cancelled_sorts: list[tuple[int, int]] = []
        """(bucket, attempt) of sorts stopped midway: their output blobs, if any, are to be deleted."""
        self._next_attempt = 1
        real = len(self.spans)
        self.unit_owner = [u * self.workers // real if self.static else -1 for u in range(real)] + [-1] * self.stitch

    # -- what the head asks ----------------------------------------------------------------------------
    @property
    def buckets(self) -> int:
        return self.plan.buckets

    @property
    def finished(self) -> bool:
        return len(self.done) == self.buckets

    def alive(self, worker: int) -> bool:
        return self.state[worker].alive

    def units_complete(self) -> int:
        return sum(1 for need in self.need if not need)

    def bucket_records(self, bucket: int) -> int:
        return sum(d.records for d in self._deliveries_of(bucket))

    def next_task(self, worker: int) -> Task | None:
        """The worker's next task, or None: nothing for it now (ask again when something changes)."""
        if self.abort:
            return Task(kind="abort", reason=self.abort)
        if not self.state[worker].alive:
            return Task(kind="abort", reason=f"worker {worker} was declared dead; its work went to others")
        reads = sum(1 for a in self.active.values() if a.worker == worker and a.kind != "sort")
        sorts = sum(1 for a in self.active.values() if a.worker == worker and a.kind == "sort")
        if sorts:
            return None
        if reads < 2:
            unit = self._next_unit(worker)
            if unit is not None:
                return self._unit_task(worker, unit)
        if reads:
            return None
        bucket = self._next_bucket(worker)
        if bucket is not None:
            return self._sort_task(worker, bucket)
        if self.finished:
            return Task(kind="done", epoch=self.epoch)
        return None

    def stuck(self, waiting: set[int]) -> str | None:
        """Why the sort can make no progress, when every live worker waits and nothing is in flight; else None."""
        live = {w for w in range(self.workers) if self.state[w].alive}
        if self.finished or self.active or not live <= waiting:
            return None
        if any(self._next_unit(w) is not None for w in live):
            return None
        pending = [b for b in range(self.buckets) if b not in self.done]
        if not pending:
            return None
        b = max(pending, key=self._bucket_bytes)
        room = max(self.state[w].capacity - self._held(w) for w in live)
        return (f"bucket {b} holds {self._bucket_bytes(b) / 1e6:,.0f} MB, more than any worker can sort in memory "
                f"({room / 1e6:,.0f} MB free at most): too many equal keys, or too little memory; give the workers "
                "more (--memory)")

    # -- reports ---------------------------------------------------------------------------------------
    def commit(self, report: Commit) -> bool:
        """A read or deal task is over. False: the attempt no longer counts (cancelled, or from a dead worker)."""
        attempt = self.active.get(report.attempt)
        if attempt is None or attempt.worker != report.worker or attempt.kind == "sort" \
                or attempt.epoch != self.epoch:
            return False
        del self.active[attempt.id]
        self.unit_busy.pop(attempt.unit, None)
        if report.failed:
            self._failed("unit", attempt.unit, report.failed)
            return True
        scope = attempt.only if attempt.only is not None else frozenset(range(self.buckets))
        if set(report.parts) - scope:
            raise ValueError(f"attempt {attempt.id} reports buckets {sorted(set(report.parts) - scope)} it was not "
                             "given")
        if attempt.kind == "read":
            self._fragments(attempt.unit, bytes.fromhex(report.head), bytes.fromhex(report.tail))
        for bucket in scope:
            if bucket in self.done:
                continue
            part = report.parts.get(bucket, Part())
            home = self.homes[bucket]
            if part.home_records and home < 0:
                raise ValueError(f"bucket {bucket} spills to fds, but attempt {attempt.id} sent records to memory")
            self._deliver(attempt.unit, bucket, _Delivery(attempt.id, home if part.home_records else None,
                                                          part.home_records, list(part.pieces)))
        return True

    def sorted(self, report: Sorted) -> bool:
        """A sort task is over. False: the attempt no longer counts."""
        attempt = self.active.get(report.attempt)
        if attempt is None or attempt.worker != report.worker or attempt.kind != "sort" \
                or attempt.bucket != report.bucket:
            return False
        del self.active[attempt.id]
        bucket = attempt.bucket
        self.sorting.pop(bucket, None)
        if report.failed:
            self.cancelled_sorts.append((bucket, attempt.id))
            if report.lost:
                self._lose(bucket)
            self._failed("bucket", bucket, report.failed)
            return True
        if report.records != attempt.expected:
            self.abort = (f"bucket {bucket}: worker {report.worker} wrote {report.records} records, but "
                          f"{attempt.expected} were delivered")
            return True
        self.done[bucket] = (report.output, report.records)
        self.location[bucket] = -1
        self.state[report.worker].buckets_sorted += 1
        for need in self.need:
            need.discard(bucket)
        return True

    def worker_died(self, worker: int, reason: str) -> bool:
        """Declare ``worker`` dead: reassign its work and rebuild what it held. False if it already was."""
        if not self.state[worker].alive:
            return False
        self.state[worker].alive = False
        self.epoch += 1
        if not any(w.alive for w in self.state):
            self.abort = f"every worker died; the last: {reason}"
            return True
        for attempt in list(self.active.values()):
            if attempt.kind != "sort":
                del self.active[attempt.id]  # its bins to the dead worker are gone: read it again
                self.unit_busy.pop(attempt.unit, None)
            elif worker in (attempt.worker, attempt.source):
                del self.active[attempt.id]
                self.cancelled_sorts.append((attempt.bucket, attempt.id))
                self.sorting.pop(attempt.bucket, None)
                if attempt.source >= 0:
                    self._lose(attempt.bucket)
        for bucket in range(self.buckets):
            if self.location[bucket] == worker and bucket not in self.done:
                self._lose(bucket)
        if self.static:
            self.unit_owner = [-1 if owner == worker else owner for owner in self.unit_owner]
        return True

    # -- inside ----------------------------------------------------------------------------------------
    def _new_attempt(self, **fields: object) -> _Attempt:
        attempt = _Attempt(id=self._next_attempt, epoch=self.epoch, **fields)  # type: ignore[arg-type]
        self._next_attempt += 1
        self.active[attempt.id] = attempt
        if attempt.kind != "sort":
            self.unit_busy[attempt.unit] = attempt.id
        return attempt

    def _next_unit(self, worker: int) -> int | None:
        for unit in range(self.units):
            if not self.need[unit] or unit in self.unit_busy:
                continue
            if unit == len(self.spans) and len(self.tails) < len(self.spans):
                continue  # the deal unit waits for every fragment
            owner = self.unit_owner[unit]
            if owner in (-1, worker) or not self.state[owner].alive:
                return unit
        return None

    def _unit_task(self, worker: int, unit: int) -> Task:
        everything = len(self.need[unit]) == self.buckets
        only = None if everything else frozenset(self.need[unit])
        if not everything and unit in self.heads:
            self.lineage_units += 1
        if unit < len(self.spans):
            span = self.spans[unit]
            attempt = self._new_attempt(worker=worker, kind="read", unit=unit, only=only)
            self.state[worker].tracts_given += span.count
            return Task(kind="read", attempt=attempt.id, epoch=self.epoch, unit=unit, first=span.first,
                        count=span.count, skip=span.skip, only=None if only is None else sorted(only),
                        homes=list(self.homes))
        attempt = self._new_attempt(worker=worker, kind="deal", unit=unit, only=only)
        records = join_fragments([self.tails[u] for u in range(len(self.spans))],
                                 [self.heads[u] for u in range(len(self.spans))])
        return Task(kind="deal", attempt=attempt.id, epoch=self.epoch, unit=unit, records=records.hex(),
                    only=None if only is None else sorted(only), homes=list(self.homes))

    def _ready(self, bucket: int) -> bool:
        return self.delivered[bucket] == self.units and bucket not in self.done and bucket not in self.sorting

    def _next_bucket(self, worker: int) -> int | None:
        ready = [b for b in range(self.buckets) if self._ready(b)]
        room = self.state[worker].capacity - self._held(worker)
        own = [b for b in ready if self.location[b] == worker and self._extra(b, worker) <= room]
        if own:
            return max(own, key=self._bucket_bytes)
        fits = [b for b in ready if self._extra(b, worker) <= room]
        spilled = [b for b in fits if self.location[b] < 0]
        if not self.on_demand:
            # Fixed buckets: a spilled bucket belongs to the worker whose range it is in (or any, if it died).
            planned = [b for b in spilled if self._planned_sorter(b) in (worker, -1)]
            return max(planned, key=self._bucket_bytes) if planned else None
        if spilled:
            return max(spilled, key=self._bucket_bytes)
        elsewhere = [b for b in fits if self.location[b] >= 0]
        if not elsewhere:
            return None
        # Take from the worker with the most left to sort, the bucket it would sort last (its smallest).
        def backlog(w: int) -> int:
            return sum(self._bucket_bytes(b) for b in ready if self.location[b] == w)

        victim = max({self.location[b] for b in elsewhere}, key=backlog)
        return min((b for b in elsewhere if self.location[b] == victim), key=self._bucket_bytes)

    def _planned_sorter(self, bucket: int) -> int:
        planned = bucket * self.workers // self.buckets
        return planned if self.state[planned].alive else -1

    def _sort_task(self, worker: int, bucket: int) -> Task:
        deliveries = list(self._deliveries_of(bucket))
        resident = any(d.home is not None for d in deliveries)
        source = self.location[bucket] if resident else -1
        expected = sum(d.records for d in deliveries)
        attempt = self._new_attempt(worker=worker, kind="sort", bucket=bucket, source=source, expected=expected)
        self.sorting[bucket] = attempt.id
        if resident:
            self.location[bucket] = worker
        return Task(kind="sort", attempt=attempt.id, epoch=self.epoch, bucket=bucket, source=source,
                    accept=sorted({d.attempt for d in deliveries if d.home is not None}),
                    pieces=sorted(tract for d in deliveries for tract, _ in d.pieces), expected=expected)

    def _deliveries_of(self, bucket: int) -> list[_Delivery]:
        return [d for u in range(self.units) if (d := self.deliveries.get((u, bucket))) is not None]

    def _bucket_bytes(self, bucket: int) -> int:
        return self.bucket_records(bucket) * RECORD_SIZE

    def _resident_bytes(self, bucket: int) -> int:
        return sum(d.home_records for d in self._deliveries_of(bucket) if d.home is not None) * RECORD_SIZE

    def _extra(self, bucket: int, worker: int) -> int:
        """Memory sorting ``bucket`` on ``worker`` takes beyond what the worker holds already."""
        total = self._bucket_bytes(bucket)
        here = self._resident_bytes(bucket) if self.location[bucket] == worker else 0
        return total - here + int(SORT_EXTRA * total)

    def _held(self, worker: int) -> int:
        """Bytes of records the worker holds or is about to (buckets filling count at their expected size)."""
        held = 0
        for bucket in range(self.buckets):
            if self.location[bucket] != worker or bucket in self.done:
                continue
            if self.delivered[bucket] < self.units:
                held += max(self._resident_bytes(bucket), int(self.plan.bucket_bytes * SLACK))
            else:
                held += self._resident_bytes(bucket)
        for attempt in self.active.values():
            if attempt.kind == "sort" and attempt.worker == worker:
                held += self._extra(attempt.bucket, worker)
        return held

    def _deliver(self, unit: int, bucket: int, delivery: _Delivery) -> None:
        if (unit, bucket) not in self.deliveries:
            self.delivered[bucket] += 1
        self.deliveries[(unit, bucket)] = delivery
        self.need[unit].discard(bucket)

    def _lose(self, bucket: int) -> None:
        """The bucket's records in memory are gone: read them again (lineage), into a new home."""
        for unit in range(self.units):
            delivery = self.deliveries.get((unit, bucket))
            if delivery is not None and delivery.home is not None:
                del self.deliveries[(unit, bucket)]
                self.delivered[bucket] -= 1
                self.need[unit].add(bucket)
        self.location[bucket] = self.homes[bucket] = self._new_home()

    def _new_home(self) -> int:
        """The live worker with the most room for one more bucket, or -1 (spill) if none has room."""
        need = int(self.plan.bucket_bytes * (SLACK + SORT_EXTRA))
        live = [w for w in range(self.workers) if self.state[w].alive]
        best = max(live, key=lambda w: self.state[w].capacity - self._held(w))
        return best if self.state[best].capacity - self._held(best) >= need else -1

    def _fragments(self, unit: int, head: bytes, tail: bytes) -> None:
        span = self.spans[unit]
        following = self.spans[unit + 1].skip if unit + 1 < len(self.spans) else 0
        if len(head) != span.skip or len(tail) != -following % RECORD_SIZE:
            self.abort = (f"unit {unit} (tracts {span.first}-{span.first + span.count - 1}) reported fragments of "
                          f"{len(head)} and {len(tail)} bytes, not {span.skip} and {-following % RECORD_SIZE}")
            return
        self.heads.setdefault(unit, head)
        self.tails.setdefault(unit, tail)

    def _failed(self, what: str, index: int, reason: str) -> None:
        self.failures[(what, index)] += 1
        if self.failures[(what, index)] >= MAX_FAILURES and not self.abort:
            self.abort = f"{what} {index} failed {MAX_FAILURES} times; the last time: {reason}"
