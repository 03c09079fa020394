"""The metaserver's durable state: cluster settings, members, and the table.

It also runs the repair planner (:meth:`MetaState.tick`): failure
detection, replacements for rows that lost a holder, and hand-overs to
new servers. The rules for changing rows are in :mod:`._plan`.

Liveness is kept in memory only. After a restart every member gets a full
heartbeat timeout and a lease of grace, so a metaserver restart never
declares the cluster dead. Silence of more servers at once than the
replication level covers is an outage, not failures: nobody is declared
dead until it ends or an operator releases a server (``declare_dead``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
import rocksdict
from pydantic import BaseModel, ValidationError

from fds.config import MetaserverConfig
from fds.durable import ensure_dir
from fds.errors import BadRequest, Conflict, NotFound, TableNotReady, Unavailable
from fds.metaserver._leases import Leases
from fds.metaserver._plan import Layout
from fds.models import (
    ClusterState,
    ClusterStatus,
    DeclaredDead,
    FillProgress,
    Heartbeat,
    HeartbeatReply,
    MemberState,
    OutageStatus,
    PublishStatus,
    RecoveryStatus,
    RegisterRequest,
    ServerRef,
    ServerStatus,
    TableModel,
)
from fds.tlt import Member, build_rows

__all__ = ["MetaState", "SETTINGS"]

log = logging.getLogger("fds.metaserver")

SETTINGS = ("replicas", "tract_size", "expected_servers")
"""Cluster settings fixed at first start; later starts keep the stored values."""

_CONFIG = b"config"
_TABLE = b"table"
_PENDING = b"table.pending"
_MEMBER = b"member/"


class _Member(BaseModel):
    """A member as stored: its registration and where it stands."""

    req: RegisterRequest
    state: MemberState = MemberState.ACTIVE
    removed_at: int = 0
    """Table version at which it last left a row; it takes rows again only once it has cleaned up past it."""


@dataclass
class _Live:
    """What heartbeats tell us; kept in memory only."""

    last_seen: float | None = None
    beat: Heartbeat = field(default_factory=lambda: Heartbeat(
        tracts=0, bytes_used=0, disk_free=0, capacity_bytes=0, table_version=0))


@dataclass
class TickResult:
    """What one pass of the planner did."""

    declared_dead: list[str] = field(default_factory=list)
    rows_changed: int = 0
    fill: list[str] = field(default_factory=list)
    """Servers handed rows to copy: worth telling now rather than at their next heartbeat."""


class MetaState:
    """Membership and the TLT, persisted in a RocksDB at ``config.dir``."""

    def __init__(self, config: MetaserverConfig, *, clock: Callable[[], float] | None = None,
                 rng: random.Random | None = None) -> None:
        ensure_dir(config.dir)
        self._clock = clock or time.monotonic
        self._rng = rng or random.Random(config.seed)
        self._db = rocksdict.Rdict(f"{config.dir}/state.rocksdb", rocksdict.Options(raw_mode=True))
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True
        self.config = config
        self.warnings: list[str] = []
        self._adopt_settings()
        self.members: dict[str, _Member] = {}
        for key, value in self._db.items(from_key=_MEMBER):
            if not isinstance(key, bytes) or not key.startswith(_MEMBER):
                break
            try:
                member = _Member.model_validate_json(value)
            except ValidationError:  # stored before members had a state
                member = _Member(req=RegisterRequest.model_validate_json(value))
            self.members[member.req.id] = member
        raw = self._db.get(_TABLE)
        self.table: TableModel | None = TableModel.model_validate_json(raw) if raw else None
        self._table_json: bytes | None = raw
        pending = self._db.get(_PENDING)
        self.pending: TableModel | None = TableModel.model_validate_json(pending) if pending else None
        """A table change waiting to be published (see :meth:`_commit`)."""
        started = self._clock()
        self._pending_since = started
        self.leases = Leases(self.lease_seconds, started)
        self.acked: dict[str, int] = {}
        """Per server: the newest table version it acknowledged (a pushed table, or its heartbeat)."""
        self.live: dict[str, _Live] = {m: _Live(last_seen=started) for m in self.members}
        self.repair_started: float | None = None
        self.last_repair_seconds: float | None = None
        self._grace_until = started + config.heartbeat_timeout + self.lease_seconds if self.members else started
        """Nobody is declared dead before this: after a restart, every member gets a fair chance to report."""
        self._grace: dict[str, float] = {}
        """Per server: not declared dead before this (silent servers when an outage ends)."""
        self.outage: OutageStatus | None = None

    @property
    def lease_seconds(self) -> float:
        """How long a tract server may serve after sending a heartbeat the metaserver acknowledged (0: no leases)."""
        if self.config.lease_seconds < 0:
            return 0.0
        return self.config.lease_seconds or 0.8 * self.config.heartbeat_timeout

    def _adopt_settings(self) -> None:
        raw = self._db.get(_CONFIG)
        wanted = {name: getattr(self.config, name) for name in SETTINGS}
        if raw is None:
            if self.config.tract_size < 4096 or self.config.tract_size > 1 << 30:
                raise BadRequest(f"tract size must be between 4 KiB and 1 GiB, not {self.config.tract_size}")
            if self.config.expected_servers < 1:
                raise BadRequest("expected_servers must be at least 1")
            self._db.put(_CONFIG, orjson.dumps(wanted), self._sync)
            return
        stored = orjson.loads(raw)
        for name in SETTINGS:
            if stored[name] != wanted[name]:
                message = (f"{name}={wanted[name]} ignored: this metaserver was created with "
                           f"{name}={stored[name]}, and stored settings win")
                self.warnings.append(message)
                log.warning(message)
            setattr(self.config, name, stored[name])

    def close(self) -> None:
        self._db.close()

    def _save(self, members: Iterable[_Member] = (), table: TableModel | None = None, *,
              pending: TableModel | None = None) -> None:
        """Store ``members`` and ``table`` (or a ``pending`` one) durably in one RocksDB write batch: all of
        them or none.

        A member and the table that names it change together (registering, leaving rows); two
        separate puts would let a crash between them leave a member the table never got. Storing
        the table also ends any pending one.
        """
        batch = rocksdict.WriteBatch(raw_mode=True)
        for member in members:
            batch.put(_MEMBER + member.req.id.encode(), member.model_dump_json().encode())
        raw = table.model_dump_json().encode() if table is not None else None
        if raw is not None:
            batch.put(_TABLE, raw)
            batch.delete(_PENDING)
        if pending is not None:
            batch.put(_PENDING, pending.model_dump_json().encode())
        self._db.write(batch, self._sync)
        if table is not None:
            self.table = table
            self._table_json = raw
            self.pending = None
        if pending is not None:
            self.pending = pending
            self._pending_since = self._clock()

    # -- membership ------------------------------------------------------
    def register(self, req: RegisterRequest) -> HeartbeatReply:
        """Add or update a member; build the table once enough have come. Returns the table version and a
        lease, as a heartbeat's reply."""
        member = self.members.get(req.id)
        old = member.req if member else None
        if old is not None and old.domain != req.domain and self._in_table(req.id):
            raise Conflict(f"server {req.id} is in the table with failure domain {old.domain!r}; "
                           f"it cannot re-register as {req.domain!r}", code="domain_changed")
        if self.pending is not None and (not self._in_table(req.id) or (
                old is not None and (old.url, old.data_url) != (req.url, req.data_url))):
            self._refuse_while_pending(f"register {req.id}")
        for other in self.members.values():
            if other.req.id != req.id and other.req.url == req.url:
                log.info("server %s takes over URL %s from %s", req.id, req.url, other.req.id)
        if member is None:
            member = _Member(req=req)
        else:
            member.req = req
            self._revive(member, save=False)
        self.members[req.id] = member
        self.live.setdefault(req.id, _Live()).last_seen = self._clock()
        table: TableModel | None = None
        if self.table is None:
            if len(self.members) >= self.config.expected_servers:
                table = self._built_table()
        elif not self._in_table(req.id):
            servers = [*self.table.servers, ServerRef(id=req.id, url=req.url, domain=req.domain,
                                                      data_url=req.data_url)]
            table = self.table.model_copy(update={"servers": servers, "version": self.table.version + 1})
            log.info("server %s (%s) joined; table version %d", req.id, req.domain, table.version)
        elif old is not None and (old.url, old.data_url) != (req.url, req.data_url):
            servers = [s if s.id != req.id else ServerRef(id=s.id, url=req.url, domain=s.domain, data_url=req.data_url)
                       for s in self.table.servers]
            table = self.table.model_copy(update={"servers": servers, "version": self.table.version + 1})
            log.info("server %s moved to %s; table version %d", req.id, req.url, table.version)
        self._save([member], table)
        return self._reply(req.id)

    def _reply(self, server_id: str) -> HeartbeatReply:
        """Acknowledge a heartbeat (or registration) from ``server_id`` just received: the table version, and
        a lease, unless a pending table waits for this server (it is taken out of rows, and the table could
        not be pushed to it yet): then its lease is left to run out."""
        waited_for = self.leases.enabled and self.pending is not None and server_id in self.waiting_for()
        return HeartbeatReply(table_version=self.table.version if self.table else 0,
                              lease_seconds=0.0 if waited_for else self.leases.grant(server_id, self._clock()))

    def _revive(self, member: _Member, *, save: bool = True) -> None:
        if member.state == MemberState.DEAD:
            member.state = MemberState.ACTIVE
            if save:
                self._save([member])
            log.warning("server %s is back after being declared dead; it rejoins the rows it is still an "
                        "absent holder of as a filling holder, and removes the tracts of any others", member.req.id)

    def heartbeat(self, server_id: str, beat: Heartbeat) -> HeartbeatReply:
        member = self.members.get(server_id)
        if member is None:
            raise NotFound(f"unknown tract server {server_id!r}: register first", code="unknown_server")
        live = self.live.setdefault(server_id, _Live())
        live.last_seen = self._clock()
        live.beat = beat
        self._revive(member)
        self.table_acked(server_id, beat.table_version)
        return self._reply(server_id)

    def _in_table(self, server_id: str) -> bool:
        return self.table is not None and any(s.id == server_id for s in self.table.servers)

    def _alive(self, server_id: str, now: float, fraction: float = 1.0) -> bool:
        """Whether ``server_id`` heartbeat within the timeout (or ``fraction`` of it)."""
        live = self.live.get(server_id)
        return (live is not None and live.last_seen is not None
                and now - live.last_seen < fraction * self.config.heartbeat_timeout)

    def _alive_indices(self, now: float) -> set[int]:
        assert self.table is not None
        return {i for i, s in enumerate(self.table.servers) if self._alive(s.id, now)}

    def _can_hold(self, i: int, now: float) -> bool:
        """Whether server ``i`` may hold rows now: active, alive, and its disk not full."""
        assert self.table is not None
        ref = self.table.servers[i]
        member = self.members.get(ref.id)
        if member is None or member.state != MemberState.ACTIVE or not self._alive(ref.id, now):
            return False
        beat = self.live[ref.id].beat
        return not (beat.capacity_bytes and beat.disk_free < 8 * self.table.tract_size)

    def _eligible(self, now: float) -> list[int]:
        """Servers that may take rows: active, alive, clean of every row they left, and not full."""
        assert self.table is not None
        out = []
        for i, ref in enumerate(self.table.servers):
            if not self._can_hold(i, now):
                continue
            if self.live[ref.id].beat.clean_version < self.members[ref.id].removed_at:
                continue  # still holds stale copies of rows it left
            out.append(i)
        return out

    # -- table -----------------------------------------------------------
    def _built_table(self) -> TableModel:
        members = sorted((m.req for m in self.members.values()), key=lambda m: m.id)
        rng = random.Random(self.config.seed)
        rows = build_rows([Member(m.id, m.domain) for m in members], self.config.replicas, rng)
        table = TableModel(
            version=1,
            tract_size=self.config.tract_size,
            replicas=self.config.replicas,
            servers=[ServerRef(id=m.id, url=m.url, domain=m.domain, data_url=m.data_url) for m in members],
            rows=rows,
            row_versions=[1] * len(rows),
        )
        log.info("built table: %d servers, %d rows, k=%d", len(members), len(rows), self.config.replicas)
        return table

    def _commit(self, layout: Layout, changed: Iterable[_Member] = ()) -> None:
        """Store ``layout`` as the next table version, with ``changed`` members, in one write batch; publish it
        at once unless it takes a server out of a row that may still serve it.

        **The publish barrier.** A server taken out of a row's write set (declared dead, done leaving, a
        surplus holder) might still serve the row to clients holding the old table: one cut off from
        the metaserver would serve its stale copy for ever. So such a table is stored as *pending* and
        published (``GET /v1/table``, heartbeat replies) only once each such server has acknowledged it
        (the app pushes it to them) or its lease is surely over (:mod:`._leases`): a server with a lease
        fresh enough to serve has the new table and refuses the row. Nothing else changes the table
        meanwhile.

        Servers that gave up a row for good (not merely left its write set as an absent holder) must clean
        it up before taking rows again.
        """
        assert self.table is not None
        version = self.table.version + 1
        before = self.table
        after = layout.apply(before, version)
        members = {m.req.id: m for m in changed}
        for r in range(len(before.rows)):
            kept_before = set(before.rows[r]) | set(before.absent.get(r, ()))
            kept_after = set(after.rows[r]) | set(after.absent.get(r, ()))
            for i in kept_before - kept_after:
                member = self.members.get(before.servers[i].id)
                if member is not None:
                    member.removed_at = version
                    members[member.req.id] = member
        if self._waiting_for(after, self._clock()):
            self._save(members.values(), pending=after)
            log.info("table version %d waits to be published until %s have it or their leases are over",
                     version, ", ".join(self._waiting_for(after, self._clock())))
        else:
            self._save(members.values(), after)

    def _removed(self, after: TableModel) -> list[str]:
        """Servers ``after`` takes out of some row's write set."""
        assert self.table is not None
        before = self.table
        out = {before.servers[i].id for r, row in enumerate(before.rows) for i in set(row) - set(after.rows[r])}
        return sorted(out)

    def _waiting_for(self, after: TableModel, now: float) -> list[str]:
        """Servers ``after`` takes out of rows that have not acknowledged it and may still be serving."""
        return [server_id for server_id in self._removed(after)
                if self.acked.get(server_id, 0) < after.version and not self.leases.over(server_id, now)]

    def waiting_for(self) -> list[str]:
        """Servers the pending table waits for (the app pushes it to them)."""
        return [] if self.pending is None else self._waiting_for(self.pending, self._clock())

    def table_acked(self, server_id: str, version: int) -> None:
        """``server_id`` uses table ``version`` (it took a pushed table, or says so in a heartbeat)."""
        if version > self.acked.get(server_id, 0):
            self.acked[server_id] = version

    def publish(self) -> bool:
        """Publish the pending table if nobody it waits for may still serve a row it lost; returns whether a
        table is still pending."""
        if self.pending is None:
            return False
        if self.waiting_for():
            return True
        log.info("table version %d published after %.1fs", self.pending.version, self._clock() - self._pending_since)
        self._save(table=self.pending)
        self._finish_decommissions()
        self._track_repair(self._clock())
        return False

    def _refuse_while_pending(self, what: str) -> None:
        assert self.pending is not None
        waiting = self.waiting_for()
        raise Unavailable(f"{what}: table version {self.pending.version} is waiting to be published (for "
                          f"{', '.join(waiting) or 'nobody now'} to have it or their leases to run out, at most "
                          f"{self.leases.seconds * 1.01 + 0.25:.0f}s); retry shortly", code="table_pending")

    def table_json(self) -> bytes:
        if self._table_json is None:
            have = len(self.members)
            raise TableNotReady(
                f"no table yet: waiting for tract servers to register "
                f"({have} of {self.config.expected_servers})")
        return self._table_json

    # -- repair ------------------------------------------------------------
    def tick(self) -> TickResult:
        """One pass of the failure detector and repair planner (the loop in the app calls this).

        1. **Outage or failures.** If more servers are silent than ``outage_silent`` (k - 1 by default),
           that is an outage: nobody is declared dead, and ``status`` says so. Otherwise servers whose
           heartbeat is older than the timeout are declared dead and leave their rows' write sets
           (k >= 2 only: with k = 1 there is nothing to copy from, so the rows wait for them); each row
           gets a replacement, and keeps the dead server as an absent holder while it is short.
        2. A server that came back rejoins the rows it is absent from as filling (partial recovery);
           one that cannot (a full disk) is dropped from those that are whole again.
        3. Rows still short of k holders get one, when a server can take it; rows with more than k,
           everyone complete (a returning server next to its replacement), give up the surplus.
        4. When nothing is being repaired, rows are handed to servers with fewer than their share
           (new servers), if ``auto_rebalance``.
        """
        result = TickResult()
        if self.table is None or self.publish():
            return result  # nothing changes while a table waits to be published
        now = self._clock()
        table = self.table
        layout = Layout.of(table, alive=self._alive_indices(now))
        index = {s.id: i for i, s in enumerate(table.servers)}
        before_filling = {r: set(v) for r, v in layout.filling.items()}
        dead: list[_Member] = []
        if table.replicas >= 2:
            for server_id in self._dying(now):
                member = self.members[server_id]
                eligible = [i for i in self._eligible(now) if i != index[server_id]]
                left, kept = layout.remove_dead(index[server_id], eligible, self._rng)
                member.state = MemberState.DEAD
                dead.append(member)
                result.declared_dead.append(server_id)
                log.error("server %s declared dead (no heartbeat for %.1fs): %d rows re-replicating%s",
                          server_id, self.config.heartbeat_timeout, left,
                          f"; {kept} rows keep it as their last copy" if kept else "")
            self._drop_absent(layout, now)
            for i in sorted({i for servers in layout.absent.values() for i in servers}):
                if self._can_hold(i, now) and (back := layout.readmit(i)):
                    log.warning("server %s is back: it rejoins %d rows it was absent from, copying only what "
                                "changed", table.servers[i].id, back)
            layout.fill_short_rows(self._eligible(now), self._rng)
            for r in range(len(layout.rows)):
                layout.trim(r)
        # Rows a decommission could not hand over yet (no server could take them) get another try.
        decommissioning = [m.req.id for m in self.members.values() if m.state == MemberState.DECOMMISSIONING]
        for server_id in decommissioning:
            if server_id in index:
                layout.decommission(index[server_id], self._eligible(now), self._rng)
        if (self.config.auto_rebalance and not decommissioning and not layout.filling and not layout.dirty
                and self._healthy(now)):
            moved = layout.rebalance(self._eligible(now), self._rng)
            if moved:
                log.info("handing %d rows to servers below their share", moved)
        if layout.dirty:
            self._commit(layout, dead)
            self._finish_decommissions()
            result.rows_changed = len(layout.changed)
            for r, members in layout.filling.items():
                for i in set(members) - before_filling.get(r, set()):
                    result.fill.append(self.table.servers[i].id)
            result.fill = sorted(set(result.fill))
            log.info("table version %d: %d rows changed", self.table.version, len(layout.changed))
        elif dead:
            self._save(dead)
        self._track_repair(now)
        return result

    def _drop_absent(self, layout: Layout, now: float) -> None:
        """Absent holders that are back but cannot rejoin (a full disk) are dropped from rows that are whole."""
        assert self.table is not None
        stuck = {i for servers in layout.absent.values() for i in servers
                 if self._alive(self.table.servers[i].id, now) and not self._can_hold(i, now)}
        for i in sorted(set(layout.drop_absent(stuck))):
            log.info("server %s is back but cannot rejoin rows it was absent from; they have %d live, "
                     "complete holders, so it removes its copies", self.table.servers[i].id, self.table.replicas)

    def _outage(self, now: float) -> tuple[OutageStatus | None, list[str]]:
        """The outage, if servers of more failure domains are silent than ``outage_silent`` (k >= 2 only); and the
        silent servers."""
        table = self.table
        if table is None:
            return None, []
        counted = [s.id for s in table.servers
                   if (m := self.members.get(s.id)) is not None
                   and m.state in (MemberState.ACTIVE, MemberState.DECOMMISSIONING)]
        silent = [server_id for server_id in counted if not self._alive(server_id, now)]
        # Servers stopped together fall silent within a heartbeat of each other, so the first passes the
        # timeout while the rest are just short of it: count those silent for half the timeout.
        suspect = [server_id for server_id in counted if not self._alive(server_id, now, 0.5)]
        limit = self.config.outage_silent if self.config.outage_silent >= 0 else table.replicas - 1
        # No row holds two servers of one failure domain, so a whole domain falling silent (a host with
        # several disks, a rack) costs each row at most one holder: count silent domains, not servers.
        domain_of = {s.id: s.domain for s in table.servers}
        domains = {domain_of[server_id] for server_id in suspect}
        if table.replicas < 2 or len(domains) <= limit:
            return None, silent
        every = {domain_of[server_id] for server_id in counted}
        where = "" if len(every) == len(counted) else f" in {len(domains)} of {len(every)} failure domains"
        return OutageStatus(silent=suspect, servers=len(counted), limit=limit,
                            message=f"outage: {len(suspect)} of {len(counted)} servers silent{where}, "
                                    "repair held"), silent

    def _dying(self, now: float) -> list[str]:
        """Silent servers to declare dead now; none during an outage (more silent domains than ``outage_silent``)."""
        outage, silent = self._outage(now)
        if outage is not None:
            if self.outage is None:
                log.error("%s (nobody is declared dead while more than %d are silent; `fds admin declare-dead ID` "
                          "releases one)", outage.message, outage.limit)
            self.outage = outage
            return []
        if self.outage is not None:
            # The outage is over; servers still silent get a full timeout from now before they count as dead.
            log.warning("outage over: %d tract servers still silent; repair resumes for those still silent in "
                        "%.1fs", len(silent), self.config.heartbeat_timeout)
            for server_id in silent:
                self._grace[server_id] = now + self.config.heartbeat_timeout
            self.outage = None
        return [server_id for server_id in silent
                if now >= max(self._grace_until, self._grace.get(server_id, 0.0))]

    def declare_dead(self, server_id: str) -> DeclaredDead:
        """An operator declares a silent server dead now, whatever the outage rule says (it is audited
        in the log). A server that is heartbeating cannot be: decommission it instead."""
        member = self.members.get(server_id)
        if member is None or self.table is None or not self._in_table(server_id):
            raise NotFound(f"server {server_id!r} is not in the table", code="unknown_server")
        now = self._clock()
        # During an outage a server counts as silent after half the timeout (servers stopped together fall
        # silent within a heartbeat of each other), so the operator may release exactly those it names.
        held = self.outage is not None and server_id in self.outage.silent
        if self._alive(server_id, now) and not held:
            age = now - (self.live[server_id].last_seen or now)
            raise Conflict(f"server {server_id} is alive (last heartbeat {age:.1f}s ago) and cannot be declared "
                           f"dead; to take it out of service, decommission it", code="server_alive")
        if member.state in (MemberState.DEAD, MemberState.DECOMMISSIONED):
            raise Conflict(f"server {server_id} is already {member.state}", code=f"server_{member.state}")
        if self.publish():
            self._refuse_while_pending(f"declare {server_id} dead")
        layout = Layout.of(self.table, alive=self._alive_indices(now))
        index = {s.id: i for i, s in enumerate(self.table.servers)}
        eligible = [i for i in self._eligible(now) if i != index[server_id]]
        left, kept = layout.remove_dead(index[server_id], eligible, self._rng)
        member.state = MemberState.DEAD
        if layout.dirty:
            self._commit(layout, [member])
        else:
            self._save([member])
        log.warning("operator declared server %s dead (silent for %.1fs%s): %d rows re-replicating, %d keep it "
                    "as their last copy", server_id, now - (self.live[server_id].last_seen or now),
                    ", during an outage" if self.outage else "", left, kept)
        self._track_repair(now)
        return DeclaredDead(server=server_id, rows_left=left, rows_kept=kept, table_version=self.table.version)

    def filled(self, server_id: str, rows: list[int]) -> int:
        """``server_id`` has copied every tract of ``rows``. Returns the table version."""
        if self.table is None or not self._in_table(server_id):
            raise NotFound(f"server {server_id!r} is not in the table", code="unknown_server")
        if self.publish():
            self._refuse_while_pending(f"rows filled by {server_id}")
        layout = Layout.of(self.table, alive=self._alive_indices(self._clock()))
        index = {s.id: i for i, s in enumerate(self.table.servers)}
        done = layout.commit_filled(index[server_id], rows)
        if done:
            self._commit(layout)
            log.info("server %s filled %d rows; table version %d", server_id, done, self.table.version)
            self._finish_decommissions()
            self._track_repair(self._clock())
        return self.table.version

    def decommission(self, server_id: str) -> dict[str, int]:
        """Start handing every row of ``server_id`` to other servers."""
        member = self.members.get(server_id)
        if member is None or self.table is None or not self._in_table(server_id):
            raise NotFound(f"server {server_id!r} is not in the table", code="unknown_server")
        if member.state == MemberState.DEAD:
            raise Conflict(f"server {server_id} is dead; its rows are already re-replicated", code="server_dead")
        if self.publish():
            self._refuse_while_pending(f"decommission {server_id}")
        member.state = MemberState.DECOMMISSIONING
        layout = Layout.of(self.table)
        index = {s.id: i for i, s in enumerate(self.table.servers)}
        moved, stuck = layout.decommission(index[server_id], self._eligible(self._clock()), self._rng)
        if layout.changed:
            self._commit(layout, [member])
        else:
            self._save([member])
        self._finish_decommissions()
        log.info("decommissioning %s: %d rows handed over, %d waiting for a server that can take them",
                 server_id, moved, stuck)
        return {"rows_moving": moved, "rows_waiting": stuck, "table_version": self.table.version}

    def _finish_decommissions(self) -> None:
        assert self.table is not None
        held = {self.table.servers[i].id for row in self.table.rows for i in row}
        for member in self.members.values():
            if member.state == MemberState.DECOMMISSIONING and member.req.id not in held:
                member.state = MemberState.DECOMMISSIONED
                self._save([member])
                log.info("server %s is decommissioned: it holds no rows and may be stopped", member.req.id)

    # -- status ----------------------------------------------------------
    def _short_rows(self, now: float) -> int:
        """Rows with fewer than k live holders that hold every tract."""
        table = self.table
        if table is None:
            return 0
        ok = {i for i, s in enumerate(table.servers) if self._alive(s.id, now)}
        return sum(1 for r, row in enumerate(table.rows)
                   if sum(1 for i in row if i in ok and i not in table.filling.get(r, ())) < table.replicas)

    def _healthy(self, now: float) -> bool:
        """Every row has k live holders that hold every tract."""
        return self.table is not None and self._short_rows(now) == 0

    def _track_repair(self, now: float) -> None:
        healthy = self._healthy(now)
        if not healthy and self.repair_started is None:
            self.repair_started = time.time()
        elif healthy and self.repair_started is not None:
            self.last_repair_seconds = time.time() - self.repair_started
            log.info("cluster healthy again after %.1fs", self.last_repair_seconds)
            self.repair_started = None

    def status(self) -> ClusterStatus:
        now = self._clock()
        self._track_repair(now)
        table = self.table
        rows_of: dict[int, int] = {}
        filling_of: dict[int, int] = {}
        if table is not None:
            for row in table.rows:
                for i in row:
                    rows_of[i] = rows_of.get(i, 0) + 1
            for members in table.filling.values():
                for i in members:
                    filling_of[i] = filling_of.get(i, 0) + 1
        index = {s.id: i for i, s in enumerate(table.servers)} if table else {}
        servers = []
        total = FillProgress()
        for member in sorted(self.members.values(), key=lambda m: m.req.id):
            req = member.req
            live = self.live.get(req.id, _Live())
            age = None if live.last_seen is None else max(0.0, now - live.last_seen)
            i = index.get(req.id, -1)
            fill = live.beat.fill if filling_of.get(i) else FillProgress()
            servers.append(ServerStatus(
                id=req.id, url=req.url, disk=req.disk, domain=req.domain,
                capacity_bytes=live.beat.capacity_bytes or req.capacity_bytes,
                alive=age is not None and age < self.config.heartbeat_timeout,
                heartbeat_age=age, tracts=live.beat.tracts, bytes_used=live.beat.bytes_used,
                disk_free=live.beat.disk_free, in_table=i >= 0,
                table_version=live.beat.table_version, state=member.state,
                rows=rows_of.get(i, 0), filling_rows=filling_of.get(i, 0), fill=fill,
                traffic=live.beat.traffic,
            ))
            for name in ("tracts_done", "tracts_total", "bytes_done", "bytes_total"):
                setattr(total, name, getattr(total, name) + getattr(fill, name))
        short = self._short_rows(now)
        healthy = table is not None and short == 0
        recovery = None
        if table is not None:
            recovery = RecoveryStatus(
                rows_filling=len(table.filling), rows_under_replicated=short,
                tracts_done=total.tracts_done, tracts_total=total.tracts_total,
                bytes_done=total.bytes_done, bytes_total=total.bytes_total,
                started=self.repair_started, last_seconds=self.last_repair_seconds)
        return ClusterStatus(
            state=ClusterState.READY if table else ClusterState.WAITING,
            table_version=table.version if table else 0,
            tract_size=self.config.tract_size, replicas=self.config.replicas,
            expected_servers=self.config.expected_servers,
            rows=len(table.rows) if table else 0, servers=servers,
            healthy=healthy, recovery=recovery, outage=self._outage(now)[0],
            publishing=None if self.pending is None else PublishStatus(
                table_version=self.pending.version, waiting_for=self.waiting_for(),
                since=now - self._pending_since),
        )

