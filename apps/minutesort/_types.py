"""The sort's options and results: what callers of :func:`apps.minutesort.sort` pass and get back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SortOptions", "SortResult", "WorkerReport", "RunResult", "SortFailed"]


class SortFailed(Exception):
    """The sort could not finish; the message says why."""


@dataclass
class SortOptions:
    """How to sort. Every field has a default that suits one host; the CLI's flags set the same fields."""

    workers: int = 2
    """Sort workers, one process each (ignored with ``worker_urls``: one per standing worker)."""
    daytona: bool = False
    """Sample the input for bucket boundaries (skewed keys); default uniform boundaries (Indy)."""
    static: bool = False
    """Split the input into fixed equal ranges up front instead of handing it out on demand (for comparison)."""
    unit_tracts: int = 4
    """Tracts per unit of input work."""
    buckets_per_worker: int = 4
    """Buckets per worker when the data fits in memory (more when it spills)."""
    fixed_buckets: bool = False
    """Each worker sorts the buckets it holds, none on demand (for comparison)."""
    memory: int = 0
    """Bytes each worker's process may use in all (0: each worker's own ``--memory``, else a share of the
    memory its host has available)."""
    record_memory: int = 0
    """Bytes of records each worker may hold in memory (0: what ``memory`` leaves)."""
    spill_all: bool = False
    """Write every bucket to fds before sorting it (materialise everything, for comparison)."""
    solo_bytes: int = 0
    """Sort inputs up to this size in this process, without workers (0: never)."""
    bin_bytes: int = 4 << 20
    bins_in_flight: int = 2
    read_in_flight: int = 8
    write_in_flight: int = 16
    sample_tracts: int = 32
    sample_per_tract: int = 4000
    slow_worker: int | None = None
    """Straggler experiments: this worker (by registration index) works ``slow_factor`` times slower."""
    slow_factor: float = 1.0
    spawn: bool = True
    """Start the workers as child processes here; False waits for ``workers`` remote ones."""
    worker_urls: list[str] = field(default_factory=list)
    """Standing workers (``fds-minutesort worker --serve``) to invite, one per worker; overrides ``spawn``."""
    host: str = "127.0.0.1"
    """Address the head listens on."""
    port: int = 0
    advertise_url: str = ""
    """The URL workers reach the head at (default: from ``host`` and the port)."""
    silence_timeout: float = 15.0
    """A worker silent this long is declared dead (its work goes to the others)."""
    register_timeout: float = 300.0
    """Seconds to wait for every worker to register."""
    seed: int = 1


@dataclass
class WorkerReport:
    """What one worker did in a sort."""

    worker: int
    alive: bool
    tracts_read: int
    bytes_received: int
    peak_rss_bytes: int
    seconds: dict[str, float]
    """Time of each phase on this worker."""
    peak_records_bytes: int = 0
    """The most bytes of records it held in memory at once (never above its capacity)."""
    capacity: int = 0
    """Bytes of records it was allowed to hold."""
    tracts_given: int = 0
    buckets_sorted: int = 0
    memory: dict[str, int] = field(default_factory=dict)
    """Minor page faults of each phase (``faults_*``) and bytes of buffers placed in a warm arena or in fresh
    memory (``placed_*``)."""


@dataclass
class SortResult:
    """A finished sort: its output blobs in key order, and how it went."""

    input_blob: str
    output_blobs: list[str]
    """Concatenated in this order, the output is the input's records sorted by key."""
    records: int
    bytes: int
    seconds: float
    """From the call to the output being durable (worker start-up included)."""
    phases: dict[str, float]
    workers: list[WorkerReport]
    bucket_records: list[int]
    mode: str
    spilled_bytes: int = 0
    """Bytes written to fds before the output (buckets that did not fit in memory)."""
    deaths: list[str] = field(default_factory=list)
    """Workers that died during the sort, and why; their work went to the others."""
    lineage_units: int = 0
    """Units read again to rebuild buckets lost with a worker."""

    def to_json(self) -> dict[str, Any]:
        """The result as the ``sort`` command prints it (one JSON object)."""
        return {"input_blob": self.input_blob, "output_blobs": self.output_blobs, "records": self.records,
                "bytes": self.bytes, "sort_seconds": round(self.seconds, 3), "mode": self.mode,
                "bucket_records": self.bucket_records, "phases": {k: round(v, 3) for k, v in self.phases.items()},
                "worker_seconds": [{k: round(v, 3) for k, v in w.seconds.items()} for w in self.workers],
                "tracts_per_worker": [w.tracts_given for w in self.workers],
                "peak_rss_per_worker_bytes": [w.peak_rss_bytes for w in self.workers],
                "peak_records_per_worker_bytes": [w.peak_records_bytes for w in self.workers],
                "records_capacity_per_worker_bytes": [w.capacity for w in self.workers],
                "buckets_per_worker": [w.buckets_sorted for w in self.workers],
                "worker_memory": [w.memory for w in self.workers],
                "spilled_bytes": self.spilled_bytes, "deaths": self.deaths, "lineage_units": self.lineage_units}


@dataclass
class RunResult:
    """``run``: generate, sort, validate (and delete, unless kept)."""

    sort: SortResult
    checksum: str
    """valsort's checksum of the output (hex)."""
    input_checksum: str
    duplicates: int
    valid: bool
    """In order, every record there, and the checksum equal to the input's."""
    phases: dict[str, float]
    workers: int
    kept: bool

    @property
    def records(self) -> int:
        return self.sort.records

    @property
    def bytes(self) -> int:
        return self.sort.bytes

    def to_json(self) -> dict[str, Any]:
        """The report ``run`` prints on its last line."""
        rss = [w.peak_rss_bytes for w in self.sort.workers]
        share = self.sort.bytes / max(1, self.workers)
        return {
            **self.sort.to_json(),
            "gb_per_s": round(self.sort.bytes / 1e9 / max(self.sort.seconds, 1e-9), 3), "checksum": self.checksum,
            "input_checksum": self.input_checksum, "duplicates": self.duplicates, "valid": self.valid,
            "workers": self.workers, "phases": {k: round(v, 3) for k, v in self.phases.items()},
            "peak_rss_per_worker_vs_share": round(max(rss) / share, 2) if rss and share else None,
            "kept": self.kept,
        }
