"""Names: buckets and keys, the rules they follow, and where each bucket's names live.

Every role that meets a name shares this module: the client checks a name
before it sends it, the tract servers check it again, the gateway and the
CLI report the same message.

- **Bucket names** follow S3's rules for general purpose buckets: 3 to 63
  characters of lower-case letters, digits, ``.`` and ``-``; beginning and
  ending with a letter or digit; no ``..``; not shaped like an IP address;
  none of S3's reserved prefixes and suffixes.
- **Keys** are 1 to 1024 bytes of UTF-8 (S3's limit), without NUL. Keys sort
  by their UTF-8 bytes, as S3 lists them.
- **User metadata in HTTP headers** (the gateway's ``X-FDS-Meta-*``, S3's
  ``x-amz-meta-*``): :func:`meta_header_value` and :func:`meta_header_text`
  carry any UTF-8 value the way S3 does (RFC 2047 base64 when it is not
  printable ASCII).

**Where names live.** A bucket's names are records in the RocksDB of the
tract servers holding one row of the table: the row of the bucket's
*namespace GUID* (:func:`bucket_guid`), taken as tract -1, the way a blob's
metadata is placed. The primary of that row orders every change to the
bucket's names with the two-phase commit blob metadata uses. The list of
buckets is the namespace of one well-known GUID (:data:`CATALOGUE`).
Objects of at most :data:`INLINE_MAX` bytes live inside their name record.
See docs/architecture.md, "Names".
"""

from __future__ import annotations

import base64
import binascii
import re

import xxhash

from fds.errors import BadRequest

__all__ = [
    "CATALOGUE",
    "INLINE_MAX",
    "MAX_KEY_BYTES",
    "bucket_guid",
    "check_bucket",
    "check_key",
    "check_prefix",
    "encode_token",
    "decode_token",
    "meta_header_value",
    "meta_header_text",
]

MAX_KEY_BYTES = 1024
"""S3's limit on a key's UTF-8 length."""

INLINE_MAX = 16 << 10
"""Objects of at most this many bytes are kept inline in their name record, not in a blob: a put is one
request (the namespace primary's replicated, group-committed record change), a get is one lookup. Larger
objects are written to a blob. See docs/architecture.md, "Small objects inline"."""

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IP = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_RULES = ("bucket names are 3-63 characters of lower-case letters, digits, '.' and '-', beginning and ending with "
          "a letter or digit (S3's rules)")


def bucket_guid(bucket: str) -> bytes:
    """The namespace GUID of ``bucket``: where its names are placed (its tract -1 row)."""
    return xxhash.xxh3_128_digest(b"fds/bucket/" + bucket.encode())


CATALOGUE = xxhash.xxh3_128_digest(b"fds/catalogue")
"""The namespace GUID of the list of buckets."""


def check_bucket(name: str) -> str:
    """``name`` if it is a valid bucket name; else BadRequest (code ``bad_bucket_name``) saying why."""
    if not isinstance(name, str) or not _BUCKET.fullmatch(name):
        shown = name[:80] if isinstance(name, str) else type(name).__name__
        raise BadRequest(f"bad bucket name {shown!r}: {_RULES}", code="bad_bucket_name")
    why = None
    if ".." in name:
        why = "it has two dots in a row"
    elif _IP.fullmatch(name):
        why = "it is shaped like an IP address"
    elif name.startswith(_RESERVED_PREFIXES):
        why = f"names may not begin with {', '.join(_RESERVED_PREFIXES)}"
    elif name.endswith(_RESERVED_SUFFIXES):
        why = f"names may not end with {', '.join(_RESERVED_SUFFIXES)}"
    if why:
        raise BadRequest(f"bad bucket name {name!r}: {why} ({_RULES})", code="bad_bucket_name")
    return name


def check_key(key: str) -> str:
    """``key`` if it is a valid key; else BadRequest (code ``bad_key``) saying why."""
    if not isinstance(key, str) or not key:
        raise BadRequest("an object key must be 1 to 1024 bytes of UTF-8; this one is empty", code="bad_key")
    _utf8(key, "key")
    return key


def check_prefix(prefix: str) -> str:
    """A listing prefix, start-after or delimiter: like a key, but it may be empty."""
    if prefix:
        _utf8(prefix, "prefix")
    return prefix


def _utf8(text: str, what: str) -> bytes:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"the {what} {text[:80]!r} is not valid UTF-8 (it holds a lone surrogate)",
                         code="bad_key") from None
    if len(raw) > MAX_KEY_BYTES:
        raise BadRequest(f"the {what} is {len(raw)} bytes of UTF-8; the limit is {MAX_KEY_BYTES}", code="bad_key")
    if "\x00" in text:
        raise BadRequest(f"the {what} {text[:80]!r} holds a NUL character, which keys may not", code="bad_key")
    return raw


def encode_token(after: str) -> str:
    """A page token: where the next page of a listing starts (after this key or prefix). Opaque to callers."""
    return base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    """The key or prefix a page token (from :func:`encode_token`) continues after; BadRequest if malformed."""
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest(f"page token {token[:60]!r} is not one a listing handed out; start the listing again",
                         code="bad_page_token") from None


def meta_header_value(value: str) -> str:
    """A metadata value as a header value: itself if printable ASCII, else RFC 2047 base64 UTF-8, as S3 sends
    user metadata."""
    if value.isascii() and value.isprintable():
        return value
    return "=?UTF-8?B?" + base64.b64encode(value.encode()).decode() + "?="


def meta_header_text(value: str) -> str:
    """A metadata header's text (as a server decoded it, Latin-1): RFC 2047 base64 UTF-8 (as
    :func:`meta_header_value` sends), raw UTF-8, or else the value as it came."""
    if value.startswith("=?UTF-8?B?") and value.endswith("?="):
        try:
            return base64.b64decode(value[10:-2], validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return value
    try:
        return value.encode("latin-1").decode()
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value
