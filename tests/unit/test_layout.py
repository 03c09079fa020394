"""Record layouts: units cut at tract boundaries, records stitched inside a unit and across units."""

from __future__ import annotations

import random

import pytest

from apps.minutesort._gensort import generate
from apps.minutesort._layout import Layout, LayoutError, Stitcher, join_fragments


def _tracts(data: bytes, stride: int) -> list[bytes]:
    return [data[i:i + stride] for i in range(0, len(data), stride)]


@pytest.mark.parametrize("stride", [1 << 20, 1_048_500, 4096 + 37, 250, 100])
@pytest.mark.parametrize("per_unit", [1, 2, 3])
def test_every_record_is_dealt_exactly_once(stride: int, per_unit: int) -> None:
    """Cut a stream of records into tracts of ``stride`` bytes and units of ``per_unit`` tracts: the records
    each unit yields, plus those joined from fragments, are exactly the stream's records."""
    records = generate(0, 3001).tobytes()
    tracts = _tracts(records, stride)
    layout = Layout(guid="g", tracts=len(tracts), stride=stride, last=len(tracts[-1]), tract_size=1 << 20)
    assert layout.length == len(records) and layout.records == 3001
    got: list[bytes] = []
    heads, tails = [], []
    for span in layout.units(per_unit):
        stitcher = Stitcher(span.skip)
        for index in range(span.first, span.first + span.count):
            layout.check_tract(index, tracts[index])
            got += [bytes(piece) for piece in stitcher.feed(tracts[index])]
        heads.append(stitcher.head)
        tails.append(stitcher.tail)
    got.append(join_fragments(tails, heads))
    dealt = b"".join(got)
    assert len(dealt) == len(records)
    pieces = sorted(dealt[i:i + 100] for i in range(0, len(dealt), 100))
    assert pieces == sorted(records[i:i + 100] for i in range(0, len(records), 100))


def test_gen_layout_has_no_fragments() -> None:
    layout = Layout(guid="g", tracts=5, stride=8_388_600, last=1000, tract_size=8 << 20)
    assert all(span.skip == 0 for span in layout.units(2))
    assert [(s.first, s.count) for s in layout.units(2)] == [(0, 2), (2, 2), (4, 1)]


def test_a_tract_of_the_wrong_length_is_refused_with_what_to_fix() -> None:
    layout = Layout(guid="g", tracts=3, stride=1000, last=500, tract_size=1 << 20)
    layout.check_tract(2, b"x" * 500)
    with pytest.raises(LayoutError, match="tract 1 of blob g holds 999 bytes, but tract 0 holds 1000"):
        layout.check_tract(1, b"x" * 999)


def test_fragments_that_do_not_make_a_record_are_refused() -> None:
    assert join_fragments([b"a" * 30, b""], [b"", b"b" * 70]) == b"a" * 30 + b"b" * 70
    with pytest.raises(ValueError, match="make 99 bytes"):
        join_fragments([b"a" * 30, b""], [b"", b"b" * 69])
    with pytest.raises(ValueError, match="ends with 5 bytes"):
        join_fragments([b"", b"x" * 5], [b"", b""])


def test_stitcher_takes_pieces_of_any_size() -> None:
    rng = random.Random(5)
    data = generate(0, 50).tobytes()
    stitcher = Stitcher(37)
    out = []
    at = 0
    while at < len(data):
        size = rng.randint(1, 230)
        out += [bytes(p) for p in stitcher.feed(data[at:at + size])]
        at += size
    assert stitcher.head == data[:37]
    assert b"".join(out) + stitcher.tail == data[37:]
    assert len(stitcher.tail) == (len(data) - 37) % 100
