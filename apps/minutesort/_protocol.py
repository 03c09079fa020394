"""What the sort's head and workers say to each other over HTTP (JSON bodies, pydantic models).

Head routes (``apps.minutesort._head``):

- ``POST /v1/workers`` a worker registers its URL; gets its index once all have come.
- ``GET  /v1/job`` the job: input blob, buckets and their owners, boundaries.
- ``POST /v1/work`` the next unit of input (a few tracts), or "none left".
- ``POST /v1/workers/{i}/beat`` liveness; the answer says whether the run was aborted.
- ``POST /v1/workers/{i}/done`` this worker has read and sent all its input.
- ``POST /v1/workers/{i}/finished`` its bucket is sorted and written.
- ``POST /v1/abort`` a worker saw a peer fail; the run stops with that reason.

Worker routes (``apps.minutesort._worker``):

- ``PUT  /v1/bins/{bucket}?sender=i`` a bin of records for a bucket this worker owns.
- ``POST /v1/senders/{i}/done`` worker i has sent every bin it will send.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

__all__ = ["Register", "Registered", "Job", "WorkRequest", "Unit", "Beat", "Finished"]


class Register(BaseModel):
    url: str = Field(min_length=1, max_length=300, description="The worker's base URL, for peers' bins.")
    pid: int = Field(default=0, ge=0)


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
