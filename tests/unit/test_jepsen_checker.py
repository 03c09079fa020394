"""The Jepsen harness's checker on hand-made histories (tests/fault/jepsen/checker.py).

Each case says the interleaving; times are seconds on a made-up clock.
"""

from __future__ import annotations

import random

import pytest

from tests.fault.jepsen.checker import FINAL, check, check_replicas
from tests.fault.jepsen.history import NIL, Garbage, History, ValueId, decode_value, encode_value

W1, W2, W3 = ValueId(1, 1), ValueId(2, 1), ValueId(1, 2)


def write(h: History, process: str, value: ValueId, start: float, end: float | None, *, key: int = 0,
          status: str = "ok") -> None:
    h.add(process, "invoke", "write", key, value, at=start)
    if end is not None:
        h.add(process, status, "write", key, value, at=end)  # type: ignore[arg-type]


def read(h: History, process: str, value: ValueId | Garbage | None, start: float, end: float, *, key: int = 0,
         status: str = "ok") -> None:
    h.add(process, "invoke", "read", key, at=start)
    h.add(process, status, "read", key, value if status == "ok" else None, at=end)  # type: ignore[arg-type]


def kinds(h: History, *, linearizable: bool = False) -> list[str]:
    return [v.kind for v in check(h, linearizable=linearizable)]


def test_sequential_history_is_clean() -> None:
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    read(h, "r1", W1, 2, 3)
    write(h, "w1", W3, 4, 5)
    read(h, "r1", W3, 6, 7)
    read(h, FINAL, W3, 8, 9)
    assert check(h) == []


def test_read_of_a_value_older_than_an_acknowledged_write_is_stale() -> None:
    # w1#1 acknowledged at 1, w1#2 invoked at 2 and acknowledged at 3; a read begun at 4 returns w1#1.
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    write(h, "w1", W3, 2, 3)
    read(h, "r1", W1, 4, 5)
    violations = check(h)
    assert [v.kind for v in violations] == ["stale read"]
    assert "w1#2 was acknowledged before the read began" in violations[0].message
    excerpt = violations[0].excerpt
    assert "r1" in excerpt and "w1#2" in excerpt and "w1#1" in excerpt


def test_nil_after_an_acknowledged_write_is_stale() -> None:
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    read(h, "r1", NIL, 2, 3)
    assert kinds(h) == ["stale read"]


def test_reads_concurrent_with_a_write_may_return_old_or_new() -> None:
    # w2#1 runs from 2 to 6; reads inside it may see either value, in any mix across readers,
    # as long as no reader sees new and then old.
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    write(h, "w2", W2, 2, 6)
    read(h, "r1", W1, 3, 4)
    read(h, "r2", W2, 3, 4.5)
    read(h, "r1", W2, 4.6, 5)
    assert check(h) == []


def test_a_write_in_flight_may_be_seen_new_then_old_but_not_once_acknowledged() -> None:
    # fds writes every replica at once and reads any one: while w1#2 is in flight (2-6), r1 reads the
    # replica that has it, then r2 one that does not yet. fds allows that; a linearizable store would not.
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    write(h, "w1", W3, 2, 6)
    read(h, "r1", W3, 3, 4)
    read(h, "r2", W1, 4.5, 5)
    assert check(h) == []
    violations = check(h, linearizable=True)
    assert [v.kind for v in violations] == ["stale read"]
    assert "returned by a read that ended before this read began" in violations[0].message
    read(h, "r2", W1, 7, 8)  # after w1#2 was acknowledged: stale in both models
    assert kinds(h) == ["stale read"]


def test_a_failed_write_is_older_than_a_write_begun_after_it_returned() -> None:
    # w2#1 raised (info) at 0.5, though r1 saw it at 1-2; w1#1 then ran 3-4. A read begun at 5
    # returning w2#1 is stale: the replicas must hold w1#1, the later write, by then.
    h = History(started=0.0)
    write(h, "w2", W2, 0, 0.5, status="info")
    read(h, "r1", W2, 1, 2)
    write(h, "w1", W1, 3, 4)
    read(h, "r2", W2, 5, 6)
    assert kinds(h) == ["stale read"]


def test_a_write_seen_while_in_flight_may_still_win_over_a_later_one() -> None:
    # w1#2 is in flight from 0 to 5; r1 sees it on one replica at 1-2. w2#1 runs 3-4 and is
    # acknowledged. w1#2, refused as older on some replica, is written again under a newer version
    # and wins as last writer: reads at 6 see it. Concurrent writes may end either way; only a
    # linearizable store would refuse this (w1#2 was seen before w2#1 began).
    h = History(started=0.0)
    write(h, "w1", W3, 0, 5)
    read(h, "r1", W3, 1, 2)
    write(h, "w2", W2, 3, 4)
    read(h, "r2", W3, 6, 7)
    assert check(h) == []
    assert kinds(h, linearizable=True) == ["stale read"]


def test_a_failed_write_never_seen_is_not_required() -> None:
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    write(h, "w2", W2, 2, 2.5, status="info")
    read(h, "r1", W1, 3, 4)
    read(h, FINAL, W1, 5, 6)
    assert check(h) == []


