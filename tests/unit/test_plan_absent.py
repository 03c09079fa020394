"""Absent holders and partial recovery in fds.metaserver._plan.Layout (issue 11).

A dead server leaves its rows' write sets but stays an *absent* holder (its copy may be the last good one);
coming back, it rejoins those rows as filling, and an unfinished replacement goes; once everyone in a row is
complete, a row with more than k holders gives up the surplus. An absent holder that is back but cannot rejoin
is dropped only from rows with k live, complete holders.
"""

from __future__ import annotations

import random

import pytest

from fds.metaserver._plan import Layout
from fds.models import ServerRef, TableModel
from tests.unit.test_plan import SEEDS, check_invariants, make_model, others, own


@pytest.mark.parametrize("seed", SEEDS)
def test_a_dead_server_stays_an_absent_holder_of_every_row_it_left(seed: int) -> None:
    model = make_model(own(6), 3, seed)
    layout = Layout.of(model, alive=set(range(6)) - {2})
    had = [r for r, row in enumerate(layout.rows) if 2 in row]

    layout.remove_dead(2, others(layout, 2), random.Random(seed))

    check_invariants(layout)
    assert sorted(layout.absent) == had and all(layout.absent[r] == [2] for r in had)
    assert all(2 not in row for row in layout.rows)
    after = Layout.of(layout.apply(model, 2), alive=set(range(6)) - {2})
    assert after.absent == layout.absent
    for r in had:
        after.commit_filled(after.filling[r][0], [r])
    # Whole again, but it is still dead: it keeps its copies (it may come back).
    assert after.drop_absent([]) == [] and after.absent == layout.absent
    # Back but unable to rejoin (say its disk is full): dropped where the row is whole.
    assert after.drop_absent([2]) == [2] * len(had)
    assert after.absent == {} and after.touched and after.dirty


def test_an_absent_holder_stays_while_a_complete_holder_is_silent() -> None:
    """k live, complete holders: a silent (not yet dead) complete holder does not count."""
    model = TableModel(version=3, tract_size=1 << 20, replicas=3,
                       servers=[ServerRef(id=f"s{i}", url=f"http://h{i}", domain=f"d{i}") for i in range(4)],
                       rows=[[0, 1, 3]], row_versions=[3], absent={0: [2]})
    assert Layout.of(model, alive={0, 1, 2}).drop_absent([2]) == []
    assert Layout.of(model, alive={0, 1, 2, 3}).drop_absent([2]) == [2]


def test_a_dead_filling_or_surplus_holder_is_absent_only_where_the_row_is_short() -> None:
    servers = [ServerRef(id=f"s{i}", url=f"http://h{i}", domain=f"d{i}") for i in range(6)]
    model = TableModel(version=5, tract_size=1 << 20, replicas=3, servers=servers,
                       rows=[[0, 1, 2, 3], [0, 1, 4]], row_versions=[5, 5], leaving={0: [2]}, filling={1: [4]})
    layout = Layout.of(model)
    layout.remove_dead(2, [5], random.Random(0))  # leaving row 0, with 0, 1, 3 complete: not needed
    assert 0 not in layout.absent
    layout.remove_dead(1, [5], random.Random(0))  # row 0 keeps 0, 3 complete; row 1 keeps 0 complete
    assert layout.absent == {0: [1], 1: [1]}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_returning_server_rejoins_as_filling_and_an_unfinished_replacement_goes(seed: int) -> None:
    model = make_model(own(6), 3, seed)
    rng = random.Random(seed)
    layout = Layout.of(model, alive=set(range(6)) - {4})
    layout.remove_dead(4, others(layout, 4), rng)
    model = layout.apply(model, 2)
    absent = sorted(layout.absent)

    back = Layout.of(model)
    assert back.readmit(4) == len(absent)
    check_invariants(back)
    assert back.absent == {}
    for r in absent:
        assert back.rows[r][-1] == 4 and back.filling[r] == [4] and r in back.changed
        # The unfinished replacement is gone; the row is back to its holders before the death.
        assert sorted(back.rows[r]) == sorted([*(i for i in model.rows[r] if i not in model.filling[r]), 4])


@pytest.mark.parametrize("seed", SEEDS)
def test_a_server_back_after_its_replacements_finished_rejoins_and_they_go(seed: int) -> None:
    model = make_model(own(6), 3, seed)
    rng = random.Random(seed)
    layout = Layout.of(model, alive=set(range(6)) - {4})
    layout.remove_dead(4, others(layout, 4), rng)
    replacement = {r: layout.filling[r][0] for r in layout.absent}
    for r, other in replacement.items():
        layout.commit_filled(other, [r])
    model = layout.apply(model, 2)

    back = Layout.of(model)
    assert back.readmit(4) == len(replacement)
    for r, other in replacement.items():
        assert back.filling[r] == [4] and other in back.rows[r]
        assert back.trim(r) == []  # nothing goes while it fills
    back.commit_filled(4, list(replacement))
    for r in replacement:
        assert len(back.trim(r)) == 1 and len(back.rows[r]) == 3
    check_invariants(back)
    assert sum(4 in back.rows[r] for r in replacement) > len(replacement) // 2
    # The most loaded holder of each row went: the table is even enough that rebalancing copies nothing.
    assert back.rebalance(range(6), random.Random(seed)) == 0, back.loads()


def test_with_every_holder_complete_the_surplus_is_the_duplicate_domain_then_the_busiest() -> None:
    servers = [ServerRef(id=f"s{i}", url=f"http://h{i}", domain=d) for i, d in enumerate("abcdc")]
    dup = TableModel(version=1, tract_size=1 << 20, replicas=3, servers=servers,
                     rows=[[0, 1, 2, 4], [1, 2, 3]], row_versions=[1, 1])
    layout = Layout.of(dup)
    assert layout.trim(0) == [2]  # 2 and 4 share domain c; 2 holds more rows
    assert layout.rows[0] == [0, 1, 4]
    busy = TableModel(version=1, tract_size=1 << 20, replicas=3, servers=servers,
                      rows=[[0, 1, 3, 2], [2, 3, 4], [0, 2, 4]], row_versions=[1, 1, 1])
    layout = Layout.of(busy)
    assert layout.trim(0) == [2]  # 2 holds the most rows
    assert layout.rows[0] == [0, 1, 3]
    primary = TableModel(version=1, tract_size=1 << 20, replicas=3, servers=servers,
                         rows=[[2, 0, 1, 3], [2, 3, 4], [0, 2, 4]], row_versions=[1, 1, 1])
    layout = Layout.of(primary)
    assert layout.trim(0) == [3]  # never the primary, however busy
    assert Layout.of(busy).trim(1) == []


def test_a_row_with_no_other_complete_holder_keeps_the_dead_server_in_the_row() -> None:
    model = TableModel(version=1, tract_size=1 << 20, replicas=3,
                       servers=[ServerRef(id=f"s{i}", url=f"http://h{i}", domain=f"d{i}") for i in range(5)],
                       rows=[[0, 3, 4]], row_versions=[1], filling={0: [3, 4]})
    layout = Layout.of(model)
    assert layout.remove_dead(0, [1, 2], random.Random(0)) == (0, 1)
    assert layout.rows == [[0, 3, 4]] and layout.absent == {}
