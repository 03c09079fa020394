"""Every server serves Prometheus metrics that move with what it does."""

from __future__ import annotations

import asyncio

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fds.cli._local import LocalCluster
from fds.client import Client
from tests.conftest import AUTH


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = httpx.get(f"{url}/metrics", headers=AUTH)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _total(samples: dict, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and all((k, labels[k]) in ls for k in labels))


def test_tract_server_and_metaserver_metrics(cluster_k1: LocalCluster) -> None:
    servers = [c.url for c in cluster_k1.tract_children]
    before = {url: _samples(url) for url in servers}

    async def work() -> None:
        async with Client(cluster_k1.metaserver_url) as fds:
            blob = await fds.create_blob()
            await blob.extend(8)
            await blob.write_tracts((i, b"m" * 1000) for i in range(8))
            async for _ in blob.read_tracts(range(8)):
                pass

    asyncio.run(work())
    after = {url: _samples(url) for url in servers}
    stored = sum(_total(after[u], "fds_tracts_stored") - _total(before[u], "fds_tracts_stored") for u in servers)
    assert stored == 8
    puts = sum(_total(after[u], "fds_requests_total", operation="data PUT /v1/tracts/{guid}/{tract}", status="200")
               - _total(before[u], "fds_requests_total", operation="data PUT /v1/tracts/{guid}/{tract}",
                        status="200") for u in servers)
    assert puts == 8
    bytes_out = sum(_total(after[u], "fds_body_bytes_total", operation="data GET /v1/tracts/{guid}/{tract}",
                           direction="out")
                    - _total(before[u], "fds_body_bytes_total", operation="data GET /v1/tracts/{guid}/{tract}",
                             direction="out") for u in servers)
    assert bytes_out == 8 * 1000
    one = after[servers[0]]
    assert _total(one, "fds_disk_free_bytes") > 0 and _total(one, "fds_table_version") >= 1
    assert _total(one, "fds_request_seconds_count", operation="POST /v1/meta/{guid}") + sum(
        _total(after[u], "fds_request_seconds_count", operation="POST /v1/meta/{guid}") for u in servers[1:]) >= 1

    meta = _samples(cluster_k1.metaserver_url)
    assert _total(meta, "fds_servers_alive") == 4 and _total(meta, "fds_servers_registered") == 4
    ages = [v for (n, _), v in meta.items() if n == "fds_heartbeat_age_seconds"]
    assert len(ages) == 4 and all(0 <= age < 5 for age in ages)
    assert _total(meta, "fds_requests_total", operation="GET /v1/table", status="200") >= 1
