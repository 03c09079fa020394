"""Shared fixtures: real clusters of real processes on loopback, in temp dirs.

Every cluster a test starts is stopped at teardown (children tracked by PID
in :class:`fds.cli._local.LocalCluster`), whether the test passed or not.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fds.cli._local import LocalCluster
from tests import credentials

SMALL_TRACT = 1024 * 1024
"""Tests use 1 MiB tracts: the same code paths as 8 MiB, eight times less I/O."""

SECRET_FILE = credentials.SECRET_FILE
AUTH = credentials.AUTH


_DEFAULTS: dict[str, Any] = {"tractservers": 4, "replicas": 1, "tract_size": SMALL_TRACT, "port": 0,
                             "gateway": False, "heartbeat_interval": 0.2, "secret_file": SECRET_FILE}
"""What every test cluster starts with unless a test says otherwise."""


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., LocalCluster]]:
    """Start a LocalCluster with test-friendly defaults; all are stopped at teardown."""
    started: list[LocalCluster] = []

    def make(name: str = "cluster", **kwargs: Any) -> LocalCluster:
        cluster = LocalCluster(tmp_path / name, **{**_DEFAULTS, **kwargs})
        started.append(cluster)
        cluster.start()
        return cluster

    yield make
    for cluster in started:
        cluster.stop()
        _drop_data(cluster)


def _drop_data(cluster: LocalCluster) -> None:
    """Remove a stopped cluster's data (fault tests write gigabytes); keep its logs for debugging."""
    for child in cluster.children:
        if child.dir:
            shutil.rmtree(child.dir, ignore_errors=True)


def shared_cluster(factory: pytest.TempPathFactory, name: str, **options: Any) -> Iterator[LocalCluster]:
    """For a module- or package-scoped fixture: ``yield from shared_cluster(factory, "name", replicas=3)``
    starts a cluster with the test defaults and ``options``, and stops it and drops its data at teardown."""
    cluster = LocalCluster(factory.mktemp(name), **{**_DEFAULTS, **options})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        _drop_data(cluster)


@pytest.fixture(scope="module")
def cluster_k3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One k=3 cluster of 4 tract servers, shared by a test module."""
    yield from shared_cluster(tmp_path_factory, "k3", replicas=3)


@pytest.fixture(scope="module")
def cluster_k1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One k=1 cluster of 4 tract servers, shared by a test module."""
    yield from shared_cluster(tmp_path_factory, "k1", replicas=1)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(credentials.SECRET_DIR, ignore_errors=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--thrash-seconds", type=float, default=60.0,
                     help="how long the thrash test kills, restarts, adds and removes servers (default 60)")
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
