"""AWS Signature Version 2, which older clients send and boto3 still uses for presigned URLs by default.

``Authorization: AWS ACCESS_KEY:SIGNATURE`` or ``?AWSAccessKeyId=..&Expires=..&Signature=..``, where the
signature is base64(HMAC-SHA1(secret, string to sign)) and the string to sign is::

    METHOD \\n Content-MD5 \\n Content-Type \\n Date-or-Expires \\n x-amz-* headers \\n /BUCKET/KEY?subresources

Version 2 signs no payload hash; the body is still checked against Content-MD5 and any checksum sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import unquote

from fds.s3._sigv4 import MAX_SKEW
from fds.s3._xml import S3Error

__all__ = ["V2Request", "parse_v2", "string_to_sign", "verify_v2"]

_SUBRESOURCES = frozenset({
    "accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy",
    "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId",
    "response-content-type", "response-content-language", "response-expires", "response-cache-control",
    "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore",
    "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select", "select-type",
    "object-lock"})


@dataclass(frozen=True, slots=True)
class V2Request:
    """A Signature Version 2 request: who signed, the signature, and (presigned) when it expires."""

    access_key: str
    signature: str
    expires: int | None = None


def parse_v2(headers: dict[str, str], query_string: str) -> V2Request | None:
    """The request's version 2 signature, or None if it has none."""
    header = headers.get("authorization", "")
    if header.startswith("AWS "):
        access_key, sep, signature = header[4:].strip().rpartition(":")
        if not sep or not access_key or not signature:
            raise S3Error("InvalidArgument", "the Authorization header is malformed: want AWS ACCESS_KEY:SIGNATURE")
        return V2Request(access_key, signature)
    if "Signature=" in query_string and "AWSAccessKeyId=" in query_string and "X-Amz-" not in query_string:
        params = {}
        for part in query_string.split("&"):
            name, _, value = part.partition("=")
            params[unquote(name)] = unquote(value)
        expires = params.get("Expires", "")
        if not expires.isdigit():
            raise S3Error("AccessDenied", "a presigned URL of Signature Version 2 needs Expires (Unix seconds)", 403)
        return V2Request(params.get("AWSAccessKeyId", ""), params.get("Signature", ""), int(expires))
    return None


def string_to_sign(method: str, raw_path: str, query_string: str, headers: dict[str, str],
                   expires: int | None) -> str:
    amz = sorted((name, value) for name, value in headers.items() if name.startswith("x-amz-"))
    date = str(expires) if expires is not None else ("" if "x-amz-date" in headers else headers.get("date", ""))
    lines = [method, headers.get("content-md5", ""), headers.get("content-type", ""), date]
    lines += [f"{name}:{value.strip()}" for name, value in amz]
    sub = []
    for part in query_string.split("&"):
        name, eq, value = part.partition("=")
        if name in _SUBRESOURCES:
            sub.append((name, f"{name}={unquote(value)}" if eq else name))
    resource = raw_path + ("?" + "&".join(text for _, text in sorted(sub)) if sub else "")
    return "\n".join([*lines, resource])


def verify_v2(req: V2Request, secret: str, *, method: str, raw_path: str, query_string: str,
              headers: dict[str, str], now: float | None = None) -> None:
    """Check a version 2 signature and its time; S3Error if it fails."""
    now = time.time() if now is None else now
    if req.expires is not None:
        if now > req.expires:
            raise S3Error("AccessDenied", "Request has expired", 403)
    else:
        stamp = headers.get("x-amz-date") or headers.get("date")
        try:
            signed_at = parsedate_to_datetime(stamp or "").timestamp()
        except (TypeError, ValueError, IndexError):
            raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header",
                          403) from None
        if abs(now - signed_at) > MAX_SKEW:
            raise S3Error("RequestTimeTooSkewed", "the difference between the request time and the server's time is "
                          "too large (more than 15 minutes): check the client's clock", 403)
    text = string_to_sign(method, raw_path, query_string, headers, req.expires)
    expected = base64.b64encode(hmac.new(secret.encode(), text.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(expected, req.signature):
        raise S3Error("SignatureDoesNotMatch", "the request signature we calculated does not match the signature "
                      "you provided; check your secret access key and signing method", 403,
                      extra={"AWSAccessKeyId": req.access_key[:128]})
