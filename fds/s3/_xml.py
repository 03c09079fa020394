"""S3's XML: error bodies, the documents the endpoint answers with, and parsing what clients send.

Every refusal is an :class:`S3Error` carrying S3's error code and status; :func:`error_body` turns it into
S3's ``<Error>`` document. fds's own errors map onto S3's codes in :func:`from_fds`, in one place.
Responses are built from strings (escaped with :func:`esc`): they are small, and building them this way
costs a few microseconds where a tree costs tens.
"""

from __future__ import annotations

import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from xml.sax.saxutils import escape

from fds.errors import FDSError

__all__ = [
    "S3Error",
    "from_fds",
    "error_body",
    "esc",
    "iso_time",
    "document",
    "parse_xml",
    "child_text",
    "children",
    "MAX_XML_BODY",
]

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BODY = 2 << 20
"""The most bytes of XML a request may carry (10,000 parts of a CompleteMultipartUpload fit)."""


class S3Error(Exception):
    """A refusal in S3's terms: ``code`` (``NoSuchKey``...), HTTP ``status``, a message saying what to fix."""

    def __init__(self, code: str, message: str, status: int = 400, *, headers: dict[str, str] | None = None,
                 extra: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}
        self.extra = extra or {}
        """More elements of the error document (``BucketName``, ``Key``, ``Condition``...)."""


_BY_CODE: dict[str, tuple[str, int]] = {
    "no_such_bucket": ("NoSuchBucket", 404),
    "bucket_not_found": ("NoSuchBucket", 404),
    "no_such_key": ("NoSuchKey", 404),
    "key_not_found": ("NoSuchKey", 404),
    "bucket_exists": ("BucketAlreadyOwnedByYou", 409),
    "bucket_not_empty": ("BucketNotEmpty", 409),
    "precondition_failed": ("PreconditionFailed", 412),
    "bad_bucket_name": ("InvalidBucketName", 400),
    "disk_full": ("ServiceUnavailable", 503),
}
_BY_STATUS: dict[int, str] = {400: "InvalidRequest", 401: "AccessDenied", 403: "AccessDenied", 404: "NoSuchKey",
                              409: "OperationAborted", 412: "PreconditionFailed", 413: "EntityTooLarge",
                              416: "InvalidRange", 503: "ServiceUnavailable", 507: "ServiceUnavailable"}


def from_fds(exc: FDSError) -> S3Error:
    """The S3 error for an fds error (a missing bucket is ``NoSuchBucket``, a full disk ``ServiceUnavailable``...)."""
    if exc.code == "bad_key":
        code, status = ("KeyTooLongError" if "the limit is" in exc.message else "InvalidArgument"), 400
    elif exc.code in _BY_CODE:
        code, status = _BY_CODE[exc.code]
    elif exc.status in _BY_STATUS:
        code, status = _BY_STATUS[exc.status], exc.status
    else:
        code, status = "InternalError", 500
    headers = {"retry-after": "1"} if status == 503 else None
    return S3Error(code, exc.message, status, headers=headers)


_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def esc(text: str) -> str:
    """``text`` escaped for an XML element's content; characters XML 1.0 cannot hold at all (control
    characters other than tab and newlines, which S3 keys may contain) become U+FFFD."""
    return escape(_NOT_XML.sub("\ufffd", text))


def iso_time(t: float) -> str:
    """S3's timestamp format: ``2024-05-01T12:00:00.000Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def error_body(error: S3Error, resource: str, request_id: str) -> bytes:
    """S3's ``<Error>`` document for ``error`` on ``resource`` (the request's path)."""
    extra = "".join(f"<{name}>{esc(value)}</{name}>" for name, value in error.extra.items())
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{error.code}</Code>'
            f"<Message>{esc(error.message)}</Message>{extra}<Resource>{esc(resource)}</Resource>"
            f"<RequestId>{esc(request_id)}</RequestId></Error>").encode()


def document(root: str, parts: Iterable[str]) -> bytes:
    """A response document: ``<root xmlns=S3>parts...</root>``."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{XMLNS}">' + "".join(parts)
            + f"</{root}>").encode()


def parse_xml(body: bytes, root: str) -> ET.Element:
    """Parse a request document whose root element is ``root`` (any namespace), or MalformedXML."""
    if not body.strip():
        raise S3Error("MalformedXML", f"the request body is empty; it must be a <{root}> document")
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise S3Error("MalformedXML", "document type declarations and entities are not accepted")
    try:
        element = ET.fromstring(body)
    except ET.ParseError as exc:
        raise S3Error("MalformedXML", f"the XML you provided was not well-formed: {exc}") from None
    if _local(element.tag) != root:
        raise S3Error("MalformedXML", f"the document's root element is <{_local(element.tag)}>, not <{root}>")
    return element


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def children(element: ET.Element, name: str) -> list[ET.Element]:
    """The child elements called ``name`` (any namespace)."""
    return [c for c in element if _local(c.tag) == name]


def child_text(element: ET.Element, name: str) -> str | None:
    """The text of the first child called ``name`` ('' if it is empty), or None if there is none."""
    for c in element:
        if _local(c.tag) == name:
            return c.text or ""
    return None
