"""The fds exception tree, and the one place each error meets HTTP.

::

    FDSError                      base of everything fds raises
     ├── BadRequest          400  the request is malformed; the message says what to fix
     │    └── TractTooLarge  413  a tract body longer than the cluster's tract size
     ├── Unauthorized        401  missing, malformed, expired or foreign credentials
     ├── Forbidden           403  valid credentials whose scope does not allow this (a read-only token)
     ├── NotFound            404
     │    ├── BlobNotFound   404  no blob with this GUID
     │    ├── TractNotFound  404  the tract was never written
     │    ├── BucketNotFound 404  no bucket of this name
     │    └── KeyNotFound    404  no object under this key in the bucket
     ├── Conflict            409
     │    ├── BlobExists     409  create with a GUID that is taken
     │    ├── BucketExists   409  create a bucket whose name is taken
     │    ├── BucketNotEmpty 409  delete a bucket that still holds objects
     │    ├── StaleVersion   409  the caller's tract locator table is out of date: refetch it
     │    └── Superseded     409  a tract write older than the version stored: write again, newer
     ├── PreconditionFailed  412  a conditional write whose condition does not hold (If-Match, If-None-Match)
     ├── PastEnd             416  a tract at or beyond the blob's size: extend first
     ├── DiskFull            507  the tract server's disk has no room; nothing was written
     └── Unavailable         503  no replica could serve the request right now
          ├── ChecksumMismatch 503  this copy failed its checksum; read another replica
          └── TableNotReady  503  the metaserver is still waiting for tract servers

Every error crosses the wire as ``{"error": {"code": ..., "message": ...}}``
with the status above; :func:`error_from_response` turns it back into the same
class on the client side, so a caller catches ``fds.client.StaleVersion``
whether it came from this process or a server.
"""

from __future__ import annotations

from typing import Any, ClassVar

import orjson

__all__ = [
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
    "error_from_response",
]


class FDSError(Exception):
    """Base of every fds error. ``status`` is its HTTP status, ``code`` a stable name."""

    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.details = details

    def to_body(self) -> bytes:
        """The JSON error body sent on the wire."""
        return orjson.dumps({"error": {"code": self.code, "message": self.message, **self.details}})


class BadRequest(FDSError):
    status = 400
    default_code = "bad_request"


class TractTooLarge(BadRequest):
    status = 413
    default_code = "tract_too_large"


class Unauthorized(FDSError):
    status = 401
    default_code = "unauthorized"


class Forbidden(FDSError):
    status = 403
    default_code = "forbidden"


class NotFound(FDSError):
    status = 404
    default_code = "not_found"


class BlobNotFound(NotFound):
    default_code = "blob_not_found"


class TractNotFound(NotFound):
    default_code = "tract_not_found"


class BucketNotFound(NotFound):
    default_code = "no_such_bucket"


class KeyNotFound(NotFound):
    default_code = "no_such_key"


class Conflict(FDSError):
    status = 409
    default_code = "conflict"


class BlobExists(Conflict):
    default_code = "blob_exists"


class BucketExists(Conflict):
    default_code = "bucket_exists"


class BucketNotEmpty(Conflict):
    default_code = "bucket_not_empty"


class StaleVersion(Conflict):
    """The table version the caller used is out of date. Refetch the table and retry."""

    default_code = "stale_version"


class Superseded(Conflict):
    """A tract write whose version is older than the one the replica holds (``details``: its ``stamp`` and
    ``writer``). The client moves its clock past it and writes again (see :mod:`fds.versions`)."""

    default_code = "superseded"


class PreconditionFailed(FDSError):
    """A conditional write (``if_match``, ``if_none_match``) whose condition did not hold; nothing changed.
    ``details`` carry the current ``etag`` when there is an object."""

    status = 412
    default_code = "precondition_failed"


class PastEnd(FDSError):
    status = 416
    default_code = "past_end"


class DiskFull(FDSError):
    status = 507
    default_code = "disk_full"


class Unavailable(FDSError):
    status = 503
    default_code = "unavailable"


class ChecksumMismatch(Unavailable):
    default_code = "checksum_mismatch"


class TableNotReady(Unavailable):
    default_code = "table_not_ready"


_BY_CODE: dict[str, type[FDSError]] = {
    cls.default_code: cls
    for cls in (
        BadRequest, TractTooLarge, Unauthorized, Forbidden, NotFound, BlobNotFound, TractNotFound,
        BucketNotFound, KeyNotFound, Conflict, BlobExists, BucketExists, BucketNotEmpty, StaleVersion,
        Superseded, PreconditionFailed, PastEnd, DiskFull, Unavailable,
        ChecksumMismatch, TableNotReady,
    )
}
_BY_STATUS: dict[int, type[FDSError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TractTooLarge,
    412: PreconditionFailed, 416: PastEnd, 503: Unavailable, 507: DiskFull,
}


def error_from_response(status: int, body: bytes | bytearray, *, where: str = "") -> FDSError:
    """Rebuild the error a server sent. Unknown shapes still give a useful message."""
    code = None
    message = ""
    details: dict[str, Any] = {}
    try:
        payload = orjson.loads(body)
        err = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(err, dict):
            code = err.pop("code", None)
            if not isinstance(code, str):  # a malformed body must not crash the caller
                code = None
            message = str(err.pop("message", ""))
            details = err
    except orjson.JSONDecodeError:
        message = bytes(body[:200]).decode("utf-8", "replace")
    cls = _BY_CODE.get(code or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else FDSError
    text = message or f"HTTP {status}"
    if where:
        text = f"{where}: {text}"
    return cls(text, code=code, **details)
