"""S3 access keys: what they are, where they live, and the credentials file the aws cli reads.

An access key is an id (``FDS`` and 17 letters and digits, shaped like AWS's) with a scope, ``read`` or
``write`` (fds's token scopes: a read-only key may GET, HEAD and list). Its **record** is an object in
the reserved bucket ``fds-s3-system`` (key ``key/ID``; the scope and a random salt in its metadata), so
it is replicated like every name and any number of S3 servers see the same keys.

The record holds no secret. The **secret** is derived from the cluster secret::

    secret = base64(HMAC-SHA256(cluster secret, "fds-s3/" + ID + "/" + salt))[:40]

so only a holder of the cluster secret (the S3 servers, an operator running ``fds s3 key create``) can
compute it, and a reader of the bucket learns nothing that signs a request. Replacing the cluster secret
invalidates every access key. The S3 server, the CLI and :mod:`fds.local` share this module; it needs
only a client, no web framework.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fds.errors import BucketExists, BucketNotFound, KeyNotFound

if TYPE_CHECKING:
    from fds.client import Bucket, Client

__all__ = [
    "SYSTEM_BUCKET",
    "AccessKey",
    "new_access_key_id",
    "derive_secret",
    "system_bucket",
    "create_key",
    "get_key",
    "list_keys",
    "delete_key",
    "write_credentials_file",
    "read_credentials_file",
]

SYSTEM_BUCKET = "fds-s3-system"
"""The bucket holding the S3 endpoint's own records (access keys, multipart uploads); S3 clients may not touch it."""
_PREFIX = "key/"
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass(frozen=True)
class AccessKey:
    """One access key: its id, scope (``read`` or ``write``), creation time, and (when known) its secret."""

    access_key: str
    scope: str
    created: float
    salt: str
    secret: str = ""


def new_access_key_id() -> str:
    """A fresh id: ``FDS`` and 17 random characters of A-Z2-7."""
    return "FDS" + "".join(secrets.choice(_ALPHABET) for _ in range(17))


def derive_secret(cluster_secret: bytes, access_key: str, salt: str) -> str:
    """The secret access key of ``access_key`` (40 characters, as AWS's)."""
    digest = hmac.new(cluster_secret, f"fds-s3/{access_key}/{salt}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()[:40]


async def system_bucket(client: Client) -> Bucket:
    """The reserved bucket, created if missing."""
    try:
        return await client.create_bucket(SYSTEM_BUCKET)
    except BucketExists:
        return client.bucket(SYSTEM_BUCKET)


async def create_key(client: Client, cluster_secret: bytes, *, read_only: bool = False) -> AccessKey:
    """Make a new access key (recorded in the cluster) and return it with its secret."""
    bucket = await system_bucket(client)
    key_id, salt = new_access_key_id(), secrets.token_hex(8)
    scope = "read" if read_only else "write"
    info = await bucket.put(_PREFIX + key_id, b"", meta={"scope": scope, "salt": salt}, if_none_match=True)
    return AccessKey(key_id, scope, info.mtime, salt, derive_secret(cluster_secret, key_id, salt))


async def get_key(client: Client, access_key: str) -> AccessKey | None:
    """The record of ``access_key`` (without its secret), or None if there is none."""
    if not access_key or len(access_key) > 128 or not access_key.isalnum():
        return None
    try:
        info = await client.bucket(SYSTEM_BUCKET).head(_PREFIX + access_key)
    except (KeyNotFound, BucketNotFound):
        return None
    return AccessKey(access_key, info.meta.get("scope", "read"), info.mtime, info.meta.get("salt", ""))


async def list_keys(client: Client) -> list[AccessKey]:
    """Every access key (without secrets), by id."""
    out: list[AccessKey] = []
    try:
        async for item in client.bucket(SYSTEM_BUCKET).iter(_PREFIX):
            if not isinstance(item, str):
                out.append(AccessKey(item.key[len(_PREFIX):], item.meta.get("scope", "read"), item.mtime,
                                     item.meta.get("salt", "")))
    except BucketNotFound:
        return []
    return out


async def delete_key(client: Client, access_key: str) -> None:
    """Delete an access key (KeyNotFound if there is none); S3 servers stop admitting it within their cache time."""
    try:
        await client.bucket(SYSTEM_BUCKET).delete(_PREFIX + access_key)
    except BucketNotFound:
        raise KeyNotFound(f"no access key {access_key!r}") from None
    except KeyNotFound:
        raise KeyNotFound(f"no access key {access_key!r}") from None


def write_credentials_file(path: str | os.PathLike[str], key: AccessKey, profile: str = "fds") -> None:
    """Write ``key`` as profile ``profile`` of an aws cli credentials file, readable by its owner only."""
    text = (f"# fds S3 access key, created {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(key.created))}\n"
            f"[{profile}]\naws_access_key_id = {key.access_key}\naws_secret_access_key = {key.secret}\n")
    tmp = Path(f"{os.fspath(path)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_credentials_file(path: str | os.PathLike[str], profile: str = "fds") -> tuple[str, str]:
    """``(access key id, secret)`` of ``profile`` in an aws cli credentials file; KeyError if it is not there."""
    import configparser

    parser = configparser.ConfigParser()
    parser.read(path)
    section = parser[profile]
    return section["aws_access_key_id"], section["aws_secret_access_key"]
