"""How much memory a sort may use, and the plan that keeps it there: buckets, who holds them, what spills.

Each worker has a **budget**: the bytes its process may hold in all
(``--memory``; by default a share of the memory its host has available).
From it come the worker's fixed costs, measured or counted (the interpreter
and libraries, reported by the worker; tracts read and written in flight;
bins being dealt and sent), and what is left, its **capacity** for records.

The key space is cut into buckets, several per worker so that buckets can
be handed out on demand (:mod:`apps.minutesort._schedule`). When every
worker's share fits its capacity, every bucket is **resident**: its bins
stream to its home worker's memory, one pass, as fast as the machine goes.
When it does not fit, buckets are made small enough for one to fit a
worker alone, each worker keeps as many as fit, and the rest **spill**:
their bins are written to fds, in a blob per bucket, and read back one
bucket at a time in a second pass (TritonSort's two phases: distribute,
then sort each partition in memory). A plan that cannot fit even so is
refused before anything starts (:class:`NotEnoughMemory`, with the amount
needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fds.errors import BadRequest

__all__ = ["mem_available", "default_share", "WorkerMemory", "Plan", "Settings", "NotEnoughMemory", "plan_buckets",
           "SLACK", "SORT_EXTRA", "MAX_BUCKETS", "MEMORY_SHARE"]

SLACK = 1.15
"""A resident bucket's buffer is sized for this much more than its expected share (sampling error)."""
SORT_EXTRA = 0.1
"""Sorting a bucket takes this fraction of its size again (8 bytes of order per 100-byte record)."""
MAX_BUCKETS = 1024
"""More buckets than this make spill pieces too small to write efficiently."""
MEMORY_SHARE = 0.7
"""Without ``--memory``, the workers of one host share this fraction of its available memory."""


class NotEnoughMemory(BadRequest):
    """The sort cannot fit the workers' memory even by spilling; the message says how much it needs."""

    default_code = "not_enough_memory"


def mem_available() -> int:
    """The host's available memory (``MemAvailable`` of ``/proc/meminfo``), in bytes; 0 if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def default_share(available: int, sharing: int) -> int:
    """A worker's memory budget when none is given: its share of what its host has available."""
    return int(available * MEMORY_SHARE / max(1, sharing))


@dataclass(frozen=True)
class WorkerMemory:
    budget: int
    """Bytes the worker's process may hold in all."""
    base: int
    """Its resident memory before holding any records (the interpreter and libraries)."""
    records: int = 0
    """Bytes of records it may hold, if set outright (else what the budget leaves)."""

    def capacity(self, settings: Settings) -> int:
        return self.records or self.budget - self.base - settings.buffers()


@dataclass(frozen=True)
class Settings:
    """The transfer settings that cost memory on every worker."""

    tract_size: int
    workers: int
    unit_tracts: int = 4
    bin_bytes: int = 4 << 20
    bins_in_flight: int = 2
    read_in_flight: int = 8
    write_in_flight: int = 16

    def buffers(self) -> int:
        """Bytes a worker holds besides its records: tracts in flight both ways, and bins being dealt and sent."""
        reading = (self.read_in_flight + 2) * self.tract_size  # responses, plus a tract being dealt and its copy
        dealing = self.unit_tracts * self.tract_size  # a unit's bins wait for its end
        sending = self.workers * self.bins_in_flight * self.bin_bytes
        writing = (self.write_in_flight + 1) * self.tract_size
        return reading + dealing + sending + writing

    def lean(self) -> Settings:
        """The same with fewer transfers in flight, for a tight budget."""
        return Settings(tract_size=self.tract_size, workers=self.workers, unit_tracts=min(self.unit_tracts, 2),
                        bin_bytes=min(self.bin_bytes, 1 << 20), bins_in_flight=1,
                        read_in_flight=min(self.read_in_flight, 2), write_in_flight=min(self.write_in_flight, 2))


@dataclass(frozen=True)
class Plan:
    buckets: int
    homes: list[int]
    """Each bucket's home worker (its bins go to that worker's memory), or -1: the bucket spills to fds."""
    capacity: list[int]
    """Per worker: bytes of records it may hold."""
    bucket_bytes: int
    """Expected bytes per bucket."""
    settings: Settings

    @property
    def spilled(self) -> list[int]:
        return [b for b, home in enumerate(self.homes) if home < 0]

    @property
    def spill_bytes(self) -> int:
        """Expected bytes written to fds before the output (spilled buckets)."""
        return len(self.spilled) * self.bucket_bytes


def plan_buckets(total_bytes: int, workers: list[WorkerMemory], settings: Settings, *, per_worker: int = 4,
                 spill_all: bool = False) -> Plan:
    """Buckets and homes for ``total_bytes`` of records over ``workers``; :class:`NotEnoughMemory` if none fits.

    ``per_worker`` buckets per worker when everything is resident (for
    on-demand sorting); ``spill_all`` spills every bucket (materialise
    everything, for comparison).
    """
    count = len(workers)
    if not count:
        raise BadRequest("a sort needs at least one worker")
    capacity = [w.capacity(settings) for w in workers]
    smallest = max(2 * settings.tract_size, _per_bucket(total_bytes / MAX_BUCKETS))
    if min(capacity) < smallest and settings != settings.lean():
        return plan_buckets(total_bytes, workers, settings.lean(), per_worker=per_worker, spill_all=spill_all)
    worst = min(range(count), key=lambda i: capacity[i])
    if capacity[worst] < smallest:
        needed = workers[worst].base + settings.buffers() + smallest
        raise NotEnoughMemory(
            f"a worker needs at least {_mb(needed)} of memory for this sort (its interpreter "
            f"{_mb(workers[worst].base)}, transfers in flight {_mb(settings.buffers())}, and the smallest bucket "
            f"{_mb(smallest)}), but worker {worst}'s budget is {_mb(workers[worst].budget)}: give it more (--memory)")
    buckets = count * max(1, per_worker)
    share = total_bytes / count
    fits = all(share * SLACK + SORT_EXTRA * total_bytes / buckets <= c for c in capacity)
    if fits and not spill_all:
        homes = [b * count // buckets for b in range(buckets)]
        return Plan(buckets=buckets, homes=homes, capacity=capacity, bucket_bytes=math.ceil(total_bytes / buckets),
                    settings=settings)
    # Spill: buckets small enough that the smallest capacity sorts one alone.
    largest = min(capacity) / (SLACK + SORT_EXTRA)
    buckets = max(buckets, math.ceil(total_bytes / max(largest, 1)))
    buckets = min(MAX_BUCKETS, count * math.ceil(buckets / count))
    bucket_bytes = math.ceil(total_bytes / buckets)
    homes = [-1] * buckets
    if not spill_all:
        # Each worker keeps as many as fit beside the one it sorts, from the low end of its range of buckets.
        for w in range(count):
            keep = int((capacity[w] - SORT_EXTRA * bucket_bytes) // (SLACK * bucket_bytes))
            mine = [b for b in range(buckets) if b * count // buckets == w]
            for b in mine[:max(0, keep)]:
                homes[b] = w
    return Plan(buckets=buckets, homes=homes, capacity=capacity, bucket_bytes=bucket_bytes, settings=settings)


def _per_bucket(bucket_bytes: float) -> float:
    """Capacity one bucket needs to be sorted: itself with slack, and its order."""
    return bucket_bytes * (SLACK + SORT_EXTRA)


def _mb(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.0f} MB"
