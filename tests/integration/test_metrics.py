"""Every server serves Prometheus metrics that move with what it does, and the Grafana dashboard in
``deploy/grafana`` asks only for metrics the servers really export.

What the issue lists, and where each is proved:

- requests, bytes and latency by operation and status: ``test_requests_bytes_and_latency_*``
  (tract server API port and data port, metaserver, gateway);
- tracts and bytes stored per disk, disk free: ``test_stored_per_disk_*``;
- checksum failures: ``test_checksum_failures_are_counted``;
- recovery progress: ``test_recovery_progress_gauges`` (in-process, mid-copy) and
  ``test_recovery_in_a_real_cluster`` (after a tract server dies);
- heartbeat age: ``test_heartbeat_age_and_traffic``.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fds.client import Client
from fds.config import MetaserverConfig
from fds.local import LocalCluster
from fds.metaserver._metrics import register_metaserver_metrics
from fds.metaserver._state import MetaState
from fds.models import FillProgress, Heartbeat, RegisterRequest, TableModel
from fds.placement import tract_row
from fds.web import Metrics
from tests.support.clusters import shared_cluster

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "fds-dashboard.json"
DATA_PUT = "data PUT /v1/tracts/{guid}/{tract}"
DATA_GET = "data GET /v1/tracts/{guid}/{tract}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def _scrape(cluster: LocalCluster, url: str) -> Samples:
    resp = httpx.get(f"{url}/metrics", headers=cluster.headers("read"))
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain"), resp.text
    return _parse(resp.text)


def _total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of every sample of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def _has(samples: Samples, name: str, **labels: str) -> bool:
    wanted = set(labels.items())
    return any(n == name and wanted <= ls for (n, ls) in samples)


def _moved(before: dict[str, Samples], after: dict[str, Samples], name: str, **labels: str) -> float:
    return sum(_total(after[u], name, **labels) - _total(before[u], name, **labels) for u in after)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """k = 3 on 4 tract servers, with a gateway; no tract cache, so reads go to disk (and checksums)."""
    yield from shared_cluster(tmp_path_factory, "metrics", replicas=3, gateway=True, cache_bytes=0)


def _write_and_read(cluster: LocalCluster, tracts: int, size: int) -> tuple[str, int]:
    async def work() -> tuple[str, int]:
        async with Client(cluster.metaserver_url, token=cluster.token("write")) as fds:
            blob = await fds.create_blob()
            await blob.extend(tracts)
            await blob.write_tracts((i, bytes([i + 1]) * size) for i in range(tracts))
            async for _ in blob.read_tracts(range(tracts)):
                pass
            return blob.guid, blob.incarnation

    return asyncio.run(work())


def _raw_request(url: str, request: bytes) -> bytes:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def test_requests_bytes_and_latency_on_tract_servers(cluster: LocalCluster) -> None:
    servers = [c.url for c in cluster.tract_children]
    before = {u: _scrape(cluster, u) for u in servers}
    _write_and_read(cluster, 8, 1000)
    after = {u: _scrape(cluster, u) for u in servers}

    # Every replica of every tract: 8 tracts x k=3 PUTs on the data port, each 1000 bytes in, answered 200.
    assert _moved(before, after, "fds_requests_total", operation=DATA_PUT, status="200") == 24
    assert _moved(before, after, "fds_body_bytes_total", operation=DATA_PUT, status="200", direction="in") == 24000
    assert _moved(before, after, "fds_request_seconds_count", operation=DATA_PUT, status="200") == 24
    assert _moved(before, after, "fds_request_seconds_sum", operation=DATA_PUT, status="200") > 0
    # Reads go to one replica each.
    assert _moved(before, after, "fds_requests_total", operation=DATA_GET, status="200") == 8
    assert _moved(before, after, "fds_body_bytes_total", operation=DATA_GET, status="200", direction="out") == 8000
    # The API port (FastAPI) counts the metadata calls: one create and one extend on the blob's primary.
    assert _moved(before, after, "fds_requests_total", operation="POST /v1/meta/{guid}", status="201") == 1
    assert _moved(before, after, "fds_request_seconds_count", operation="POST /v1/meta/{guid}/extend") >= 1

    # Errors are counted by status, on the data port too, including requests it cannot even parse;
    # an unknown method does not become a label value of its own.
    ref = TableModel.model_validate(httpx.get(f"{cluster.metaserver_url}/v1/table",
                                              headers=cluster.headers("read")).json()).servers[0]
    owner, data_url = ref.url, ref.data_url
    first = _scrape(cluster, owner)
    assert _raw_request(data_url, b"this is not http\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert _raw_request(data_url, b"BREW /pot HTTP/1.1\r\nhost: x\r\n\r\n").startswith(b"HTTP/1.1 401")
    stale = httpx.get(f"{data_url}/v1/tracts/{'0' * 32}/0", params={"version": 0, "incarnation": 1},
                      headers=cluster.headers("read"))
    assert stale.status_code == 409
    then = _scrape(cluster, owner)
    assert _total(then, "fds_requests_total", operation="data malformed", status="400") == \
        _total(first, "fds_requests_total", operation="data malformed", status="400") + 1
    assert _total(then, "fds_requests_total", operation="data other unmatched", status="401") == \
        _total(first, "fds_requests_total", operation="data other unmatched", status="401") + 1
    assert _total(then, "fds_request_seconds_count", operation=DATA_GET, status="409") == \
        _total(first, "fds_request_seconds_count", operation=DATA_GET, status="409") + 1
    assert not any("BREW" in dict(labels).get("operation", "") for (_, labels) in then)
    assert _total(then, "fds_build_info", role="tractserver") == 1


def test_requests_bytes_and_latency_on_metaserver_and_gateway(cluster: LocalCluster) -> None:
    meta, gateway = cluster.metaserver_url, cluster.gateway_url
    before = {meta: _scrape(cluster, meta), gateway: _scrape(cluster, gateway)}
    body = b"g" * 5000
    created = httpx.post(f"{gateway}/v1/blobs", headers=cluster.headers("write"))
    assert created.status_code == 201
    guid = created.json()["guid"]
    put = httpx.put(f"{gateway}/v1/blobs/{guid}", content=body, headers=cluster.headers("write"))
    assert put.status_code == 201, put.text
    got = httpx.get(f"{gateway}/v1/blobs/{guid}", headers=cluster.headers("read"))
    assert got.content == body
    assert httpx.get(f"{meta}/v1/cluster").status_code == 401  # no credentials
    after = {meta: _scrape(cluster, meta), gateway: _scrape(cluster, gateway)}

    gw_before, gw = before[gateway], after[gateway]
    put_op = {"operation": "PUT /v1/blobs/{guid}", "status": "201"}
    assert _total(gw, "fds_requests_total", **put_op) - _total(gw_before, "fds_requests_total", **put_op) == 1
    assert _total(gw, "fds_body_bytes_total", direction="in", **put_op) - \
        _total(gw_before, "fds_body_bytes_total", direction="in", **put_op) == len(body)
    get_op = {"operation": "GET /v1/blobs/{guid}", "status": "200"}
    assert _total(gw, "fds_body_bytes_total", direction="out", **get_op) - \
        _total(gw_before, "fds_body_bytes_total", direction="out", **get_op) == len(body)
    assert _total(gw, "fds_request_seconds_count", **get_op) - _total(gw_before, "fds_request_seconds_count",
                                                                          **get_op) == 1
    assert _total(gw, "fds_build_info", role="gateway") == 1

    ms_before, ms = before[meta], after[meta]
    assert _total(ms, "fds_requests_total", operation="GET /v1/table", status="200") >= 1  # the gateway's client
    assert _total(ms, "fds_requests_total", status="401") - _total(ms_before, "fds_requests_total", status="401") == 1
    assert _total(ms, "fds_request_seconds_count", operation="POST /v1/servers/{server_id}/heartbeat",
                  status="200") > _total(ms_before, "fds_request_seconds_count",
                                         operation="POST /v1/servers/{server_id}/heartbeat", status="200")
    assert _total(ms, "fds_build_info", role="metaserver") == 1


def test_stored_per_disk_rises_after_a_write(cluster: LocalCluster) -> None:
    children = cluster.tract_children
    before = {c.url: _scrape(cluster, c.url) for c in children}
    _write_and_read(cluster, 5, 3000)
    after = {c.url: _scrape(cluster, c.url) for c in children}
    assert _moved(before, after, "fds_tracts_stored") == 5 * 3
    assert _moved(before, after, "fds_bytes_stored") == 5 * 3 * 3000
    for child in children:
        samples = after[child.url]
        per_disk = {"server": cluster.server_id(child.name), "disk": str(Path(child.dir).resolve())}
        for name in ("fds_tracts_stored", "fds_bytes_stored", "fds_disk_free_bytes", "fds_capacity_bytes",
                     "fds_checksum_failures_total"):
            assert _has(samples, name, **per_disk), (name, per_disk)
        assert _total(samples, "fds_disk_free_bytes", **per_disk) > 0
        assert _total(samples, "fds_server_info", url=child.url, **per_disk) == 1
    # The metaserver shows every disk as its heartbeats last said: the same bytes, once they beat again.
    expected = {cluster.server_id(c.name): _total(after[c.url], "fds_bytes_stored") for c in children}
    deadline = time.monotonic() + 10
    while True:
        meta = _scrape(cluster, cluster.metaserver_url)
        shown = {s: _total(meta, "fds_server_bytes_stored", server=s) for s in expected}
        if shown == expected or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert shown == expected
    assert all(_total(meta, "fds_server_disk_free_bytes", server=s) > 0 for s in expected)


def test_checksum_failures_are_counted(cluster: LocalCluster) -> None:
    guid, incarnation = _write_and_read(cluster, 1, 4096)
    raw = bytes.fromhex(guid.replace("-", ""))
    table = TableModel.model_validate(httpx.get(f"{cluster.metaserver_url}/v1/table",
                                                headers=cluster.headers("read")).json())
    holder = table.servers[table.rows[tract_row(raw, 0, len(table.rows))][0]]
    child = next(c for c in cluster.tract_children if c.url == holder.url)
    before = _scrape(cluster, holder.url)
    (path,) = (Path(child.dir) / "tracts").rglob(f"{raw.hex()}.{incarnation}.0.*")
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    resp = httpx.get(f"{holder.data_url}/v1/tracts/{guid}/0", params={"version": table.version,
                     "incarnation": incarnation}, headers=cluster.headers("read"))
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "checksum_mismatch"
    after = _scrape(cluster, holder.url)
    assert _total(after, "fds_checksum_failures_total") == _total(before, "fds_checksum_failures_total") + 1
    assert _total(after, "fds_requests_total", operation=DATA_GET, status="503") == \
        _total(before, "fds_requests_total", operation=DATA_GET, status="503") + 1
    path.write_bytes(bytes(data[:100]) + bytes([data[100] ^ 0xFF]) + bytes(data[101:]))  # put it back


def test_heartbeat_age_and_traffic(cluster: LocalCluster) -> None:
    ids = {cluster.server_id(c.name) for c in cluster.tract_children}
    meta = _scrape(cluster, cluster.metaserver_url)
    assert _total(meta, "fds_servers_alive") == 4 and _total(meta, "fds_servers_registered") == 4
    ages = {dict(ls)["server"]: v for (n, ls), v in meta.items() if n == "fds_heartbeat_age_seconds"}
    assert set(ages) == ids and all(0 <= age < 3 for age in ages.values()), ages
    assert all(_total(meta, "fds_server_alive", server=s) == 1 for s in ids)
    assert all(_total(meta, "fds_server_state", server=s, state="active") == 1 for s in ids)
    for child in cluster.tract_children:
        sent = _total(_scrape(cluster, child.url), "fds_heartbeat_sent_age_seconds")
        assert 0 <= sent < 3

    # Heartbeats carry each server's request counters; /v1/cluster shows them (the status page's throughput).
    def traffic_in() -> int:
        status = httpx.get(f"{cluster.metaserver_url}/v1/cluster", headers=cluster.headers("read")).json()
        return sum(s["traffic"]["bytes_in"] for s in status["servers"])

    start = traffic_in()
    _write_and_read(cluster, 4, 10_000)
    deadline = time.monotonic() + 10
    while traffic_in() < start + 4 * 3 * 10_000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert traffic_in() >= start + 4 * 3 * 10_000


def test_recovery_progress_gauges(tmp_path: Path) -> None:
    """Mid-copy figures, in-process with a hand-driven clock: a real cluster copies too fast to watch."""
    now = [1000.0]
    state = MetaState(MetaserverConfig(dir=str(tmp_path / "meta"), replicas=2, expected_servers=3,
                                       heartbeat_timeout=5.0, seed=1), clock=lambda: now[0])
    metrics = Metrics("metaserver")
    register_metaserver_metrics(metrics, state)
    try:
        for i in range(3):
            state.register(RegisterRequest(id=f"s{i}", url=f"http://s{i}", domain=f"d{i}", capacity_bytes=10**9))

        def beat(server: str, fill: FillProgress | None = None) -> None:
            state.heartbeat(server, Heartbeat(tracts=1, bytes_used=100, disk_free=10**9, capacity_bytes=10**9,
                                              table_version=state.table.version if state.table else 0,
                                              fill=fill or FillProgress()))

        for i in range(3):
            beat(f"s{i}")
        healthy = _parse(metrics.render().decode())
        assert _total(healthy, "fds_cluster_healthy") == 1 and _total(healthy, "fds_rows_under_replicated") == 0
        assert not _has(healthy, "fds_recovery_last_seconds")

        now[0] += 6  # s0 falls silent past the timeout; the others beat on
        beat("s1")
        beat("s2")
        state.tick()
        assert state.table is not None and state.table.filling
        fillers = {state.table.servers[i].id for members in state.table.filling.values() for i in members}
        for server in fillers:
            beat(server, FillProgress(rows=1, tracts_done=2, tracts_total=8, bytes_done=200, bytes_total=800))
        mid = _parse(metrics.render().decode())
        assert _total(mid, "fds_cluster_healthy") == 0
        assert _total(mid, "fds_rows_filling") == len(state.table.filling) > 0
        assert _total(mid, "fds_rows_under_replicated") > 0
        assert _total(mid, "fds_recovery_bytes_done") == 200 * len(fillers)
        assert _total(mid, "fds_recovery_bytes_total") == 800 * len(fillers)
        assert _total(mid, "fds_recovery_tracts_done") == 2 * len(fillers)
        assert _total(mid, "fds_recovery_elapsed_seconds") >= 0
        assert _total(mid, "fds_server_state", server="s0", state="dead") == 1
        assert _total(mid, "fds_server_alive", server="s0") == 0
        assert _total(mid, "fds_heartbeat_age_seconds", server="s0") == 6
        assert sum(_total(mid, "fds_server_filling_rows", server=s) for s in fillers) == \
            sum(len(m) for m in state.table.filling.values())

        for server in fillers:
            state.filled(server, [r for r, members in state.table.filling.items()
                                  if server in {state.table.servers[i].id for i in members}])
        done = _parse(metrics.render().decode())
        assert _total(done, "fds_cluster_healthy") == 1 and _total(done, "fds_rows_filling") == 0
        assert _total(done, "fds_recovery_elapsed_seconds") == 0
        assert _has(done, "fds_recovery_last_seconds")
    finally:
        state.close()


@pytest.mark.slow
def test_recovery_in_a_real_cluster(make_cluster: Callable[..., LocalCluster]) -> None:
    cluster = make_cluster(tractservers=4, replicas=3)
    _write_and_read(cluster, 8, 20_000)
    assert not _has(_scrape(cluster, cluster.metaserver_url), "fds_recovery_last_seconds")
    victim = cluster.server_id("ts0")
    cluster.kill("ts0")
    deadline = time.monotonic() + 60
    while True:
        meta = _scrape(cluster, cluster.metaserver_url)
        if (_total(meta, "fds_server_state", server=victim, state="dead") == 1
                and _total(meta, "fds_cluster_healthy") == 1) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert _total(meta, "fds_server_state", server=victim, state="dead") == 1
    assert _total(meta, "fds_cluster_healthy") == 1 and _total(meta, "fds_rows_filling") == 0
    assert _total(meta, "fds_recovery_last_seconds") > 0
    assert _total(meta, "fds_servers_alive") == 3 and _total(meta, "fds_server_alive", server=victim) == 0
    assert _total(meta, "fds_heartbeat_age_seconds", server=victim) >= 3  # the test cluster's timeout
    survivors = [_scrape(cluster, c.url) for c in cluster.tract_children if c.name != "ts0"]
    copied = sum(_total(s, "fds_fill_bytes_done") for s in survivors)
    assert copied > 0 and copied == sum(_total(s, "fds_fill_bytes_total") for s in survivors)
    assert sum(_total(s, "fds_fill_rows") for s in survivors) == 0


# -- the Grafana dashboard ------------------------------------------------------------------

_TARGET_LABELS = {"instance", "job"}  # added by Prometheus when it scrapes


def _queries(dashboard: dict) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    """(panel title, expr, legendFormat) of every target, rows' nested panels included."""
    out = []
    panels = list(dashboard["panels"])
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"], target.get("legendFormat", "")))
    return out


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    source = {"type": "prometheus", "uid": "${" + variable["name"] + "}"}
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    titles = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        titles.add(panel["title"])
        assert panel["datasource"] == source, panel["title"]
        assert panel["targets"] and all(t["datasource"] == source and t["expr"] for t in panel["targets"])
    for needed in ("Requests per second by operation", "Latency p50 by operation", "Latency p99 by operation",
                   "Errors by status", "Bytes stored per disk", "Disk free per disk", "Checksum failures per disk",
                   "Recovery progress", "Heartbeat age by tract server"):
        assert needed in titles


