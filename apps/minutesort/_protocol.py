"""What the sort's head and workers say to each other over HTTP (JSON bodies, pydantic models).

Head routes (``apps.minutesort._head``):

- ``POST /v1/workers`` a worker registers (its URL and memory); gets its index.
- ``GET  /v1/job?wait=S`` the job, once every worker has registered (held up to S seconds; 503 before).
- ``POST /v1/tasks`` the worker's next task: read a unit, deal records, sort a bucket, wait, or
  done. Held until there is one (or 10 s: "wait"), so workers never poll.
- ``POST /v1/commits`` a read or deal task is over: its bins are delivered (or it failed).
- ``POST /v1/sorted`` a sort task is over: the bucket's output blob (or it failed).
- ``POST /v1/workers/{i}/beat`` liveness; the answer says the epoch and whether the run was aborted.
- ``POST /v1/workers/{i}/finished`` the worker's report, as it exits.
- ``POST /v1/lost`` a standing worker service reports that a worker process it ran died.
- ``POST /v1/abort`` a worker saw a failure no retry can fix; the run stops with that reason.

Worker routes (``apps.minutesort._worker``), one sort's worker process:

- ``PUT  /v1/bins/{bucket}?job=ID&attempt=A&sender=i`` records for a bucket this worker holds:
  200, or 507 when its memory for records is full (the sender writes the bin to fds instead).
- ``GET  /v1/buckets/{bucket}?job=ID&accept=A,B,...`` hand a bucket over to the worker that will
  sort it (on-demand buckets): the records of the accepted attempts; 410 once handed over.

Worker service routes (``apps.minutesort._service``), a standing worker
(``fds-minutesort worker --serve``):

- ``POST   /v1/sorts`` a head invites it to sort ``job``: 202, or 409 while it
  is busy with another sort. It starts a worker process for the sort, which
  registers with the head like any worker.
- ``GET    /v1/sorts/{job}`` that sort's state here (running, done, failed, cancelled).
- ``DELETE /v1/sorts/{job}`` stop that sort's worker process (the head gave up on it).
- ``POST   /v1/solo`` sort a small blob in the service's own process, at once (no head, no
  shuffle): the answer is the output, durable in fds.
- ``GET    /v1/status`` idle or busy, the current sort, the recent ones.

The ``job`` id names one sort everywhere: a worker registers with it, bins
carry it, so nothing left over from an earlier sort can land in a later one.
Each task carries an **attempt** id; bins carry it too, and a bucket's
records are those of the attempts the head accepted (:mod:`apps.minutesort._schedule`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Register", "Registered", "Job", "TaskRequest", "Task", "Part", "Commit", "Sorted", "Beat",
           "Finished", "Lost", "Invite", "SortState", "ServiceStatus", "SoloRequest", "SoloResult", "JOB_PATTERN",
           "spill_guid", "output_guid"]

JOB_PATTERN = r"^[0-9a-f]{8,64}$"
"""A job id: lowercase hex (the head makes 24 digits)."""
_COUNT = 2**62


class Register(BaseModel):
    url: str = Field(min_length=1, max_length=300, description="The worker's base URL, for peers' bins.")
    pid: int = Field(default=0, ge=0)
    job: str = Field(default="", max_length=64, description="The sort this worker was started for (empty: any).")
    service: str = Field(default="", max_length=300, description="The standing worker that started it, if one did.")
    budget: int = Field(default=0, ge=0, le=_COUNT, description="Bytes this worker may use (0: the head decides).")
    available: int = Field(default=0, ge=0, le=_COUNT, description="MemAvailable of the worker's host, plus the "
                           "warm arena its standing worker lends it (memory the host holds for it alone).")
    base: int = Field(default=0, ge=0, le=_COUNT, description="The worker's resident memory before any records.")


class Registered(BaseModel):
    index: int
    throttle: float = Field(default=1.0, description="Straggler experiments: work this many times slower.")


class Job(BaseModel):
    """Everything a worker needs, fixed once every worker has registered."""

    metaserver: str
    input_blob: str
    tracts: int
    tract_size: int
    stride: int = Field(description="Bytes in every input tract but the last.")
    last: int = Field(description="Bytes in the last input tract.")
    boundaries: list[str] = Field(description="Bucket boundaries as 10-byte keys in hex; len = buckets - 1.")
    workers: list[str] = Field(description="Each worker's URL, by index.")
    capacity: list[int] = Field(description="Per worker: bytes of records it may hold in memory.")
    bucket_bytes: int = Field(description="Expected bytes per bucket (sizes receive buffers).")
    bin_bytes: int = Field(description="A bin is sent once it holds this many bytes.")
    bins_in_flight: int = Field(description="Bins in flight from one sender to one receiver (RTS/CTS).")
    read_in_flight: int
    write_in_flight: int
    output_prefix: str = Field(description="20 hex digits: output blob GUIDs are this, the bucket, the attempt.")
    spill_prefix: str = Field(description="26 hex digits: spill blob GUIDs are this and the bucket.")
    job_id: str = Field(default="", description="Names this sort; bins carry it.")


class TaskRequest(BaseModel):
    worker: int
    wait: float = Field(default=10.0, ge=0, le=60, description="Seconds the head may hold the request.")


class Task(BaseModel):
    """What a worker does next."""

    kind: Literal["read", "deal", "sort", "wait", "done", "abort"]
    attempt: int = 0
    epoch: int = 0
    unit: int = 0
    first: int = Field(default=0, description="read: tracts first .. first+count-1 of the input.")
    count: int = 0
    skip: int = Field(default=0, description="read: bytes at the start of the first tract that end the previous "
                                             "unit's record (the head fragment).")
    records: str = Field(default="", description="deal: the records to deal, in hex (joined fragments).")
    only: list[int] | None = Field(default=None, description="read, deal: deal only these buckets (None: all).")
    homes: list[int] = Field(default_factory=list, description="read, deal: each bucket's home worker, "
                                                               "-1 when it spills to fds.")
    bucket: int = 0
    source: int = Field(default=-1, description="sort: the worker holding the bucket's records in memory, or -1.")
    accept: list[int] = Field(default_factory=list, description="sort: attempts whose records in memory count.")
    pieces: list[int] = Field(default_factory=list, description="sort: tracts of the bucket's spill blob.")
    expected: int = Field(default=0, description="sort: records the bucket holds.")
    reason: str = ""


class Part(BaseModel):
    """One bucket's share of a read or deal task."""

    home_records: int = Field(default=0, ge=0, le=_COUNT, description="Records sent to the bucket's home.")
    pieces: list[tuple[int, int]] = Field(default_factory=list,
                                          description="(tract of the spill blob, records) written to fds.")


