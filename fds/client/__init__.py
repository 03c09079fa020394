"""The fds client library.

Async first::

    from fds.client import Client

    async with Client("http://127.0.0.1:7000") as fds:
        blob = await fds.create_blob()
        first = await blob.extend(2)
        await blob.write_tract(first, b"hello")
        data = await blob.read_tract(first)
        await blob.write_from("big.bin")          # whole files, many tracts in flight

and a blocking twin for scripts, :class:`SyncClient`. Errors are the tree
in :mod:`fds.errors`, re-exported here: catch :class:`FDSError` for all of
them, or a subclass such as :class:`BlobNotFound` or :class:`StaleVersion`
(which the client already handles by refetching the table and retrying).
"""

from fds.client._blob import Blob, Progress
from fds.client._client import DEFAULT_IN_FLIGHT, Client
from fds.client._sync import SyncBlob, SyncClient
from fds.errors import (
    BadRequest,
    BlobExists,
    BlobNotFound,
    ChecksumMismatch,
    Conflict,
    DiskFull,
    FDSError,
    Forbidden,
    NotFound,
    PastEnd,
    StaleVersion,
    Superseded,
    TableNotReady,
    TractNotFound,
    TractTooLarge,
    Unauthorized,
    Unavailable,
)
from fds.models import BlobInfo, ClusterStatus

__all__ = [
    "Client",
    "Blob",
    "SyncClient",
    "SyncBlob",
    "BlobInfo",
    "ClusterStatus",
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
    "Conflict",
    "BlobExists",
    "StaleVersion",
    "Superseded",
    "PastEnd",
    "DiskFull",
    "Unavailable",
    "ChecksumMismatch",
    "TableNotReady",
]
