"""An fds cluster spread over the hosts of a :class:`~tests.multihost.netns.Network`.

Every server is started with the real command line (``python -m fds ROLE --config FILE``), from a
TOML file this module writes, inside its host's namespace, listening on that host's address, with
the cluster secret this module makes (``secret_file``). Starting a server, waiting for its ready
file and judging health are :mod:`fds.local`'s (the same code as ``fds local up``), run behind
``ip netns exec``; what stays here is what only a cluster over hosts has: addresses, config files,
failure domains, and the client agent. The test talks to the cluster only through :class:`Agent`,
the client process in the client host.

Hosts and addresses (one /24 on a private switch)::

    meta    10.77.0.2   metaserver
    gw      10.77.0.3   gateway
    client  10.77.0.4   the test's client (tests/multihost/_agent.py)
    h1..hN  10.77.0.11+ tract servers; each host is one failure domain
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fds.auth import write_secret
from fds.local import Child, cluster_healthy, wait_ready
from tests.multihost.netns import Network

__all__ = ["Agent", "NetCluster", "Server"]

META_PORT = 7000
GATEWAY_PORT = 7080
AGENT = Path(__file__).with_name("_agent.py")


def _toml(section: str, values: dict[str, Any]) -> str:
    lines = [f"[{section}]"]
    for key, value in values.items():
        lines.append(f"{key} = {json.dumps(value)}")  # JSON strings and numbers are valid TOML
    return "\n".join(lines) + "\n"


@dataclass
class Server(Child):
    """One fds server process (:class:`fds.local.Child`) on a host, with its config file."""

    host: str = ""
    config: Path | None = None


class Agent:
    """The client process in the client host; :meth:`call` sends one command and returns its answer."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._in = proc.stdin
        self._out = proc.stdout

    def call(self, op: str, **args: Any) -> Any:
        self._in.write((json.dumps({"op": op, **args}) + "\n").encode())
        self._in.flush()
        line = self._out.readline()
        if not line:
            raise RuntimeError(f"the client agent exited (status {self.proc.poll()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"agent {op} {args}: {answer['error']}")
        return answer["ok"]

    def get(self, url: str) -> Any:
        """A control-plane GET from the client host; returns the JSON body (asserting 200)."""
        answer = self.call("http", method="GET", url=url)
        if answer["status"] != 200:
            raise RuntimeError(f"GET {url}: {answer['status']} {answer['body']}")
        return answer["body"]

    def close(self) -> None:
        self._in.close()  # the agent's loop ends on EOF
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass  # Network.close stops it by PID
        self._out.close()


@dataclass
class NetCluster:
    """A metaserver, tract servers over ``hosts`` hosts, a gateway, and the client agent."""

    net: Network
    dir: Path
    hosts: int = 3
    per_host: int = 2
    replicas: int = 2
    tract_size: int = 64 * 1024
    heartbeat_timeout: float = 2.0
    servers: list[Server] = field(default_factory=list)
    agent: Agent | None = None

    @property
    def secret_file(self) -> Path:
        """The cluster secret every server and the client are given (made by :meth:`start`)."""
        return self.dir / "secret"

    def tract_hosts(self) -> list[str]:
        return [f"h{i + 1}" for i in range(self.hosts)]

    @property
    def metaserver_url(self) -> str:
        return f"http://{self.net.hosts['meta'].address}:{META_PORT}"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.net.hosts['gw'].address}:{GATEWAY_PORT}"

    def start(self, timeout: float = 60.0) -> Agent:
        """Plug in every host, start every server, and wait until the cluster is healthy."""
        for name, number in [("meta", 2), ("gw", 3), ("client", 4)]:
            self.net.add_host(name, number)
        for i, host in enumerate(self.tract_hosts()):
            self.net.add_host(host, 11 + i)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        write_secret(self.secret_file)

        meta = self._server("metaserver", "meta", "meta", {
            "dir": str(self.dir / "meta"), "host": self.net.hosts["meta"].address, "port": META_PORT,
            "replicas": self.replicas, "tract_size": self.tract_size,
            "expected_servers": self.hosts * self.per_host, "heartbeat_timeout": self.heartbeat_timeout,
            "detect_interval": 0.2, "seed": 7})
        self._spawn(meta)
        wait_ready([meta], timeout)
        for host in self.tract_hosts():
            for j in range(self.per_host):
                self._spawn(self._server("tractserver", f"{host}-ts{j}", host, {
                    "dir": str(self.dir / f"{host}-ts{j}"), "metaserver": self.metaserver_url,
                    "host": self.net.hosts[host].address, "port": 7100 + j, "data_port": 7200 + j,
                    "domain": host, "heartbeat_interval": 0.25, "collector_interval": 0, "scrub_interval": 0}))
        wait_ready(self.tract_servers(), timeout)
        gateway = self._server("gateway", "gateway", "gw", {
            "metaserver": self.metaserver_url, "host": self.net.hosts["gw"].address, "port": GATEWAY_PORT})
        self._spawn(gateway)
        wait_ready([gateway], timeout)
        proc = self.net.popen("client", [sys.executable, str(AGENT), self.metaserver_url, self.gateway_url,
                                         str(self.secret_file)],
                              env=_environment(), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.agent = Agent(proc)
        self.wait_healthy(timeout)
        return self.agent

    def tract_servers(self, host: str | None = None) -> list[Server]:
        return [s for s in self.servers if s.role == "tractserver" and host in (None, s.host)]

    def _server(self, role: str, name: str, host: str, settings: dict[str, Any]) -> Server:
        config = self.dir / f"{name}.toml"
        config.write_text(_toml(role, {**settings, "secret_file": str(self.secret_file)}))
        server = Server(role, name, str(settings.get("dir", "")), [role, "--config", str(config)], host=host,
                        config=config)
        self.servers.append(server)
        return server

    def _spawn(self, server: Server) -> None:
        logs = self.dir / "logs"
        server.start(log=logs / f"{server.name}.log", ready_file=logs / f"{server.name}.ready", env=_environment(),
                     prefix=self.net.exec_prefix(server.host))
        assert server.proc is not None
        self.net.track(server.proc)

    def status(self) -> dict[str, Any]:
        assert self.agent is not None
        return dict(self.agent.get(f"{self.metaserver_url}/v1/cluster"))

    def table(self) -> dict[str, Any]:
        assert self.agent is not None
        return dict(self.agent.get(f"{self.metaserver_url}/v1/table"))

    def wait_for(self, what: str, predicate: Any, timeout: float = 60.0) -> dict[str, Any]:
        """Poll ``/v1/cluster`` (from the client host) until ``predicate(status)`` holds."""
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.2)
        raise TimeoutError(f"{what}: not within {timeout:.0f}s; last status: {json.dumps(status)[:2000]}")

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, Any]:
        """Ready, healthy, and every server that is not dead alive on the current table (:func:`cluster_healthy`)."""
        return self.wait_for("cluster healthy", cluster_healthy, timeout)


def _environment() -> dict[str, str]:
    """This process's environment without ``FDS_*`` settings, which would override the config files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env
