"""Where the records of a blob lie: tract lengths, units of work, and records cut at tract boundaries.

A sort input is any blob whose bytes, its tracts concatenated, are whole
100-byte records. Two layouts occur, and one rule covers both: every tract
but the last holds the same number of bytes, the **stride**:

- a blob written as a byte stream (``fds put``, the gateway,
  ``Blob.write_from``) has full tracts (stride = tract size, 8,388,608
  bytes), so records straddle tract boundaries: a record begun in tract
  ``i`` ends in tract ``i + 1``;
- ``fds-minutesort gen`` writes whole records into each tract (stride
  8,388,600), so no record straddles.

Work is cut at tract boundaries, into **units** of consecutive tracts. A
record belongs to the unit holding its first byte. The worker reading a
unit joins the records that straddle tracts inside it (:class:`Stitcher`);
of the record that straddles the unit's last boundary it has only the
start, the **tail fragment**, and the next unit's reader has only the end,
the **head fragment** (the first ``skip`` bytes of its first tract). Both
report their fragment to the head, which joins each pair into a whole
record and has it dealt like any other (:func:`join_fragments`), so every
record is dealt exactly once and no tract is read twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from apps.minutesort._gensort import RECORD_SIZE
from fds.client import Blob, Client
from fds.errors import BadRequest

__all__ = ["Layout", "UnitSpan", "Stitcher", "inspect_input", "join_fragments"]

Bytes = bytes | bytearray | memoryview


class LayoutError(BadRequest):
    """The blob's tracts do not hold what its layout says (a tract of the wrong length)."""

    default_code = "not_records"


@dataclass(frozen=True)
class UnitSpan:
    """Tracts ``first .. first + count - 1``; ``skip`` bytes at the start of the first end the previous unit's
    last record."""

    first: int
    count: int
    skip: int


@dataclass(frozen=True)
class Layout:
    """Every tract but the last holds ``stride`` bytes; the last holds ``last``."""

    guid: str
    tracts: int
    stride: int
    last: int
    tract_size: int

    @property
    def length(self) -> int:
        """Bytes in the blob."""
        return (self.tracts - 1) * self.stride + self.last if self.tracts else 0

    @property
    def records(self) -> int:
        return self.length // RECORD_SIZE

    def tract_length(self, index: int) -> int:
        """How many bytes tract ``index`` must hold."""
        return self.last if index == self.tracts - 1 else self.stride

    def skip(self, index: int) -> int:
        """Bytes at the start of tract ``index`` that end a record begun before it."""
        return -(index * self.stride) % RECORD_SIZE

    def units(self, tracts_per_unit: int) -> list[UnitSpan]:
        """The input cut into units of ``tracts_per_unit`` consecutive tracts (the last may be shorter)."""
        per = max(1, tracts_per_unit)
        return [UnitSpan(first, min(per, self.tracts - first), self.skip(first))
                for first in range(0, self.tracts, per)]

    def check_tract(self, index: int, data: Bytes) -> None:
        """Refuse a tract whose length is not what the layout says (the blob is not one stream of records)."""
        want = self.tract_length(index)
        if len(data) != want:
            raise LayoutError(
                f"tract {index} of blob {self.guid} holds {len(data)} bytes, but tract 0 holds {self.stride} and "
                f"the last {self.last}: fds-minutesort sorts blobs whose tracts all hold the same number of bytes "
                "except the last (as `fds put` and `fds-minutesort gen` write them)")


async def inspect_input(client: Client, guid: str) -> tuple[Blob, Layout]:
    """The blob and its layout; refuses (:class:`BadRequest`) a blob that is empty or not whole records.

    A blob with a recorded byte length was written as a stream: full tracts
    but the last. Otherwise tract 0 gives the stride and the last tract its
    own length (two reads; one when the blob has one tract).
    """
    blob = await client.open_blob(guid)
    info = await blob.stat()
    tract_size = (await client.table()).tract_size
    if info.tracts == 0 or info.length == 0:
        raise BadRequest(f"blob {guid} is empty: nothing to sort", code="not_records")
    if info.length is not None:
        stride, last = tract_size, info.length - (info.tracts - 1) * tract_size
        if not 0 < last <= tract_size:
            raise BadRequest(f"blob {guid} records {info.length} bytes in {info.tracts} tracts of {tract_size}: "
                             "its length does not match its tracts", code="not_records")
    else:
        last = len(await blob.read_tract(info.tracts - 1))
        stride = len(await blob.read_tract(0)) if info.tracts > 1 else last
        if stride < RECORD_SIZE:
            raise BadRequest(f"blob {guid}: tract 0 holds {stride} bytes, less than one record; fds-minutesort "
                             "sorts blobs whose tracts hold at least one record each", code="not_records")
    layout = Layout(guid=str(blob.guid), tracts=info.tracts, stride=stride, last=last, tract_size=tract_size)
    if layout.length % RECORD_SIZE:
        raise BadRequest(f"blob {guid} holds {layout.length} bytes, not a whole number of {RECORD_SIZE}-byte records",
                         code="not_records")
    return blob, layout


class Stitcher:
    """Cut a unit's tracts, fed in order, into whole records, keeping the unit's head and tail fragments.

    ``feed`` yields runs of whole records (views into the tract, no copy)
    and, where a record straddles two tracts of the unit, that one record
    joined (a 100-byte copy).
    """

    def __init__(self, skip: int) -> None:
        self._skip = skip
        self.head = b""
        """The first ``skip`` bytes of the unit: the end of the previous unit's last record."""
        self._carry = b""

    def feed(self, data: Bytes) -> Iterator[memoryview]:
        view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        if self._skip:
            taken = min(self._skip, len(view))
            self.head += bytes(view[:taken])
            self._skip -= taken
            view = view[taken:]
        if self._carry:
            need = RECORD_SIZE - len(self._carry)
            self._carry += bytes(view[:need])
            view = view[need:]
            if len(self._carry) < RECORD_SIZE:
                return
            yield memoryview(self._carry)
            self._carry = b""
        whole = len(view) - len(view) % RECORD_SIZE
        if whole:
            yield view[:whole]
        self._carry = bytes(view[whole:])

    @property
    def tail(self) -> bytes:
        """The start of a record that continues in the next unit (empty if the unit ends on a record boundary)."""
        return self._carry


def join_fragments(tails: list[bytes], heads: list[bytes]) -> bytes:
    """The records straddling unit boundaries: unit ``u``'s tail joined to unit ``u + 1``'s head.

    ``tails[u]`` and ``heads[u]`` are unit ``u``'s fragments. Raises
    :class:`ValueError` if a pair does not make exactly one record.
    """
    if heads and heads[0]:
        raise ValueError(f"the first unit has a head fragment of {len(heads[0])} bytes: nothing comes before it")
    if tails and tails[-1]:
        raise ValueError(f"the input ends with {len(tails[-1])} bytes of an unfinished record")
    joined = []
    for u in range(len(tails) - 1):
        record = tails[u] + heads[u + 1]
        if len(record) not in (0, RECORD_SIZE):
            raise ValueError(f"units {u} and {u + 1}: their fragments make {len(record)} bytes, not one record")
        joined.append(record)
    return b"".join(joined)
