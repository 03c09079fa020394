"""What S3 answers, as pure functions: listing pages, ETags, and a call's outcome as (status, error code).

The listing model follows S3's documentation of ListObjectsV2: keys in UTF-8 byte order after
``start_after`` and under ``prefix``; with a delimiter, every key whose rest holds it rolls up into
one common prefix; keys and common prefixes together count towards ``max_keys``. The tests check
that both moto and fds page exactly as this model does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

__all__ = ["Page", "list_pages", "multipart_etag", "md5_etag", "outcome"]


@dataclass(frozen=True)
class Page:
    """One page of a listing: its keys, its common prefixes, and whether more follow."""

    keys: tuple[str, ...]
    prefixes: tuple[str, ...]
    truncated: bool


def list_pages(keys: Iterable[str], *, prefix: str = "", delimiter: str = "", start_after: str = "",
               max_keys: int = 1000) -> list[Page]:
    """The pages S3 returns for these keys and listing parameters (at least one, maybe empty)."""
    entries: list[tuple[str, bool]] = []  # (key or common prefix, is a prefix)
    seen: set[str] = set()
    for key in sorted(set(keys), key=lambda k: k.encode()):
        if key.encode() <= start_after.encode() or not key.startswith(prefix):
            continue
        rest = key[len(prefix):]
        if delimiter and delimiter in rest:
            common = prefix + rest[: rest.index(delimiter) + len(delimiter)]
            if common not in seen:
                seen.add(common)
                entries.append((common, True))
        else:
            entries.append((key, False))
    pages: list[Page] = []
    for start in range(0, max(len(entries), 1), max_keys):
        chunk = entries[start:start + max_keys]
        pages.append(Page(tuple(e for e, is_prefix in chunk if not is_prefix),
                          tuple(e for e, is_prefix in chunk if is_prefix), start + max_keys < len(entries)))
    return pages


def md5_etag(data: bytes) -> str:
    """The ETag S3 gives an object uploaded in one part: its MD5, quoted."""
    return f'"{hashlib.md5(data).hexdigest()}"'


def multipart_etag(parts: Iterable[bytes]) -> str:
    """The ETag S3 gives a multipart upload: the MD5 of the parts' MD5s, a dash and the part count."""
    digests = [hashlib.md5(p).digest() for p in parts]
    return f'"{hashlib.md5(b"".join(digests)).hexdigest()}-{len(digests)}"'


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, str]:
    """Call a boto3 operation: (HTTP status, "") on success, (status, S3 error code) on an error."""
    try:
        response = call(*args, **kwargs)
    except ClientError as error:
        return int(error.response["ResponseMetadata"]["HTTPStatusCode"]), str(error.response["Error"].get("Code"))
    return int(response["ResponseMetadata"]["HTTPStatusCode"]), ""
