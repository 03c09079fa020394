"""The head's schedule, driven by fake workers: every record is sorted exactly once, whoever dies when.

The fake workers keep, per bucket, which unit's records they hold from which attempt (in memory, or as
pieces "in fds"), exactly as real bins and spill tracts are tagged. A sort task must find, for every unit,
exactly one accepted delivery with that unit's records of the bucket: nothing lost, nothing twice.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from apps.minutesort._budget import Plan, Settings
from apps.minutesort._layout import Layout
from apps.minutesort._protocol import Commit, Part, Sorted, Task
from apps.minutesort._schedule import Schedule

MiB = 1 << 20


def _records(unit: int, bucket: int) -> int:
    """How many records unit ``unit`` holds for bucket ``bucket`` (any deterministic spread)."""
    return 10 + (unit * 7 + bucket * 3) % 5


def _plan(buckets: int, workers: int, *, spilled: set[int] = frozenset(), capacity: int = 1 << 40) -> Plan:  # type: ignore[assignment]
    homes = [-1 if b in spilled else b * workers // buckets for b in range(buckets)]
    return Plan(buckets=buckets, homes=homes, capacity=[capacity] * workers, bucket_bytes=1000,
                settings=Settings(tract_size=MiB, workers=workers))


@dataclass
class Fake:
    """Workers that do what the schedule says, instantly, remembering where each record went."""

    schedule: Schedule
    memory: list[dict[int, list[tuple[int, int, int]]]] = field(default_factory=list)
    """Per worker, per bucket: (attempt, unit, records) held in memory."""
    fds: dict[int, dict[int, tuple[int, int, int]]] = field(default_factory=dict)
    """Per bucket: spill tract -> (attempt, unit, records)."""
    outputs: dict[int, int] = field(default_factory=dict)
    """Bucket -> records written."""

    def __post_init__(self) -> None:
        self.memory = [dict() for _ in range(self.schedule.workers)]

    def ask(self, worker: int) -> Task | None:
        return self.schedule.next_task(worker)

    def do(self, worker: int, task: Task) -> bool:
        """Carry out a task and report it; returns whether the head accepted the report."""
        if task.kind in ("read", "deal"):
            parts: dict[int, Part] = {}
            scope = task.only if task.only is not None else range(self.schedule.buckets)
            for bucket in scope:
                count = _records(task.unit, bucket)
                home = task.homes[bucket]
                if home >= 0:
                    self.memory[home].setdefault(bucket, []).append((task.attempt, task.unit, count))
                    parts[bucket] = Part(home_records=count)
                else:
                    pieces = self.fds.setdefault(bucket, {})
                    tract = len(pieces)
                    pieces[tract] = (task.attempt, task.unit, count)
                    parts[bucket] = Part(pieces=[(tract, count)])
            span_skip = task.skip
            head = b"h" * span_skip if task.kind == "read" else b""
            tail = b""
            if task.kind == "read" and task.unit + 1 < len(self.schedule.spans):
                tail = b"t" * (-self.schedule.spans[task.unit + 1].skip % 100)
            return self.schedule.commit(Commit(worker=worker, attempt=task.attempt, head=head.hex(),
                                               tail=tail.hex(), parts=parts))
        assert task.kind == "sort", task
        bucket = task.bucket
        held: list[tuple[int, int, int]] = []
        if task.source >= 0:
            held = [e for e in self.memory[task.source].pop(bucket, []) if e[0] in task.accept]
        held += [self.fds[bucket][tract] for tract in task.pieces]
        units = sorted(unit for _, unit, _ in held)
        assert units == list(range(self.schedule.units)), f"bucket {bucket}: units {units}"  # each exactly once
        assert all(count == _records(unit, bucket) for _, unit, count in held)
        total = sum(count for _, _, count in held)
        assert total == task.expected
        accepted = self.schedule.sorted(Sorted(worker=worker, attempt=task.attempt, bucket=bucket,
                                               output=f"out-{bucket}-{task.attempt}", records=total))
        if accepted:
            self.outputs[bucket] = total
        return accepted

    def read_all(self, order: list[int]) -> None:
        """Give each worker in ``order`` (round robin) its read tasks, and only those, until every unit is read."""
        while self.schedule.units_complete() < self.schedule.units:
            for worker in order:
                task = self.schedule.next_task(worker)
                if task is not None and task.kind == "read":
                    self.do(worker, task)

    def run(self, order: list[int], *, until: int = 10_000) -> None:
        """Give each worker in ``order`` (round robin, live ones) a task and do it, until the sort is done."""
        for step in range(until):
            if self.schedule.finished or self.schedule.abort:
                return
            worker = order[step % len(order)]
            if not self.schedule.alive(worker):
                continue
            task = self.ask(worker)
            if task is not None and task.kind not in ("done", "abort", "wait"):
                self.do(worker, task)
        raise AssertionError("the sort did not finish")


def _schedule(tracts: int = 12, buckets: int = 8, workers: int = 2, stride: int = 8_388_600, **kw: object) -> Schedule:
    layout = Layout(guid="in", tracts=tracts, stride=stride, last=stride // 2 // 100 * 100, tract_size=8 << 20)
    plan = kw.pop("plan", None) or _plan(buckets, workers)
    return Schedule(layout, plan, workers, unit_tracts=2, **kw)  # type: ignore[arg-type]


def _check_output(fake: Fake) -> None:
    schedule = fake.schedule
    assert schedule.finished and not schedule.abort
    assert fake.outputs == {b: sum(_records(u, b) for u in range(schedule.units)) for b in range(schedule.buckets)}


def test_a_run_without_failures_reads_each_unit_once() -> None:
    schedule = _schedule()
    fake = Fake(schedule)
    fake.run([0, 1])
    _check_output(fake)
    assert sum(w.tracts_given for w in schedule.state) == 12
    assert schedule.lineage_units == 0
    assert schedule.next_task(0) == Task(kind="done", epoch=0)


def test_records_straddling_units_are_dealt_once_the_fragments_are_in() -> None:
    schedule = _schedule(stride=8 << 20)  # full tracts: records cross tract boundaries
    assert schedule.stitch and schedule.units == len(schedule.spans) + 1
    fake = Fake(schedule)
    first = schedule.next_task(0)
    assert first is not None and first.kind == "read"
    fake.do(0, first)
    fake.run([0, 1])
    _check_output(fake)


def test_fragments_of_the_wrong_size_abort_the_sort() -> None:
    schedule = _schedule(stride=8 << 20)
    task = schedule.next_task(0)
    assert task is not None and task.unit == 0
    schedule.commit(Commit(worker=0, attempt=task.attempt, head="", tail="ab"))
    assert schedule.abort is not None and "fragments of 0 and 1 bytes" in schedule.abort


@pytest.mark.parametrize("seed", range(12))
def test_a_worker_dies_at_any_step_and_the_sort_still_holds_every_record_once(seed: int) -> None:
    rng = random.Random(seed)
    workers = 3
    spilled = {b for b in range(9) if rng.random() < 0.3}
    schedule = _schedule(tracts=14, buckets=9, workers=workers, plan=_plan(9, workers, spilled=spilled),
                         stride=rng.choice([8_388_600, 8 << 20]))
    fake = Fake(schedule)
    victim = rng.randrange(workers)
    die_at = rng.randrange(16)  # 7 units and 9 buckets: the sort takes at least 16 tasks
    order = [rng.randrange(workers) for _ in range(500)]
    for step in range(10_000):
        if schedule.finished:
            break
        if step == die_at:
            assert schedule.worker_died(victim, "SIGKILL")
            fake.memory[victim].clear()  # whatever it held is gone
        worker = order[step % len(order)]
        if not schedule.alive(worker):
            continue
        task = schedule.next_task(worker)
        if task is None or task.kind in ("done", "wait"):
            continue
        assert task.kind != "abort", task.reason
        fake.do(worker, task)
    _check_output(fake)
    assert schedule.epoch == 1 and not schedule.alive(victim)


def test_reports_from_before_a_death_no_longer_count() -> None:
    schedule = _schedule()
    fake = Fake(schedule)
    task = schedule.next_task(0)
    assert task is not None
    schedule.worker_died(1, "gone")
    assert not fake.do(0, task)  # cancelled by the epoch change: its unit is read again
    again = schedule.next_task(0)
    assert again is not None and again.unit == task.unit and again.attempt != task.attempt
    assert schedule.next_task(1) == Task(kind="abort", reason="worker 1 was declared dead; its work went to others")


def test_a_dead_workers_buckets_are_rebuilt_by_reading_the_input_again() -> None:
    """Worker 1 dies once everything is read: its buckets get a new home and every unit is read again,
    dealing only those buckets (lineage); buckets already written are not touched."""
    schedule = _schedule(tracts=8, buckets=4)
    fake = Fake(schedule)
    fake.read_all([0, 1])
    sort = schedule.next_task(0)
    assert sort is not None and sort.kind == "sort" and sort.bucket in (0, 1)
    fake.do(0, sort)
    schedule.worker_died(1, "SIGKILL")
    fake.memory[1].clear()
    assert schedule.homes == [0, 0, 0, 0]
    lineage = schedule.next_task(0)
    assert lineage is not None and lineage.kind == "read" and lineage.only == [2, 3]
    fake.do(0, lineage)
    fake.run([0])
    _check_output(fake)
    assert schedule.lineage_units == 4


def test_spilled_buckets_survive_a_death_without_reading_again() -> None:
    schedule = _schedule(tracts=8, buckets=4, plan=_plan(4, 2, spilled={2, 3}))
    fake = Fake(schedule)
    fake.read_all([0, 1])
    schedule.worker_died(1, "SIGKILL")
    fake.memory[1].clear()
    fake.run([0])
    _check_output(fake)
    assert schedule.lineage_units == 0  # nothing was in worker 1's memory


def test_a_fast_worker_takes_a_slow_workers_buckets_on_demand() -> None:
    schedule = _schedule(tracts=8, buckets=8)
    fake = Fake(schedule)
    fake.run([0, 1] * 3 + [0] * 100)  # worker 1 stops asking once the input is read
    _check_output(fake)
    assert schedule.state[0].buckets_sorted > 4
    assert schedule.state[0].buckets_sorted + schedule.state[1].buckets_sorted == 8


def test_fixed_buckets_stay_with_their_holder() -> None:
    schedule = _schedule(tracts=8, buckets=8, on_demand=False)
    fake = Fake(schedule)
    for _ in range(60):
        for w in (0, 1):
            task = schedule.next_task(w)
            if task is not None and task.kind in ("read", "sort"):
                fake.do(w, task)
    _check_output(fake)
    assert [w.buckets_sorted for w in schedule.state] == [4, 4]


def test_static_input_gives_each_worker_its_own_range() -> None:
    schedule = _schedule(tracts=8, static=True)
    firsts = []
    for _ in range(2):
        task = schedule.next_task(1)
        assert task is not None and task.kind == "read"
        firsts.append(task.first)
    assert firsts == [4, 6]
    assert schedule.next_task(1) is None  # its range is given out; worker 0's is not its to take


def test_a_bucket_no_worker_can_hold_is_reported_not_waited_for() -> None:
    schedule = _schedule(tracts=4, buckets=2, plan=_plan(2, 2, spilled={0, 1}, capacity=100))
    fake = Fake(schedule)
    for w in (0, 1, 0, 1, 0, 1):
        task = schedule.next_task(w)
        if task is not None and task.kind == "read":
            fake.do(w, task)
    assert schedule.next_task(0) is None and schedule.next_task(1) is None
    reason = schedule.stuck({0, 1})
    assert reason is not None and "more than any worker can sort in memory" in reason
    assert schedule.stuck({0}) is None  # worker 1 might still bring something


def test_a_wrong_record_count_aborts() -> None:
    schedule = _schedule(tracts=2, buckets=2)
    fake = Fake(schedule)
    task = schedule.next_task(0)
    assert task is not None
    fake.do(0, task)
    sort = schedule.next_task(0)
    assert sort is not None and sort.kind == "sort"
    schedule.sorted(Sorted(worker=0, attempt=sort.attempt, bucket=sort.bucket, output="x", records=sort.expected + 1))
    assert schedule.abort is not None and "were delivered" in schedule.abort
