"""Changing the table: pure functions over a working copy of its rows.

Every change to who holds a row goes through here, so the rules live in one
place (docs/design.md §4):

- **A dead server** leaves each of its rows at once, and a replacement is
  appended as *filling*: it takes writes straight away and copies the row's
  tracts from a surviving row-mate. A row whose other holders are all dead
  keeps the dead server (it holds the last copy; if it comes back, nothing
  is lost).
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
    changed: set[int] = field(default_factory=set)
    """Rows whose holders changed: they get the new row version."""

    @classmethod
    def of(cls, model: TableModel) -> Layout:
        return cls(rows=[list(r) for r in model.rows],
                   filling={r: list(v) for r, v in model.filling.items()},
                   leaving={r: list(v) for r, v in model.leaving.items()},
                   domains=[s.domain for s in model.servers], replicas=model.replicas)

    def apply(self, model: TableModel, version: int) -> TableModel:
        """A new table model with this layout at ``version``."""
        row_versions = [version if r in self.changed else v for r, v in enumerate(model.row_versions)]
        return model.model_copy(update={
            "version": version, "rows": [list(row) for row in self.rows], "row_versions": row_versions,
            "filling": {r: list(v) for r, v in self.filling.items() if v},
            "leaving": {r: list(v) for r, v in self.leaving.items() if v}})

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
        """Take ``dead`` out of its rows and fill each with a replacement.

        Returns (rows it left, rows where it stays because it has the only copy left).
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
            left += 1
            self._restore(r, eligible, load, rng)
        return left, kept

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
