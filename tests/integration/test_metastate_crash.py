"""The metaserver's durable state survives a crash at any write: a member and the table that names it
are stored together or not at all (issue 11: ``register`` and ``_commit`` stored them in two synced puts,
so a crash between them left a member that never joined the table).

Each case runs one state change with the database's N-th durable write failing (the process "dies" right
there: nothing after it runs), then opens the state again from disk and checks it is consistent, for every
N the change makes. In-process, on a real RocksDB in a temp dir.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from fds.config import MetaserverConfig
from fds.metaserver._state import MetaState
from fds.models import RegisterRequest


class _Crash(Exception):
    """The simulated power cut."""


class _CrashAfter:
    """Forwards to a RocksDB, failing its ``crash_at``-th durable write (put, write, delete) and every later
    one; counts them."""

    def __init__(self, db: Any, crash_at: int) -> None:
        self._db = db
        self.crash_at = crash_at
        self.writes = 0

    def _durable(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.writes += 1
            if self.writes >= self.crash_at:
                raise _Crash(f"crash at durable write {self.writes} ({name})")
            return getattr(self._db, name)(*args, **kwargs)
        return call

    def __getattr__(self, name: str) -> Any:
        if name in ("put", "write", "delete"):
            return self._durable(name)
        return getattr(self._db, name)


def _config(tmp: Path) -> MetaserverConfig:
    return MetaserverConfig(dir=str(tmp), replicas=2, tract_size=1 << 20, expected_servers=3, seed=1)


def _register(state: MetaState, n: int) -> None:
    state.register(RegisterRequest(id=f"ts-{n}", url=f"http://127.0.0.1:{7100 + n}", domain=f"d{n}",
                                   capacity_bytes=1 << 30))


def _consistent(tmp: Path) -> None:
    state = MetaState(_config(tmp))
    try:
        if state.table is not None:
            in_table = {s.id for s in state.table.servers}
            assert set(state.members) == in_table, (sorted(state.members), sorted(in_table))
        else:
            assert len(state.members) < 3
    finally:
        state.close()


@pytest.mark.parametrize("step", ["build", "join"])
def test_a_crash_at_any_write_leaves_members_and_table_agreeing(tmp_path: Path, step: str) -> None:
    """``build``: the third server's registration builds the table. ``join``: a fourth server joins a built
    table. Every prefix of the change's writes, reopened, has every member in the table or none of it."""
    crash_at = 1
    while True:
        where = tmp_path / f"{step}-{crash_at}"
        state = MetaState(_config(where))
        for n in range(2 if step == "build" else 3):
            _register(state, n)
        probe = _CrashAfter(state._db, crash_at)
        state._db = probe
        try:
            _register(state, 2 if step == "build" else 3)
            crashed = False
        except _Crash:
            crashed = True
        state._db = probe._db
        state.close()
        _consistent(where)
        if not crashed:
            break
        crash_at += 1
    assert crash_at == 2, "the change should be one durable write"
