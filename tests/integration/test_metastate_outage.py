"""The failure detector's outage rule, restart grace, operator release and readmission (issue 11).

In-process MetaState on a real RocksDB in a temp dir, with a controllable clock (no sleeps).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fds.config import MetaserverConfig
from fds.errors import Conflict
from fds.metaserver._state import MetaState
from fds.models import Heartbeat, MemberState, RegisterRequest

TIMEOUT = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _state(tmp: Path, clock: Clock, servers: int = 4, *, replicas: int = 3, per_domain: int = 1) -> MetaState:
    config = MetaserverConfig(dir=str(tmp), replicas=replicas, tract_size=1 << 20, expected_servers=servers,
                              seed=3, heartbeat_timeout=TIMEOUT)
    state = MetaState(config, clock=clock)
    for n in range(servers):
        state.register(RegisterRequest(id=f"ts-{n}", url=f"http://127.0.0.1:{7100 + n}",
                                       domain=f"d{n // per_domain}", capacity_bytes=1 << 30))
    return state


def _beat(state: MetaState, *ids: str) -> None:
    assert state.table is not None
    for server_id in ids:
        state.heartbeat(server_id, Heartbeat(tracts=0, bytes_used=0, disk_free=1 << 30, capacity_bytes=1 << 30,
                                             table_version=state.table.version, clean_version=state.table.version))


def _push(state: MetaState) -> None:
    """What the app does with a pending table: push it to the servers it waits for (they take it), publish."""
    assert state.pending is not None
    for server_id in state.waiting_for():
        state.table_acked(server_id, state.pending.version)
    assert not state.publish()


def _states(state: MetaState) -> dict[str, MemberState]:
    return {m.req.id: m.state for m in state.members.values()}


def test_silence_of_every_server_is_an_outage_not_deaths(tmp_path: Path) -> None:
    clock = Clock()
    state = _state(tmp_path, clock)
    assert state.table is not None
    table = state.table
    clock.now += 3 * TIMEOUT + state.lease_seconds
    assert state.tick().declared_dead == []
    status = state.status()
    assert status.outage is not None and status.outage.message == "outage: 4 of 4 servers silent, repair held"
    assert state.table == table, "the table changed during an outage"
    # Three come back: the outage is over, but the fourth gets a full timeout from now before it counts as dead.
    _beat(state, "ts-0", "ts-1", "ts-2")
    assert state.tick().declared_dead == []
    assert state.status().outage is None
    clock.now += TIMEOUT - 0.1
    _beat(state, "ts-0", "ts-1", "ts-2")
    assert state.tick().declared_dead == []
    clock.now += 0.2
    _beat(state, "ts-0", "ts-1", "ts-2")
    assert state.tick().declared_dead == ["ts-3"]
    assert state.table is not None
    assert all(3 not in row for row in state.table.rows)
    assert state.table.absent and all(v == [3] for v in state.table.absent.values())
    state.close()


def test_after_a_restart_nobody_is_declared_dead_before_a_timeout_and_a_lease(tmp_path: Path) -> None:
    clock = Clock()
    _state(tmp_path, clock).close()
    clock.now += 100.0
    state = MetaState(MetaserverConfig(dir=str(tmp_path), heartbeat_timeout=TIMEOUT), clock=clock)
    _beat(state, "ts-0", "ts-1", "ts-2")
    clock.now += TIMEOUT + state.lease_seconds - 0.1
    _beat(state, "ts-0", "ts-1", "ts-2")
    assert state.tick().declared_dead == []
    clock.now += 0.2
    _beat(state, "ts-0", "ts-1", "ts-2")
    assert state.tick().declared_dead == ["ts-3"]
    state.close()


def test_an_operator_declares_a_silent_server_dead_during_an_outage(tmp_path: Path) -> None:
    clock = Clock()
    state = _state(tmp_path, clock)
    clock.now += 2 * TIMEOUT + state.lease_seconds
    _beat(state, "ts-0")
    state.tick()
    assert state.outage is not None  # three of four silent
    with pytest.raises(Conflict, match="alive") as alive:
        state.declare_dead("ts-0")
    assert alive.value.code == "server_alive"
    result = state.declare_dead("ts-1")
    assert result.rows_left > 0 and _states(state)["ts-1"] == MemberState.DEAD
    with pytest.raises(Conflict, match="already dead"):
        state.declare_dead("ts-1")
    assert state.tick().declared_dead == []  # the outage still holds the others
    state.close()


def test_a_dead_server_that_returns_rejoins_its_rows_as_filling(tmp_path: Path) -> None:
    clock = Clock()
    state = _state(tmp_path, clock)
    clock.now += TIMEOUT + state.lease_seconds + 0.1
    _beat(state, "ts-0", "ts-1", "ts-2")
    assert state.tick().declared_dead == ["ts-3"]
    assert state.table is not None
    absent = sorted(state.table.absent)
    assert absent
    _beat(state, "ts-0", "ts-1", "ts-2", "ts-3")
    result = state.tick()
    if state.pending is not None:  # unfinished replacements are dropped: they must have the table first
        _push(state)
    table = state.table
    assert _states(state)["ts-3"] == MemberState.ACTIVE
    assert "ts-3" in result.fill
    assert table.absent == {}
    for r in absent:
        assert 3 in table.rows[r] and 3 in table.filling[r]
    # It reports its rows filled (it copied nothing): each row gives up the unfinished replacement.
    state.filled("ts-3", absent)
    _beat(state, "ts-0", "ts-1", "ts-2", "ts-3")
    state.tick()
    if state.pending is not None:
        _push(state)
    table = state.table
    assert not table.filling and not table.absent
    assert all(len(row) == 3 and 3 in row for r, row in enumerate(table.rows) if r in absent)
    state.close()


def test_a_whole_failure_domain_silent_is_a_failure_two_are_an_outage(tmp_path: Path) -> None:
    """Three hosts of two disks, k=2: no row holds two disks of one host, so one host down costs each row
    at most one copy (repair it); two hosts down may hold a row's every copy (hold)."""
    clock = Clock()
    state = _state(tmp_path / "one", clock, servers=6, replicas=2, per_domain=2)
    clock.now += 0.5 * TIMEOUT
    _beat(state, "ts-0", "ts-1", "ts-4", "ts-5")
    clock.now += 0.6 * TIMEOUT
    _beat(state, "ts-0", "ts-1", "ts-4", "ts-5")
    assert sorted(state.tick().declared_dead) == ["ts-2", "ts-3"], "a silent host is its disks' failure"
    assert state.status().outage is None
    state.close()

    clock = Clock()
    state = _state(tmp_path / "two", clock, servers=6, replicas=2, per_domain=2)
    assert state.table is not None
    table = state.table
    clock.now += 0.5 * TIMEOUT
    _beat(state, "ts-0", "ts-1")
    clock.now += 0.6 * TIMEOUT
    _beat(state, "ts-0", "ts-1")
    assert state.tick().declared_dead == []
    outage = state.status().outage
    assert outage is not None
    assert outage.message == "outage: 4 of 6 servers silent in 2 of 3 failure domains, repair held"
    assert state.table == table
    state.close()
