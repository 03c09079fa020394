"""Placement: the one function every client, server and test uses.

``row = (xxh3_64(GUID) + tract) mod len(TLT)`` (docs/design.md §2). The tract
number is added outside the hash on purpose, so the consecutive tracts of a
blob walk consecutive rows and a sequential reader spreads evenly over every
server. The hash is xxh3_64 of the 16 raw GUID bytes as an unsigned integer;
the addition is exact (no wrap at 2**64) and Python's ``%`` maps tract -1,
the metadata tract, to a valid row.
"""

from __future__ import annotations

import xxhash

__all__ = ["METADATA_TRACT", "MAX_TRACT", "guid_hash", "tract_row"]

METADATA_TRACT = -1
"""Tract -1 holds a blob's metadata (its size); it is placed like any tract."""

MAX_TRACT = 2**40 - 1
"""The largest tract number: 8 EiB of 8 MiB tracts, far beyond any cluster."""


def guid_hash(guid: bytes) -> int:
    """xxh3_64 of the raw GUID bytes, as an unsigned 64-bit integer."""
    return xxhash.xxh3_64_intdigest(guid)


def tract_row(guid: bytes, tract: int, rows: int) -> int:
    """The TLT row that holds ``tract`` of blob ``guid`` in a table of ``rows`` rows."""
    return (xxhash.xxh3_64_intdigest(guid) + tract) % rows
