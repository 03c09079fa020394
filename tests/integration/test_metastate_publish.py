"""The publish barrier (issue 11): a table that takes a server out of a row is published only once that server
has the table or its lease is surely over; meanwhile nothing else changes the table, and the server gets no new
lease. In-process MetaState on a real RocksDB in a temp dir, with a controllable clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fds.config import MetaserverConfig
from fds.errors import Unavailable
from fds.metaserver._leases import DRIFT, MARGIN
from fds.metaserver._state import MetaState
from fds.models import Heartbeat, RegisterRequest
from tests.integration.test_metastate_outage import TIMEOUT, Clock


def _config(tmp: Path) -> MetaserverConfig:
    return MetaserverConfig(dir=str(tmp), replicas=3, tract_size=1 << 20, expected_servers=4, seed=5,
                            heartbeat_timeout=TIMEOUT)


def _register(state: MetaState, n: int) -> None:
    state.register(RegisterRequest(id=f"ts-{n}", url=f"http://127.0.0.1:{7100 + n}", domain=f"d{n}",
                                   capacity_bytes=1 << 30))


def _beat(state: MetaState, server_id: str, version: int | None = None) -> float | None:
    assert state.table is not None
    version = state.table.version if version is None else version
    reply = state.heartbeat(server_id, Heartbeat(tracts=0, bytes_used=0, disk_free=1 << 30,
                                                 capacity_bytes=1 << 30, table_version=version,
                                                 clean_version=version))
    return reply.lease_seconds


def _hand_over(tmp: Path, clock: Clock) -> tuple[MetaState, list[str], dict[int, list[str]]]:
    """Four servers, then a fifth that is handed rows and fills them: the table that drops the leaving
    holders is pending. Returns the state, the leaving servers, and the rows each leaves."""
    state = MetaState(_config(tmp), clock=clock)
    for n in range(5):
        _register(state, n)
    for n in range(5):
        _beat(state, f"ts-{n}")
    state.tick()  # rebalance: ts-4 fills rows, their givers leave
    assert state.table is not None and state.table.leaving and state.pending is None
    leaving = sorted({state.table.servers[i].id for v in state.table.leaving.values() for i in v})
    for n in range(5):
        _beat(state, f"ts-{n}")
    handed = {r: [state.table.servers[i].id for i in v] for r, v in state.table.leaving.items()}
    state.filled("ts-4", sorted(r for r, v in state.table.filling.items() if 4 in v))
    return state, leaving, handed


def test_a_table_dropping_live_holders_waits_for_them_to_have_it(tmp_path: Path) -> None:
    clock = Clock()
    state, leaving, handed = _hand_over(tmp_path, clock)
    assert state.pending is not None and state.table is not None
    published, pending = state.table.version, state.pending.version
    assert pending == published + 1
    assert sorted(state.waiting_for()) == leaving
    publishing = state.status().publishing
    assert publishing is not None and publishing.waiting_for == leaving
    assert f'"version":{published},' in state.table_json().decode()  # clients still get the old table
    # A waited-for server gets no new lease; the others do.
    assert _beat(state, leaving[0]) == 0
    assert _beat(state, "ts-4") == pytest.approx(0.8 * TIMEOUT)
    # Nothing else changes the table meanwhile.
    with pytest.raises(Unavailable) as busy:
        state.decommission("ts-4")
    assert busy.value.code == "table_pending"
    assert state.tick().rows_changed == 0
    # Each leaving server acknowledges it (the push, or a heartbeat on the new table): published.
    for server_id in leaving[:-1]:
        state.table_acked(server_id, pending)
    assert state.publish() and state.table.version == published
    _beat(state, leaving[-1], version=pending)
    assert not state.publish()
    assert state.table.version == pending and state.pending is None
    table = state.table
    for r, gone in handed.items():
        assert not set(gone) & {table.servers[i].id for i in table.rows[r]}
    state.close()


def test_a_holder_that_never_answers_is_waited_for_until_its_lease_is_surely_over(tmp_path: Path) -> None:
    clock = Clock()
    state, leaving, _ = _hand_over(tmp_path, clock)
    assert state.pending is not None
    last_grant = state.leases.granted[leaving[0]]
    end = last_grant + state.lease_seconds * (1 + DRIFT) + MARGIN
    for server_id in leaving[1:]:
        state.table_acked(server_id, state.pending.version)
    clock.now = end - 0.01
    assert state.publish(), "published while the silent holder's lease may still run"
    clock.now = end
    assert not state.publish() and state.pending is None
    state.close()


def test_after_a_restart_a_pending_table_waits_a_full_lease_or_the_acks(tmp_path: Path) -> None:
    clock = Clock()
    state, leaving, _ = _hand_over(tmp_path, clock)
    assert state.pending is not None
    pending = state.pending.version
    state.close()
    clock.now += 100.0  # long past every lease the old metaserver granted...
    state = MetaState(_config(tmp_path), clock=clock)
    # ...but the new one knows of no grant: one may have been made just before it stopped.
    assert state.pending is not None and state.pending.version == pending
    assert sorted(state.waiting_for()) == leaving
    assert state.publish()
    clock.now += state.lease_seconds * (1 + DRIFT) + MARGIN
    assert not state.publish()
    assert state.table is not None and state.table.version == pending
    state.close()


def test_without_leases_nothing_waits(tmp_path: Path) -> None:
    clock = Clock()
    config = _config(tmp_path)
    config.lease_seconds = -1
    state = MetaState(config, clock=clock)
    for n in range(5):
        _register(state, n)
    for n in range(5):
        assert _beat(state, f"ts-{n}") is None  # no lease: servers serve regardless
    state.tick()
    assert state.table is not None
    state.filled("ts-4", sorted(r for r, v in state.table.filling.items() if 4 in v))
    assert state.pending is None and not state.table.leaving
    state.close()
