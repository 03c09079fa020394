"""The generator against docs/gensort.md's test vectors and an independent scalar reference."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from apps.minutesort import generate, generate_into, iter_generate
from apps.minutesort._gensort import A, C, jump, lcg_value

# --- an independent, slow reference: docs/gensort.md read literally, one Python int at a time ---

_M128 = (1 << 128) - 1
_M64 = (1 << 64) - 1
_XOR = [0] + [int(h, 16) for h in (
    "F0E8E4E2E1D8D4D2D1CC CAC9C6C5C3B8B4B2B1AC AAA9A6A5A39C9A999695 938E8D8B87787472716C "
    "6A696665635C5A595655 534E4D4B473C3A393635 332E2D2B271E1D1B170F C8C4C2C1989492918CE0 "
    "170F332E2D2B271E1D1B").split()]


def _x(n: int) -> int:
    """X(n) by walking the recurrence in steps of a power-of-two table (independent of jump())."""
    a, c, value, bit = A, C, 0, 0
    while n >> bit:
        if (n >> bit) & 1:
            value = (a * value + c) & _M128
        a, c = (a * a) & _M128, (a * c + c) & _M128
        bit += 1
    return value


def _ascii_key(value: int) -> bytes:
    out = []
    for word, digits in ((value >> 64, 8), (value & _M64, 2)):
        for _ in range(digits):
            out.append(32 + word % 95)
            word //= 95
    return bytes(out)


def _skew_index(r: int) -> int:
    # gensort.c: the record number's top 4 bits (not R's) send the index to 64 (or 128).
    if r >> 64 == 0:
        return 64 if (r & _M64) >> 60 else r.bit_length()
    return 128 if (r >> 64) >> 60 else 64 + (r >> 64).bit_length()


def reference_record(r: int, ascii: bool = False, skew: bool = False) -> bytes:
    value = _x(r + 1)
    low = value & _M64
    if ascii:
        key = _ascii_key(value)
        if skew:
            n = (low >> 32) & 7
            n = 0 if n > 6 else n
            key = _ascii_key(_x(_skew_index(r) + 1))[:n] + key[n:]
        filler = "".join(d * 4 for d in f"{value & ((1 << 52) - 1):013X}")
        return key + b"  " + f"{r:032X}".encode() + b"  " + filler.encode() + b"\r\n"
    key_value = value >> 48
    if skew:
        bits = (low >> 32) & 63
        bits = 0 if bits > 48 else bits
        entry = _x(_skew_index(r) + 1) >> 80  # first 6 key bytes of record idx
        mask = ((1 << bits) - 1) << (80 - bits)
        key_value = (key_value & ~mask) | ((entry << 32) & mask)
    chunks = [key_value] + [(_x(r + 1 + j) >> 48) ^ _XOR[j] for j in range(1, 10)]
    return b"".join(chunk.to_bytes(10, "big") for chunk in chunks)


def crc_sum(data: bytes) -> str:
    return f"{sum(zlib.crc32(data[i:i + 100]) for i in range(0, len(data), 100)):x}"


# --- docs/gensort.md test vectors ---

def test_binary_keys_of_first_records() -> None:
    keys = [bytes(row[:10]).hex().upper() for row in generate(0, 3)]
    assert keys == ["4A696D47726179524950", "95E0E48262B3EDFE0447", "45979353DBED5329365C"]


def test_binary_record_zero() -> None:
    assert generate(0, 1).tobytes().hex() == (
        "4a696d4772617952495065080060836b392cd58b8f5e55961855e79b87f02283a466b6aab1f9e0cacf1e26b3292afd10"
        "64bb18b56ac07d6f656b1d2f430d57bde7e47d81f36a6dd267948bbc2397bfe28c334e4ad82b8e70166293cfaa0116bf"
        "da3bb1ab")


def test_ascii_records() -> None:
    records = generate(0, 3, ascii=True)
    assert records[0].tobytes() == (
        b"AsfAGHM5om  00000000000000000000000000000000  0000222200002222000022220000222200002222000000001111\r\n")
    assert records[1, :10].tobytes() == b"~sHd0jDv6X"
    assert records[2, :10].tobytes() == b"uI^EYm8s=|"


@pytest.mark.parametrize(("start", "count", "ascii", "skew", "expected"), [
    (0, 10, False, False, "55fea8a1a"),
    (0, 10, True, False, "469302dca"),
    (0, 1000, False, False, "1ea6370b955"),
    (1000, 1000, False, False, "1f462a767f5"),
    (0, 2000, False, False, "3dec618214a"),
    (0, 1000, False, True, "1e96301166b"),
    (0, 1000, True, True, "1eef17d1cac"),
    (123456789, 10, False, True, "6e07b40c2"),
])
def test_checksum_vectors(start: int, count: int, ascii: bool, skew: bool, expected: str) -> None:
    assert crc_sum(generate(start, count, ascii=ascii, skew=skew).tobytes()) == expected


@pytest.mark.parametrize(("ascii", "expected"), [(False, "7a0e0d4868cd4"), (True, "7a19cff467438")])
def test_checksum_of_a_million_records(ascii: bool, expected: str) -> None:
    total = sum(int(crc_sum(chunk.tobytes()), 16) for chunk in iter_generate(0, 10**6, ascii=ascii,
                                                                              chunk_records=250_000))
    assert f"{total:x}" == expected


# --- the vectorised generator against the scalar reference, anywhere in the 128-bit range ---

@pytest.mark.parametrize("start", [0, 1, 7, 16383, 123456789, 2**59 - 5, 2**60 - 3, 2**64 - 4, 2**64 + 11,
                                   2**124 - 2, 2**127 + 12345, 2**128 - 21])
@pytest.mark.parametrize(("ascii", "skew"), [(False, False), (True, False), (False, True), (True, True)])
def test_matches_reference_at_offsets(start: int, ascii: bool, skew: bool) -> None:
    records = generate(start, 21, ascii=ascii, skew=skew)
    assert [row.tobytes() for row in records] == [reference_record(r, ascii, skew) for r in range(start, start + 21)]


@pytest.mark.parametrize(("ascii", "skew"), [(False, False), (True, True), (False, True)])
def test_offset_generation_equals_slice_from_zero(ascii: bool, skew: bool) -> None:
    whole = generate(0, 40_000, ascii=ascii, skew=skew)  # spans the 16384-record inner pieces
    for start, count in [(1, 5), (16380, 10), (16384, 1), (20_000, 19_999), (39_999, 1), (5, 0)]:
        np.testing.assert_array_equal(generate(start, count, ascii=ascii, skew=skew), whole[start:start + count])
    chunks = list(iter_generate(3, 39_000, ascii=ascii, skew=skew, chunk_records=7_001))
    assert [len(c) for c in chunks] == [7_001] * 5 + [3_995]
    np.testing.assert_array_equal(np.concatenate(chunks), whole[3:39_003])


def test_generate_into_fills_a_buffer() -> None:
    buffer = np.zeros((500, 100), dtype=np.uint8)
    generate_into(buffer, 10**9, skew=True)
    np.testing.assert_array_equal(buffer, generate(10**9, 500, skew=True))
    with pytest.raises(ValueError):
        generate_into(np.zeros((5, 99), dtype=np.uint8), 0)
    with pytest.raises(ValueError):
        generate(2**128 - 1, 2)


def test_jump_composes_and_matches_walking() -> None:
    x = 0
    for n in range(1, 40):
        x = (A * x + C) & _M128
        assert lcg_value(n) == x
    a1, c1 = jump(12345)
    a2, c2 = jump(2**70 + 3)
    a, c = jump(12345 + 2**70 + 3)
    assert (a, c) == ((a2 * a1) & _M128, (a2 * c1 + c2) & _M128)


def test_ascii_records_are_printable_lines() -> None:
    records = generate(10**12, 2000, ascii=True, skew=True)
    assert (records[:, :98] >= 32).all() and (records[:, :98] < 127).all()
    assert (records[:, 98] == ord("\r")).all() and (records[:, 99] == ord("\n")).all()
    assert records[0, 12:44].tobytes() == f"{10**12:032X}".encode()


def test_skew_shares_long_prefixes() -> None:
    # About 3/4 of skewed keys have their top bits overwritten by one of a few table entries.
    plain = generate(0, 20_000)
    skewed = generate(0, 20_000, skew=True)
    assert len({row[:2].tobytes() for row in skewed}) < len({row[:2].tobytes() for row in plain}) / 2
    np.testing.assert_array_equal(plain[:, 10:], skewed[:, 10:])  # only keys change
