"""Blob metadata records on a tract server: applied atomically, answered only once committed.

Issue 11: ``put_meta_if_newer`` was a read then a write, run at once by the two-phase commit's
prepare, the filler and the scrubber, so an acknowledged extend could be replaced by an older
record; and a primary answered ``stat`` from records its replicas might not have.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fds.client import Client
from fds.guid import format_guid, new_guid
from fds.local import LocalCluster
from fds.models import MetaRecord, TableModel
from fds.tlt import Table
from fds.tractserver._store import TractStore
from tests.support.clusters import shared_cluster
from tests.support.credentials import AUTH


def _record(guid: bytes, epoch: int, seq: int) -> MetaRecord:
    return MetaRecord(guid=format_guid(guid), tracts=seq, created=1.0, seq=seq, epoch=epoch, incarnation=1)


def test_concurrent_applies_keep_the_newest_record(tmp_path: Path) -> None:
    """Eight threads apply a blob's records at once, as prepare, fill and scrub do, each its own share in
    ascending order; the blob must end with the newest record. Without the lock, a thread that compared
    against an old record put its own after a newer one had gone in (10 of 20 blobs lost it here)."""
    store = TractStore(tmp_path, direct_io=False)
    guids = [new_guid() for _ in range(20)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: between a compare and its put, were they two steps
    try:
        for guid in guids:
            records = [_record(guid, 1, seq) for seq in range(1, 201)]
            start = threading.Barrier(8)

            def apply(share: list[MetaRecord], guid: bytes = guid, start: threading.Barrier = start) -> None:
                start.wait()
                for record in share:
                    store.put_meta_if_newer(guid, record)

            threads = [threading.Thread(target=apply, args=([r for r in records if r.seq % 8 == i],))
                       for i in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        sys.setswitchinterval(interval)
    try:
        lost = [g for g in guids if (stored := store.meta(g)) is None or stored.seq != 200]
        assert not lost, f"{len(lost)} of {len(guids)} blobs lost their newest record"
        # Older and equal records are refused; a newer one is kept.
        assert not store.put_meta_if_newer(guids[0], _record(guids[0], 1, 200))
        assert not store.put_meta_if_newer(guids[0], _record(guids[0], 0, 999))
        assert store.put_meta_if_newer(guids[0], _record(guids[0], 2, 1))
    finally:
        store.close()


@pytest.fixture(scope="module")
def cluster_k3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A k=3 cluster whose heartbeat timeout outlasts a tract server's restart (it must not be declared dead)."""
    yield from shared_cluster(tmp_path_factory, "k3-slow-timeout", replicas=3, heartbeat_timeout=20.0)


def test_primary_answers_only_committed_records(cluster_k3: LocalCluster) -> None:
    """An extend the primary logged but could not replicate (a holder was down) is in doubt: ``stat`` must not
    show it while a holder lacks it (503), and once the holder is back, ``stat`` first replicates it.

    Interleaving: a holder of the blob's metadata row is SIGKILLed; an extend reaches the primary, which logs
    the new record and fails to prepare it on the dead holder (503, nothing acknowledged). A ``stat`` then
    must not answer from the primary's log. The holder restarts (well within the heartbeat timeout, so the
    table does not change) and the next ``stat`` finishes the commit before it answers.
    """
    import signal

    ms = cluster_k3.metaserver_url

    async def create() -> str:
        async with Client(ms) as fds:
            blob = await fds.create_blob()
            await blob.extend(2)
            return blob.guid

    guid = asyncio.run(create())
    raw = bytes.fromhex(guid.replace("-", ""))
    table = Table(TableModel.model_validate_json(httpx.get(f"{ms}/v1/table", headers=AUTH).content))
    primary, replica, *_ = table.holders(raw, -1)
    child = next(c for c in cluster_k3.tract_children if c.url == replica.url)
    params = {"version": table.version}
    cluster_k3.kill(child.name, signal.SIGKILL)
    try:
        extend = httpx.post(f"{primary.url}/v1/meta/{guid}/extend", params=params, json={"count": 3}, headers=AUTH)
        assert extend.status_code == 503, extend.text
        stat = httpx.get(f"{primary.url}/v1/meta/{guid}", params=params, headers=AUTH)
        assert stat.status_code == 503, f"stat answered from a record a holder lacks: {stat.text}"
    finally:
        cluster_k3.restart(child.name)
    stat = httpx.get(f"{primary.url}/v1/meta/{guid}", params=params, headers=AUTH)
    assert stat.status_code == 200, stat.text
    assert stat.json()["tracts"] == 5  # the in-doubt extend, now committed
    row = table.row_of(raw, -1)
    listing = httpx.post(f"{replica.url}/v1/internal/rows", json={"rows": [row], "version": table.version},
                         headers=AUTH, timeout=30).json()
    (record,) = [m for m in listing["meta"] if m["guid"] == guid]
    assert record["tracts"] == 5, "stat answered before the holder had the record"
    cluster_k3.wait_healthy()


def test_batched_records_keep_the_newest_each(tmp_path: Path) -> None:
    """The group commit's batch: each blob's record is kept only if newer, all in one write."""
    store = TractStore(tmp_path, direct_io=False)
    try:
        a, b, c = new_guid(), new_guid(), new_guid()
        assert store.put_meta_if_newer(a, _record(a, 1, 5))
        assert store.put_metas_if_newer([_record(a, 1, 4), _record(b, 1, 1), _record(c, 2, 1)]) == [False, True, True]
        stored = [store.meta(g) for g in (a, b, c)]
        assert [(r.epoch, r.seq) for r in stored if r is not None] == [(1, 5), (1, 1), (2, 1)]
        store.mark_many_committed([_record(b, 1, 1), _record(c, 2, 1)])
        assert store.is_committed(_record(b, 1, 1), b) and not store.is_committed(_record(a, 1, 5), a)
    finally:
        store.close()


def test_a_batch_of_records_must_be_of_one_row(cluster_k3: LocalCluster) -> None:
    """The holders' batch route refuses records of blobs of different rows (400, saying so) and applies one row's."""
    ms = cluster_k3.metaserver_url
    table = Table(TableModel.model_validate_json(httpx.get(f"{ms}/v1/table", headers=AUTH).content))
    first = new_guid()
    row = table.row_of(first, -1)
    same = next(g for g in iter(new_guid, None) if table.row_of(g, -1) == row)
    other = next(g for g in iter(new_guid, None) if table.row_of(g, -1) != row)
    replica = table.holders(first, -1)[1]
    url, params = f"{replica.url}/v1/internal/meta", {"version": table.version}
    mixed = {"records": [_record(first, 1, 1).model_dump(), _record(other, 1, 1).model_dump()]}
    resp = httpx.put(url, params=params, json=mixed, headers=AUTH)
    assert resp.status_code == 400 and "one row" in resp.json()["error"]["message"], resp.text
    resp = httpx.put(url, params=params, json={"records": []}, headers=AUTH)
    assert resp.status_code in (400, 422) and "error" in resp.json(), resp.text
    good = {"records": [_record(first, 0, 1).model_dump(), _record(same, 0, 1).model_dump()]}
    resp = httpx.put(url, params=params, json=good, headers=AUTH)
    assert resp.status_code == 200, resp.text
    listing = httpx.post(f"{replica.url}/v1/internal/rows", json={"rows": [row], "version": table.version},
                         headers=AUTH, timeout=30).json()
    assert {format_guid(first), format_guid(same)} <= {m["guid"] for m in listing["meta"]}
