"""Blob metadata under failures: extends stay disjoint when the primary of the metadata row dies.

Interleaving: the primary of the blob's tract -1 row is killed with SIGKILL
while eight clients extend the blob concurrently. At the kill, some extends
are in every stage of the two-phase commit: not yet logged, logged on the
primary only, prepared on some holders, prepared on all but unanswered.
Clients retry (with the same operation id) until the metaserver declares
the primary dead and the next holder of the row takes over. Whatever was
acknowledged before must be on the new primary, so no range is handed out
twice.
"""

from __future__ import annotations

import asyncio
import signal

import httpx
import pytest

from fds.client import Client
from fds.guid import parse_guid
from fds.models import TableModel
from fds.tlt import Table
from tests.support.credentials import AUTH


@pytest.mark.slow
def test_kill_metadata_primary_during_concurrent_extends(make_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster = make_cluster(tractservers=5, replicas=3)
    ms = cluster.metaserver_url
    ranges: list[tuple[int, int]] = []
    failures: list[str] = []

    async def main() -> str:
        async with Client(ms) as fds:
            blob = await fds.create_blob()
        table = Table(TableModel.model_validate_json(httpx.get(f"{ms}/v1/table", headers=AUTH).content))
        primary = table.holders(parse_guid(blob.guid), -1)[0].id
        victim = next(c.name for c in cluster.tract_children if cluster.server_id(c.name) == primary)
        stop = asyncio.Event()

        async def extender(i: int) -> None:
            async with Client(ms) as fds:
                handle = await fds.open_blob(blob.guid)
                n = 0
                while not stop.is_set():
                    n += 1
                    count = 1 + (i + n) % 3
                    try:
                        first = await handle.extend(count)
                    except Exception as exc:  # noqa: BLE001 - asserted empty below
                        failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    ranges.append((first, first + count))

        tasks = [asyncio.create_task(extender(i)) for i in range(8)]
        await asyncio.sleep(1.5)
        before = len(ranges)
        cluster.kill(victim, signal.SIGKILL)
        await asyncio.sleep(7.0)  # detection (3 s) and beyond
        stop.set()
        await asyncio.gather(*tasks)
        assert len(ranges) > before + 8, "extends did not resume after the failover"
        return blob.guid

    guid = asyncio.run(main())
    assert failures == [], failures[:5]
    ranges.sort()
    for (a0, a1), (b0, b1) in zip(ranges, ranges[1:], strict=False):
        assert a1 <= b0, f"ranges {a0}-{a1} and {b0}-{b1} overlap"

    async def size() -> int:
        async with Client(ms) as fds:
            return (await fds.stat(guid)).tracts

    # In-doubt extends may leave unused tracts, never fewer than were acknowledged.
    assert asyncio.run(size()) >= ranges[-1][1]


def test_retried_create_and_extend_are_answered_not_repeated(cluster_k3) -> None:  # type: ignore[no-untyped-def]
    """A metadata request sent twice with one operation id takes effect once."""
    from fds.guid import format_guid, new_guid

    ms = cluster_k3.metaserver_url
    table = Table(TableModel.model_validate_json(httpx.get(f"{ms}/v1/table", headers=AUTH).content))
    raw = new_guid()
    primary = table.holders(raw, -1)[0].url
    guid = format_guid(raw)
    params = {"version": table.version, "op": "create-1"}
    first = httpx.post(f"{primary}/v1/meta/{guid}", params=params, headers=AUTH)
    again = httpx.post(f"{primary}/v1/meta/{guid}", params=params, headers=AUTH)
    assert first.status_code == again.status_code == 201
    assert first.json()["incarnation"] == again.json()["incarnation"]
    other = httpx.post(f"{primary}/v1/meta/{guid}", params={"version": table.version, "op": "create-2"}, headers=AUTH)
    assert other.status_code == 409  # a different operation: the blob exists
    ext = {"version": table.version, "op": "extend-1"}
    a = httpx.post(f"{primary}/v1/meta/{guid}/extend", params=ext, json={"count": 5}, headers=AUTH).json()
    b = httpx.post(f"{primary}/v1/meta/{guid}/extend", params=ext, json={"count": 5}, headers=AUTH).json()
    assert a["first"] == b["first"] == 0
    assert httpx.get(f"{primary}/v1/meta/{guid}", params={"version": table.version}, headers=AUTH).json()["tracts"] == 5
    bad = httpx.post(f"{primary}/v1/meta/{guid}/extend", params={"version": table.version, "op": "../x"},
                     json={"count": 1}, headers=AUTH)
    assert bad.status_code == 400
