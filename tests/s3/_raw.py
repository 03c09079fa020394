"""Raw S3 requests, signed by botocore's own SigV4 signer (or not, or badly), sent with httpx.

For what boto3 will not send: unsigned and forged requests, presigned URLs signed in the past,
malformed XML bodies, arbitrary headers. :func:`s3_error` reads S3's XML error body.
"""

from __future__ import annotations

import datetime
import hashlib
import urllib.parse
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import botocore.auth
import httpx
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.s3._targets import REGION, S3Target

__all__ = ["url_of", "send", "presigned_url", "signed_at", "s3_error"]


def url_of(target: S3Target, path: str, query: str = "") -> str:
    """The endpoint's URL for ``path`` (percent-encoded as S3 wants: every byte but ``/`` and unreserved ones)."""
    encoded = urllib.parse.quote(path, safe="/~")
    return f"{target.endpoint}{encoded}" + (f"?{query}" if query else "")


@contextmanager
def signed_at(when: datetime.datetime) -> Iterator[None]:
    """Sign as though the clock read ``when`` (botocore reads the time through one function)."""
    original = botocore.auth.get_current_datetime
    botocore.auth.get_current_datetime = lambda: when.replace(tzinfo=None)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        botocore.auth.get_current_datetime = original  # type: ignore[attr-defined]


def send(target: S3Target, method: str, path: str, *, query: str = "", body: bytes = b"",
         headers: Mapping[str, str] | None = None, key: tuple[str, str] | None = None, sign: bool = True,
         client: httpx.Client | None = None, timeout: float = 60) -> httpx.Response:
    """Send one request; signed with ``key`` (default: the target's) unless ``sign`` is False."""
    url = url_of(target, path, query)
    all_headers = {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), **(headers or {})}
    if sign:
        access, secret = key or (target.access_key, target.secret_key)
        request = AWSRequest(method=method, url=url, data=body, headers=all_headers)
        S3SigV4Auth(Credentials(access, secret), "s3", REGION).add_auth(request)
        all_headers = dict(request.headers.items())
    if client is not None:
        return client.request(method, url, content=body, headers=all_headers, timeout=timeout)
    return httpx.request(method, url, content=body, headers=all_headers, timeout=timeout)


def presigned_url(target: S3Target, method: str, path: str, *, query: str = "", expires: int = 3600,
                  key: tuple[str, str] | None = None) -> str:
    """A SigV4 presigned URL (``X-Amz-*`` in the query) for ``method`` on ``path``."""
    access, secret = key or (target.access_key, target.secret_key)
    request = AWSRequest(method=method, url=url_of(target, path, query), data=b"")
    S3SigV4QueryAuth(Credentials(access, secret), "s3", REGION, expires=expires).add_auth(request)
    return str(request.url)


def s3_error(response: httpx.Response) -> dict[str, Any]:
    """The fields of S3's XML error body (``Code``, ``Message``, ...); AssertionError if it is not one."""
    try:
        root = ElementTree.fromstring(response.content)
    except ElementTree.ParseError as error:
        raise AssertionError(f"{response.status_code} without an XML body: {response.content[:300]!r}") from error
    assert root.tag == "Error", f"{response.status_code}: XML but not an S3 error: {response.content[:300]!r}"
    fields = {child.tag: child.text or "" for child in root}
    assert fields.get("Code") and fields.get("Message"), response.content[:300]
    return fields
