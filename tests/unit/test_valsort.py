"""valsort semantics: order, duplicates, checksum, chunking and partition summaries."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from apps.minutesort import Summary, Validator, checksum, combine, generate, sort_records, validate, validate_file


def reference_valsort(data: bytes) -> Summary:
    """valsort.c's summarize_records, one record at a time."""
    records = [data[i:i + 100] for i in range(0, len(data), 100)]
    duplicates = unordered = 0
    first_unordered = None
    for index in range(1, len(records)):
        previous, current = records[index - 1][:10], records[index][:10]
        if current == previous:
            duplicates += 1
        elif current < previous:
            unordered += 1
            first_unordered = index if first_unordered is None else first_unordered
    return Summary(records=len(records), duplicates=duplicates, unordered=unordered, first_unordered=first_unordered,
                   checksum=sum(zlib.crc32(r) for r in records),
                   first_key=records[0][:10] if records else None, last_key=records[-1][:10] if records else None)


@pytest.fixture(scope="module")
def sorted_records() -> np.ndarray:
    return sort_records(generate(0, 5000))


def test_checksum_vectors_and_additivity() -> None:
    first, second = generate(0, 1000), generate(1000, 1000)
    assert f"{checksum(first):x}" == "1ea6370b955"
    assert f"{checksum(second):x}" == "1f462a767f5"
    assert f"{checksum(np.concatenate([first, second])):x}" == "3dec618214a"
    assert validate([generate(0, 10, ascii=True)]).checksum_hex == "469302dca"
    assert checksum(b"") == 0


def test_checksum_ignores_order() -> None:
    records = generate(0, 3000, skew=True)
    shuffled = records[np.random.default_rng(1).permutation(len(records))]
    assert checksum(shuffled) == checksum(records) == checksum(records.tobytes())
    altered = records.copy()
    altered[17, 50] ^= 1
    assert checksum(altered) != checksum(records)


def test_sorted_output_is_valid(sorted_records: np.ndarray) -> None:
    summary = validate([sorted_records])
    assert summary == reference_valsort(sorted_records.tobytes())
    assert summary.valid and summary.records == 5000 and summary.duplicates == 0
    assert summary.checksum == checksum(generate(0, 5000))
    assert summary.first_key == sorted_records[0, :10].tobytes()
    assert summary.last_key == sorted_records[-1, :10].tobytes()


def test_generated_input_is_unordered() -> None:
    data = generate(0, 2000).tobytes()
    summary = validate([data])
    assert summary == reference_valsort(data)
    assert not summary.valid and summary.first_unordered == 2  # key 2 (0x4597...) < key 1 (0x95E0...)


def test_detects_one_record_out_of_place(sorted_records: np.ndarray) -> None:
    broken = sorted_records.copy()
    broken[[1234, 3000]] = broken[[3000, 1234]]
    summary = validate([broken])
    assert summary == reference_valsort(broken.tobytes())
    # Record 1234 now holds a large key: 1235 is below it; 3000 holds a small key: below 2999.
    assert summary.unordered == 2 and summary.first_unordered == 1235
    assert summary.checksum == checksum(sorted_records)


def test_counts_duplicate_keys(sorted_records: np.ndarray) -> None:
    duplicated = sorted_records.copy()
    duplicated[11, :10] = duplicated[10, :10]          # one duplicate
    duplicated[101:104, :10] = duplicated[100, :10]    # three more
    duplicated[200, 9] = duplicated[201, 9]            # keys differing only in byte 9 stay distinct
    summary = validate([duplicated])
    assert summary == reference_valsort(duplicated.tobytes())
    assert summary.duplicates == 4


def test_detects_disorder_in_the_last_key_byte(sorted_records: np.ndarray) -> None:
    broken = sorted_records.copy()
    broken[500, :10] = broken[499, :10]
    broken[500, 9] = broken[499, 9] - 1 if broken[499, 9] else 0
    broken[499, 9] = max(int(broken[499, 9]), 1)
    summary = validate([broken])
    assert summary == reference_valsort(broken.tobytes())
    assert summary.unordered == 1 and summary.first_unordered == 500


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_validation_equals_whole(seed: int) -> None:
    rng = np.random.default_rng(seed)
    records = sort_records(generate(seed * 10**6, 3000, skew=True))
    records[[5, 2900]] = records[[2900, 5]]
    records[700, :10] = records[699, :10]
    data = records.tobytes()
    cuts = sorted(set(rng.integers(0, len(data), 40).tolist()) | {100, 101, 199, 200})
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    assert validate(pieces) == validate([data]) == reference_valsort(data)
    byte_by_byte = Validator()
    for i in range(0, 1000):
        byte_by_byte.feed(data[i:i + 1])
    byte_by_byte.feed(memoryview(data)[1000:])
    assert byte_by_byte.summary() == validate([records])


def test_partition_summaries_combine_like_valsort_s(sorted_records: np.ndarray) -> None:
    parts = [sorted_records[:1000], sorted_records[1000:1000], sorted_records[1000:4321], sorted_records[4321:]]
    summaries = [validate([part]) for part in parts]
    assert summaries[1] == Summary()
    assert combine(summaries) == validate([sorted_records])
    assert combine(Summary.from_json(s.to_json()) for s in summaries) == validate([sorted_records])
    # Partitions in the wrong order: the boundary between them is an unordered record.
    swapped = combine([summaries[2], summaries[0], summaries[3]])
    assert swapped.unordered == 1 and swapped.first_unordered == 3321 and not swapped.valid
    assert swapped.checksum == checksum(sorted_records)
    # A partition that repeats the previous last key adds a duplicate.
    repeat = sorted_records[999:1001]
    assert combine([summaries[0], validate([repeat])]).duplicates == 1


def test_first_unordered_offsets_into_later_partitions(sorted_records: np.ndarray) -> None:
    tail = sorted_records[2000:].copy()
    tail[[10, 11]] = tail[[11, 10]]
    combined = combine([validate([sorted_records[:2000]]), validate([tail])])
    assert combined.first_unordered == 2011 and combined.unordered == 1


def test_validate_file(tmp_path: Path, sorted_records: np.ndarray) -> None:
    path = tmp_path / "out.dat"
    path.write_bytes(sorted_records.tobytes())
    assert validate_file(path, chunk_bytes=4096 + 17) == validate([sorted_records])
    path.write_bytes(sorted_records.tobytes() + b"x" * 42)
    with pytest.raises(ValueError, match="partial record"):
        validate_file(path)


def test_empty_input() -> None:
    summary = validate([b""])
    assert summary.records == 0 and summary.first_key is None and summary.checksum == 0
