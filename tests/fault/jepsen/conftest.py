"""The Jepsen run's time limit grows with ``--jepsen-seconds`` (pytest-timeout's default would cut a long run)."""

from __future__ import annotations

import pytest

BASE_TIMEOUT = 420.0
"""Seconds for the run with one fault of each kind: start, faults, healing (up to 120 s), checks."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seconds = float(config.getoption("--jepsen-seconds"))
    for item in items:
        if item.path.name == "test_jepsen.py":
            item.add_marker(pytest.mark.timeout(BASE_TIMEOUT + 1.5 * seconds))
