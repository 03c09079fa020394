"""Changing the table: pure functions over a working copy of its rows.

Every change to who holds a row goes through here, so the rules live in one
place (docs/design.md §4):

- **A dead server** leaves each of its rows' write sets at once, and a
  replacement is appended as *filling*: it takes writes straight away and
  copies the row's tracts from a surviving row-mate. The dead server stays
  recorded as an *absent* holder of the row: it is neither written nor
  read, but its copy may be the last good one, so it keeps it. A row whose
  other holders are all dead keeps the dead server in the row itself (it
  holds the last copy).
- **A server that comes back** rejoins the rows it is absent from as
  *filling* (:meth:`Layout.readmit`): it copies only what changed while it
  was away (partial recovery), and a replacement that has not finished is
  dropped. Once everyone in a row is complete, a row with more staying
  holders than k gives up the surplus (:meth:`Layout.trim`): usually the
  replacement, which took on more than its share. An absent holder is
  dropped only once its row has k live, complete holders again, and only
  if it is back but cannot rejoin (:meth:`Layout.drop_absent`); only then
  may it delete the row's tracts. A server that never comes back stays
  absent: its entry costs nothing, and its disk is gone.
- **Adding and decommissioning** are two-phase hand-overs: the new server
  joins the row as *filling* and the old one is marked *leaving*; both take
  writes. When the new one reports the row filled, the leaving one is
  dropped (a second version bump) and collects its garbage.
- **Replacements** are picked at random among the eligible servers with the
  fewest rows, never from a failure domain the row already has. Purely
  random picks (the paper's) give some servers two or three times the
  average share of a recovery; least-loaded-first keeps every server's
  share even, and recovery is only as fast as the busiest copier.
- A filling server is appended, never first: a row's primary always holds
  every tract and every metadata record.

Rows whose holders change get a new row version, so a client or server with
an older table is refused (409) and refetches. Filling finishing does not
change who a write goes to, so it bumps only the table version.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from fds.models import TableModel

__all__ = ["Layout"]


@dataclass
class Layout:
    """A mutable copy of a table's rows, with the rules for changing them."""

    rows: list[list[int]]
    filling: dict[int, list[int]]
    leaving: dict[int, list[int]]
    domains: list[str]
    replicas: int
    absent: dict[int, list[int]] = field(default_factory=dict)
    """Row -> servers out of its write set that may hold its last good copy (see the module doc)."""
    alive: set[int] | None = None
    """Servers heartbeating now; None: every one (the planner's pure tests)."""
    changed: set[int] = field(default_factory=set)
    """Rows whose holders changed: they get the new row version."""
    touched: bool = False
    """Something changed that needs a new table version but no new row version (absent holders dropped)."""

    @classmethod
    def of(cls, model: TableModel, alive: set[int] | None = None) -> Layout:
        return cls(rows=[list(r) for r in model.rows],
                   filling={r: list(v) for r, v in model.filling.items()},
                   leaving={r: list(v) for r, v in model.leaving.items()},
                   absent={r: list(v) for r, v in model.absent.items()},
                   domains=[s.domain for s in model.servers], replicas=model.replicas, alive=alive)

    @property
    def dirty(self) -> bool:
        """Whether the table needs a new version."""
        return bool(self.changed) or self.touched

    def apply(self, model: TableModel, version: int) -> TableModel:
        """A new table model with this layout at ``version``."""
        row_versions = [version if r in self.changed else v for r, v in enumerate(model.row_versions)]
        update: dict[str, Any] = {
            "version": version, "rows": [list(row) for row in self.rows], "row_versions": row_versions,
            "filling": {r: list(v) for r, v in self.filling.items() if v},
            "leaving": {r: list(v) for r, v in self.leaving.items() if v},
            "absent": {r: list(v) for r, v in self.absent.items() if v}}
        return model.model_copy(update=update)

    # -- views -------------------------------------------------------------
    def loads(self) -> list[int]:
        """Rows each server will hold once hand-overs finish (leaving rows not counted)."""
        load = [0] * len(self.domains)
        for r, row in enumerate(self.rows):
            leaving = self.leaving.get(r, ())
            for i in row:
                if i not in leaving:
                    load[i] += 1
        return load

    def complete(self, r: int) -> list[int]:
        filling = self.filling.get(r, ())
        return [i for i in self.rows[r] if i not in filling]

    def live_complete(self, r: int) -> list[int]:
        """The row's complete holders that are heartbeating."""
        return [i for i in self.complete(r) if self.alive is None or i in self.alive]

    def staying(self, r: int) -> list[int]:
        leaving = self.leaving.get(r, ())
        return [i for i in self.rows[r] if i not in leaving]

    # -- primitives --------------------------------------------------------
    def _pick(self, r: int, eligible: Collection[int], load: list[int], rng: random.Random,
              ignore: Collection[int] = ()) -> int | None:
        used = {self.domains[i] for i in self.rows[r] if i not in ignore}
        candidates = [i for i in eligible if i not in self.rows[r] and self.domains[i] not in used]
        if not candidates:
            return None
        least = min(load[i] for i in candidates)
        return rng.choice([i for i in candidates if load[i] == least])

    def _add_filling(self, r: int, server: int, load: list[int]) -> None:
        self.rows[r].append(server)
        self.filling.setdefault(r, []).append(server)
        load[server] += 1
        self.changed.add(r)

    # -- changes -----------------------------------------------------------
    def remove_dead(self, dead: int, eligible: Collection[int], rng: random.Random) -> tuple[int, int]:
        """Take ``dead`` out of its rows' write sets and fill each with a replacement.

        Where the row is left with fewer than k live, complete holders, ``dead`` stays recorded as
        an absent holder (its copy may be the last good one). Returns (rows it left, rows where it
        stays in the row because it has the only complete copy left).
        """
        load = self.loads()
        left = kept = 0
        for r, row in enumerate(self.rows):
            if dead not in row:
                continue
            others = [i for i in self.complete(r) if i != dead]
            if not others:
                kept += 1
                continue
            self._drop(r, dead)
            if len(self.live_complete(r)) < self.replicas:
                self.absent.setdefault(r, []).append(dead)
            left += 1
            self._restore(r, eligible, load, rng)
        return left, kept

    def readmit(self, server: int) -> int:
        """``server`` is back: it rejoins, as *filling*, every row it is absent from. Returns how many.

        It copies only what changed while it was away; until then it serves none of the row's
        tracts it has not checked. A replacement still filling the row (outside a hand-over) is
        dropped: the returning server has nearly all of it already.
        """
        back = 0
        for r in [r for r, servers in self.absent.items() if server in servers]:
            self.absent[r].remove(server)
            if not self.absent[r]:
                del self.absent[r]
            self.touched = True
            if server in self.rows[r]:
                continue
            self.rows[r].append(server)
            self.filling.setdefault(r, []).append(server)
            self.changed.add(r)
            back += 1
            if not self.leaving.get(r):
                for other in [i for i in self.filling[r] if i != server]:
                    self._drop(r, other)
        return back

    def drop_absent(self, servers: Collection[int]) -> list[int]:
        """Forget ``servers`` as absent holders of rows that have k live, complete holders again; returns the
        servers dropped (they may now delete those rows' tracts). For servers that are back but cannot rejoin
        their rows (a full disk); absent holders that are still dead are kept."""
        dropped: list[int] = []
        for r in list(self.absent):
            gone = [i for i in self.absent[r] if i in servers]
            if gone and len(self.live_complete(r)) >= self.replicas:
                self.absent[r] = [i for i in self.absent[r] if i not in gone]
                if not self.absent[r]:
                    del self.absent[r]
                dropped.extend(gone)
                self.touched = True
        return dropped

    def trim(self, r: int) -> list[int]:
        """Give up row ``r``'s staying holders beyond k (a returning server next to its replacement); returns
        the servers dropped.

        Only once nobody in the row is filling or leaving. A holder that shares a failure domain with
        another goes first, then the one holding the most rows; never the primary.
        """
        dropped: list[int] = []
        if self.filling.get(r) or self.leaving.get(r):
            return dropped
        load = self.loads()
        while len(self.rows[r]) > self.replicas:
            count: dict[str, int] = {}
            for i in self.rows[r]:
                count[self.domains[i]] = count.get(self.domains[i], 0) + 1
            victim = max(self.rows[r][1:], key=lambda i: (count[self.domains[i]] > 1, load[i], i))
            self._drop(r, victim)
            load[victim] -= 1
            dropped.append(victim)
        return dropped

    def _drop(self, r: int, server: int) -> None:
        self.rows[r].remove(server)
        for group in (self.filling, self.leaving):
            if server in group.get(r, ()):
                group[r].remove(server)
                if not group[r]:
                    del group[r]
        # Complete holders first: if the primary went, the next complete holder leads, never a filling one.
        filling = self.filling.get(r, ())
        self.rows[r] = [i for i in self.rows[r] if i not in filling] + [i for i in self.rows[r] if i in filling]
        self.changed.add(r)

    def _restore(self, r: int, eligible: Collection[int], load: list[int], rng: random.Random) -> None:
        """Bring row ``r`` back to k staying holders: first call back a leaving one (it has every
        tract), then append replacements."""
        for back in list(self.leaving.get(r, ())):
            if len(self.staying(r)) >= self.replicas:
                break
            if self.domains[back] in {self.domains[i] for i in self.staying(r)}:
                continue  # its replacement is in its own domain: calling it back would double the domain
            self.leaving[r].remove(back)
            load[back] += 1
            if not self.leaving[r]:
                del self.leaving[r]
        while len(self.staying(r)) < self.replicas:
            pick = self._pick(r, eligible, load, rng)
            if pick is None:
                return
            self._add_filling(r, pick, load)

    def fill_short_rows(self, eligible: Collection[int], rng: random.Random) -> int:
        """Give a replacement to every row with fewer than k staying holders; returns how many rows got one."""
        load = self.loads()
        added = 0
        for r in range(len(self.rows)):
            if len(self.staying(r)) < self.replicas:
                before = len(self.rows[r])
                self._restore(r, eligible, load, rng)
                added += len(self.rows[r]) > before
        return added

    def decommission(self, server: int, eligible: Collection[int], rng: random.Random) -> tuple[int, int]:
        """Hand each of ``server``'s rows to a replacement. Returns (rows handed over, rows with no candidate)."""
        load = self.loads()
        moved = stuck = 0
        for r, row in enumerate(self.rows):
            if server not in row or server in self.leaving.get(r, ()):
                continue
            if server in self.filling.get(r, ()):
                self._drop(r, server)  # it never had all of this row: just drop it
                load[server] -= 1
                self._restore(r, [e for e in eligible if e != server], load, rng)
                moved += 1
                continue
            pick = self._pick(r, [e for e in eligible if e != server], load, rng, ignore=(server,))
            if pick is None:
                stuck += 1
                continue
            self._add_filling(r, pick, load)
            self.leaving.setdefault(r, []).append(server)
            load[server] -= 1
            moved += 1
        return moved, stuck

    def rebalance(self, eligible: Collection[int], rng: random.Random, *, limit: int | None = None) -> int:
        """Hand rows from the most loaded servers to the least loaded eligible ones; returns moves made.

        Only rows in a steady state (nobody filling or leaving) move, and a
        move never puts two servers of one failure domain in a row.
        """
        load = self.loads()
        active = {i for row in self.rows for i in row}
        takers = set(eligible)
        # Tables are built within a row or two of even; moving rows for less than that is churn.
        slack = max(2, sum(load) // max(1, len(active | takers)) // 10)
        moves = 0
        while takers and (limit is None or moves < limit):
            taker = min(takers, key=lambda i: (load[i], i))
            moved = False
            for giver in sorted(active - {taker}, key=lambda i: (-load[i], i)):
                if load[giver] - load[taker] <= slack:
                    break
                rows = [r for r, row in enumerate(self.rows)
                        if giver in row and taker not in row and not self.filling.get(r) and not self.leaving.get(r)
                        and self.domains[taker] not in {self.domains[i] for i in row if i != giver}]
                if not rows:
                    continue
                # Prefer rows the giver does not lead, so primaries stay where they are.
                led = [r for r in rows if self.rows[r][0] != giver]
                r = rng.choice(led or rows)
                self._add_filling(r, taker, load)
                self.leaving.setdefault(r, []).append(giver)
                load[giver] -= 1
                moves += 1
                moved = True
                break
            if not moved:
                takers.discard(taker)
        return moves

    def commit_filled(self, server: int, rows: Collection[int]) -> int:
        """``server`` has every tract of ``rows``: it stops filling. Returns rows it finished."""
        done = 0
        for r in rows:
            if not 0 <= r < len(self.rows) or server not in self.filling.get(r, ()):
                continue
            self.filling[r].remove(server)
            done += 1
            self._settle(r)
        return done

    def _settle(self, r: int) -> None:
        """Once nobody fills row ``r``, its leaving servers go (a holder change: new row version)."""
        if self.filling.get(r):
            return
        self.filling.pop(r, None)
        leaving = self.leaving.pop(r, [])
        if leaving:
            self.rows[r] = [i for i in self.rows[r] if i not in leaving]
            self.changed.add(r)
