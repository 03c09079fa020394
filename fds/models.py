"""Wire models: the JSON every role speaks, in one place.

The roles never import each other; they share these models. Field docs
show up in each server's OpenAPI page (``/docs``).
"""

from __future__ import annotations

import base64
import binascii
import re
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainSerializer,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from fds.names import INLINE_MAX

__all__ = [
    "MemberState",
    "ClusterState",
    "ServerRef",
    "TableModel",
    "RegisterRequest",
    "Heartbeat",
    "HeartbeatReply",
    "TableAck",
    "ServerStatus",
    "ClusterStatus",
    "BlobInfo",
    "ExtendRequest",
    "ExtendResult",
    "SetLengthRequest",
    "MetaRecord",
    "MetaRecords",
    "TractWritten",
    "TractServerStats",
    "CreatedBlob",
    "FillProgress",
    "Traffic",
    "FilledRequest",
    "RecoveryStatus",
    "OutageStatus",
    "PublishStatus",
    "DeclaredDead",
    "RowListing",
    "RowsRequest",
    "NameRecord",
    "NameRecords",
    "ObjectPut",
    "ObjectInfo",
    "NameListing",
    "BucketInfo",
    "RenameRequest",
]

_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_COUNT = 2**63 - 1
"""The bound of every count, size, version and sequence number a request carries: servers keep and send
them as 64-bit integers (orjson refuses larger ones), so a larger one is refused on the way in."""
_URL_TEXT = re.compile(r"https?://[!-~]+")


