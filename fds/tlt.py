"""The tract locator table: how it is built, and how it is read.

Building (docs/design.md §2) lives in :func:`build_rows`:

- k = 1: the concatenation of several random permutations of the servers.
- k >= 2: every pair of servers from different failure domains gets rows
  (so a failed server's data is spread over *all* the others, and all of them
  help recover it), and each row is filled up to k with servers from further
  domains. We pick fill-ins least-loaded first (random among equals) rather
  than purely at random, and choose each row's primary the same way, so every
  server carries an even share of replicas and of metadata primaries. For
  small clusters the pair list is repeated so a blob's consecutive tracts
  still spread evenly. Rows are shuffled, so consecutive rows touch
  different servers.

No row ever holds two servers of one failure domain; a cluster with fewer
domains than k cannot be built and says so.

Reading is :class:`Table`: it maps ``(guid, tract)`` to the row and its
replica servers with the one placement function in :mod:`fds.placement`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from fds.errors import BadRequest
from fds.models import ServerRef, TableModel
from fds.placement import tract_row

__all__ = ["Member", "build_rows", "Table", "PERMUTATIONS", "MIN_ROWS_PER_SERVER"]

PERMUTATIONS = 20
"""Permutations concatenated for an unreplicated table (the paper used 20)."""

MIN_ROWS_PER_SERVER = 8
"""Replicated tables repeat the all-pairs list until rows >= this x servers."""


@dataclass(frozen=True, slots=True)
class Member:
    """A tract server as table building sees it."""

    id: str
    domain: str


def build_rows(members: Sequence[Member], replicas: int, rng: random.Random) -> list[list[int]]:
    """Build the rows of a TLT as lists of indices into ``members``.

    The first index of a row is its primary (it serialises the metadata of
    blobs whose tract -1 lands there).
    """
    n = len(members)
    if replicas < 1:
        raise BadRequest(f"replication level must be at least 1, not {replicas}")
    if n < replicas:
        raise BadRequest(f"a table with {replicas} replicas needs at least {replicas} tract servers, have {n}")
    domains = [m.domain for m in members]
    if len(set(domains)) < replicas:
        raise BadRequest(
            f"{replicas} replicas need servers in at least {replicas} failure domains; "
            f"have {len(set(domains))} ({', '.join(sorted(set(domains)))})"
        )
    if replicas == 1:
        rows: list[list[int]] = []
        for _ in range(PERMUTATIONS):
            order = list(range(n))
            rng.shuffle(order)
            rows.extend([i] for i in order)
        return rows

    pairs = [(a, b) for a, b in combinations(range(n), 2) if domains[a] != domains[b]]
    repeats = max(1, -(-MIN_ROWS_PER_SERVER * n // len(pairs)))
    # Count every server's pair slots up front: a server whose pairs happen to
    # come late in the shuffle must not look light early and take extra fill-ins.
    load = [0] * n
    for a, b in pairs:
        load[a] += repeats
        load[b] += repeats
    primaries = [0] * n
    rows = []
    for _ in range(repeats):
        batch = pairs[:]
        rng.shuffle(batch)
        for a, b in batch:
            row = [a, b]
            used = {domains[a], domains[b]}
            while len(row) < replicas:
                eligible = [i for i in range(n) if domains[i] not in used]
                least = min(load[i] for i in eligible)
                pick = rng.choice([i for i in eligible if load[i] == least])
                row.append(pick)
                load[pick] += 1
                used.add(domains[pick])
            fewest = min(primaries[i] for i in row)
            primary = rng.choice([i for i in row if primaries[i] == fewest])
            primaries[primary] += 1
            row.remove(primary)
            rng.shuffle(row)
            rows.append([primary, *row])
    rng.shuffle(rows)
    return rows


class Table:
    """A TLT as clients and tract servers use it: placement plus addresses."""

    def __init__(self, model: TableModel) -> None:
        self.model = model
        self.version = model.version
        self.tract_size = model.tract_size
        self.replicas = model.replicas
        self.servers = model.servers
        self.rows = model.rows
        self.row_versions = model.row_versions
        self.filling = model.filling
        self.leaving = model.leaving
        self.absent = model.absent
        self._index = {s.id: i for i, s in enumerate(model.servers)}

    def __len__(self) -> int:
        return len(self.rows)

    def row_of(self, guid: bytes, tract: int) -> int:
        return tract_row(guid, tract, len(self.rows))

    def holders(self, guid: bytes, tract: int) -> list[ServerRef]:
        """The servers a write of ``tract`` of ``guid`` goes to; the first is the row's primary.

        Filling and leaving servers are included: during a repair or a
        hand-over, writes reach both the old and the new holders.
        """
        return [self.servers[i] for i in self.rows[tract_row(guid, tract, len(self.rows))]]

    def readers(self, guid: bytes, tract: int, rng: random.Random) -> list[ServerRef]:
        """The servers to read from, in the order to try: complete holders shuffled, then filling ones."""
        row = tract_row(guid, tract, len(self.rows))
        filling = self.filling.get(row, ())
        complete = [self.servers[i] for i in self.rows[row] if i not in filling]
        rng.shuffle(complete)
        return complete + [self.servers[i] for i in filling]

    def server(self, server_id: str) -> ServerRef | None:
        i = self._index.get(server_id)
        return None if i is None else self.servers[i]

    def holds(self, server_id: str, row: int) -> bool:
        i = self._index.get(server_id)
        return i is not None and i in self.rows[row]

    def is_filling(self, server_id: str, row: int) -> bool:
        i = self._index.get(server_id)
        return i is not None and i in self.filling.get(row, ())

    def rows_of(self, server_id: str) -> list[int]:
        i = self._index.get(server_id)
        return [] if i is None else [r for r, row in enumerate(self.rows) if i in row]

    def absent_rows(self, server_id: str) -> list[int]:
        """Rows ``server_id`` is an absent holder of: out of their write sets, but it keeps their tracts."""
        i = self._index.get(server_id)
        return [] if i is None else sorted(r for r, members in self.absent.items() if i in members)

    def kept_rows(self, server_id: str) -> set[int]:
        """Rows whose tracts ``server_id`` must keep: those it holds and those it is absent from."""
        return set(self.rows_of(server_id)) | set(self.absent_rows(server_id))

    def filling_rows(self, server_id: str) -> list[int]:
        """Rows ``server_id`` must still copy."""
        i = self._index.get(server_id)
        return [] if i is None else sorted(r for r, members in self.filling.items() if i in members)

    def complete_holders(self, row: int) -> list[ServerRef]:
        """The row's holders that have every tract (not filling), primary first."""
        filling = self.filling.get(row, ())
        return [self.servers[i] for i in self.rows[row] if i not in filling]
