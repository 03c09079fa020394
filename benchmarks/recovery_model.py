"""A discrete-event model of FDS parallel recovery: how long re-replicating one failed disk (or machine) takes.

It projects the recovery times of the FDS paper's Table 1 (docs/design.md §4) from first principles
(disk and network bandwidth, the table's shape, the recovery protocol), so our own cluster's measured
rates can be carried to cluster sizes we cannot build. Usage::

    python benchmarks/recovery_model.py --disks 100 1000 --lost-gb 47 92 --seed 1
    python benchmarks/recovery_model.py --disks 1000 --machine-disks 7 --lost-gb 655
    python benchmarks/recovery_model.py --paper [--runs 5] [--json OUT]

Python users call :func:`simulate` (one run) or :func:`plan_recovery` (placement only).

Assumptions, all of them
------------------------
Cluster and table

- ``n`` disks, one tract server per disk, triple replication (k = 3). Disks are grouped into machines of
  ``d`` disks (``d = 1`` by default); the failure domain is the machine, so no row holds two disks of
  one machine. When ``d`` does not divide ``n`` the last machine is smaller (1,000 disks in machines of
  7: 142 machines and one of 6); a failed machine is always a full one. At least 4 machines (3 for a
  row plus one spare).
- The tract locator table is the FDS one: one row for every pair of disks in different machines,
  each filled up to k with a third disk of a further machine. ``--fill random`` (the paper) picks the
  third uniformly among the eligible disks; ``--fill balanced`` (our ``fds.tlt``) gives every disk the
  same number of third slots.
- The table is not built (for 1,000 disks it has ~500k rows). Only the rows holding a failed disk are
  drawn, with the distribution the whole table would give them: the failed disk's pair rows are
  exactly one per disk of another machine, each with a random third; its third-slot rows number
  Binomial(P, 1/(n - 2d)) (random fill; P = pairs of disks in two distinct machines other than its
  own) or exactly (table rows / n) rounded at random (balanced fill), each on a randomly drawn such
  pair. (Two third-slot rows may draw the same pair, and with a smaller last machine the draws are
  very slightly non-uniform; both are negligible at these sizes.)
- A failed machine fails all its ``d`` disks at once (``--fail disk`` fails one disk of it instead). A
  row never holds two disks of one machine, so every lost row keeps exactly two survivors: nothing is
  lost, and every lost row needs exactly one new replica.

Data

- The failed unit held ``lost`` bytes (a machine: the total of its disks, split evenly among them),
  cut into 8 MiB tracts (``ceil(lost_per_disk / 8 MiB)`` equal tracts per disk). Tracts of a blob walk
  consecutive rows, so a disk's tracts are spread evenly over its rows: each lost row holds
  ``tracts // rows`` or one more (the extra ones on random rows).
- Only recovery runs: no client traffic, no failure-detection delay (the heartbeat timeout), no
  metadata-server or RPC latency. The clock starts when every replacement knows its rows.

Recovery protocol

- Each lost row gets one replacement disk. ``--replacement random`` (the paper): uniformly among the
  live disks in machines the row does not use (a failed disk's live machine-mates are eligible).
  ``--replacement balanced`` (our metaserver, whose table starts balanced): the eligible disk with the
  fewest recovery tracts so far, ties at random, rows taken in random order.
- Each tract is copied from one survivor of its row (the source) to the replacement. ``--source
  random`` picks one of the two survivors per row at random; ``least-loaded`` (our tract servers) the
  one with fewer source tracts so far (rows visited in random order); ``both`` alternates the row's
  tracts between the two survivors.
- Each replacement copies at most ``in_flight`` tracts at a time (default 4, our ``fill_in_flight``);
  when one is written it starts the next. Its queue visits its rows round-robin, so its in-flight
  tracts come from different sources.

Resources and service (the discrete-event part)

- A tract copy is store-and-forward, as in FDS's tract servers (whole tracts in memory): (1) the
  source disk reads the tract; (2) the source machine's NIC sends it; (3) the replacement machine's
  NIC receives it; (4) the replacement's disk writes it. Sending and receiving are two stages in
  series (as if the switch stored and forwarded whole tracts), so each NIC is its own work-conserving
  queue; this costs one extra NIC time per tract in latency (7 ms at 10 Gbit/s), nothing in
  throughput. (Holding both NICs for one shared interval instead lets a busy receiver leave idle gaps
  in its senders' schedules, a convoy that real packet-level sharing does not have.)
- Each disk is one resource shared by its reads and its writes, with bandwidth ``disk_bps`` (default
  120 MB/s) plus an optional fixed cost per tract I/O (``--io-overhead-ms``, seek and rotation; 0 by
  default; ~9.5 ms makes a random 8 MiB tract run at the 88% of sequential the paper measured).
  ``--per-server-mbps`` caps what one tract server moves for recovery (reads + writes together): the
  disk then runs at ``min(disk, cap)``. One server per disk, so the cap and the disk are one resource.
- Each machine has a full-duplex NIC, ``nic_bps`` in each direction (default 10 Gbit/s), on a full
  bisection fabric: NICs are the only network resources.
- Every resource serves requests one at a time, first come first served, at full rate (work
  conserving; for a throughput-bound batch the finishing time of a resource's work does not depend on
  the order). Each stage starts when it is ready and its resource is free. The projected recovery
  time is when the last tract is written.
- 1 GB = 10^9 bytes, 1 MB = 10^6 bytes (the paper's units).

Not modelled: client load, stragglers that are slow for reasons of their own (a bad disk, a busy
CPU), per-request software costs other than ``io_overhead``, TCP dynamics and incast, a second
failure during recovery.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["FDS_TABLE1", "Plan", "Result", "calibrate_cap", "plan_recovery", "simulate"]

IntArray = npt.NDArray[np.int64]

GB = 10**9
MB = 10**6
TRACT_BYTES = 8 * 1024 * 1024
K = 3
DEFAULT_DISK_BPS = 120 * MB
DEFAULT_NIC_BPS = 10 * 10**9 / 8
DEFAULT_IN_FLIGHT = 4

Fill = Literal["random", "balanced"]
Source = Literal["random", "least-loaded", "both"]
Replacement = Literal["random", "balanced"]
Fail = Literal["machine", "disk"]

FDS_TABLE1: dict[tuple[int, int, int], float] = {
    # (disks, disks failed at once, lost GB) -> FDS's measured seconds, as docs/design.md §4 gives them.
    (1000, 1, 47): 3.3,
    (1000, 1, 92): 6.2,
    (1000, 7, 655): 33.7,
    (100, 1, 92): 50.5,
}
PAPER_SCENARIOS: tuple[tuple[int, int, int], ...] = (
    # (disks, disks per machine (all fail), lost GB)
    (100, 1, 47),
    (100, 1, 92),
    (1000, 1, 47),
    (1000, 1, 92),
    (1000, 7, 655),
)
CALIBRATION_SCENARIO = (1000, 1, 92)


@dataclass(frozen=True)
class Plan:
    """Which lost row is copied from where to where: the placement half of a recovery."""

    disks: int
    machine_disks: int
    failed: IntArray
    """The failed disks (one machine, or one disk of it)."""
    survivors: IntArray
    """Shape (rows, 2): the two surviving holders of each lost row."""
    source: IntArray
    """Per lost row, the survivor it is copied from; -1 with ``source='both'`` (alternate the two)."""
    dest: IntArray
    """Per lost row, its replacement disk."""
    tracts: IntArray
    """Per lost row, the tracts it lost."""
    tract_bytes: float
    table_rows: int
    """Rows of the whole table (not built)."""


@dataclass(frozen=True)
class Result:
    """One simulated recovery."""

    disks: int
    machine_disks: int
    failed_disks: int
    lost_bytes: int
    tracts: int
    lost_rows: int
    table_rows: int
    survivors: int
    seconds: float
    """Projected recovery time: the last tract written."""
    rw_mbps_per_disk: float
    """Recovery reads + writes per surviving disk, MB/s, averaged over the recovery."""
    busiest_resource_seconds: float
    """Busy time of the busiest disk or NIC: a lower bound on ``seconds``."""
    aggregate_bound_seconds: float
    """All reads and writes spread perfectly over every surviving disk: a lower bound on ``seconds``."""
    max_dest_tracts: int
    max_source_tracts: int
    mean_dest_tracts: float
    disk_bps: float
    """The disk rate used: min(disk bandwidth, per-server cap)."""
    nic_bps: float
    in_flight: int
    io_overhead_s: float
    fill: str
    source: str
    replacement: str
    seed: int
    wall_seconds: float


# -- placement ---------------------------------------------------------------------------------------


def _machine_sizes(n: int, d: int) -> list[int]:
    """Disks per machine: machines of ``d``, the last one smaller when ``d`` does not divide ``n``."""
    return [d] * (n // d) + ([n % d] if n % d else [])


def _random_disks_avoiding(rng: np.random.Generator, n: int, d: int, excluded: IntArray,
                           dead: IntArray | None = None) -> IntArray:
    """Per row of ``excluded`` (machines, shape (rows, q)), a uniform disk in none of them (nor in ``dead``).

    Rejection sampling: at most a few machines are excluded, so nearly every draw is accepted.
    """
    out = rng.integers(0, n, size=len(excluded), dtype=np.int64)
    todo = np.arange(len(excluded))
    while todo.size:
        bad = ((out[todo] // d)[:, None] == excluded[todo]).any(axis=1)
        if dead is not None:
            bad |= np.isin(out[todo], dead)
        todo = todo[bad]
        out[todo] = rng.integers(0, n, size=todo.size, dtype=np.int64)
    return out


def _rows_of(x: int, n: int, d: int, fill: Fill, rng: np.random.Generator) -> IntArray:
    """The two other holders of every row holding disk ``x``, shape (rows, 2), drawn as the table would."""
    sizes = _machine_sizes(n, d)
    mx = x // d
    disks = np.arange(n, dtype=np.int64)
    partners = disks[disks // d != mx]
    own = np.full(partners.size, mx, dtype=np.int64)
    third = _random_disks_avoiding(rng, n, d, np.stack([own, partners // d], axis=1))
    pair_rows = np.stack([partners, third], axis=1)

    # Rows where x is the third: pairs of disks in two distinct machines, neither x's. Random fill:
    # each such pair picks x with probability 1/(eligible disks), ~1/(n - 2d). Balanced fill: every
    # disk gets the same share of the table's third slots.
    if fill == "random":
        pairs = math.comb(n - sizes[mx], 2) - sum(math.comb(s, 2) for m, s in enumerate(sizes) if m != mx)
        count = int(rng.binomial(pairs, 1 / (n - 2 * d)))
    else:
        mean = (math.comb(n, 2) - sum(math.comb(s, 2) for s in sizes)) / n
        count = int(math.floor(mean) + (rng.random() < mean - math.floor(mean)))
    own = np.full((count, 1), mx, dtype=np.int64)
    a = _random_disks_avoiding(rng, n, d, own)
    b = _random_disks_avoiding(rng, n, d, np.concatenate([own, (a // d)[:, None]], axis=1))
    return np.concatenate([pair_rows, np.stack([a, b], axis=1)])


def plan_recovery(
    disks: int,
    lost_bytes: float,
    machine_disks: int = 1,
    *,
    fail: Fail = "machine",
    fill: Fill = "random",
    source: Source = "random",
    replacement: Replacement = "random",
    tract_bytes: int = TRACT_BYTES,
    rng: np.random.Generator,
) -> Plan:
    """Draw the lost rows of one failure and decide each one's source and replacement.

    ``lost_bytes`` is everything the failed unit held: a whole machine with ``fail='machine'``
    (the default; with ``machine_disks=1`` that is one disk), or the one disk with ``fail='disk'``.
    """
    n, d = disks, machine_disks
    if d < 1 or n < d:
        raise ValueError(f"{n} disks do not make a machine of {d}")
    sizes = _machine_sizes(n, d)
    if len(sizes) < K + 1:
        raise ValueError(f"k={K} with a spare needs at least {K + 1} machines, have {len(sizes)}")
    if lost_bytes <= 0:
        raise ValueError("lost_bytes must be positive")

    failed_machine = int(rng.integers(n // d))  # a full machine
    if fail == "machine":
        failed = np.arange(failed_machine * d, (failed_machine + 1) * d, dtype=np.int64)
    else:
        failed = np.array([failed_machine * d + int(rng.integers(d))], dtype=np.int64)
    per_disk = lost_bytes / failed.size
    disk_tracts = max(1, math.ceil(per_disk / tract_bytes))

    survivor_parts: list[IntArray] = []
    tract_parts: list[IntArray] = []
    for x in failed.tolist():
        rows = _rows_of(x, n, d, fill, rng)
        base, extra = divmod(disk_tracts, len(rows))
        counts = np.full(len(rows), base, dtype=np.int64)
        counts[rng.choice(len(rows), size=extra, replace=False)] += 1
        survivor_parts.append(rows)
        tract_parts.append(counts)
    survivors = np.concatenate(survivor_parts)
    tracts = np.concatenate(tract_parts)
    n_rows = len(survivors)

    if source == "random":
        src = survivors[np.arange(n_rows), rng.integers(0, 2, size=n_rows)]
    elif source == "least-loaded":
        src = np.empty(n_rows, dtype=np.int64)
        reads = np.zeros(n, dtype=np.int64)
        for r in rng.permutation(n_rows).tolist():
            a, b = int(survivors[r, 0]), int(survivors[r, 1])
            pick = a if (reads[a], rng.random()) < (reads[b], rng.random()) else b
            src[r] = pick
            reads[pick] += tracts[r]
    else:
        src = np.full(n_rows, -1, dtype=np.int64)

    # Replacements: live disks of machines the row does not use. With one disk failed, its
    # machine-mates are eligible (the row no longer holds a disk of that machine).
    if replacement == "random":
        dest = _random_disks_avoiding(rng, n, d, survivors // d, dead=failed)
    else:
        dest = np.empty(n_rows, dtype=np.int64)
        writes = np.zeros(n, dtype=np.float64)
        writes[failed] = np.inf
        for r in rng.permutation(n_rows).tolist():
            banned = [slice(m * d, (m + 1) * d) for m in (int(survivors[r, 0]) // d, int(survivors[r, 1]) // d)]
            saved = [writes[span].copy() for span in banned]
            for span in banned:
                writes[span] = np.inf
            pick = int(rng.choice(np.flatnonzero(writes == writes.min())))
            for span, values in zip(banned, saved, strict=True):
                writes[span] = values
            dest[r] = pick
            writes[pick] += tracts[r]

    return Plan(disks=n, machine_disks=d, failed=failed, survivors=survivors, source=src, dest=dest,
                tracts=tracts, tract_bytes=per_disk / disk_tracts,
                table_rows=math.comb(n, 2) - sum(math.comb(s, 2) for s in sizes))


# -- the discrete-event simulation ---------------------------------------------------------------------

_OUT, _IN, _WRITE, _DONE = 0, 1, 2, 3


def _tract_queues(plan: Plan, rng: np.random.Generator) -> tuple[list[int], list[int], IntArray, IntArray]:
    """Every lost tract as (source, dest), grouped by dest, each dest's rows visited round-robin.

    Returns (sources, dests, dest_start, dest_end) with the tracts of disk ``i`` at
    ``[dest_start[i], dest_end[i])``.
    """
    total = int(plan.tracts.sum())
    row = np.repeat(np.arange(len(plan.tracts), dtype=np.int64), plan.tracts)
    starts = np.cumsum(plan.tracts) - plan.tracts
    index = np.arange(total, dtype=np.int64) - np.repeat(starts, plan.tracts)
    if (plan.source < 0).any():  # 'both': alternate the two survivors, from a random one
        flip = rng.integers(0, 2, size=len(plan.tracts), dtype=np.int64)
        src = plan.survivors[row, (index + flip[row]) % 2]
    else:
        src = plan.source[row]
    dst = plan.dest[row]
    rank = rng.permutation(len(plan.tracts)).astype(np.int64)
    order = np.lexsort((rank[row], index, dst))
    src, dst = src[order], dst[order]
    disks = np.arange(plan.disks, dtype=np.int64)
    return (src.tolist(), dst.tolist(), np.searchsorted(dst, disks, side="left").astype(np.int64),
            np.searchsorted(dst, disks, side="right").astype(np.int64))


def _run(plan: Plan, disk_bps: float, nic_bps: float, in_flight: int, io_overhead_s: float,
         rng: np.random.Generator) -> tuple[float, float]:
    """Run the event loop; returns (time the last tract is written, busiest resource's busy time)."""
    src, dst, first, last = _tract_queues(plan, rng)
    d = plan.machine_disks
    disk_t = plan.tract_bytes / disk_bps + io_overhead_s
    net_t = plan.tract_bytes / nic_bps
    disk_free = [0.0] * plan.disks
    disk_busy = [0.0] * plan.disks
    machines = -(-plan.disks // d)
    out_free, in_free = [0.0] * machines, [0.0] * machines
    out_busy, in_busy = [0.0] * machines, [0.0] * machines
    nxt, end = first.tolist(), last.tolist()
    heap: list[tuple[float, int, int]] = []
    push, pop = heapq.heappush, heapq.heappop

    def issue(t: int, now: float) -> None:  # stage 1: the source disk reads the tract
        s = src[t]
        done = max(now, disk_free[s]) + disk_t
        disk_free[s] = done
        disk_busy[s] += disk_t
        push(heap, (done, t, _OUT))

    for disk in range(plan.disks):
        for _ in range(min(in_flight, end[disk] - nxt[disk])):
            issue(nxt[disk], 0.0)
            nxt[disk] += 1

    finish = 0.0
    while heap:
        now, t, stage = pop(heap)
        if stage == _OUT:  # stage 2: the source machine's NIC sends it
            ms = src[t] // d
            done = max(now, out_free[ms]) + net_t
            out_free[ms] = done
            out_busy[ms] += net_t
            push(heap, (done, t, _IN))
        elif stage == _IN:  # stage 3: the replacement machine's NIC receives it
            md = dst[t] // d
            done = max(now, in_free[md]) + net_t
            in_free[md] = done
            in_busy[md] += net_t
            push(heap, (done, t, _WRITE))
        elif stage == _WRITE:  # stage 4: the replacement's disk writes it
            r = dst[t]
            done = max(now, disk_free[r]) + disk_t
            disk_free[r] = done
            disk_busy[r] += disk_t
            push(heap, (done, t, _DONE))
        else:  # written: the replacement starts its next tract
            finish = now
            r = dst[t]
            if nxt[r] < end[r]:
                issue(nxt[r], now)
                nxt[r] += 1
    return finish, max(max(disk_busy), max(out_busy), max(in_busy))


def simulate(
    disks: int,
    lost_bytes: float,
    machine_disks: int = 1,
    *,
    disk_bps: float = DEFAULT_DISK_BPS,
    nic_bps: float = DEFAULT_NIC_BPS,
    per_server_bps: float | None = None,
    in_flight: int = DEFAULT_IN_FLIGHT,
    io_overhead_s: float = 0.0,
    fail: Fail = "machine",
    fill: Fill = "random",
    source: Source = "random",
    replacement: Replacement = "random",
    tract_bytes: int = TRACT_BYTES,
    seed: int = 1,
) -> Result:
    """Simulate one recovery; the same arguments (seed included) give the same result.

    ``lost_bytes`` is what the failed unit held (see :func:`plan_recovery`). Rates are in bytes per
    second; ``per_server_bps`` caps a server's recovery reads + writes (the disk runs at the lower of
    the two).
    """
    if in_flight < 1:
        raise ValueError("in_flight must be at least 1")
    if disk_bps <= 0 or nic_bps <= 0 or (per_server_bps is not None and per_server_bps <= 0):
        raise ValueError("rates must be positive")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    plan = plan_recovery(disks, lost_bytes, machine_disks, fail=fail, fill=fill, source=source,
                         replacement=replacement, tract_bytes=tract_bytes, rng=rng)
    rate = min(disk_bps, per_server_bps) if per_server_bps is not None else disk_bps
    seconds, busiest = _run(plan, rate, nic_bps, in_flight, io_overhead_s, rng)
    survivors = disks - plan.failed.size
    n_tracts = int(plan.tracts.sum())
    copied = n_tracts * plan.tract_bytes
    writes = np.bincount(plan.dest, weights=plan.tracts, minlength=disks)
    if (plan.source < 0).any():
        reads = (np.bincount(plan.survivors[:, 0], weights=plan.tracts / 2, minlength=disks)
                 + np.bincount(plan.survivors[:, 1], weights=plan.tracts / 2, minlength=disks))
    else:
        reads = np.bincount(plan.source, weights=plan.tracts, minlength=disks)
    disk_t = plan.tract_bytes / rate + io_overhead_s
    return Result(
        disks=disks, machine_disks=machine_disks, failed_disks=int(plan.failed.size), lost_bytes=int(lost_bytes),
        tracts=n_tracts, lost_rows=len(plan.tracts), table_rows=plan.table_rows, survivors=survivors,
        seconds=seconds, rw_mbps_per_disk=2 * copied / survivors / seconds / MB,
        busiest_resource_seconds=busiest,
        aggregate_bound_seconds=2 * n_tracts * disk_t / survivors,
        max_dest_tracts=int(writes.max()), max_source_tracts=int(math.ceil(reads.max())),
        mean_dest_tracts=n_tracts / survivors, disk_bps=rate, nic_bps=nic_bps, in_flight=in_flight,
        io_overhead_s=io_overhead_s, fill=fill, source=source, replacement=replacement, seed=seed,
        wall_seconds=time.perf_counter() - started,
    )


def calibrate_cap(target_seconds: float, runs: Sequence[dict[str, Any]], *, low: float = MB,
                  high: float = DEFAULT_DISK_BPS, tolerance: float = 0.002) -> float | None:
    """The per-server cap (bytes/s) at which the mean of ``simulate(**run, per_server_bps=cap)`` over
    ``runs`` is ``target_seconds``; None if even ``high`` is too slow.

    Bisection on the cap in log space; the projected time falls as the cap rises.
    """

    def mean_seconds(cap: float) -> float:
        return statistics.fmean(simulate(**run, per_server_bps=cap).seconds for run in runs)

    if mean_seconds(high) > target_seconds:
        return None
    for _ in range(60):
        mid = math.sqrt(low * high)
        if mean_seconds(mid) > target_seconds:
            low = mid
        else:
            high = mid
        if high / low < 1 + tolerance:
            break
    return math.sqrt(low * high)


# -- the command line ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the report: a scenario over one or more seeds."""

    disks: int
    machine_disks: int
    failed_disks: int
    lost_gb: float
    seconds: float
    seconds_sd: float
    rw_mbps_per_disk: float
    busiest_resource_seconds: float
    aggregate_bound_seconds: float
    max_dest_tracts: int
    mean_dest_tracts: float
    fds_seconds: float | None
    fds_rw_mbps_per_disk: float | None
    results: list[dict[str, Any]]


def _scenario(disks: int, machine_disks: int, lost_gb: float, runs: int, seed: int, **options: Any) -> Row:
    results = [simulate(disks, lost_gb * GB, machine_disks, seed=seed + i, **options) for i in range(runs)]
    first = results[0]
    secs = [r.seconds for r in results]
    fds = FDS_TABLE1.get((disks, first.failed_disks, round(lost_gb))) if float(lost_gb).is_integer() else None
    return Row(
        disks=disks, machine_disks=machine_disks, failed_disks=first.failed_disks, lost_gb=lost_gb,
        seconds=statistics.fmean(secs), seconds_sd=statistics.stdev(secs) if runs > 1 else 0.0,
        rw_mbps_per_disk=statistics.fmean(r.rw_mbps_per_disk for r in results),
        busiest_resource_seconds=statistics.fmean(r.busiest_resource_seconds for r in results),
        aggregate_bound_seconds=first.aggregate_bound_seconds,
        max_dest_tracts=round(statistics.fmean(r.max_dest_tracts for r in results)),
        mean_dest_tracts=first.mean_dest_tracts,
        fds_seconds=fds,
        fds_rw_mbps_per_disk=None if fds is None else 2 * lost_gb * GB / first.survivors / fds / MB,
        results=[asdict(r) for r in results],
    )


def _table(rows: Sequence[Row], runs: int) -> str:
    head = (f"{'disks':>6} {'disks/mach':>10} {'failed':>6} {'lost GB':>8} {'projected s':>14} "
            f"{'r+w MB/s/disk':>13} {'busiest s':>9} {'spread s':>8} {'max/mean writes':>15} "
            f"{'FDS s':>6} {'FDS r+w MB/s':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        projected = f"{r.seconds:.1f} ± {r.seconds_sd:.1f}" if runs > 1 else f"{r.seconds:.1f}"
        fds = "-" if r.fds_seconds is None else f"{r.fds_seconds:.1f}"
        fds_rate = "-" if r.fds_rw_mbps_per_disk is None else f"{r.fds_rw_mbps_per_disk:.0f}"
        writes = f"{r.max_dest_tracts}/{r.mean_dest_tracts:.0f}"
        lines.append(f"{r.disks:>6} {r.machine_disks:>10} {r.failed_disks:>6} {r.lost_gb:>8g} {projected:>14} "
                     f"{r.rw_mbps_per_disk:>13.1f} {r.busiest_resource_seconds:>9.1f} "
                     f"{r.aggregate_bound_seconds:>8.1f} {writes:>15} {fds:>6} {fds_rate:>12}")
    return "\n".join(lines)


def _describe(options: dict[str, Any]) -> str:
    cap = options.get("per_server_bps")
    return (f"disk {options['disk_bps'] / MB:g} MB/s, NIC {options['nic_bps'] * 8 / 1e9:g} Gbit/s, "
            f"per-server cap {'none' if cap is None else f'{cap / MB:.1f} MB/s'}, "
            f"{options['in_flight']} in flight, I/O overhead {options['io_overhead_s'] * 1000:g} ms, "
            f"fill {options['fill']}, source {options['source']}, replacement {options['replacement']}")


LEGEND = "\n".join([
    "projected s: time to the last tract written (mean ± sd over runs); "
    "r+w MB/s/disk: recovery reads + writes per surviving disk;",
    "busiest s: busy time of the busiest disk or NIC (a lower bound); "
    "spread s: all I/O spread evenly over the survivors (a lower bound);",
    "max/mean writes: tracts written by the busiest replacement / by the average survivor "
    "(busiest s and max: means over runs);",
    "FDS: docs/design.md §4 (Table 1 of the paper); FDS r+w MB/s: the same figure for FDS's time.",
])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--disks", type=int, nargs="+", default=[1000], help="cluster sizes (disks)")
    parser.add_argument("--lost-gb", type=float, nargs="+", default=[92.0],
                        help="data lost with the failed unit (a whole machine with --machine-disks), GB")
    parser.add_argument("--machine-disks", type=int, default=1, help="disks per machine (= failure domain)")
    parser.add_argument("--fail", choices=["machine", "disk"], default="machine",
                        help="fail a whole machine or one of its disks")
    parser.add_argument("--disk-mbps", type=float, default=DEFAULT_DISK_BPS / MB,
                        help="disk bandwidth, reads and writes shared, MB/s")
    parser.add_argument("--nic-gbps", type=float, default=DEFAULT_NIC_BPS * 8 / 1e9,
                        help="NIC bandwidth per direction, Gbit/s")
    parser.add_argument("--per-server-mbps", type=float, default=None,
                        help="cap on one server's recovery reads + writes, MB/s")
    parser.add_argument("--in-flight", type=int, default=DEFAULT_IN_FLIGHT, help="tracts in flight per replacement")
    parser.add_argument("--io-overhead-ms", type=float, default=0.0, help="fixed cost per tract read or write")
    parser.add_argument("--fill", choices=["random", "balanced"], default="random", help="third slot of each row")
    parser.add_argument("--source", choices=["random", "least-loaded", "both"], default="random")
    parser.add_argument("--replacement", choices=["random", "balanced"], default="random")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1, help="seeds seed .. seed+runs-1; report mean ± sd")
    parser.add_argument("--paper", action="store_true",
                        help="FDS Table 1 scenarios, uncapped and with a per-server cap fitted to 1,000 disks/92 GB")
    parser.add_argument("--json", nargs="?", const="-", metavar="OUT",
                        help="write the results as JSON to OUT (stdout without OUT, instead of the table)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    options: dict[str, Any] = {
        "disk_bps": args.disk_mbps * MB, "nic_bps": args.nic_gbps * 1e9 / 8, "in_flight": args.in_flight,
        "io_overhead_s": args.io_overhead_ms / 1000, "fill": args.fill, "source": args.source,
        "replacement": args.replacement,
    }
    blocks: list[dict[str, Any]] = []
    if args.paper:
        base = {**options, "per_server_bps": None if args.per_server_mbps is None else args.per_server_mbps * MB}
        blocks.append({"title": "FDS Table 1 scenarios", "options": base,
                       "rows": [_scenario(n, d, gb, args.runs, args.seed, **base) for n, d, gb in PAPER_SCENARIOS]})
        n, d, gb = CALIBRATION_SCENARIO
        calibration = [{"disks": n, "lost_bytes": gb * GB, "machine_disks": d, "seed": args.seed + i, **options}
                       for i in range(args.runs)]
        cap = calibrate_cap(FDS_TABLE1[(n, d, gb)], calibration)
        if cap is not None:
            capped = {**options, "per_server_bps": cap}
            blocks.append({"title": f"the same, per-server cap calibrated to FDS's {n} disks / {gb} GB = "
                                    f"{FDS_TABLE1[(n, d, gb)]} s: {cap / MB:.1f} MB/s",
                           "options": capped, "calibrated_cap_mbps": cap / MB,
                           "rows": [_scenario(n, d, gb, args.runs, args.seed, **capped)
                                    for n, d, gb in PAPER_SCENARIOS]})
        else:
            blocks.append({"title": "no cap reaches FDS's 1,000 disks / 92 GB time: the model is slower uncapped",
                           "options": options, "calibrated_cap_mbps": None, "rows": []})
    else:
        run_options = {**options, "fail": args.fail,
                       "per_server_bps": None if args.per_server_mbps is None else args.per_server_mbps * MB}
        rows = [_scenario(n, args.machine_disks, gb, args.runs, args.seed, **run_options)
                for n in args.disks for gb in args.lost_gb]
        blocks.append({"title": "projected recovery", "options": run_options, "rows": rows})

    if args.json:
        report = [{**{k: v for k, v in block.items() if k != "rows"}, "rows": [asdict(r) for r in block["rows"]]}
                  for block in blocks]
        text = json.dumps({"seed": args.seed, "runs": args.runs, "blocks": report}, indent=2)
        if args.json == "-":
            sys.stdout.write(text + "\n")
            return 0
        Path(args.json).write_text(text + "\n")
    for block in blocks:
        print(f"{block['title']}\n  ({_describe(block['options'])}; seed {args.seed}, {args.runs} run(s))")
        if block["rows"]:
            print(_table(block["rows"], args.runs))
        print()
    print(LEGEND)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