def test_two_writers_values_alternating_is_not_linearizable() -> None:
    # w1#1 and w2#1 are concurrent (0-10), so either order is fine, but not both: r1 sees w1#1,
    # r2 then w2#1, r3 then w1#1 again. No per-read rule is broken; the zone test catches it
    # (fds allows it while both writes are in flight).
    h = History(started=0.0)
    write(h, "w1", W1, 0, 10)
    write(h, "w2", W2, 0, 10)
    read(h, "r1", W1, 1, 2)
    read(h, "r2", W2, 3, 4)
    read(h, "r3", W1, 5, 6)
    assert check(h) == []
    violations = check(h, linearizable=True)
    assert [v.kind for v in violations] == ["not linearizable"]
    assert "w2#1" in violations[0].message and "w1#1" in violations[0].message


def test_garbage_phantom_and_future_reads() -> None:
    h = History(started=0.0)
    read(h, "r1", Garbage("w1#1 cut to 10 of 100 body bytes", 42), 0, 1)
    read(h, "r1", ValueId(9, 9), 1, 2)
    read(h, "r1", W1, 2, 3)
    write(h, "w1", W1, 4, 5)
    assert kinds(h) == ["garbage", "phantom", "future read"]


def test_a_failed_final_read_is_reported() -> None:
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    read(h, FINAL, None, 2, 3, status="fail")
    assert kinds(h) == ["unreadable at the end"]


def test_violations_are_capped_per_kind_and_tract() -> None:
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    for i in range(6):
        read(h, "r1", NIL, 2 + i, 2.5 + i)
    violations = check(h)
    assert len(violations) == 4 and violations[-1].message == "... and 3 more like it"


def test_excerpt_shows_nemesis_events_nearby() -> None:
    h = History(started=0.0)
    write(h, "w1", W1, 0, 1)
    h.add("nemesis", "invoke", "cut", detail="cut ts2 off", at=-20)  # still in force at the read
    h.add("nemesis", "invoke", "kill", detail="SIGKILL ts3", at=-10)
    h.add("nemesis", "ok", "kill", detail="ts3 restarted", at=-9)  # over long before
    h.add("nemesis", "invoke", "pause", detail="SIGSTOP ts1", at=1.5)
    h.add("nemesis", "invoke", "metaserver", detail="far away", at=50)
    read(h, "r1", NIL, 2, 3)
    excerpt = check(h)[0].excerpt
    assert "SIGSTOP ts1" in excerpt and "cut ts2 off" in excerpt
    assert "far away" not in excerpt and "ts3" not in excerpt


def test_replicas_must_agree() -> None:
    assert check_replicas({0: {"a": W1, "b": W1, "c": W1}, 1: {"a": NIL, "b": NIL}}) == []
    differ = check_replicas({0: {"a": W1, "b": W2, "c": W1}, 1: {"a": W1, "b": "404 tract_not_found"}})
    assert [(v.kind, v.key) for v in differ] == [("replicas differ", 0), ("replicas differ", 1)]
    assert "b: w2#1" in differ[0].message
    torn = check_replicas({3: {"a": Garbage("no header", 5), "b": Garbage("no header", 5)}})
    assert [v.kind for v in torn] == ["garbage", "garbage"]


def test_values_round_trip_and_damage_is_named() -> None:
    data = encode_value(ValueId(3, 17), key=5, length=1000)
    assert decode_value(data, 5) == ValueId(3, 17)
    assert decode_value(data[:-1], 5) == Garbage("w3#17 cut to 999 of 1000 body bytes", len(data) - 1)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    assert "fails its checksum" in str(decode_value(flipped, 5))
    assert "not 4" in str(decode_value(data, 4))
    assert decode_value(b"\0" * 100, 5) == Garbage("no header", 100)


@pytest.mark.parametrize("seed", range(40))
def test_no_false_alarm_on_random_linearizable_histories(seed: int) -> None:
    """Simulate an atomic register: each op takes effect at a random instant inside its interval. Whatever
    the overlap, the checker must find nothing; then make one read stale and it must find that."""
    rng = random.Random(seed)
    h = History(started=0.0)
    effects: list[tuple[float, str, str, ValueId | None, float, float]] = []
    seq = 0
    for p in range(5):
        t = rng.uniform(0, 1)
        for _ in range(30):
            start = t
            at = start + rng.uniform(0, 2)
            end = at + rng.uniform(0, 2)
            if rng.random() < 0.4:
                seq += 1
                effects.append((at, f"p{p}", "write", ValueId(p, seq), start, end))
            else:
                effects.append((at, f"p{p}", "read", None, start, end))
            t = end + rng.uniform(0, 0.5)
    current: ValueId | None = None
    acknowledged: list[ValueId] = []
    for _at, process, f, value, start, end in sorted(effects, key=lambda e: e[0]):
        if f == "write":
            current = value
            lost = rng.random() < 0.1  # it raised: info, though it took effect
            h.add(process, "invoke", "write", 0, value, at=start)
            h.add(process, "info" if lost else "ok", "write", 0, value, at=end)
            if not lost and value is not None:
                acknowledged.append(value)
        else:
            h.add(process, "invoke", "read", 0, at=start)
            h.add(process, "ok", "read", 0, current, at=end)
    for linearizable in (False, True):
        found = check(h, linearizable=linearizable)
        assert found == [], "\n".join(str(v) for v in found)
    # A read begun after every write has ended, returning the first acknowledged value, is stale
    # (a write that raised may take effect at any later time, so it would not be).
    last_end = max(e[5] for e in effects)
    read(h, FINAL, acknowledged[0], last_end + 1, last_end + 2)
    assert "stale read" in kinds(h)
    assert "stale read" in kinds(h, linearizable=True)
