"""Replicas agree (issue 11): every tract write carries a version; replicas keep the newest, the client checks
every replica acknowledged the same one, a later write wins even from a writer whose clock is behind, and the
scrubber brings a row whose copies differ (a write that reached one replica only) to the newest everywhere.

Real servers on loopback (one k=3 cluster for the module); raw HTTP to single replicas where a test needs to
make them disagree.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import httpx

from fds.client import Client
from fds.guid import parse_guid
from fds.local import LocalCluster
from fds.models import TableModel
from fds.tlt import Table
from fds.versions import TractVersion
from tests.support.credentials import AUTH


def _table(cluster: LocalCluster) -> Table:
    return Table(TableModel.model_validate_json(httpx.get(f"{cluster.metaserver_url}/v1/table",
                                                          headers=AUTH).content))


async def _new_blob(cluster: LocalCluster, tracts: int) -> tuple[str, int]:
    async with Client(cluster.metaserver_url) as fds:
        blob = await fds.create_blob()
        await blob.extend(tracts)
        return blob.guid, blob.incarnation


def _copies(cluster: LocalCluster, guid: str, incarnation: int, tract: int) -> list[tuple[bytes, str]]:
    """(bytes, version) of the tract on each holder, asked one by one."""
    table = _table(cluster)
    out = []
    for server in table.holders(parse_guid(guid), tract):
        resp = httpx.get(f"{server.url}/v1/tracts/{guid}/{tract}", headers=AUTH,
                         params={"version": table.version, "incarnation": incarnation})
        assert resp.status_code == 200, resp.text
        out.append((resp.content, resp.headers["x-fds-version"]))
    return out


def test_a_write_older_than_the_stored_version_is_refused_naming_it(cluster_k3: LocalCluster) -> None:
    guid, incarnation = asyncio.run(_new_blob(cluster_k3, 1))

    async def write() -> None:
        async with Client(cluster_k3.metaserver_url) as fds:
            await (await fds.open_blob(guid)).write_tract(0, b"current")

    asyncio.run(write())
    (_, stored), *_ = _copies(cluster_k3, guid, incarnation, 0)
    table = _table(cluster_k3)
    server = table.holders(parse_guid(guid), 0)[0]
    params: dict[str, Any] = {"version": table.version, "incarnation": incarnation, "stamp": 1, "writer": 1}
    for url in (server.url, server.data_url):  # both ports say the same
        resp = httpx.put(f"{url}/v1/tracts/{guid}/0", params=params, content=b"stale", headers=AUTH)
        assert resp.status_code == 409, resp.text
        error = resp.json()["error"]
        assert error["code"] == "superseded" and stored in error["message"]
        assert TractVersion(error["stamp"], error["writer"]) == TractVersion.parse(stored)
    half = httpx.put(f"{server.data_url}/v1/tracts/{guid}/0", params={**params, "writer": None}, content=b"x",
                     headers=AUTH)
    assert half.status_code == 400 and half.json()["error"]["code"] == "bad_version"
    assert {data for data, _ in _copies(cluster_k3, guid, incarnation, 0)} == {b"current"}


def test_a_later_write_wins_even_from_a_writer_whose_clock_is_behind(cluster_k3: LocalCluster) -> None:
    """Client A's clock runs ten minutes ahead; client B writes after A's write was acknowledged. B's first
    try is older than A's version and refused on every replica (409 superseded); B moves its clock past it and
    writes again, and wins everywhere."""
    guid, incarnation = asyncio.run(_new_blob(cluster_k3, 1))
    ahead = TractVersion(0, 0)

    async def main() -> None:
        nonlocal ahead
        async with Client(cluster_k3.metaserver_url) as a, Client(cluster_k3.metaserver_url) as b:
            a._clock.observe(a._clock.next()._replace(stamp=a._clock.next().stamp + 600 * 10**9))
            await (await a.open_blob(guid)).write_tract(0, b"from A, clock ahead")
            ahead = TractVersion.parse(_copies(cluster_k3, guid, incarnation, 0)[0][1])
            await (await b.open_blob(guid)).write_tract(0, b"from B, later")

    asyncio.run(main())
    copies = _copies(cluster_k3, guid, incarnation, 0)
    assert {data for data, _ in copies} == {b"from B, later"}
    assert len({version for _, version in copies}) == 1
    assert TractVersion.parse(copies[0][1]) > ahead


def test_writes_arriving_in_different_orders_end_the_same_on_every_replica(cluster_k3: LocalCluster) -> None:
    """Two writes of one tract reach the replicas in opposite orders (as racing writers' do): every replica
    keeps the newer version, whichever came last."""
    guid, incarnation = asyncio.run(_new_blob(cluster_k3, 1))
    table = _table(cluster_k3)
    holders = table.holders(parse_guid(guid), 0)
    base = {"version": table.version, "incarnation": incarnation}
    older, newer = (TractVersion(10**18, 1), b"older"), (TractVersion(10**18, 2), b"newer")
    for i, server in enumerate(holders):
        for version, data in (older, newer) if i % 2 else (newer, older):
            resp = httpx.put(f"{server.data_url}/v1/tracts/{guid}/0", content=data, headers=AUTH,
                             params={**base, "stamp": version.stamp, "writer": version.writer})
            assert resp.status_code == (409 if data == b"older" and not i % 2 else 200), resp.text
    assert _copies(cluster_k3, guid, incarnation, 0) == [(b"newer", str(newer[0]))] * 3


def test_concurrent_writers_end_with_one_value_on_every_replica(cluster_k3: LocalCluster) -> None:
    guid, incarnation = asyncio.run(_new_blob(cluster_k3, 2))
    values = {w: [f"writer {w} write {i} ".encode() * 2000 for i in range(15)] for w in range(3)}

    async def writer(w: int) -> None:
        async with Client(cluster_k3.metaserver_url) as fds:
            blob = await fds.open_blob(guid)
            for value in values[w]:
                await asyncio.gather(blob.write_tract(0, value), blob.write_tract(1, value))

    async def main() -> None:
        await asyncio.gather(*(writer(w) for w in values))

    asyncio.run(main())
    written = {v for vs in values.values() for v in vs}
    for tract in (0, 1):
        copies = _copies(cluster_k3, guid, incarnation, tract)
        assert len(set(copies)) == 1, f"replicas of tract {tract} differ: {[(len(d), v) for d, v in copies]}"
        assert copies[0][0] in written


def test_a_write_that_reached_one_replica_only_is_reconciled_by_the_scrub(cluster_k3: LocalCluster) -> None:
    """As a writer that crashed mid-write leaves it: one replica holds a newer version than the others. Reads
    may see either until the scrub; one scrub pass on each holder brings every copy to the newest."""
    guid, incarnation = asyncio.run(_new_blob(cluster_k3, 1))
    old, new = os.urandom(300_000), os.urandom(200_000)

    async def write() -> None:
        async with Client(cluster_k3.metaserver_url) as fds:
            await (await fds.open_blob(guid)).write_tract(0, old)

    asyncio.run(write())
    table = _table(cluster_k3)
    holders = table.holders(parse_guid(guid), 0)
    stored = TractVersion.parse(_copies(cluster_k3, guid, incarnation, 0)[0][1])
    newer = TractVersion(stored.stamp + 1, 4242)
    resp = httpx.put(f"{holders[1].data_url}/v1/tracts/{guid}/0", content=new, headers=AUTH,
                     params={"version": table.version, "incarnation": incarnation, "stamp": newer.stamp,
                             "writer": newer.writer})
    assert resp.status_code == 200 and (resp.json()["stamp"], resp.json()["writer"]) == newer
    assert [data for data, _ in _copies(cluster_k3, guid, incarnation, 0)] == [old, new, old]

    reports = [httpx.post(f"{s.url}/v1/admin/scrub", params={"rate": 0}, timeout=120, headers=AUTH).json()
               for s in holders]
    assert [r["newer_copied"] for r in reports] == [1, 0, 1], reports
    copies = _copies(cluster_k3, guid, incarnation, 0)
    assert copies == [(new, str(newer))] * 3

    async def read() -> list[bytes]:
        async with Client(cluster_k3.metaserver_url) as fds:
            blob = await fds.open_blob(guid)
            return [bytes(await blob.read_tract(0)) for _ in range(6)]

    assert asyncio.run(read()) == [new] * 6
