"""The fds client library.

Async first::

    from fds.client import Client

    async with Client("http://127.0.0.1:7000") as fds:
        blob = await fds.create_blob()
        first = await blob.extend(2)
        await blob.write_tract(first, b"hello")
        data = await blob.read_tract(first)
        await blob.write_from("big.bin")          # whole files, many tracts in flight

Buckets and keys (objects are blobs with names; writes switch the name atomically)::

    async with Client("http://127.0.0.1:7000") as fds:
        bucket = await fds.create_bucket("logs")
        info = await bucket.put("2024/05/app.log", b"...", if_none_match=True)
        data = await bucket.get("2024/05/app.log", 0, 100)   # a range: only its tracts
        page = await bucket.list("2024/", delimiter="/")

and a blocking twin for scripts, :class:`SyncClient`. Errors are the tree
in :mod:`fds.errors`, re-exported here: catch :class:`FDSError` for all of
them, or a subclass such as :class:`BlobNotFound` or :class:`StaleVersion`
(which the client already handles by refetching the table and retrying).
"""

from fds.client._blob import Blob, Progress
from fds.client._client import DEFAULT_IN_FLIGHT, Client
from fds.client._names import Bucket, ListPage, ObjectReader, ObjectWriter
from fds.client._sync import SyncBlob, SyncClient
from fds.errors import (
    BadRequest,
    BlobExists,
    BlobNotFound,
    BucketExists,
    BucketNotEmpty,
    BucketNotFound,
    ChecksumMismatch,
    Conflict,
    DiskFull,
    FDSError,
    Forbidden,
    KeyNotFound,
    NotFound,
    PastEnd,
    PreconditionFailed,
    StaleVersion,
    Superseded,
    TableNotReady,
    TractNotFound,
    TractTooLarge,
    Unauthorized,
    Unavailable,
)
from fds.models import BlobInfo, BucketInfo, ClusterStatus, ObjectInfo

__all__ = [
    "Client",
    "Blob",
    "SyncClient",
    "SyncBlob",
    "BlobInfo",
    "ClusterStatus",
    "Bucket",
    "BucketInfo",
    "ObjectInfo",
    "ListPage",
    "ObjectReader",
    "ObjectWriter",
    "Progress",
    "DEFAULT_IN_FLIGHT",
    "FDSError",
    "BadRequest",
    "TractTooLarge",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "BlobNotFound",
    "TractNotFound",
    "BucketNotFound",
    "KeyNotFound",
    "Conflict",
    "BlobExists",
    "BucketExists",
    "BucketNotEmpty",
    "PreconditionFailed",
    "StaleVersion",
    "Superseded",
    "PastEnd",
    "DiskFull",
    "Unavailable",
    "ChecksumMismatch",
    "TableNotReady",
]
