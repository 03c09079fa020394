"""What the sort's head and workers say to each other over HTTP (JSON bodies, pydantic models).

Head routes (``apps.minutesort._head``):

- ``POST /v1/workers`` a worker registers its URL; gets its index once all have come.
- ``GET  /v1/job`` the job: input blob, buckets and their owners, boundaries.
- ``POST /v1/work`` the next unit of input (a few tracts), or "none left".
- ``POST /v1/workers/{i}/beat`` liveness; the answer says whether the run was aborted.
- ``POST /v1/workers/{i}/done`` this worker has read and sent all its input.
- ``POST /v1/workers/{i}/finished`` its bucket is sorted and written.
- ``POST /v1/abort`` a worker saw a peer fail; the run stops with that reason.

Worker routes (``apps.minutesort._worker``), one sort's worker process:

- ``PUT  /v1/bins/{bucket}?sender=i&job=ID`` a bin of records for a bucket this worker owns.
- ``POST /v1/senders/{i}/done?job=ID`` worker i has sent every bin it will send.

Worker service routes (``apps.minutesort._service``), a standing worker
(``fds-minutesort worker --serve``) that takes part in one sort at a time:

- ``POST   /v1/sorts`` a head invites it to sort ``job``: 202, or 409 while it
  is busy with another sort. It starts a worker process for the sort, which
  registers with the head like any worker.
- ``GET    /v1/sorts/{job}`` that sort's state here (running, done, failed, cancelled).
- ``DELETE /v1/sorts/{job}`` stop that sort's worker process (the head gave up on it).
- ``GET    /v1/status`` idle or busy, the current sort, the recent ones.

The ``job`` id names one sort everywhere: a worker registers with it, bins
carry it, so nothing left over from an earlier sort can land in a later one.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = ["Register", "Registered", "Job", "WorkRequest", "Unit", "Beat", "Finished", "Invite", "SortState",
           "ServiceStatus", "JOB_PATTERN"]

JOB_PATTERN = r"^[0-9a-f]{8,64}$"
"""A job id: lowercase hex (the head makes 24 digits)."""


class Register(BaseModel):
    url: str = Field(min_length=1, max_length=300, description="The worker's base URL, for peers' bins.")
    pid: int = Field(default=0, ge=0)
    job: str = Field(default="", max_length=64, description="The sort this worker was started for (empty: any).")
    service: str = Field(default="", max_length=300, description="The standing worker that started it, if one did.")


class Registered(BaseModel):
    index: int
    throttle: float = Field(default=1.0, description="Straggler experiments: work this many times slower.")


class Job(BaseModel):
    """Everything a worker needs, fixed once every worker has registered."""

    metaserver: str
    input_blob: str
    tracts: int
    tract_size: int
    boundaries: list[str] = Field(description="Bucket boundaries as 10-byte keys in hex; len = buckets - 1.")
    owners: list[int] = Field(description="Worker index owning each bucket.")
    workers: list[str] = Field(description="Each worker's URL, by index.")
    expected_records: list[int] = Field(description="Estimated records per bucket (sizes the receive buffer).")
    bin_bytes: int = Field(description="A bin is sent once it holds this many bytes.")
    bins_in_flight: int = Field(description="Bins in flight from one sender to one receiver (RTS/CTS).")
    read_in_flight: int
    write_in_flight: int
    output_prefix: str = Field(default="", description="GUID prefix of output blobs (empty: random GUIDs).")
    job_id: str = Field(default="", description="Names this sort; bins carry it.")


class WorkRequest(BaseModel):
    worker: int


class Unit(BaseModel):
    """Tracts ``first .. first+count-1`` of the input; ``count`` 0 means no input is left."""

    first: int = 0
    count: int = 0
    abort: str | None = None


class Beat(BaseModel):
    abort: str | None = None


class Finished(BaseModel):
    worker: int
    buckets: dict[int, str] = Field(description="Bucket -> output blob GUID.")
    records: dict[int, int]
    tracts_read: int
    bytes_received: int
    peak_rss_bytes: int
    seconds: dict[str, float] = Field(description="Time of each phase on this worker.")


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