def _check_url(url: str) -> str:
    """``url`` if it is an http(s) URL every fds client can reach (printable ASCII, a host, a valid port)."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number, or out of range, raises ValueError
        httpx.URL(url)
        ok = bool(_URL_TEXT.fullmatch(url) and parts.hostname)
    except (ValueError, httpx.InvalidURL):
        ok = False
    if not ok:
        raise ValueError(f"not an http:// or https:// URL with a host: {url[:80]!r}; e.g. http://10.0.0.5:7100")
    return url


class MemberState(StrEnum):
    """Where a tract server stands with the metaserver (``ServerStatus.state``)."""

    ACTIVE = "active"
    """Takes part: holds rows, may be handed more."""
    DEAD = "dead"
    """Declared dead after its heartbeat timed out (or by an operator); its rows were handed to others.
    It becomes active again when it heartbeats."""
    DECOMMISSIONING = "decommissioning"
    """Handing its rows to others (``fds decommission``)."""
    DECOMMISSIONED = "decommissioned"
    """Holds no rows any more; it may be stopped."""


class ClusterState(StrEnum):
    """``ClusterStatus.state``."""

    WAITING = "waiting"
    """Fewer tract servers than ``expected_servers`` have registered: no table yet."""
    READY = "ready"
    """The table is built."""


class ServerRef(BaseModel):
    """A tract server as the table names it."""

    id: str = Field(pattern=_ID, description="Stable id, kept in the server's data directory.")
    url: str = Field(description="Base URL of its HTTP API, e.g. http://10.0.0.5:7101")
    domain: str = Field(description="Failure domain (machine, rack); no row holds two of one domain.")
    data_url: str = Field(default="", description="Base URL of its data port (tract PUT/GET only); "
                                                  "empty if it has none, then `url` serves tracts too.")


class TableModel(BaseModel):
    """The tract locator table and the cluster constants clients need."""

    version: int = Field(description="Table version: the highest row version.")
    tract_size: int = Field(description="Bytes per tract; a tract may be written shorter.")
    replicas: int = Field(description="Replication level k: servers per row.")
    servers: list[ServerRef]
    rows: list[list[int]] = Field(description="Each row lists indices into `servers`; the first is the primary.")
    row_versions: list[int] = Field(description="Version of each row: the table version when its holders last changed.")
    filling: dict[int, list[int]] = Field(
        default_factory=dict,
        description="Row -> servers (indices) still copying that row's tracts: they take writes, and refuse "
                    "reads of tracts they do not have yet. Never a row's primary.")
    leaving: dict[int, list[int]] = Field(
        default_factory=dict,
        description="Row -> servers (indices) that leave the row once its filling servers are done "
                    "(adding or decommissioning servers). They hold every tract until then.")
    absent: dict[int, list[int]] = Field(
        default_factory=dict,
        description="Row -> servers (indices) declared dead out of the row's write set that may hold its last "
                    "good copy: neither written nor read, they keep the row's tracts until the row has k live, "
                    "complete holders again. One that comes back rejoins the row as filling.")


class RegisterRequest(BaseModel):
    id: str = Field(pattern=_ID)
    url: str = Field(min_length=1, max_length=300)
    data_url: str = Field(default="", max_length=300)
    disk: str = Field(default="", max_length=4096, description="The data directory, for operators.")
    domain: str = Field(min_length=1, max_length=128)
    capacity_bytes: int = Field(ge=0, le=_COUNT)

    @field_validator("url", "data_url")
    @classmethod
    def _reachable(cls, url: str) -> str:
        return _check_url(url) if url else url


class FillProgress(BaseModel):
    """How far a tract server is with copying the rows it was handed (recovery or a hand-over)."""

    rows: int = Field(default=0, ge=0, le=_COUNT, description="Rows still filling on this server.")
    tracts_done: int = Field(default=0, ge=0, le=_COUNT)
    tracts_total: int = Field(default=0, ge=0, le=_COUNT, description="Tracts to copy, as far as listed so far.")
    bytes_done: int = Field(default=0, ge=0, le=_COUNT)
    bytes_total: int = Field(default=0, ge=0, le=_COUNT)


class Traffic(BaseModel):
    """Requests a server has answered since it started, and their body bytes (every port and route).

    Counters: they only grow, and start again from 0 when the server restarts. The metaserver's
    status page turns two of them into a rate.
    """

    requests: int = Field(default=0, ge=0, le=_COUNT)
    bytes_in: int = Field(default=0, ge=0, le=_COUNT, description="Request body bytes received (mostly tract writes).")
    bytes_out: int = Field(default=0, ge=0, le=_COUNT, description="Response body bytes sent (mostly tract reads).")


class Heartbeat(BaseModel):
    tracts: int = Field(ge=0, le=_COUNT)
    bytes_used: int = Field(ge=0, le=_COUNT)
    disk_free: int = Field(ge=0, le=_COUNT)
    capacity_bytes: int = Field(ge=0, le=_COUNT)
    table_version: int = Field(ge=0, le=_COUNT, description="The table version the server is using.")
    clean_version: int = Field(default=0, ge=0, le=_COUNT,
                               description="The table version at which the server last removed "
                                           "the tracts of every row it no longer holds.")
    fill: FillProgress = Field(default_factory=FillProgress)
    traffic: Traffic = Field(default_factory=Traffic)


class FilledRequest(BaseModel):
    """A tract server reports rows it has finished copying."""

    rows: list[int] = Field(max_length=1_000_000)
    version: int = Field(ge=0, le=_COUNT, description="The table version the server filled under.")


class HeartbeatReply(BaseModel):
    table_version: int = Field(description="The current table version; refetch the table if newer.")
    lease_seconds: float | None = Field(default=None, description="The lease granted: the server may serve for this "
                                                                  "long after it sent the heartbeat. 0: no new lease "
                                                                  "(the one it has runs out); null: leases are off "
                                                                  "(it serves regardless).")


class TableAck(BaseModel):
    """A tract server's answer to a table pushed to it: the version it now uses."""

    table_version: int


class ServerStatus(BaseModel):
    id: str
    url: str
    disk: str
    domain: str
    capacity_bytes: int
    alive: bool
    heartbeat_age: float | None = Field(description="Seconds since the last heartbeat; null if none since start.")
    tracts: int
    bytes_used: int
    disk_free: int
    in_table: bool
    table_version: int
    state: MemberState = Field(default=MemberState.ACTIVE,
                               description="active, dead (declared after its heartbeat timed out, or by an "
                                           "operator), decommissioning, or decommissioned.")
    rows: int = Field(default=0, description="Rows this server holds (filling ones included).")
    filling_rows: int = Field(default=0, description="Rows this server is still copying.")
    fill: FillProgress = Field(default_factory=FillProgress)
    traffic: Traffic = Field(default_factory=Traffic, description="As of its last heartbeat (`heartbeat_age` ago).")


