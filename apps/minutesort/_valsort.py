"""valsort semantics: record count, order, duplicate keys and the order-independent checksum.

Output is validated as a stream: feed a :class:`Validator` the bytes of the
output in order, in chunks of any size (a chunk may end mid-record; the rest
of the record is carried to the next chunk), and read its :class:`Summary`.
Summaries of consecutive pieces (one per output blob, say, validated in
parallel) combine in order with :func:`combine`, exactly as ``valsort -s``
combines partition summaries: the first key of each piece is compared with the
last key of the one before.

The checksum is the sum, as a 128-bit integer, of zlib's crc32 of every
100-byte record.  Addition ignores order, so the checksum of the sort's input
must equal that of its output.  crc32 runs per record through zlib (one C
call per record, ~0.25 us): that, not the key comparisons, bounds validation
speed at a few hundred MB/s per core.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import itemgetter
from os import PathLike
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from ._gensort import KEY_SIZE, RECORD_SIZE
from ._records import as_records, key_parts

__all__ = ["Summary", "Validator", "checksum", "combine", "validate", "validate_file"]

_MASK128 = (1 << 128) - 1
_FIRST_FIELD = cast(Callable[[tuple[bytes]], bytes], itemgetter(0))
_RECORD_STRUCT = struct.Struct(f"{RECORD_SIZE}s")

Buffer = bytes | bytearray | memoryview | npt.NDArray[np.uint8]


def checksum(records: Buffer) -> int:
    """Sum of crc32 over the 100-byte records in ``records``, modulo 2**128. Order does not matter."""
    flat = np.ascontiguousarray(as_records(records)).reshape(-1).data
    return sum(map(zlib.crc32, map(_FIRST_FIELD, _RECORD_STRUCT.iter_unpack(flat)))) & _MASK128


def _byte_view(data: Buffer) -> memoryview:
    """A flat memoryview of unsigned bytes over ``data``, copying only non-contiguous arrays."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise TypeError(f"records must be uint8, not {data.dtype}")
        return np.ascontiguousarray(data).reshape(-1).data
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B") if view.nbytes else memoryview(b"")
    return view


@dataclass(frozen=True)
class Summary:
    """What valsort reports for a sequence of records, plus the keys needed to chain summaries.

    ``first_unordered`` is the 0-based index of the first record whose key is
    less than its predecessor's, or None.  ``duplicates`` counts records whose
    key equals their predecessor's.
    """

    records: int = 0
    duplicates: int = 0
    unordered: int = 0
    first_unordered: int | None = None
    checksum: int = 0
    first_key: bytes | None = None
    last_key: bytes | None = None

    @property
    def valid(self) -> bool:
        """True when no record is out of order."""
        return self.unordered == 0

    @property
    def checksum_hex(self) -> str:
        """The checksum as valsort prints it: lower-case hex, no leading zeros."""
        return f"{self.checksum:x}"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (keys and checksum as hex strings)."""
        return {
            "records": self.records, "duplicates": self.duplicates, "unordered": self.unordered,
            "first_unordered": self.first_unordered, "checksum": self.checksum_hex,
            "first_key": None if self.first_key is None else self.first_key.hex(),
            "last_key": None if self.last_key is None else self.last_key.hex(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        """Inverse of :meth:`to_json`."""
        return cls(
            records=int(data["records"]), duplicates=int(data["duplicates"]), unordered=int(data["unordered"]),
            first_unordered=None if data["first_unordered"] is None else int(data["first_unordered"]),
            checksum=int(data["checksum"], 16),
            first_key=None if data["first_key"] is None else bytes.fromhex(data["first_key"]),
            last_key=None if data["last_key"] is None else bytes.fromhex(data["last_key"]),
        )

    def then(self, later: Summary) -> Summary:
        """The summary of this sequence followed by ``later`` (valsort's summary chaining)."""
        if not later.records:
            return self
        if not self.records:
            return later
        assert self.last_key is not None and later.first_key is not None
        duplicates = self.duplicates + later.duplicates
        unordered = self.unordered + later.unordered
        first_unordered = self.first_unordered
        if later.first_key == self.last_key:
            duplicates += 1
        elif later.first_key < self.last_key:
            unordered += 1
            if first_unordered is None:
                first_unordered = self.records
        if first_unordered is None and later.first_unordered is not None:
            first_unordered = self.records + later.first_unordered
        return Summary(
            records=self.records + later.records, duplicates=duplicates, unordered=unordered,
            first_unordered=first_unordered, checksum=(self.checksum + later.checksum) & _MASK128,
            first_key=self.first_key, last_key=later.last_key,
        )


def combine(summaries: Iterable[Summary]) -> Summary:
    """Chain the summaries of consecutive pieces of output, in order. Empty pieces are skipped."""
    total = Summary()
    for summary in summaries:
        total = total.then(summary)
    return total


class Validator:
    """Incremental valsort: :meth:`feed` the output's bytes in order, then read :meth:`summary`."""

    def __init__(self) -> None:
        self._summary = Summary()
        self._partial = b""

    def feed(self, data: Buffer) -> None:
        """Validate the next bytes of the output. A record may be split across calls."""
        raw = _byte_view(data)
        if self._partial:
            need = RECORD_SIZE - len(self._partial)
            self._partial += bytes(raw[:need])
            raw = raw[need:]
            if len(self._partial) < RECORD_SIZE:
                return
            self._feed_records(as_records(self._partial))
            self._partial = b""
        whole = len(raw) - len(raw) % RECORD_SIZE
        if whole:
            self._feed_records(as_records(raw[:whole]))
        self._partial = bytes(raw[whole:])

    def _feed_records(self, records: npt.NDArray[np.uint8]) -> None:
        prefix, suffix = key_parts(records)
        same_prefix = prefix[1:] == prefix[:-1]
        descending = (prefix[1:] < prefix[:-1]) | (same_prefix & (suffix[1:] < suffix[:-1]))
        unordered = np.flatnonzero(descending)
        first_unordered = None if not len(unordered) else int(unordered[0]) + 1
        self._summary = self._summary.then(Summary(
            records=len(records),
            duplicates=int(np.count_nonzero(same_prefix & (suffix[1:] == suffix[:-1]))),
            unordered=len(unordered), first_unordered=first_unordered, checksum=checksum(records),
            first_key=bytes(records[0, :KEY_SIZE]), last_key=bytes(records[-1, :KEY_SIZE]),
        ))

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete record held back, waiting for the next chunk."""
        return len(self._partial)

    def summary(self) -> Summary:
        """The summary so far. Raises ValueError if the bytes fed so far end mid-record."""
        if self._partial:
            raise ValueError(f"partial record at end: {len(self._partial)} bytes after "
                             f"{self._summary.records} whole records")
        return self._summary


def validate(chunks: Iterable[Buffer]) -> Summary:
    """Validate output given as consecutive chunks (bytes or record arrays), in order."""
    validator = Validator()
    for chunk in chunks:
        validator.feed(chunk)
    return validator.summary()


def validate_file(path: str | PathLike[str], chunk_bytes: int = 8 << 20) -> Summary:
    """Validate a plain file of records, as ``valsort FILE`` does (without its printing)."""
    if chunk_bytes <= 0:
        raise ValueError("chunk_bytes must be positive")
    validator = Validator()
    buffer = bytearray(chunk_bytes)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while read := file.readinto(buffer):
            validator.feed(view[:read])
    return validator.summary()