class Commit(BaseModel):
    worker: int
    attempt: int
    head: str = Field(default="", max_length=200, description="Hex: the unit's head fragment.")
    tail: str = Field(default="", max_length=200, description="Hex: the unit's tail fragment.")
    parts: dict[int, Part] = Field(default_factory=dict)
    failed: str | None = Field(default=None, max_length=2000, description="Why the task could not finish.")


class Sorted(BaseModel):
    worker: int
    attempt: int
    bucket: int
    output: str = ""
    records: int = 0
    failed: str | None = Field(default=None, max_length=2000)
    lost: bool = Field(default=False, description="The bucket's records in memory are gone (handed over, or "
                                                  "their holder died).")


class Beat(BaseModel):
    abort: str | None = None
    epoch: int = 0


class Finished(BaseModel):
    worker: int
    tracts_read: int
    bytes_received: int
    peak_rss_bytes: int
    peak_records_bytes: int = Field(default=0, description="The most bytes of records it held in memory at once.")
    seconds: dict[str, float] = Field(description="Time of each phase on this worker.")
    memory: dict[str, int] = Field(default_factory=dict, description="Minor page faults of each phase (fresh "
                                   "memory), and bytes of buffers placed in its arena or in fresh memory.")


class Lost(BaseModel):
    """A standing worker service's report: the sort process it ran for this head died."""

    url: str = Field(default="", max_length=300, description="The worker's data URL, as it registered.")
    pid: int = Field(default=0, ge=0)
    reason: str = Field(default="", max_length=2000)


class Invite(BaseModel):
    """A head asks a standing worker to take part in sort ``job``."""

    head: str = Field(pattern=r"^https?://", max_length=300, description="The head's URL.")
    job: str = Field(pattern=JOB_PATTERN, description="The sort's id; the worker registers with it.")


class SortState(BaseModel):
    """One sort as a worker service saw it."""

    job: str
    head: str
    pid: int = Field(description="The sort's worker process.")
    state: Literal["running", "done", "failed", "cancelled"]
    started: float = Field(description="Unix time the worker process was started.")
    ended: float | None = None
    exit_status: int | None = Field(default=None, description="The process's exit status; -N: killed by signal N.")
    message: str = ""


class ServiceStatus(BaseModel):
    url: str = Field(description="Where heads invite this worker.")
    data_url: str = Field(description="Where peers send it bins.")
    state: Literal["idle", "busy", "stopping"]
    current: SortState | None = None
    recent: list[SortState] = Field(default_factory=list, description="The last sorts, newest first.")
    sorts: int = Field(default=0, description="Sorts started since the service started.")
    solo_sorts: int = Field(default=0, description="Small sorts served in the service's own process.")
    arena_bytes: int = Field(default=0, description="The warm memory it keeps and lends each sort process (0: none).")
    arena_warm_bytes: int = Field(default=0, description="How much of it has been touched so far (warm at start-up).")


class SoloRequest(BaseModel):
    """Sort a small blob here and now."""

    input_blob: str = Field(min_length=32, max_length=36)
    output_blob: str | None = Field(default=None, min_length=32, max_length=36,
                                    description="GUID for the output (default: a random one).")


class SoloResult(BaseModel):
    input_blob: str
    output_blob: str
    records: int
    seconds: dict[str, float]


def spill_guid(prefix: str, bucket: int) -> str:
    """The GUID of a bucket's spill blob: the job's 26-digit spill prefix and the bucket."""
    return f"{prefix}{bucket:06x}"


def output_guid(prefix: str, bucket: int, attempt: int) -> str:
    """The GUID of a bucket's output blob, written by one attempt: the 20-digit output prefix, bucket, attempt."""
    return f"{prefix}{bucket:06x}{attempt % (1 << 24):06x}"
