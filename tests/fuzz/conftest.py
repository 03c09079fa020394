"""Fixtures of the fuzz tests: one k=3 cluster with a gateway, shared by the package, and the run's size.

The metaserver is fuzzed on a cluster of its own (``test_metaserver_fuzz``):
registering and decommissioning servers changes the table every other test
here relies on.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fds.local import LocalCluster
from tests.fuzz._minutesort import MS, StandInHead, start_head, stop
from tests.support.clusters import shared_cluster

DEFAULT_EXAMPLES = 10
"""Cases per operation and generation mode in the normal suite (``--fuzz-examples N`` for more)."""


@pytest.fixture(scope="package")
def fuzz_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A metaserver, 4 tract servers (k=3) and a gateway."""
    yield from shared_cluster(tmp_path_factory, "fuzz", replicas=3, gateway=True)


@pytest.fixture
def fuzz_examples(request: pytest.FixtureRequest) -> int:
    value = request.config.getoption("--fuzz-examples")
    return DEFAULT_EXAMPLES if value is None else int(value)


@pytest.fixture
def fuzz_seed(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--fuzz-seed"))


def assert_all_alive(cluster: LocalCluster) -> None:
    """Every server process of ``cluster`` still runs (same PID) and answers its liveness probe."""
    for child in cluster.children:
        assert child.alive(), f"{child.name} (pid {child.pid}) died; see {child.log}"
        assert httpx.get(f"{child.url}/healthz", timeout=10).status_code == 200, child.name


def tree_listing(root: Path) -> set[str]:
    """Every path under ``root`` (for before/after comparisons)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="package")
def record_blob(fuzz_cluster: LocalCluster) -> str:
    """A small sort input (20,000 records in 2 tracts)."""
    out = subprocess.run([*MS, "gen", "--records", "20000", "--metaserver", fuzz_cluster.metaserver_url],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()  # gen prints the GUID


@pytest.fixture
def head_process(fuzz_cluster: LocalCluster, record_blob: str, tmp_path: Path
                 ) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    """A real sort head waiting for 2 remote workers: (process, URL, log)."""
    proc, url, log = start_head(fuzz_cluster.metaserver_url, record_blob, tmp_path)
    try:
        yield proc, url, log
    finally:
        stop(proc)


@pytest.fixture
def waiting_worker(fuzz_cluster: LocalCluster, record_blob: str, tmp_path: Path
                   ) -> Iterator[tuple[StandInHead, subprocess.Popen[bytes], Path]]:
    """A real worker process at its barrier, and the stand-in head that gave it its job."""
    with StandInHead(fuzz_cluster.metaserver_url, record_blob) as head:
        log = tmp_path / "worker.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([*MS, "worker", "--head", head.url], stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while not head.at_barrier.wait(0.1):
                assert proc.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"the worker never reached the barrier:\n{log.read_text()}"
            yield head, proc, log
        finally:
            stop(proc)
