"""Fuzz a tract server's API port from its own OpenAPI schema: no input may get a 5xx or kill it.

Generated GUIDs, tract numbers, table versions and incarnations are steered
towards blobs that exist on the fuzzed server (its metadata primary role
included), so cases reach writes, reads, extends, deletes and the internal
routes, not only "no such blob".
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from fds.client import SyncClient
from fds.guid import format_guid
from fds.local import LocalCluster
from fds.models import TableModel
from fds.placement import tract_row
from tests.fuzz._fuzzing import auth_variants, fuzz_server
from tests.fuzz.conftest import assert_all_alive


def fuzz_blobs(cluster: LocalCluster, table: TableModel, primary: int, count: int) -> tuple[list[str], list[int]]:
    """``count`` new blobs whose metadata primary is server ``primary``, which also holds their tracts 0-2;
    3 tracts each, tract 0 written. Returns their GUIDs and incarnations."""
    guids: list[str] = []
    incarnations: set[int] = set()
    with SyncClient(cluster.metaserver_url) as client:
        while len(guids) < count:
            raw = uuid.uuid4().bytes
            rows = [table.rows[tract_row(raw, t, len(table.rows))] for t in (-1, 0, 1, 2)]
            if rows[0][0] != primary or any(primary not in row for row in rows):
                continue
            blob = client.create_blob(raw)
            blob.extend(3)
            blob.write_tract(0, b"fuzz" * 256)
            guids.append(format_guid(raw))
            incarnations.add(blob.stat().incarnation)
    return guids, sorted(incarnations)


@pytest.mark.slow
def test_tract_server_api(fuzz_cluster: LocalCluster, fuzz_examples: int, fuzz_seed: int) -> None:
    good = fuzz_cluster.headers("cluster")
    table = TableModel.model_validate(httpx.get(f"{fuzz_cluster.metaserver_url}/v1/table", headers=good).json())
    server = table.servers[0]
    guids, incarnations = fuzz_blobs(fuzz_cluster, table, 0, 4)
    held = [r for r, row in enumerate(table.rows) if 0 in row]
    steering = {
        "guid": guids + [guids[0].upper(), guids[0].replace("-", ""), "{" + guids[1] + "}", format_guid(bytes(16))],
        "tract": ["0", "1", "2", "3", "-1"],
        "version": [table.version, 0],
        "incarnation": incarnations + [0, 2**63 - 1],
        "rate": [0, 1 << 30],
        "rows": [held, held[:1], list(range(len(table.rows)))],
    }
    findings = fuzz_server(server.url, good, steering, auth_variants(good, fuzz_cluster.headers("read")),
                           examples=fuzz_examples, run_seed=fuzz_seed)
    assert not findings.bugs, findings.report()
    assert findings.sent > 0 and any(200 <= s < 300 for s in findings.statuses), findings.statuses
    assert_all_alive(fuzz_cluster)
