"""Writers and readers over the tracts of one blob, through the real client, recording every operation.

Each writer and each reader is its own :class:`fds.client.Client` (its own
cached table, as separate client machines would have), looping until told
to stop. Writers put unique values (:func:`.history.encode_value`) on
random tracts; readers read random tracts. Some readers pick a random
replica each time (the client's default); the others are "next to" one
tract server each (:class:`Nearest`): they try it first whenever it holds
the tract, as a client on that machine would, so they keep reading it as
long as it answers. Every operation is an invoke
event and a completion: a write that raised is *info* (it may have reached
some replicas), a read that raised is *fail* (reads change nothing).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from fds.client import Blob, Client, TractNotFound
from fds.guid import format_guid, parse_guid
from fds.models import TableModel
from fds.tlt import Table

from .checker import FINAL
from .history import History, ReadValue, ValueId, decode_value, encode_value

__all__ = ["Workload", "Nearest", "crashed_write", "final_reads", "replica_values"]


@dataclass
class Workload:
    """``writers`` writers and ``readers`` readers on tracts ``0 .. keys-1`` of blob ``guid``."""

    metaserver: str
    guid: str
    keys: int
    history: History
    seed: int
    writers: int = 3
    readers: int = 2
    """Readers that pick a random replica each time."""
    nearest: tuple[str, ...] = ()
    """Server ids: one more reader next to each (:class:`Nearest`)."""
    min_bytes: int = 1024
    max_bytes: int = 64 * 1024
    timeout: float = 10.0
    """Seconds before one request to one server gives up (a paused server holds it)."""
    retry_for: float = 10.0
    """Seconds a client keeps retrying one operation (stale tables, unreachable servers)."""
    frozen: set[int] = field(default_factory=set)
    """Tracts no longer written (:meth:`freeze_one`); readers go on reading them."""

    def freeze_one(self) -> None:
        """Stop writing one more tract (until half are left alone), so that what the last fault did
        to it, replicas that disagree for instance, stays for the end of the run to find. Called from
        another thread (the nemesis's) after each fault."""
        live = [k for k in range(self.keys) if k not in self.frozen]
        if len(live) > self.keys - self.keys // 2:
            key = random.Random(self.seed * 107 + len(self.frozen)).choice(live)
            self.frozen.add(key)
            self.history.add("workload", "ok", "freeze", key, detail=f"no more writes to t{key}")

    def _client(self, rng: random.Random | None = None) -> Client:
        return Client(self.metaserver, timeout=self.timeout, retry_for=self.retry_for, attempts=4, max_in_flight=4,
                      rng=rng)

    async def run(self, stop: asyncio.Event) -> None:
        """Run every writer and reader until ``stop`` is set; each finishes the operation it is in."""
        await asyncio.gather(*(self._writer(i, stop) for i in range(self.writers)),
                             *(self._reader(i, stop) for i in range(self.readers + len(self.nearest))))

    async def _writer(self, number: int, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed * 101 + number)
        process = f"w{number}"
        async with self._client() as client:
            blob = await client.open_blob(self.guid)
            seq = 0
            while not stop.is_set():
                seq += 1
                key = rng.choice([k for k in range(self.keys) if k not in self.frozen])
                value = ValueId(number, seq)
                data = encode_value(value, key, rng.randint(self.min_bytes, self.max_bytes))
                self.history.add(process, "invoke", "write", key, value)
                try:
                    await blob.write_tract(key, data)
                except Exception as exc:  # noqa: BLE001 - any failure is recorded, not raised
                    self.history.add(process, "info", "write", key, value, detail=_why(exc))
                    await asyncio.sleep(0.05)
                else:
                    self.history.add(process, "ok", "write", key, value)

    async def _reader(self, number: int, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed * 103 + number)
        process = f"r{number}"
        near = self.nearest[number - self.readers] if number >= self.readers else None
        async with self._client(Nearest(rng.random(), near) if near else None) as client:
            blob = await client.open_blob(self.guid)
            while not stop.is_set():
                key = rng.randrange(self.keys)
                await _read(self.history, process, blob, key)
                await asyncio.sleep(0.005)


class Nearest(random.Random):
    """A client's replica order that never changes, as distance would give: server ``first`` before all
    others, and the others each in a fixed rank."""

    def __init__(self, seed: float, first: str) -> None:
        super().__init__(seed)
        self._rank: dict[str, float] = {first: -1.0}

    def shuffle(self, x: MutableSequence[Any]) -> None:
        x[:] = sorted(x, key=lambda server: self._rank.setdefault(server.id, self.random()))


def crashed_write(workload: Workload, headers: dict[str, str], rng: random.Random) -> str:
    """A writer that crashed after its write reached one replica of the row: the real request (the data
    port's PUT, the current table version, the blob's incarnation) sent to one holder only. It goes
    to a tract no longer written (:meth:`Workload.freeze_one`), so what it leaves stays to the end.
    Recorded as an *info* write that ends when the one request is answered."""
    frozen = sorted(workload.frozen)
    if not frozen:
        return "no frozen tract yet"
    key = rng.choice(frozen)
    raw = parse_guid(workload.guid)
    number = sum(1 for e in workload.history.events if e.process.startswith("crashed") and e.kind == "invoke")
    value = ValueId(100 + number, 1)
    with httpx.Client(timeout=10, headers=headers) as http:
        try:
            table, incarnation = _table_and_incarnation(http, workload.metaserver, raw)
        except (httpx.HTTPError, RuntimeError, ValueError) as exc:
            return f"skipped, the table or the blob's metadata cannot be had now: {exc}"
        server = rng.choice(table.holders(raw, key))
        workload.history.add(f"crashed{number}", "invoke", "write", key, value,
                             detail=f"to {server.id} only, then the writer crashed")
        # stamp and writer: the write's version as a client's hybrid clock gives it (servers that
        # order writes by version read them; older ones ignore them)
        resp = http.put(f"{server.data_url or server.url}/v1/tracts/{workload.guid}/{key}",
                        params={"version": table.version, "incarnation": incarnation,
                                "stamp": time.time_ns(), "writer": rng.randrange(1, 2**62)},
                        content=encode_value(value, key, rng.randint(workload.min_bytes, workload.max_bytes)))
        # The request is over: whatever it did is done, so a write begun after this is newer.
        workload.history.add(f"crashed{number}", "info", "write", key, value,
                             detail=f"{server.id} answered {resp.status_code}; the writer is gone")
    return f"{value} to t{key} on {server.id} only: {resp.status_code}"


def _table_and_incarnation(http: httpx.Client, metaserver: str, guid: bytes, *,
                           patience: float = 10.0) -> tuple[Table, int]:
    """The current table and the blob's incarnation, asking again (a fresh table each time) while the
    metadata primary cannot answer (restarting, its lease lapsed, the row moving)."""
    deadline = time.monotonic() + patience
    while True:
        table = Table(TableModel.model_validate_json(http.get(f"{metaserver}/v1/table").content))
        primary = table.holders(guid, -1)[0]
        try:
            resp = http.get(f"{primary.url}/v1/meta/{format_guid(guid)}", params={"version": table.version})
            if resp.status_code == 200:
                return table, int(resp.json()["incarnation"])
            why = f"{primary.id} answered {resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            why = f"{primary.id}: {exc}"
        if time.monotonic() > deadline:
            raise RuntimeError(why)
        time.sleep(0.2)


async def _read(history: History, process: str, blob: Blob, key: int) -> None:
    history.add(process, "invoke", "read", key)
    try:
        data = await blob.read_tract(key)
    except TractNotFound:
        history.add(process, "ok", "read", key, None)
    except Exception as exc:  # noqa: BLE001 - any failure is recorded, not raised
        history.add(process, "fail", "read", key, detail=_why(exc))
        await asyncio.sleep(0.05)
    else:
        history.add(process, "ok", "read", key, decode_value(data, key))


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:160]}"


