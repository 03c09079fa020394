"""Placement: ``row = (xxh3_64(GUID) + tract) mod rows``, and how evenly it spreads a blob.

The spread bounds are worked out from how the table is built (see the comments
on each test), not picked to make the tests pass.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import xxhash

from fds.placement import MAX_TRACT, METADATA_TRACT, guid_hash, tract_row
from fds.tlt import PERMUTATIONS, Member, build_rows


def _guids(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(count)]


def _members(n: int) -> list[Member]:
    """n servers, each its own failure domain."""
    return [Member(f"ts{i}", f"host{i}") for i in range(n)]


def _landings(rows: list[list[int]], guid: bytes, tracts: range) -> Counter[int]:
    """How many of ``tracts`` of ``guid`` each server holds (every replica counts)."""
    return Counter(server for t in tracts for server in rows[tract_row(guid, t, len(rows))])


# -- the function itself -----------------------------------------------------


@pytest.mark.parametrize("rows", [1, 2, 7, 60, 240, 1000, 2**31 - 1])
def test_tract_row_matches_independent_computation(rows: int) -> None:
    for guid in _guids(50):
        h = xxhash.xxh3_64_intdigest(guid)
        for tract in (0, 1, 2, 17, 1000, MAX_TRACT):
            assert tract_row(guid, tract, rows) == (h + tract) % rows


def test_hash_is_xxh3_64_of_the_raw_guid_bytes() -> None:
    guid = bytes(range(16))
    assert guid_hash(guid) == xxhash.xxh3_64_intdigest(guid) == xxhash.xxh3_64(guid).intdigest()
    # Not of its hex text: the two would place every blob differently.
    assert guid_hash(guid) != xxhash.xxh3_64_intdigest(guid.hex().encode())
    assert 0 <= guid_hash(guid) < 2**64


def test_addition_does_not_wrap_at_2_64() -> None:
    # Pick the tract so hash + tract = 2**64 + 5 exactly. With 7 rows the exact
    # sum gives (2**64 + 5) % 7 = 0, while a 64-bit wrapping add would give 5 % 7 = 5.
    guid = _guids(1)[0]
    h = xxhash.xxh3_64_intdigest(guid)
    tract = 2**64 - h + 5
    assert tract_row(guid, tract, 7) == (2**64 + 5) % 7 == 0
    assert tract_row(guid, tract, 7) != ((h + tract) % 2**64) % 7


def test_metadata_tract_maps_into_range() -> None:
    assert METADATA_TRACT == -1
    for rows in (1, 3, 7, 60, 241):
        for guid in _guids(200):
            row = tract_row(guid, METADATA_TRACT, rows)
            assert 0 <= row < rows
            # Tract -1 is the row just before tract 0's, wrapping to the last row.
            assert row == (tract_row(guid, 0, rows) - 1) % rows


def test_metadata_tract_of_a_blob_whose_tract_0_is_row_0_is_the_last_row() -> None:
    rows = 7
    guid = next(g for g in _guids(1000) if xxhash.xxh3_64_intdigest(g) % rows == 0)
    assert tract_row(guid, 0, rows) == 0
    assert tract_row(guid, METADATA_TRACT, rows) == rows - 1


@pytest.mark.parametrize("rows", [1, 5, 84, 240])
def test_consecutive_tracts_walk_consecutive_rows(rows: int) -> None:
    for guid in _guids(20):
        first = tract_row(guid, 0, rows)
        walked = [tract_row(guid, t, rows) for t in range(3 * rows + 3)]
        assert walked == [(first + t) % rows for t in range(3 * rows + 3)]


# -- spread over a table built by build_rows -----------------------------------


@pytest.mark.parametrize("servers", [4, 8, 16])
def test_unreplicated_blob_spreads_exactly_evenly_over_whole_table_walks(servers: int) -> None:
    # k=1: the table is PERMUTATIONS permutations of the servers, so each server
    # is in exactly PERMUTATIONS rows. m whole walks of the table put exactly
    # m * PERMUTATIONS tracts on every server, whatever row the blob starts at.
    rows = build_rows(_members(servers), 1, random.Random(servers))
    assert len(rows) == PERMUTATIONS * servers
    for walks in (1, 3):
        for guid in _guids(10, seed=servers):
            counts = _landings(rows, guid, range(walks * len(rows)))
            assert counts == {s: walks * PERMUTATIONS for s in range(servers)}


@pytest.mark.parametrize("servers", [4, 8, 16])
def test_unreplicated_blob_of_any_length_is_within_2_of_the_mean(servers: int) -> None:
    # A window of r consecutive rows of concatenated permutations (cyclically: the
    # table is a whole number of permutations) is a tail of one permutation
    # (a < n rows), f whole permutations, and a head of another (b < n rows).
    # A server appears f, f+1 or f+2 times, and f*n = r - a - b, so its count is
    # within 2 - 2/n of r/n. Whole walks add the same to every server.
    rows = build_rows(_members(servers), 1, random.Random(100 + servers))
    bound = 2 - 2 / servers
    for guid in _guids(10, seed=servers):
        for n_tracts in (1, servers - 1, servers + 1, 3 * len(rows) + 5, 3 * len(rows) + len(rows) // 2 + 3):
            counts = _landings(rows, guid, range(n_tracts))
            mean = n_tracts / servers
            for s in range(servers):
                assert abs(counts[s] - mean) <= bound + 1e-9, (s, counts[s], mean)


@pytest.mark.parametrize("servers", [4, 8, 16])
def test_replicated_blob_spreads_with_the_tables_own_balance(servers: int) -> None:
    # k=3: m whole walks put exactly m * (rows holding s) replicas on server s.
    # build_rows keeps those row counts within 2 of each other (test_tlt checks
    # that bound), so every server's count is within 2m of the mean.
    k = 3
    rows = build_rows(_members(servers), k, random.Random(servers))
    per_server = Counter(s for row in rows for s in row)
    walks = 4
    mean = walks * len(rows) * k / servers
    for guid in _guids(5, seed=servers):
        counts = _landings(rows, guid, range(walks * len(rows)))
        assert counts == {s: walks * per_server[s] for s in range(servers)}
        assert all(abs(counts[s] - mean) <= 2 * walks for s in range(servers)), (counts, mean)
        # Each tract lands on k distinct servers.
        assert sum(counts.values()) == k * walks * len(rows)


@pytest.mark.parametrize(("servers", "k"), [(8, 1), (16, 1), (8, 3), (16, 3)])
def test_random_blob_over_many_tracts_has_max_over_mean_close_to_1(servers: int, k: int) -> None:
    rng = random.Random(4242 + servers * k)
    rows = build_rows(_members(servers), k, rng)
    guid = rng.randbytes(16)
    n_tracts = 100 * len(rows) + 37
    counts = _landings(rows, guid, range(n_tracts))
    assert set(counts) == set(range(servers))
    mean = n_tracts * k / servers
    walks, rest = divmod(n_tracts, len(rows))
    # The bounds of the two tests above: k=1 is within 2 tracts of the mean; for
    # k=3 each whole walk adds at most 2 to a server's lead and the leftover rows
    # at most ``rest``.
    slack = 2 if k == 1 else 2 * walks + rest
    assert max(counts.values()) / mean <= 1 + slack / mean
    assert min(counts.values()) / mean >= 1 - slack / mean
    assert slack / mean < 0.1
