"""Test clusters: the defaults every test cluster starts with, and module-scoped clusters.

Every cluster a test starts is stopped at teardown (children tracked by PID in
:class:`fds.local.LocalCluster`), whether the test passed or not.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from fds.local import LocalCluster
from tests.support.credentials import SECRET_FILE

__all__ = ["SMALL_TRACT", "DEFAULTS", "shared_cluster", "drop_data"]

SMALL_TRACT = 1024 * 1024
"""Tests use 1 MiB tracts: the same code paths as 8 MiB, eight times less I/O."""

DEFAULTS: dict[str, Any] = {"tractservers": 4, "replicas": 1, "tract_size": SMALL_TRACT, "port": 0,
                            "gateway": False, "heartbeat_interval": 0.2, "secret_file": SECRET_FILE}
"""What every test cluster starts with unless a test says otherwise."""


def drop_data(cluster: LocalCluster) -> None:
    """Remove a stopped cluster's data (fault tests write gigabytes); keep its logs for debugging."""
    for child in cluster.children:
        if child.dir:
            shutil.rmtree(child.dir, ignore_errors=True)


def shared_cluster(factory: pytest.TempPathFactory, name: str, **options: Any) -> Iterator[LocalCluster]:
    """For a module- or package-scoped fixture: ``yield from shared_cluster(factory, "name", replicas=3)``
    starts a cluster with the test defaults and ``options``, and stops it and drops its data at teardown."""
    cluster = LocalCluster(factory.mktemp(name), **{**DEFAULTS, **options})
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        drop_data(cluster)
