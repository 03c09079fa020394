"""HTTP ``Range`` requests (RFC 9110 §14), shared by the gateway and the S3 endpoint: parse, then resolve.

Parsing and resolving are two steps because a blob's byte length is not
always known (see :class:`fds.models.BlobInfo`): a well-formed range on a
blob without a recorded length is an error the caller reports, while a
malformed header is simply ignored.

Policy, as documented on the gateway's GET route:

- A single range ``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` is served
  as ``206 Partial Content``.
- A malformed header, a unit other than ``bytes``, or a range with
  ``a > b`` is ignored, as RFC 9110 §14.2 allows: the whole blob is served
  with ``200``.
- Several ranges (``bytes=0-9,20-29``) are ignored too (``200`` with the
  whole blob); RFC 9110 lets a server ignore ``Range``, and this keeps the
  gateway free of ``multipart/byteranges``.
- A range that selects no byte of the blob (``bytes=a-`` with ``a`` at or
  past the end, ``bytes=-0``, any range of an empty blob) is unsatisfiable:
  ``416`` with ``Content-Range: bytes */length``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["RangeSpec", "ByteRange", "parse_range", "resolve_range"]

_MAX_HEADER = 200
_SPEC = re.compile(r"([0-9]*)-([0-9]*)")


@dataclass(frozen=True, slots=True)
class RangeSpec:
    """One syntactically valid range: ``first-last``, ``first-`` or the suffix ``-suffix``."""

    first: int | None
    last: int | None
    suffix: int | None


@dataclass(frozen=True, slots=True)
class ByteRange:
    """A satisfiable range of a blob: bytes ``start`` to ``end - 1``."""

    start: int
    end: int

    def content_range(self, length: int) -> str:
        """The ``Content-Range`` header value of a 206 response."""
        return f"bytes {self.start}-{self.end - 1}/{length}"


def parse_range(header: str | None) -> RangeSpec | None:
    """The single byte range a ``Range`` header asks for, or ``None`` to ignore the header.

    ``None`` covers every case the gateway serves as a whole-blob ``200``:
    no header, a malformed one, another unit, or several ranges.
    """
    if not header or len(header) > _MAX_HEADER:
        return None
    unit, sep, ranges = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = ranges.split(",")
    if len(parts) != 1:
        return None
    match = _SPEC.fullmatch(parts[0].strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None  # "bytes=-" names nothing
        return RangeSpec(first=None, last=None, suffix=int(last_text))
    first = int(first_text)
    last = int(last_text) if last_text else None
    if last is not None and last < first:
        return None  # invalid per RFC 9110 §14.1.1, so ignored
    return RangeSpec(first=first, last=last, suffix=None)


def resolve_range(spec: RangeSpec, length: int) -> ByteRange | None:
    """The bytes ``spec`` selects in a blob of ``length`` bytes; ``None`` if unsatisfiable."""
    if spec.suffix is not None:
        if spec.suffix == 0 or length == 0:
            return None
        return ByteRange(start=max(length - spec.suffix, 0), end=length)
    assert spec.first is not None
    if spec.first >= length:
        return None
    end = length if spec.last is None else min(spec.last + 1, length)
    return ByteRange(start=spec.first, end=end)