class PublishStatus(BaseModel):
    """A table change waiting to be published: it takes servers out of rows, and waits until each has the new
    table (pushed to it) or its lease has surely run out, so none serves a row it no longer holds."""

    table_version: int = Field(description="The version waiting.")
    waiting_for: list[str] = Field(description="Servers that have neither acknowledged it nor run out of lease.")
    since: float = Field(description="Seconds it has waited.")


class RecoveryStatus(BaseModel):
    """Re-replication under way: rows whose new holders are still copying."""

    rows_filling: int = Field(description="Rows with at least one server still copying.")
    rows_under_replicated: int = Field(description="Rows with fewer than k live holders holding every tract.")
    tracts_done: int
    tracts_total: int
    bytes_done: int
    bytes_total: int
    started: float | None = Field(default=None, description="Unix time the current repair began; null if none.")
    last_seconds: float | None = Field(default=None, description="How long the last completed repair took.")


class OutageStatus(BaseModel):
    """Too many tract servers are silent at once: an outage, not failures, so nobody is declared dead."""

    silent: list[str] = Field(description="Ids of the silent servers.")
    servers: int = Field(description="Tract servers that count: in the table, not dead or decommissioned.")
    limit: int = Field(description="Repair is held while servers of more than this many failure domains are "
                                   "silent (outage_silent).")
    message: str


class DeclaredDead(BaseModel):
    """What ``POST /v1/servers/{id}/declare-dead`` did."""

    server: str
    rows_left: int = Field(description="Rows it left (re-replicating now; it stays an absent holder meanwhile).")
    rows_kept: int = Field(description="Rows where it stays: it holds their only complete copy.")
    table_version: int


class ClusterStatus(BaseModel):
    state: ClusterState = Field(description="'waiting' until enough tract servers registered, then 'ready'.")
    table_version: int
    tract_size: int
    replicas: int
    expected_servers: int
    rows: int
    servers: list[ServerStatus]
    healthy: bool = Field(default=False, description="True only when every row has k live holders that hold "
                                                     "every tract; false from a failure's detection until repaired.")
    recovery: RecoveryStatus | None = None
    publishing: PublishStatus | None = Field(default=None, description="A table change waiting for servers it "
                                                                       "takes out of rows (see `lease_seconds`).")
    outage: OutageStatus | None = Field(default=None, description="Present while repair is held: more servers "
                                                                  "are silent than the replication level covers.")


class BlobInfo(BaseModel):
    guid: str
    tracts: int = Field(description="Number of tracts; tracts 0..tracts-1 may be written.")
    length: int | None = Field(description="Byte length when written as a stream (all tracts full but the last).")
    created: float = Field(description="Unix time of creation.")
    incarnation: int = Field(description="Changes each time the GUID is created anew; tract requests carry it, "
                                         "so a re-created blob never sees its predecessor's tracts.")


class CreatedBlob(BaseModel):
    guid: str


class ExtendRequest(BaseModel):
    count: int = Field(ge=1, le=2**32, description="How many tracts to add.")


class ExtendResult(BaseModel):
    first: int = Field(description="The first of the new tracts; the caller owns first..first+count-1.")
    count: int
    tracts: int = Field(description="The blob's size in tracts after this extend.")


class SetLengthRequest(BaseModel):
    length: int = Field(ge=0, le=_COUNT, description="The blob's byte length, recorded by stream writers.")


