"""Fixtures and hooks for every test: real clusters of real processes on loopback, in temp dirs, and tiers.

Helpers that tests import live in :mod:`tests.support`, not here. Every test is
marked with its tier, from its folder (``unit``, ``integration``, ``fault``,
``fuzz``, ``multihost``, ``deploy``); long tests are marked ``slow`` too. So
``pytest -m unit``, ``pytest -m "not slow"`` and the like pick a tier.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fds.local import LocalCluster
from tests.support import credentials
from tests.support.clusters import DEFAULTS, drop_data, shared_cluster

TIERS = {
    "unit": "pure logic: no processes, no network (seconds)",
    "integration": "real servers as processes on loopback",
    "fault": "real processes killed, disks filled, files corrupted; every acknowledged write checked",
    "fuzz": "generated requests against every server's API",
    "multihost": "a cluster over network namespaces (root only; skips elsewhere)",
    "deploy": "the Ansible playbook and systemd units, run against this machine",
}
"""Tier markers, one per folder of tests/, applied to every test in it."""
SLOW = "a long test (a minute or more on a shared 2-core machine); `-m 'not slow'` leaves it out"


def pytest_configure(config: pytest.Config) -> None:
    for name, what in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")
    config.addinivalue_line("markers", f"slow: {SLOW}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        try:
            tier = item.path.relative_to(root).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Start a LocalCluster with test-friendly defaults; all are stopped at teardown."""
    started: list[LocalCluster] = []

    def make(name: str = "cluster", **kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(tmp_path / name, **{**DEFAULTS, **kwargs})
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.stop()
        drop_data(cluster)


@pytest.fixture(scope="session")
def cluster_k3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One k=3 cluster of 4 tract servers, shared by every test of the run that asks for it.

    Shared by the run, not started per module (several modules use it): a test may add blobs, never kill,
    add or remove servers or change settings; those start their own (``make_cluster``)."""
    yield from shared_cluster(tmp_path_factory, "k3", replicas=3)


@pytest.fixture(scope="session")
def cluster_k1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One k=1 cluster of 4 tract servers, shared by every test of the run that asks for it (as ``cluster_k3``)."""
    yield from shared_cluster(tmp_path_factory, "k1", replicas=1)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(credentials.SECRET_DIR, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--thrash-seconds", type=float, default=0.0,
                     help="run the thrash soak: how long it kills, restarts, adds and removes servers (default 0: "
                          "skipped, to keep the suite short; the Jepsen harness runs one fault of each kind "
                          "every time)")
    parser.addoption("--fuzz-examples", type=int, default=None,
                     help="cases per API operation and generation mode in tests/fuzz (default: a small, fixed "
                          "number that keeps the suite quick); raise it for a longer hunt")
    parser.addoption("--jepsen-seconds", type=float, default=0.0,
                     help="how long the Jepsen nemesis goes on with random faults after one fault of each kind "
                          "(default 0: one of each, about a minute in all)")
    parser.addoption("--jepsen-seed", type=int, default=20260611,
                     help="seed of the Jepsen nemesis schedule and workload (printed by each run)")
    parser.addoption("--fuzz-seed", type=int, default=0,
                     help="seed of the fuzz tests' generated requests (default 0: the same requests every run)")
    parser.addoption("--ray", action="store_true", default=False,
                     help="also run ray.data over fds:// (tests/integration/test_data_stack.py); off by default: ray "
                          "starts a cluster of its own, slow on a shared 2-core machine (install the ray extra)")
