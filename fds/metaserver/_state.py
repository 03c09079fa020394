"""The metaserver's durable state: cluster settings, members, and the table."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import rocksdict

from fds.config import MetaserverConfig
from fds.durable import ensure_dir
from fds.errors import BadRequest, Conflict, NotFound, TableNotReady
from fds.models import (
    ClusterStatus,
    Heartbeat,
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
_MEMBER = b"member/"


@dataclass
class _Live:
    """What heartbeats tell us; kept in memory only."""

    last_seen: float | None = None
    beat: Heartbeat = field(default_factory=lambda: Heartbeat(
        tracts=0, bytes_used=0, disk_free=0, capacity_bytes=0, table_version=0))


class MetaState:
    """Membership and the TLT, persisted in a RocksDB at ``config.dir``."""

    def __init__(self, config: MetaserverConfig, *, clock: Callable[[], float] | None = None) -> None:
        ensure_dir(config.dir)
        self._clock = clock or time.monotonic
        self._db = rocksdict.Rdict(f"{config.dir}/state.rocksdb", rocksdict.Options(raw_mode=True))
        self._sync = rocksdict.WriteOptions()
        self._sync.sync = True
        self.config = config
        self.warnings: list[str] = []
        self._adopt_settings()
        self.members: dict[str, RegisterRequest] = {}
        for key, value in self._db.items(from_key=_MEMBER):
            if not isinstance(key, bytes) or not key.startswith(_MEMBER):
                break
            member = RegisterRequest.model_validate_json(value)
            self.members[member.id] = member
        raw = self._db.get(_TABLE)
        self.table: TableModel | None = TableModel.model_validate_json(raw) if raw else None
        self._table_json: bytes | None = raw
        self.live: dict[str, _Live] = {}

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

    # -- membership ------------------------------------------------------
    def register(self, req: RegisterRequest) -> int:
        """Add or update a member; build the table once enough have come. Returns the table version."""
        old = self.members.get(req.id)
        if old is not None and old.domain != req.domain and self._in_table(req.id):
            raise Conflict(f"server {req.id} is in the table with failure domain {old.domain!r}; "
                           f"it cannot re-register as {req.domain!r}", code="domain_changed")
        for other in self.members.values():
            if other.id != req.id and other.url == req.url:
                log.info("server %s takes over URL %s from %s", req.id, req.url, other.id)
        self.members[req.id] = req
        self._db.put(_MEMBER + req.id.encode(), req.model_dump_json().encode(), self._sync)
        self.live.setdefault(req.id, _Live()).last_seen = self._clock()
        if self.table is None and len(self.members) >= self.config.expected_servers:
            self._build_table()
        elif (self.table is not None and old is not None and (old.url, old.data_url) != (req.url, req.data_url)
              and self._in_table(req.id)):
            servers = [s if s.id != req.id else ServerRef(id=s.id, url=req.url, domain=s.domain, data_url=req.data_url)
                       for s in self.table.servers]
            self._store_table(self.table.model_copy(update={"servers": servers, "version": self.table.version + 1}))
            log.info("server %s moved to %s; table version %d", req.id, req.url, self.table.version)
        return self.table.version if self.table else 0

    def heartbeat(self, server_id: str, beat: Heartbeat) -> int:
        if server_id not in self.members:
            raise NotFound(f"unknown tract server {server_id!r}: register first", code="unknown_server")
        live = self.live.setdefault(server_id, _Live())
        live.last_seen = self._clock()
        live.beat = beat
        return self.table.version if self.table else 0

    def _in_table(self, server_id: str) -> bool:
        return self.table is not None and any(s.id == server_id for s in self.table.servers)

    # -- table -----------------------------------------------------------
    def _build_table(self) -> None:
        members = sorted(self.members.values(), key=lambda m: m.id)
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
        self._store_table(table)
        log.info("built table: %d servers, %d rows, k=%d", len(members), len(rows), self.config.replicas)

    def _store_table(self, table: TableModel) -> None:
        raw = table.model_dump_json().encode()
        self._db.put(_TABLE, raw, self._sync)
        self.table = table
        self._table_json = raw

    def table_json(self) -> bytes:
        if self._table_json is None:
            have = len(self.members)
            raise TableNotReady(
                f"no table yet: waiting for tract servers to register "
                f"({have} of {self.config.expected_servers})")
        return self._table_json

    # -- status ----------------------------------------------------------
    def status(self) -> ClusterStatus:
        now = self._clock()
        servers = []
        for member in sorted(self.members.values(), key=lambda m: m.id):
            live = self.live.get(member.id, _Live())
            age = None if live.last_seen is None else max(0.0, now - live.last_seen)
            servers.append(ServerStatus(
                id=member.id, url=member.url, disk=member.disk, domain=member.domain,
                capacity_bytes=live.beat.capacity_bytes or member.capacity_bytes,
                alive=age is not None and age < self.config.heartbeat_timeout,
                heartbeat_age=age, tracts=live.beat.tracts, bytes_used=live.beat.bytes_used,
                disk_free=live.beat.disk_free, in_table=self._in_table(member.id),
                table_version=live.beat.table_version,
            ))
        return ClusterStatus(
            state="ready" if self.table else "waiting",
            table_version=self.table.version if self.table else 0,
            tract_size=self.config.tract_size, replicas=self.config.replicas,
            expected_servers=self.config.expected_servers,
            rows=len(self.table.rows) if self.table else 0, servers=servers,
        )