def test_dashboard_asks_only_for_exported_metrics(cluster: LocalCluster) -> None:
    """Every metric name and label in every panel's PromQL is one a running cluster exports."""
    scraped: Samples = {}
    for url in (cluster.metaserver_url, cluster.gateway_url, *(c.url for c in cluster.tract_children)):
        scraped.update(_scrape(cluster, url))
    labels_of: dict[str, set[str]] = {}
    for name, labels in scraped:
        labels_of.setdefault(name, set()).update(k for k, _ in labels)

    queries = _queries(json.loads(DASHBOARD.read_text()))
    assert len(queries) >= 15
    for title, expr, legend in queries:
        names = set(re.findall(r"\bfds_[a-z0-9_]+", expr))
        assert names, (title, expr)
        unknown = names - set(labels_of)
        assert not unknown, f"panel {title!r} asks for {unknown}, which no server exports"
        available = set().union(*(labels_of[n] for n in names)) | _TARGET_LABELS
        for name, selector in re.findall(r"\b(fds_[a-z0-9_]+)\{([^}]*)\}", expr):
            used = set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", selector))
            assert used <= labels_of[name], f"panel {title!r}: {name} has no label {used - labels_of[name]}"
        for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
            grouped = {label.strip() for label in clause.split(",") if label.strip()}
            assert grouped <= available, f"panel {title!r} groups by {grouped - available}"
        shown = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))
        assert shown <= available, f"panel {title!r} shows {shown - available} in its legend"