class MetaRecord(BaseModel):
    """A blob's metadata tract (-1) as replicated between row-mates."""

    guid: str
    tracts: int = Field(ge=0, le=_COUNT)
    length: int | None = Field(default=None, ge=0, le=_COUNT)
    created: float = Field(allow_inf_nan=False)
    seq: int = Field(ge=0, le=_COUNT, description="Bumped by every change.")
    epoch: int = Field(default=0, ge=0, le=_COUNT,
                       description="The row version under which the primary made this change; "
                                   "a replica keeps the record with the highest (epoch, seq).")
    incarnation: int = Field(default=0, ge=0, le=_COUNT, description="The seq at which this blob was created.")
    deleted: bool = False
    ops: dict[str, Annotated[int, Field(ge=-_COUNT, le=_COUNT)]] = Field(
        default_factory=dict, description="Recent client operation ids and their results (an extend's first "
                                          "tract), so a retried operation is answered, not applied twice.")


_META_BYTES = 2048
"""S3's limit on an object's user metadata (names and values, UTF-8)."""


def _check_user_meta(meta: dict[str, str]) -> dict[str, str]:
    size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())
    if size > _META_BYTES:
        raise ValueError(f"user metadata is {size} bytes; the limit is {_META_BYTES} (names and values, UTF-8)")
    for name in meta:
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,127}", name):
            raise ValueError(f"user metadata name {name[:60]!r}: use lower-case letters, digits, '.', '_' and '-'")
    return meta


def _from_base64(value: Any) -> Any:
    """JSON carries inline bytes as base64 text; Python callers pass bytes as they are."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("inline data must be base64") from None
    return value


InlineBytes = Annotated[bytes, BeforeValidator(_from_base64),
                        PlainSerializer(lambda b: base64.b64encode(b).decode(), return_type=str, when_used="json"),
                        WithJsonSchema({"type": "string", "contentEncoding": "base64"})]
"""An inline object's bytes: ``bytes`` in Python, base64 text in JSON (in both directions, whichever way a
body is parsed: FastAPI validates parsed JSON in Python mode)."""


class ObjectPut(BaseModel):
    """What a writer tells a bucket's namespace primary to point a key at: a blob it has written whole, or, for
    a small object, its bytes (``data``), kept inline in the name record."""

    blob: str = Field(default="", description="The GUID of the blob holding the object's bytes (written, length "
                                              "recorded); empty for an inline object.")
    incarnation: int = Field(default=0, ge=0, le=_COUNT)
    size: int = Field(ge=0, le=_COUNT, description="The object's length in bytes.")
    etag: str = Field(default="", max_length=128, pattern=r"^[!#-~]*$",
                      description="The object's ETag (printable ASCII, no '\"'); empty: the blob's GUID as hex.")
    content_type: str = Field(default="", max_length=256)
    meta: dict[str, str] = Field(default_factory=dict, description="User metadata, at most 2 KiB.")
    data: InlineBytes | None = Field(default=None, description="The object's bytes (base64 in JSON), for an "
                                                               "object of at most fds.names.INLINE_MAX (16 KiB) "
                                                               "bytes stored inline; then no blob.")

    @field_validator("meta")
    @classmethod
    def _meta_size(cls, meta: dict[str, str]) -> dict[str, str]:
        return _check_user_meta(meta)

    @model_validator(mode="after")
    def _blob_or_data(self) -> ObjectPut:
        if (self.data is None) == (not self.blob):
            raise ValueError("give either a blob or the object's bytes inline (data), not both or neither")
        if self.data is not None and len(self.data) > INLINE_MAX:
            raise ValueError(f"inline data is {len(self.data)} bytes; at most {INLINE_MAX} are kept inline (write "
                             "a larger object to a blob)")
        if self.data is not None and len(self.data) != self.size:
            raise ValueError(f"size is {self.size} but the inline data is {len(self.data)} bytes")
        return self


class NameRecord(BaseModel):
    """One name of a bucket as the holders of its namespace row keep it (replicated with the two-phase commit
    of blob metadata). Key ``""`` is the bucket's own record, present while the bucket exists; in the bucket
    catalogue every key is a bucket's name."""

    ns: str = Field(description="The namespace GUID (fds.names.bucket_guid, or the catalogue's).")
    key: str = Field(max_length=1024)
    blob: str = Field(default="", description="The object's blob GUID; empty for a bucket's record.")
    incarnation: int = Field(default=0, ge=0, le=_COUNT)
    size: int = Field(default=0, ge=0, le=_COUNT)
    etag: str = Field(default="", max_length=128)
    mtime: float = Field(allow_inf_nan=False, description="Unix time the name last changed (a bucket: created).")
    content_type: str = Field(default="", max_length=256)
    meta: dict[str, str] = Field(default_factory=dict)
    seq: int = Field(default=0, ge=0, le=_COUNT, description="Bumped by every change of this name.")
    epoch: int = Field(default=0, ge=0, le=_COUNT, description="The row version under which the primary made "
                                                               "this change; holders keep the highest (epoch, seq).")
    deleted: bool = False
    ops: dict[str, Annotated[int, Field(ge=-_COUNT, le=_COUNT)]] = Field(
        default_factory=dict, description="Recent client operation ids, so a retried change is not applied twice.")
    data: InlineBytes | None = Field(default=None, description="An inline object's bytes (then ``blob`` is empty); "
                                                               "stored beside the record, never in listings.")


