"""The memory plan: everything resident when it fits, small buckets that spill when not, refusal when nothing fits;
and where a sort process places its buffers (a warm arena first, fresh memory when it is full)."""

from __future__ import annotations

import os

import pytest

from apps.minutesort._arena import PAGE, Arena, Memory
from apps.minutesort._budget import (
    SLACK,
    SORT_EXTRA,
    NotEnoughMemory,
    Settings,
    WorkerMemory,
    default_share,
    plan_buckets,
)

MiB = 1 << 20
GB = 10**9
SETTINGS = Settings(tract_size=8 * MiB, workers=2)


def _workers(budget: int, count: int = 2, base: int = 150 * MiB) -> list[WorkerMemory]:
    return [WorkerMemory(budget=budget, base=base) for _ in range(count)]


def test_data_that_fits_is_all_resident_with_several_buckets_per_worker() -> None:
    plan = plan_buckets(4 * GB, _workers(8 * GB), SETTINGS, per_worker=4)
    assert plan.buckets == 8 and not plan.spilled
    assert plan.homes == [0, 0, 0, 0, 1, 1, 1, 1]  # contiguous key ranges per worker
    assert plan.capacity == [8 * GB - 150 * MiB - SETTINGS.buffers()] * 2


def test_data_that_does_not_fit_spills_in_buckets_one_worker_can_sort_alone() -> None:
    """8 GB with 1 GB per worker (2 GB in all): small buckets, each worker keeps what fits, the rest spills."""
    plan = plan_buckets(8 * GB, _workers(1 * GB), SETTINGS)
    capacity = min(plan.capacity)
    assert plan.bucket_bytes * (SLACK + SORT_EXTRA) <= capacity  # any worker sorts any bucket alone
    resident = [b for b, home in enumerate(plan.homes) if home >= 0]
    for w in (0, 1):
        mine = [b for b in resident if plan.homes[b] == w]
        assert len(mine) * plan.bucket_bytes * SLACK + SORT_EXTRA * plan.bucket_bytes <= plan.capacity[w]
    assert plan.spill_bytes >= 8 * GB - sum(plan.capacity)
    assert plan.buckets % 2 == 0 and plan.buckets * plan.bucket_bytes >= 8 * GB


def test_spill_all_materialises_every_bucket() -> None:
    plan = plan_buckets(1 * GB, _workers(8 * GB), SETTINGS, spill_all=True)
    assert plan.spilled == list(range(plan.buckets))


def test_a_budget_too_small_even_to_spill_is_refused_with_the_amount_needed() -> None:
    with pytest.raises(NotEnoughMemory, match=r"a worker needs at least [\d,]+ MB of memory for this sort"):
        plan_buckets(8 * GB, _workers(200 * MiB), SETTINGS)


def test_a_tight_budget_uses_fewer_transfers_in_flight() -> None:
    plan = plan_buckets(2 * GB, _workers(300 * MiB), SETTINGS)
    assert plan.settings == SETTINGS.lean() and plan.spilled


def test_records_capacity_given_outright() -> None:
    workers = [WorkerMemory(budget=0, base=0, records=4 * MiB) for _ in range(2)]
    plan = plan_buckets(12 * MiB, workers, Settings(tract_size=MiB, workers=2))
    assert plan.capacity == [4 * MiB, 4 * MiB] and plan.spilled and len(plan.spilled) < plan.buckets


def test_default_share_divides_available_memory_among_workers_of_a_host() -> None:
    assert default_share(20 * GB, 2) == int(20 * GB * 0.7 / 2)
    assert default_share(20 * GB, 0) == int(20 * GB * 0.7)


def test_arena_pieces_are_taken_first_fit_given_back_and_fall_back_to_fresh_memory() -> None:
    arena = Arena(10 * PAGE)
    arena.warm().join()
    assert arena.warm_bytes == 10 * PAGE
    fd = os.dup(arena.fd)  # as a sort process gets the fd its service passed
    memory = Memory(fd)
    os.close(fd)  # the mapping holds the memory
    try:
        a, b = memory.take(3 * PAGE), memory.take(3 * PAGE + 1)  # rounded up to whole pages
        a[:5] = b"hello"
        c = memory.take(4 * PAGE)  # 3 pages left: fresh memory
        assert (memory.arena_bytes, memory.fresh_bytes) == (6 * PAGE + 1, 4 * PAGE)
        memory.give(a)
        memory.give(c)  # fresh: nothing to give back to the arena
        again = memory.take(2 * PAGE)  # first fit: where a was, and its data is still there (never zeroed)
        assert bytes(again[:5]) == b"hello"
        memory.give(again)
        memory.give(b)
        assert len(memory.take(10 * PAGE)) == 10 * PAGE  # all of it again, in one piece (pieces coalesce)
        assert memory.fresh_bytes == 4 * PAGE
        order = memory.order(1000)
        assert len(order) == 1000 and memory.order(900).base is order.base  # reused, not taken again
    finally:
        memory.close()
        arena.close()
