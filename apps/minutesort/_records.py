"""Record kernels for the sort: keys, bucket boundaries, partitioning and in-memory sorting.

Records are 100-byte rows of a C-contiguous ``(n, 100)`` uint8 array; the first
10 bytes are the key, compared as unsigned bytes (memcmp order).  A key is held
as two numpy columns: ``prefix`` (bytes 0..7 as a big-endian uint64) and
``suffix`` (bytes 8..9 as a big-endian uint16); ``(prefix, suffix)`` compared
lexicographically is memcmp order on the 10 bytes.

Bucket boundaries are full 10-byte keys (``bytes``), sorted.  With boundaries
``b[0] <= ... <= b[k-1]`` there are ``k + 1`` buckets and bucket ``i`` holds the
keys ``b[i-1] <= key < b[i]``.  Boundaries must be full keys, not prefixes:
skewed inputs have many keys sharing long prefixes, and a quantile boundary in
the middle of such a run is only exact if the whole key is compared.

Sorting packs the top bits of each prefix together with the row number into a
single uint64 and sorts that with ``ndarray.sort`` (numpy's SIMD sort of plain
uint64 values is ~10x faster than ``argsort`` here), then moves each 100-byte
row once.  Measured against bucketing into cache-sized pieces first: the row
moves dominate, and bucketing needs two of them where this needs one.
Rows whose packed prefixes tie are re-sorted by the rest of their key with a
least-significant-digit pass of the same kind, so the order is exact for any
input, including inputs where every key shares its first 8 bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ._gensort import KEY_SIZE, RECORD_SIZE

__all__ = [
    "Records", "as_records", "key_parts", "key_bytes", "bucket_ids", "partition", "sample_boundaries",
    "uniform_boundaries", "argsort_records", "sort_records",
]

Records = npt.NDArray[np.uint8]
U64Array = npt.NDArray[np.uint64]
U16Array = npt.NDArray[np.uint16]
IndexArray = npt.NDArray[np.intp]

_KEY_VIEW = np.dtype({"names": ["prefix", "suffix"], "formats": [">u8", ">u2"], "offsets": [0, 8],
                      "itemsize": RECORD_SIZE})
_CHUNK = 1 << 16
"""Rows per step when building packed sort keys: temporaries stay in cache."""


def as_records(data: bytes | bytearray | memoryview | npt.NDArray[np.uint8]) -> Records:
    """View a buffer of whole records as an ``(n, 100)`` uint8 array, without copying."""
    if isinstance(data, np.ndarray):
        array = data
    else:
        array = np.frombuffer(data, dtype=np.uint8)
    if array.dtype != np.uint8:
        raise TypeError(f"records must be uint8, not {array.dtype}")
    if array.ndim == 2 and array.shape[1] == RECORD_SIZE:
        return array
    if array.ndim != 1 or array.size % RECORD_SIZE:
        raise ValueError(f"buffer of {array.size} bytes is not a whole number of {RECORD_SIZE}-byte records")
    return array.reshape(-1, RECORD_SIZE)


def key_parts(records: npt.NDArray[np.uint8]) -> tuple[U64Array, U16Array]:
    """``(prefix, suffix)`` columns of the keys of ``(n, w)`` rows, ``w >= 10`` (records or bare keys)."""
    if records.ndim != 2 or records.shape[1] < KEY_SIZE:
        raise ValueError("expected an (n, w) uint8 array with w >= 10")
    if records.shape[1] == RECORD_SIZE and records.flags.c_contiguous:
        view = records.reshape(-1).view(_KEY_VIEW)
        return view["prefix"].astype(np.uint64), view["suffix"].astype(np.uint16)
    keys = np.ascontiguousarray(records[:, :KEY_SIZE])
    prefix = keys[:, :8].copy().view(">u8").reshape(-1).astype(np.uint64)
    suffix = keys[:, 8:].copy().view(">u2").reshape(-1).astype(np.uint16)
    return prefix, suffix


def key_bytes(prefix: int, suffix: int) -> bytes:
    """The 10-byte key with the given prefix and suffix."""
    return int(prefix).to_bytes(8, "big") + int(suffix).to_bytes(2, "big")


def _boundary_columns(boundaries: Sequence[bytes]) -> tuple[U64Array, U16Array]:
    if any(len(key) != KEY_SIZE for key in boundaries):
        raise ValueError("boundaries must be 10-byte keys")
    if any(a > b for a, b in zip(boundaries, boundaries[1:], strict=False)):
        raise ValueError("boundaries must be sorted")
    prefix = np.array([int.from_bytes(key[:8], "big") for key in boundaries], dtype=np.uint64)
    suffix = np.array([int.from_bytes(key[8:], "big") for key in boundaries], dtype=np.uint16)
    return prefix, suffix


def bucket_ids(records: npt.NDArray[np.uint8], boundaries: Sequence[bytes]) -> IndexArray:
    """The bucket of each record: the number of boundaries ``<=`` its key (0 .. len(boundaries)).

    Searches on the 8-byte prefix; only records whose prefix equals a boundary's
    prefix are resolved on the full key, by a second search on
    ``(first index of that prefix among the boundaries, suffix)`` packed into one integer.
    """
    prefix, suffix = key_parts(records)
    bound_prefix, bound_suffix = _boundary_columns(boundaries)
    if not len(bound_prefix):
        return np.zeros(len(prefix), dtype=np.intp)
    below = np.searchsorted(bound_prefix, prefix, side="left")
    tied = bound_prefix[np.minimum(below, len(bound_prefix) - 1)] == prefix
    tied &= below < len(bound_prefix)
    if tied.any():
        group_start = np.searchsorted(bound_prefix, bound_prefix, side="left").astype(np.uint64)
        packed_bounds = (group_start << np.uint64(16)) | bound_suffix
        packed = (below[tied].astype(np.uint64) << np.uint64(16)) | suffix[tied]
        below[tied] = np.searchsorted(packed_bounds, packed, side="right")
    return below


def partition(records: npt.NDArray[np.uint8], boundaries: Sequence[bytes]) -> list[Records]:
    """Deal records into ``len(boundaries) + 1`` buckets by key range, keeping their input order.

    Returns one contiguous ``(n_i, 100)`` array per bucket (views into one grouped copy).
    """
    records = as_records(records)
    ids = bucket_ids(records, boundaries)
    buckets = len(boundaries) + 1
    counts = np.bincount(ids, minlength=buckets)
    # A stable sort of small integers is a radix sort in numpy.
    small = ids.astype(np.uint16 if buckets <= 1 << 16 else np.uint32)
    order = np.argsort(small, kind="stable")
    grouped = _take_rows(records, order)
    ends = np.cumsum(counts).tolist()
    return [grouped[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def sample_boundaries(sample: npt.NDArray[np.uint8], buckets: int) -> list[bytes]:
    """``buckets - 1`` boundaries at the quantiles of a sample of records (or bare keys).

    Boundary ``i`` is the sample key of rank ``i * m // buckets`` (m = sample size),
    so each bucket receives ~1/buckets of the sample and, for a random sample, of
    the data.  Identical keys cannot be split between buckets; they are the only
    source of imbalance beyond sampling error.
    """
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    if buckets > 1 and not len(sample):
        raise ValueError("cannot choose boundaries from an empty sample")
    prefix, suffix = key_parts(sample)
    order = np.lexsort((suffix, prefix))
    ranks = [order[i * len(order) // buckets] for i in range(1, buckets)]
    return [key_bytes(prefix[r], suffix[r]) for r in ranks]


def uniform_boundaries(buckets: int) -> list[bytes]:
    """``buckets - 1`` boundaries splitting the 80-bit key space evenly (Indy: uniform random keys)."""
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    return [((i << 80) // buckets).to_bytes(KEY_SIZE, "big") for i in range(1, buckets)]


def _take_rows(records: Records, order: IndexArray, out: Records | None = None) -> Records:
    """``records[order]`` as fast as numpy allows.

    ``take`` with ``mode="clip"`` skips per-element bound checks and is ~2x
    faster than fancy indexing for 100-byte rows; the indices here are always valid.
    """
    if out is None:
        out = np.empty((len(order), RECORD_SIZE), dtype=np.uint8)
    rows = records.reshape(-1).view(f"V{RECORD_SIZE}")
    np.take(rows, order, out=out.reshape(-1).view(f"V{RECORD_SIZE}"), mode="clip")
    return out


def _lsd_argsort(fields: list[tuple[U64Array, int]], count: int) -> IndexArray:
    """Permutation sorting ``count`` items by fields given least significant first.

    Each pass sorts ``(field << index_bits) | position`` as one uint64, which is a
    stable sort on that field; passes from least to most significant make an LSD
    radix sort.  Each field's ``bits`` plus the index bits must fit in 64.
    """
    index_bits = max(1, (count - 1).bit_length())
    index_mask = np.uint64((1 << index_bits) - 1)
    positions = np.arange(count, dtype=np.uint64)
    perm: IndexArray | None = None
    for values, bits in fields:
        if bits + index_bits > 64:
            raise ValueError("field too wide for the number of items")
        packed = values if perm is None else values[perm]
        packed = packed << np.uint64(index_bits)
        packed |= positions
        packed.sort()
        packed &= index_mask
        step = packed.view(np.int64).astype(np.intp, copy=False)
        perm = step if perm is None else perm[step]
    assert perm is not None
    return perm


def _key_view(records: npt.NDArray[np.uint8]) -> npt.NDArray[np.void]:
    """A structured ``(prefix, suffix)`` view of the keys of ``(n, w)`` rows, copying only if not contiguous."""
    if records.ndim != 2 or records.shape[1] < KEY_SIZE:
        raise ValueError("expected an (n, w) uint8 array with w >= 10")
    if not records.flags.c_contiguous:
        records = np.ascontiguousarray(records[:, :KEY_SIZE])
    dtype = np.dtype({"names": ["prefix", "suffix"], "formats": [">u8", ">u2"], "offsets": [0, 8],
                      "itemsize": records.shape[1]})
    return records.reshape(-1).view(dtype)


def argsort_records(records: npt.NDArray[np.uint8], out: U64Array | None = None) -> IndexArray:
    """The permutation that sorts records (or bare keys) by their full 10-byte key.

    Allocates one uint64 per record (which becomes the result) plus small
    temporaries: large fresh allocations are slow to fault in on this machine.
    ``out``, a uint64 array of at least one per record, is used instead of the
    allocation (the result is a view of it): a buffer reused from sort to sort.
    """
    keys = _key_view(records)
    count = len(keys)
    if count < 2:
        return np.arange(count, dtype=np.intp)
    if count > 1 << 32:
        raise ValueError("too many records to sort in one piece")
    index_bits = (count - 1).bit_length()
    shift = np.uint64(index_bits)
    # Pass 1: sort by the top (64 - index_bits) prefix bits, with the row number as the low bits.
    if out is not None and (out.dtype != np.uint64 or len(out) < count or not out.flags.c_contiguous):
        raise ValueError("out must be a contiguous uint64 array with room for one value per record")
    packed = out[:count] if out is not None else np.empty(count, dtype=np.uint64)
    steps = np.arange(_CHUNK, dtype=np.uint64)
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        chunk = keys["prefix"][start:stop].astype(np.uint64)
        chunk >>= shift
        chunk <<= shift
        chunk |= steps[:stop - start]
        chunk += np.uint64(start)
        packed[start:stop] = chunk
    packed.sort()
    # Adjacent rows whose top bits tie must still be ordered by the rest of the key.
    tie_parts = []
    for start in range(0, count - 1, _CHUNK):
        top = packed[start:min(count, start + _CHUNK + 1)] >> shift
        tie_parts.append(np.flatnonzero(top[1:] == top[:-1]) + start)
    ties = np.concatenate(tie_parts)
    packed &= np.uint64((1 << index_bits) - 1)
    order = packed.view(np.int64).astype(np.intp, copy=False)
    if len(ties):
        _sort_tied_runs(order, ties, keys, index_bits)
    return order


def _sort_tied_runs(order: IndexArray, ties: IndexArray, keys: npt.NDArray[np.void], index_bits: int) -> None:
    """Reorder, in place, each run of ``order`` whose rows share their top prefix bits, by full key.

    ``ties`` lists the positions i where rows ``order[i]`` and ``order[i+1]`` tie.
    """
    tied_next = np.zeros(len(order), dtype=bool)
    tied_next[ties] = True
    in_run = tied_next.copy()
    in_run[ties + 1] = True
    members = np.flatnonzero(in_run)
    # A member starts a run unless it is tied with the row before it.
    opens = np.ones(len(members), dtype=bool)
    opens[1:] = ~tied_next[members[1:] - 1]
    run_of_member = np.maximum.accumulate(np.where(opens, members, 0)).astype(np.uint64)
    rows = order[members]
    # One 10-byte gather per member (two field gathers would miss the cache twice).
    whole_keys = keys.view(np.dtype({"names": ["key"], "formats": [f"V{KEY_SIZE}"], "offsets": [0],
                                     "itemsize": keys.dtype.itemsize}))["key"][rows]
    prefix, suffix = key_parts(whole_keys.view(np.uint8).reshape(-1, KEY_SIZE))
    low = prefix & np.uint64((1 << index_bits) - 1)
    rest = suffix.astype(np.uint64)
    member_bits = max(1, (len(members) - 1).bit_length())
    fields: list[tuple[U64Array, int]]
    if index_bits + 16 + member_bits <= 64:
        fields = [((low << np.uint64(16)) | rest, index_bits + 16)]
    else:
        fields = [(rest, 16), (low, index_bits)]
    if run_of_member[0] != run_of_member[-1]:
        fields.append((run_of_member, index_bits))
    order[members] = rows[_lsd_argsort(fields, len(members))]


def sort_records(records: npt.NDArray[np.uint8], out: Records | None = None) -> Records:
    """Records sorted by full key (memcmp order), as a new array or into ``out``.

    Records with equal keys may come out in any order.  Memory beyond the output
    is ~9 bytes per record, plus ~50 per record whose top key bits tie with a
    neighbour's (a few per million on uniform keys, ~40% of skewed ones).
    Passing a reused ``out`` avoids the page faults of a fresh allocation, which
    can cost more than the sort itself on this machine.
    """
    records = as_records(records)
    if out is not None and (out.shape != records.shape or out.dtype != np.uint8 or not out.flags.c_contiguous):
        raise ValueError("out must be a C-contiguous uint8 array of the records' shape")
    if not records.flags.c_contiguous:
        records = np.ascontiguousarray(records)
    return _take_rows(records, argsort_records(records), out)