async def final_reads(metaserver: str, guid: str, keys: int, history: History, *, retry_for: float = 30.0) -> None:
    """Once the cluster is healed: read every tract through a fresh client, as process :data:`.checker.FINAL`."""
    async with Client(metaserver, retry_for=retry_for, timeout=10.0) as client:
        blob = await client.open_blob(guid)
        for key in range(keys):
            await _read(history, FINAL, blob, key)


def replica_values(metaserver: str, guid: str, keys: int,
                   headers: dict[str, str]) -> dict[int, dict[str, ReadValue | str]]:
    """Every holder's copy of every tract, read on its own data port: tract -> server id -> value
    (or why the server has none)."""
    raw = parse_guid(guid)
    out: dict[int, dict[str, ReadValue | str]] = {}
    with httpx.Client(timeout=30, headers=headers) as http:
        table, incarnation = _table_and_incarnation(http, metaserver, raw, patience=60.0)
        for key in range(keys):
            seen: dict[str, ReadValue | str] = {}
            out[key] = seen
            for server in table.holders(raw, key):
                try:
                    resp = http.get(f"{server.data_url or server.url}/v1/tracts/{format_guid(raw)}/{key}",
                                    params={"version": table.version, "incarnation": incarnation})
                except httpx.HTTPError as exc:
                    seen[server.id] = f"unreachable: {exc}"
                    continue
                if resp.status_code == 200:
                    seen[server.id] = decode_value(resp.content, key)
                elif resp.status_code == 404 and b"tract_not_found" in resp.content:
                    seen[server.id] = None
                else:
                    seen[server.id] = f"{resp.status_code} {resp.text[:200]}"
    return out
