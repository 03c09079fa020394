"""Blob GUIDs: 128-bit names, shown as canonical UUID text."""

from __future__ import annotations

import re
import uuid

from fds.errors import BadRequest

__all__ = ["new_guid", "parse_guid", "format_guid"]

# uuid.UUID alone is too lenient: it drops every dash and hands the rest to
# int(..., 16), which also takes "0x", "+", "_", whitespace and non-ASCII digits.
_HEX = "[0-9A-Fa-f]"
_DIGITS = rf"(?:{_HEX}{{32}}|{_HEX}{{8}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{4}}-{_HEX}{{12}})"
_GUID_TEXT = re.compile(rf"{_DIGITS}|\{{{_DIGITS}\}}")


def new_guid() -> bytes:
    """A fresh random GUID (16 raw bytes)."""
    return uuid.uuid4().bytes


def parse_guid(text: str | bytes) -> bytes:
    """Parse a GUID given as 32 hex digits, with or without dashes or braces.

    Raises :class:`fds.errors.BadRequest` with a message that says what a
    GUID looks like.
    """
    if isinstance(text, bytes):
        if len(text) == 16:
            return text
        text = text.decode("ascii", "replace")
    try:
        if len(text) > 40 or not _GUID_TEXT.fullmatch(text):
            raise ValueError
        return uuid.UUID(text).bytes
    except ValueError:
        raise BadRequest(
            f"malformed GUID {text[:60]!r}: expected 32 hex digits, e.g. "
            "'3f2504e0-4f89-11d3-9a0c-0305e82c3301'",
            code="bad_guid",
        ) from None


def format_guid(raw: bytes) -> str:
    """Canonical text for a GUID: lower-case UUID form with dashes."""
    return str(uuid.UUID(bytes=raw))
