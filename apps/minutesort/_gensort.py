"""A gensort-1.5-compatible record generator, vectorised with numpy.

The Sort Benchmark's ``gensort`` draws one value per record from a 128-bit
linear congruential generator, ``X(n+1) = A*X(n) + C mod 2**128`` with
``X(0) = 0``; record ``r`` is built from ``X(r+1) .. X(r+10)`` (see
``docs/gensort.md``).  Because the step is an affine map, ``k`` steps
compose into one affine map ``(A_k, C_k)`` computed by square-and-multiply, so
any record range can be generated without walking from record 0.

Vectorisation: the 128-bit values live in two ``uint64`` arrays (high and low
words).  A run of ``n`` consecutive values is filled by doubling: from the
first ``m`` values, the next ``m`` are ``A_m * X + C_m`` applied lane-wise, so a
run costs ``log2(n)`` rounds of a dozen numpy operations.  The records are then
assembled from the top 10 bytes of each value through a structured dtype whose
fields sit at the record's byte offsets.

One deliberate reading of GENSORT.md: the skew index goes to 64 when the top 4
bits of the *record number's* low 64-bit word are set (as ``get_skew_index`` in
gensort.c does), not those of the random value ``R``; only the former reproduces
the skew test vectors.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import numpy.typing as npt

__all__ = ["RECORD_SIZE", "KEY_SIZE", "A", "C", "jump", "lcg_value", "generate", "generate_into", "iter_generate"]

RECORD_SIZE = 100
KEY_SIZE = 10
A = 0x2360ED051FC65DA44385DF649FCCF645
C = 0x4A696D47726179524950202020202001

_MASK64 = (1 << 64) - 1
_MASK128 = (1 << 128) - 1
_U64 = np.uint64
_M32 = _U64(0xFFFFFFFF)
_S32 = _U64(32)

# XOR constants for the nine 10-byte chunks after the key (chunk 0 is the key itself).
_CHUNK_XOR = [0] + [int(h, 16) for h in (
    "F0E8E4E2E1D8D4D2D1CC", "CAC9C6C5C3B8B4B2B1AC", "AAA9A6A5A39C9A999695",
    "938E8D8B87787472716C", "6A696665635C5A595655", "534E4D4B473C3A393635",
    "332E2D2B271E1D1B170F", "C8C4C2C1989492918CE0", "170F332E2D2B271E1D1B",
)]

# A view of a 100-byte binary record as ten (big-endian 8 bytes, big-endian 2 bytes) pairs.
_BINARY_VIEW = np.dtype({
    "names": [f"{part}{j}" for j in range(10) for part in ("hi", "lo")],
    "formats": [">u8", ">u2"] * 10,
    "offsets": [10 * j + (0 if part == "hi" else 8) for j in range(10) for part in ("hi", "lo")],
    "itemsize": RECORD_SIZE,
})

_PIECE = 1 << 14
"""Records generated per inner step: its working set (~3 MB) stays in cache."""

_HEX_DIGITS = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)

U64Array = npt.NDArray[np.uint64]
Records = npt.NDArray[np.uint8]


@lru_cache(maxsize=256)
def jump(steps: int) -> tuple[int, int]:
    """Return ``(a, c)`` such that ``X(n + steps) = a * X(n) + c mod 2**128`` for every n."""
    if steps < 0:
        raise ValueError("steps must be >= 0")
    a, c = 1, 0
    base_a, base_c = A, C
    while steps:
        if steps & 1:
            a, c = (base_a * a) & _MASK128, (base_a * c + base_c) & _MASK128
        base_a, base_c = (base_a * base_a) & _MASK128, (base_a * base_c + base_c) & _MASK128
        steps >>= 1
    return a, c


def lcg_value(n: int) -> int:
    """``X(n)``, the n-th value of the generator (``X(0) = 0``)."""
    return jump(n)[1]


def _mul_add(x_hi: U64Array, x_lo: U64Array, a: int, c: int, out_hi: U64Array, out_lo: U64Array) -> None:
    """``out = a * x + c mod 2**128`` lane-wise, for 128-bit constants ``a`` and ``c``."""
    a_hi, a_lo = _U64(a >> 64), _U64(a & _MASK64)
    a0, a1 = _U64(a & 0xFFFFFFFF), _U64((a >> 32) & 0xFFFFFFFF)
    c_hi, c_lo = _U64(c >> 64), _U64(c & _MASK64)
    # High word of the 64x64 -> 128-bit product a_lo * x_lo, from 32-bit halves.
    x0 = x_lo & _M32
    x1 = x_lo >> _S32
    p00 = x0 * a0
    p01 = x1 * a0
    p10 = x0 * a1
    x1 *= a1  # p11
    mid = p00
    mid >>= _S32
    mid += p01 & _M32
    mid += p10 & _M32
    mid >>= _S32
    p01 >>= _S32
    p10 >>= _S32
    high = x1
    high += p01
    high += p10
    high += mid
    # Cross terms only reach the high word.
    high += x_hi * a_lo
    x0 = x_lo * a_hi
    high += x0
    np.multiply(x_lo, a_lo, out=out_lo)
    out_lo += c_lo
    high += c_hi
    high += out_lo < c_lo  # carry out of the low word
    out_hi[...] = high


def _lcg_run(first: int, count: int) -> tuple[U64Array, U64Array]:
    """The ``count`` values ``first, f(first), f(f(first)), ...`` as (high, low) uint64 arrays."""
    hi = np.empty(count, dtype=np.uint64)
    lo = np.empty(count, dtype=np.uint64)
    seed = min(count, 16)
    x = first
    for i in range(seed):
        hi[i], lo[i] = x >> 64, x & _MASK64
        x = (A * x + C) & _MASK128
    filled = seed
    while filled < count:
        step = min(filled, count - filled)
        a, c = jump(filled)
        _mul_add(hi[:step], lo[:step], a, c, hi[filled:filled + step], lo[filled:filled + step])
        filled += step
    return hi, lo


def _skew_index(record: int) -> int:
    """gensort.c ``get_skew_index``: roughly the bit length of the record number."""
    rec_hi, rec_lo = record >> 64, record & _MASK64
    if rec_hi == 0:
        return 64 if rec_lo >> 60 else rec_lo.bit_length()
    return 128 if rec_hi >> 60 else 64 + rec_hi.bit_length()


def _skew_indices(start: int, count: int) -> npt.NDArray[np.intp]:
    """Skew index of each record in [start, start+count), filled segment by segment.

    The index is a non-decreasing step function of the record number that changes
    at most ~130 times over the whole 128-bit range, so it is filled by slices.
    """
    out = np.empty(count, dtype=np.intp)
    pos = 0
    while pos < count:
        record = start + pos
        index = _skew_index(record)
        rec_hi, rec_lo = record >> 64, record & _MASK64
        if rec_hi == 0:
            end = 1 << 64 if rec_lo >> 60 else 1 << rec_lo.bit_length()
        else:
            end = 1 << 128 if rec_hi >> 60 else 1 << (64 + rec_hi.bit_length())
        stop = min(count, end - start)
        out[pos:stop] = index
        pos = stop
    return out


@lru_cache(maxsize=1)
def _skew_tables() -> tuple[U64Array, Records]:
    """gensort's Skew_binary and Skew_ascii tables (entry i: key of unskewed record i)."""
    values = [lcg_value(i + 1) for i in range(129)]
    binary = np.array([(v >> 80) << 16 for v in values], dtype=np.uint64)  # top 48 bits, left-aligned
    hi = np.array([v >> 64 for v in values], dtype=np.uint64)
    lo = np.array([v & _MASK64 for v in values], dtype=np.uint64)
    ascii_keys = _ascii_keys(hi, lo)[:, :6].copy()
    return binary, ascii_keys


