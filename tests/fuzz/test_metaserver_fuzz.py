"""Fuzz the metaserver from its own OpenAPI schema, on a cluster of its own.

Server ids, URLs and rows are steered towards the real servers and a few
made-up ones, so cases register, heartbeat, report and decommission servers
the metaserver knows (and fake ones it then declares dead), not only
"unknown server". After the run every process must still be up and the
status routes must still answer.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from fds.local import LocalCluster
from fds.models import TableModel
from tests.fuzz._fuzzing import auth_variants, fuzz_server
from tests.fuzz.conftest import assert_all_alive


@pytest.mark.slow
def test_metaserver_api(make_cluster: Callable[..., LocalCluster], fuzz_examples: int, fuzz_seed: int) -> None:
    cluster = make_cluster("meta-fuzz", tractservers=3, replicas=2)
    good = cluster.headers("cluster")
    ms = cluster.metaserver_url
    table = TableModel.model_validate(httpx.get(f"{ms}/v1/table", headers=good).json())
    real = [s.id for s in table.servers]
    steering = {
        "server_id": [*real, "fz-a", "nobody"],
        "id": [real[0], "fz-a", "fz-b"],
        "url": ["http://127.0.0.1:9", table.servers[0].url],
        "data_url": ["", "http://127.0.0.1:9"],
        "domain": ["fz-domain", table.servers[0].domain],
        "rows": [[], [0], list(range(len(table.rows)))],
        "version": [table.version, 0],
        "table_version": [table.version, 0],
    }
    findings = fuzz_server(ms, good, steering, auth_variants(good, cluster.headers("read")),
                           examples=fuzz_examples, run_seed=fuzz_seed)
    assert not findings.bugs, findings.report()
    assert any(200 <= s < 300 for s in findings.statuses), findings.statuses
    assert_all_alive(cluster)
    for route in ("/v1/cluster", "/v1/table", "/metrics"):
        assert httpx.get(f"{ms}{route}", headers=good, timeout=30).status_code == 200, route
