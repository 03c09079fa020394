"""Concurrent extends from several processes hand out disjoint ranges."""

from __future__ import annotations

import multiprocessing as mp
import random

import pytest

from fds.client import SyncClient
from fds.local import LocalCluster


def _extender(metaserver: str, guid: str, rounds: int, seed: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    rng = random.Random(seed)
    got = []
    with SyncClient(metaserver) as fds:
        blob = fds.open_blob(guid)
        for _ in range(rounds):
            count = rng.randint(1, 4)
            got.append((blob.extend(count), count))
    out.put(got)


@pytest.mark.parametrize("which", ["cluster_k1", "cluster_k3"])
def test_concurrent_extends_are_disjoint(which: str, request: pytest.FixtureRequest) -> None:
    cluster: LocalCluster = request.getfixturevalue(which)
    with SyncClient(cluster.metaserver_url) as fds:
        guid = fds.create_blob().guid
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_extender, args=(cluster.metaserver_url, guid, 25, seed, out)) for seed in range(4)]
    for p in procs:
        p.start()
    ranges = [r for _ in procs for r in out.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    covered: set[int] = set()
    for first, count in ranges:
        span = set(range(first, first + count))
        assert not covered & span, f"range {first}+{count} overlaps another"
        covered |= span
    total = sum(count for _, count in ranges)
    assert covered == set(range(total))  # no gaps either: every tract handed out exactly once
    with SyncClient(cluster.metaserver_url) as fds:
        assert fds.open_blob(guid).size() == total