def _ascii_keys(hi: U64Array, lo: U64Array) -> Records:
    """Ten printable key characters per value: 8 base-95 digits of the high word, 2 of the low."""
    keys = np.empty((len(hi), KEY_SIZE), dtype=np.uint8)
    base = _U64(95)
    for words, columns in ((hi, range(8)), (lo, range(8, 10))):
        t = words.copy()
        for column in columns:
            keys[:, column] = t % base
            t //= base
    keys += 32
    return keys


def _fill_binary(out: Records, start: int, hi: U64Array, lo: U64Array, skew: bool) -> None:
    count = len(out)
    view = out.reshape(-1).view(_BINARY_VIEW)
    top16 = (lo >> _U64(48)).astype(np.uint16)
    key_hi = hi[:count]
    if skew:
        # Overwrite the top `bits` key bits (0..48) with the skew table entry.
        bits = ((lo[:count] >> _S32) & _U64(63)).astype(np.uint8)
        bits[bits > 48] = 0
        mask: U64Array = np.invert(np.right_shift(_U64(_MASK64), bits.astype(np.uint64)))
        entries = _skew_tables()[0][_skew_indices(start, count)]
        key_hi = np.bitwise_or(np.bitwise_and(key_hi, np.invert(mask)), np.bitwise_and(entries, mask))
    view["hi0"] = key_hi
    view["lo0"] = top16[:count]
    for j in range(1, 10):
        xor = _CHUNK_XOR[j]
        view[f"hi{j}"] = hi[j:j + count] ^ _U64(xor >> 16)
        view[f"lo{j}"] = top16[j:j + count] ^ np.uint16(xor & 0xFFFF)


