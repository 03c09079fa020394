"""The nemesis: a seeded schedule of faults on a real local cluster, and the proxy it cuts.

Kinds of fault (each injected, held, then healed, one at a time):

- ``kill``: SIGKILL one tract server, restart it later (same disk, same port);
- ``pause``: SIGSTOP one tract server, SIGCONT it later (a GC pause, a hung disk);
- ``outage``: SIGSTOP every tract server at once, then SIGCONT all but one, later the last
  (a power or network outage of the whole cluster, and a straggler);
- ``metaserver``: SIGKILL the metaserver and restart it;
- ``cut``: cut one tract server off from the metaserver only. Every tract server reaches the
  metaserver through its own :class:`MetaProxy`, which the nemesis cuts: clients still reach
  the server, the metaserver does not hear from it;
- ``add``: start one more tract server;
- ``decommission``: decommission an active server (adding one first if too few are left), and
  stop it once it holds no rows;
- ``crashed_writer``: a writer that crashed after its write reached one replica of the row
  (``crash_writer``, given by the workload).

The first kinds come as a seeded permutation of all of them, so even a short run
has one of each; then random kinds until the time is up. Hold times scale with
the failure detector's timeout: some faults end before a server is declared dead,
some after. Every action goes into the history as events of process ``nemesis``.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from fds.local import Child, LocalCluster

from .history import History

__all__ = ["MetaProxy", "ProxiedCluster", "Nemesis", "KINDS"]

KINDS = ("kill", "pause", "outage", "metaserver", "cut", "add", "decommission", "crashed_writer")


class MetaProxy:
    """A TCP proxy to the metaserver, on loopback, in a thread of its own; :meth:`cut` partitions it.

    While cut, every open connection is dropped and new ones are accepted
    but never answered (a black hole, as a partition looks); :meth:`heal`
    closes those, so the server's next attempt gets through.
    """

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="meta-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._held: set[asyncio.StreamWriter] = set()
        self.is_cut = False
        self.url = ""

    def start(self) -> str:
        self._thread.start()
        self.url = self._call(self._start())
        return self.url

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _start(self) -> str:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            self._held.add(writer)  # never answered until healed
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self._host, self._port)
        except OSError:
            writer.close()
            return
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._open.discard(w)
                w.close()

    def cut(self) -> None:
        self._call(self._set_cut(True))

    def heal(self) -> None:
        self._call(self._set_cut(False))

    async def _set_cut(self, cut: bool) -> None:
        self.is_cut = cut
        for writer in list(self._held) + (list(self._open) if cut else []):
            writer.transport.abort()
        self._held.clear()

    def close(self) -> None:
        if not self._thread.is_alive():
            return

        async def shut() -> None:
            await self._set_cut(True)
            if self._server is not None:
                self._server.close()

        self._call(shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@dataclass
class ProxiedCluster(LocalCluster):
    """A :class:`LocalCluster` whose tract servers each reach the metaserver through a :class:`MetaProxy`."""

    proxies: dict[str, MetaProxy] = field(default_factory=dict)

    def _tract_child(self, name: str) -> Child:
        child = super()._tract_child(name)
        proxy = self.proxies.get(name)
        if proxy is None:
            proxy = self.proxies[name] = MetaProxy(self.metaserver_url)
            proxy.start()
        child.args[child.args.index("--metaserver") + 1] = proxy.url
        return child

    def stop(self, timeout: float = 15.0) -> None:
        for child in self.children:  # a stopped process would not see SIGTERM
            if child.alive() and child.pid is not None:
                os.kill(child.pid, signal.SIGCONT)
        super().stop(timeout)
        for proxy in self.proxies.values():
            proxy.close()


@dataclass
class Nemesis:
    """Runs faults on ``cluster`` from a seeded generator, recording each in ``history``."""

    cluster: ProxiedCluster
    history: History
    rng: random.Random
    detect: float
    """The metaserver's heartbeat timeout (seconds): hold times are multiples of it."""
    headers: dict[str, str]
    max_servers: int = 6
    """Live tract servers at most (``add`` is skipped beyond)."""
    after_fault: Callable[[], None] | None = None
    """Called after each fault has been healed (the workload freezes a tract then)."""
    crash_writer: Callable[[random.Random], str] | None = None
    """Makes a write that reached one replica only; returns what it did."""
    killed: set[str] = field(default_factory=set)
    paused: set[str] = field(default_factory=set)
    done: list[str] = field(default_factory=list)
    """What was done, one line per fault, for the report."""

    def run(self, seconds: float) -> None:
        """One fault of each kind (in a seeded order), then random ones for ``seconds`` more."""
        plan = list(KINDS)
        self.rng.shuffle(plan)
        deadline = math.inf
        while plan or time.monotonic() < deadline:
            kind = plan.pop(0) if plan else self.rng.choice(KINDS)
            getattr(self, kind)()
            self._retire_decommissioned()
            if self.after_fault is not None:
                self.after_fault()
            if not plan and deadline == math.inf:
                deadline = time.monotonic() + seconds
            time.sleep(self.rng.uniform(0.3, 1.0))

    # -- the faults ---------------------------------------------------------------
    def kill(self) -> None:
        name = self._victim()
        if name is None:
            return
        self._event("invoke", "kill", f"SIGKILL {name}")
        self.cluster.kill(name, signal.SIGKILL)
        self.killed.add(name)
        self._hold(0.3, 2.0)
        self.cluster.restart(name)
        self.killed.discard(name)
        self._event("ok", "kill", f"{name} restarted")

    def pause(self) -> None:
        name = self._victim()
        if name is None:
            return
        self._event("invoke", "pause", f"SIGSTOP {name}")
        self._signal(name, signal.SIGSTOP)
        self._hold(0.3, 2.0)
        self._signal(name, signal.SIGCONT)
        self._event("ok", "pause", f"SIGCONT {name}")

    def outage(self) -> None:
        names = [c.name for c in self.cluster.tract_children if c.alive()]
        self._event("invoke", "outage", f"SIGSTOP all of {' '.join(names)}")
        for name in names:
            self._signal(name, signal.SIGSTOP)
        self._hold(1.3, 2.0)
        last = self.rng.choice(names)
        for name in names:
            if name != last:
                self._signal(name, signal.SIGCONT)
        self._event("info", "outage", f"SIGCONT all but {last}")
        self._hold(0.5, 1.5)
        self._signal(last, signal.SIGCONT)
        self._event("ok", "outage", f"SIGCONT {last}")

    def metaserver(self) -> None:
        self._event("invoke", "metaserver", "SIGKILL metaserver")
        self.cluster.kill("metaserver", signal.SIGKILL)
        self.killed.add("metaserver")
        self._hold(0.2, 1.0)
        self.cluster.restart("metaserver")
        self.killed.discard("metaserver")
        self._event("ok", "metaserver", "metaserver restarted")

    def cut(self) -> None:
        name = self._victim()
        if name is None:
            return
        proxy = self.cluster.proxies[name]
        self._event("invoke", "cut", f"cut {name} off from the metaserver")
        proxy.cut()
        self._hold(1.5, 2.5)
        proxy.heal()
        self._event("ok", "cut", f"{name} reaches the metaserver again")

    def add(self) -> bool:
        if len([c for c in self.cluster.tract_children if c.alive()]) >= self.max_servers:
            self.done.append("add: skipped, enough servers")
            return False
        self._event("invoke", "add", "add a tract server")
        child = self.cluster.add_tractserver()
        self._event("ok", "add", f"{child.name} added")
        return True

    def decommission(self) -> None:
        needed = (self.cluster.replicas or 1) + 2  # after it leaves k + 1 remain: one may fail, rows still fill
        if len(self._active()) < needed:
            self.add()
        active = self._active()
        if len(active) < needed:
            self.done.append("decommission: skipped, too few servers")
            return
        name = self.rng.choice(active)
        server = self.cluster.server_id(name)
        self._event("invoke", "decommission", f"decommission {name} ({server})")
        resp = httpx.post(f"{self.cluster.metaserver_url}/v1/servers/{server}/decommission", headers=self.headers,
                          timeout=10)
        self._event("ok" if resp.status_code == 200 else "fail", "decommission", f"{name}: {resp.status_code}")

    def crashed_writer(self) -> None:
        if self.crash_writer is not None:
            self._event("ok", "crashed_writer", self.crash_writer(self.rng))

    def heal(self) -> None:
        """End every fault still in force: continue the paused, restart the killed, mend the proxies."""
        for name in list(self.paused):
            self._signal(name, signal.SIGCONT)
        for proxy in self.cluster.proxies.values():
            proxy.heal()
        for name in list(self.killed):
            self.cluster.restart(name)
            self.killed.discard(name)
        self._event("ok", "heal", "every fault healed")

    # -- helpers --------------------------------------------------------------------
    def _event(self, kind: str, f: str, detail: str) -> None:
        self.history.add("nemesis", kind, f, detail=detail)  # type: ignore[arg-type]
        if kind == "invoke" or f not in ("kill", "pause", "outage", "metaserver", "cut"):
            self.done.append(f"{f}: {detail}")

    def _hold(self, low: float, high: float) -> None:
        time.sleep(self.detect * self.rng.uniform(low, high))

    def _signal(self, name: str, sig: signal.Signals) -> None:
        child = self.cluster.child(name)
        if not child.alive() or child.pid is None:
            return
        os.kill(child.pid, sig)  # by PID: only the processes this cluster started
        if sig == signal.SIGSTOP:
            self.paused.add(name)
        elif sig == signal.SIGCONT:
            self.paused.discard(name)

    def _servers(self) -> dict[str, dict[str, Any]]:
        """The metaserver's view of each tract server, by id (empty if it cannot be asked)."""
        try:
            status = httpx.get(f"{self.cluster.metaserver_url}/v1/cluster", headers=self.headers, timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return {}
        return {s["id"]: s for s in status["servers"]}

    def _active(self) -> list[str]:
        servers = self._servers()
        return [c.name for c in self.cluster.tract_children
                if c.alive() and servers.get(self.cluster.server_id(c.name), {}).get("state") == "active"]

    def _victim(self) -> str | None:
        active = self._active()
        if not active:
            self.done.append("no active tract server to fault")
            return None
        return self.rng.choice(active)

    def _retire_decommissioned(self) -> None:
        servers = self._servers()
        for child in self.cluster.tract_children:
            if child.alive() and servers.get(self.cluster.server_id(child.name), {}).get("state") == "decommissioned":
                self.cluster.kill(child.name, signal.SIGTERM)
                self._event("ok", "retire", f"{child.name} decommissioned and stopped")