class MetaRecords(BaseModel):
    """Metadata records of blobs of one row that their primary prepares on the other holders together."""

    records: list[MetaRecord] = Field(min_length=1, max_length=256)


class NameRecords(BaseModel):
    """Name records a namespace primary prepares on the other holders of its row: applied in one step."""

    records: list[NameRecord] = Field(min_length=1, max_length=512)


class ObjectInfo(BaseModel):
    """An object as a bucket lists it."""

    key: str
    size: int
    etag: str
    mtime: float = Field(description="Unix time the object was written.")
    content_type: str = ""
    meta: dict[str, str] = Field(default_factory=dict)
    blob: str = Field(description="The GUID of the blob holding its bytes (tracts are read straight from it); "
                                  "empty for a small object whose bytes are kept inline in its name record.")
    incarnation: int = Field(description="The blob's incarnation; 0 for an inline object.")


class NameListing(BaseModel):
    """One page of a bucket's keys in order (UTF-8 byte order, as S3)."""

    objects: list[ObjectInfo]
    prefixes: list[str] = Field(default_factory=list, description="With a delimiter: the common prefixes.")
    next: str | None = Field(default=None, description="Where the next page starts after (a key or prefix); "
                                                       "null on the last page.")


class BucketInfo(BaseModel):
    name: str
    created: float


class RenameRequest(BaseModel):
    source: str = Field(min_length=1, max_length=1024)
    target: str = Field(min_length=1, max_length=1024)
    if_match: str | None = Field(default=None, max_length=130, description="Rename only if the source's ETag is this.")
    if_none_match: bool = Field(default=False, description="Rename only if the target does not exist.")


class RowListing(BaseModel):
    """What one holder has of some rows: every tract (as ``[guid, incarnation, tract, length, checksum,
    stamp, writer]``: stamp and writer are its version), every metadata record and every name record."""

    tracts: list[tuple[str, int, int, int, str, int, int]]
    meta: list[MetaRecord]
    names: list[NameRecord] = Field(default_factory=list)


class RowsRequest(BaseModel):
    rows: list[int] = Field(max_length=1_000_000)
    version: int = Field(ge=0, le=_COUNT)


class TractWritten(BaseModel):
    length: int
    checksum: str = Field(description="xxh3_64 of the tract, 16 hex digits.")
    stamp: int = Field(default=0, description="The version stored: the write's own, or the server's if it sent none.")
    writer: int = Field(default=0)


class TractServerStats(BaseModel):
    id: str
    url: str
    tracts: int
    bytes_used: int
    disk_free: int
    capacity_bytes: int
    table_version: int
    copied_tracts: int = Field(default=0, description="Tracts copied here from row-mates since the server started "
                                                      "(filling rows, scrub repairs).")
    copied_bytes: int = Field(default=0, description="Their bytes.")