def _nibbles(words: U64Array, digits: int) -> Records:
    """The low ``digits`` hex digits of each word, most significant first, as values 0..15."""
    shifts = np.arange(4 * (digits - 1), -1, -4, dtype=np.uint64)
    return ((words[:, None] >> shifts) & _U64(0xF)).astype(np.uint8)


def _fill_ascii(out: Records, start: int, hi: U64Array, lo: U64Array, skew: bool) -> None:
    count = len(out)
    hi, lo = hi[:count], lo[:count]
    keys = _ascii_keys(hi, lo)
    if skew:
        replace = ((lo >> _S32) & _U64(7)).astype(np.intp)
        replace[replace > 6] = 0
        table = _skew_tables()[1]
        keys[:, :6] = np.where(np.arange(6) < replace[:, None], table[_skew_indices(start, count)], keys[:, :6])
    out[:, :10] = keys
    out[:, 10:12] = ord(" ")
    # Record number as 32 upper-case hex digits: high word, then low word (with carry).
    start_hi, start_lo = start >> 64, start & _MASK64
    rec_lo = np.arange(count, dtype=np.uint64) + _U64(start_lo)
    rec_hi = np.full(count, start_hi & _MASK64, dtype=np.uint64) + (rec_lo < _U64(start_lo))
    out[:, 12:28] = _HEX_DIGITS[_nibbles(rec_hi, 16)]
    out[:, 28:44] = _HEX_DIGITS[_nibbles(rec_lo, 16)]
    out[:, 44:46] = ord(" ")
    # 13 hex digits of the low 52 bits of R, each written four times.
    filler = _HEX_DIGITS[_nibbles(lo, 13)]
    out[:, 46:98] = np.repeat(filler, 4, axis=1)
    out[:, 98] = ord("\r")
    out[:, 99] = ord("\n")


def generate_into(out: Records, start: int, *, ascii: bool = False, skew: bool = False) -> None:
    """Fill ``out``, a C-contiguous ``(n, 100)`` uint8 array, with records ``start .. start+n-1``.

    Works through the range in cache-sized pieces, so memory beyond ``out`` stays small.
    """
    if out.dtype != np.uint8 or out.ndim != 2 or out.shape[1] != RECORD_SIZE or not out.flags.c_contiguous:
        raise ValueError("out must be a C-contiguous (n, 100) uint8 array")
    count = len(out)
    if start < 0 or start + count > 1 << 128:
        raise ValueError("record range must lie within [0, 2**128)")
    fill = _fill_ascii if ascii else _fill_binary
    x = lcg_value(start + 1) if count else 0
    for pos in range(0, count, _PIECE):
        piece = min(_PIECE, count - pos)
        # Binary records need X(r+1) .. X(r+10); ASCII records only X(r+1).
        hi, lo = _lcg_run(x, piece + (0 if ascii else 9))
        fill(out[pos:pos + piece], start + pos, hi, lo, skew)
        a, c = jump(piece)
        x = (a * x + c) & _MASK128


def generate(start: int, count: int, *, ascii: bool = False, skew: bool = False) -> Records:
    """Records ``start .. start+count-1`` exactly as ``gensort [-a] [-s] -b<start> <count>`` writes them.

    Returns a C-contiguous ``(count, 100)`` uint8 array; ``.tobytes()`` gives the file bytes.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    out = np.empty((count, RECORD_SIZE), dtype=np.uint8)
    generate_into(out, start, ascii=ascii, skew=skew)
    return out


def iter_generate(start: int, count: int, *, ascii: bool = False, skew: bool = False,
                  chunk_records: int = 1 << 16) -> Iterator[Records]:
    """Yield ``generate`` output for [start, start+count) in pieces of at most ``chunk_records``."""
    if chunk_records <= 0:
        raise ValueError("chunk_records must be positive")
    for offset in range(0, count, chunk_records):
        yield generate(start + offset, min(chunk_records, count - offset), ascii=ascii, skew=skew)
