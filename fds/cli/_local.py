"""``fds local up``: a whole cluster on one machine, as child processes.

:class:`LocalCluster` is also what the integration and fault tests use, so
the cluster a user starts is the cluster the tests exercise.

``DIR/cluster.json`` lists every child (role, name, URL, data dir, PID) and
the cluster's settings and where its secret is (``DIR/secret``, readable
by its owner only; local ``fds`` commands pick it up). Started again on a directory that holds a cluster,
the stored settings win over flags that disagree (with a warning), and the
servers come back with all their data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fds.auth import Scope, load_secret, mint, write_secret
from fds.config import DEFAULT_TRACT_SIZE
from fds.durable import ensure_dir, write_durably

__all__ = ["LocalCluster", "Child", "add_parsers", "CLUSTER_FILE"]

CLUSTER_FILE = "cluster.json"
_SETTINGS = ("tractservers", "replicas", "tract_size")


@dataclass
class Child:
    """One server process of the local cluster."""

    role: str
    name: str
    dir: str
    args: list[str]
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: str = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def describe(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "url": self.url, "dir": self.dir, "pid": self.pid,
                "log": self.log}


@dataclass
class LocalCluster:
    """A metaserver, N tract servers and a gateway on loopback, each its own process."""

    dir: Path
    tractservers: int | None = None
    replicas: int | None = None
    tract_size: int | None = None
    port: int = 0
    gateway: bool = True
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float | None = None
    """Seconds before a silent tract server is declared dead; default max(3, 6 x heartbeat_interval)."""
    collector_interval: float = 60.0
    capacity_bytes: int | None = None
    cache_bytes: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    secret_file: Path | None = None
    """The cluster secret; default ``DIR/secret``, created (owner-only) on first start."""
    insecure: bool = False
    """Start the servers with ``--insecure`` (no secret, every request admitted): for measuring what
    authentication costs (benchmarks/cluster.py --auth on off), never for a cluster anyone uses."""
    tls_cert: Path | None = None
    """With ``tls_key``: every server serves HTTPS with this certificate (it must name 127.0.0.1)."""
    tls_key: Path | None = None
    tls_ca: Path | None = None
    """The CA bundle servers (and :meth:`wait_healthy`) trust when calling each other."""
    children: list[Child] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        self._settle_settings()

    # -- settings ------------------------------------------------------------------
    def _settle_settings(self) -> None:
        wanted = {"tractservers": self.tractservers, "replicas": self.replicas, "tract_size": self.tract_size}
        stored = self._read_file().get("settings") if (self.dir / CLUSTER_FILE).exists() else None
        if stored:
            for name in _SETTINGS:
                if wanted[name] is not None and wanted[name] != stored[name]:
                    self.warnings.append(f"--{name.replace('_', '-')} {wanted[name]} ignored: the cluster in "
                                         f"{self.dir} was created with {stored[name]}, and stored settings win")
                setattr(self, name, stored[name])
            return
        self.tractservers = 4 if self.tractservers is None else self.tractservers
        if self.tractservers < 1:
            raise SystemExit("fds local up: --tractservers must be at least 1")
        if self.replicas is None:
            self.replicas = 1 if self.tractservers < 3 else 3
        if self.replicas > self.tractservers:
            raise SystemExit(f"fds local up: {self.replicas} replicas need at least {self.replicas} tract servers, "
                             f"not {self.tractservers}")
        self.tract_size = self.tract_size or DEFAULT_TRACT_SIZE

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _SETTINGS}

    def _ensure_secret(self) -> Path:
        if self.secret_file is None:
            stored = self._read_file().get("secret_file")
            self.secret_file = Path(stored) if isinstance(stored, str) and stored else self.dir / "secret"
        self.secret_file = Path(self.secret_file).resolve()
        if not self.secret_file.exists():
            write_secret(self.secret_file)
        return self.secret_file

    def token(self, scope: Scope = "cluster", ttl: float = 3600.0) -> str:
        """A token for this cluster (``cluster`` scope may do anything)."""
        return mint(load_secret(self._ensure_secret()), scope, ttl)

    def headers(self, scope: Scope = "cluster") -> dict[str, str]:
        """The ``Authorization`` header for raw HTTP calls to this cluster's servers."""
        return {} if self.insecure else {"authorization": f"Bearer {self.token(scope)}"}

    def _read_file(self) -> dict[str, Any]:
        try:
            return dict(json.loads((self.dir / CLUSTER_FILE).read_text()))
        except (OSError, ValueError):
            return {}

    # -- lifecycle -----------------------------------------------------------------
    @property
    def metaserver_url(self) -> str:
        return self.child("metaserver").url

    @property
    def gateway_url(self) -> str:
        return self.child("gateway").url if self.gateway else ""

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    @property
    def tract_children(self) -> list[Child]:
        return [c for c in self.children if c.role == "tractserver"]

    def start(self, timeout: float = 60.0) -> None:
        """Start every server and wait until the table is built and every tract server is alive."""
        ensure_dir(self.dir / "logs")
        if not self.insecure:
            self._ensure_secret()
        ms_port = self.port
        self.children = [Child("metaserver", "metaserver", str(self.dir / "metaserver"), [
            "metaserver", "--dir", str(self.dir / "metaserver"), "--port", str(ms_port),
            "--replicas", str(self.replicas), "--tract-size", str(self.tract_size),
            "--expected-servers", str(self.tractservers),
            "--heartbeat-timeout", str(self.heartbeat_timeout or max(3.0, 6 * self.heartbeat_interval)),
        ])]
        try:
            self._spawn(self.children[0])
            self._wait_ready([self.children[0]], timeout)
            for i in range(self.tractservers or 0):
                self.children.append(self._tract_child(f"ts{i}"))
            for child in self.tract_children:
                self._spawn(child)
            self._wait_ready(self.tract_children, timeout)
            self.wait_healthy(timeout)
            if self.gateway:
                gw = Child("gateway", "gateway", "", ["gateway", "--metaserver", self.metaserver_url,
                                                      "--port", str(self.port + 1 if self.port else 0)])
                self.children.append(gw)
                self._spawn(gw)
                self._wait_ready([gw], timeout)
        except BaseException:
            self.stop()
            raise
        self.write_file()

    def _tract_child(self, name: str) -> Child:
        data = self.dir / name
        args = ["tractserver", "--dir", str(data), "--port", "0", "--metaserver", self.metaserver_url,
                "--heartbeat-interval", str(self.heartbeat_interval),
                "--collector-interval", str(self.collector_interval)]
        if self.capacity_bytes:
            args += ["--capacity-bytes", str(self.capacity_bytes)]
        if self.cache_bytes is not None:
            args += ["--cache-bytes", str(self.cache_bytes)]
        return Child("tractserver", name, str(data), args)

    def add_tractserver(self, timeout: float = 60.0) -> Child:
        """Start one more tract server; it joins the running cluster (and is handed rows once it is healthy)."""
        names = {c.name for c in self.children}
        name = next(f"ts{i}" for i in range(len(names) + 1) if f"ts{i}" not in names)
        child = self._tract_child(name)
        self.children.append(child)
        self._spawn(child)
        self._wait_ready([child], timeout)
        self.write_file()
        return child

    def server_id(self, name: str) -> str:
        """The tract server id a child registered with (from its data directory)."""
        return str(json.loads((Path(self.child(name).dir) / "server.json").read_text())["id"])

    def _spawn(self, child: Child) -> None:
        ready = self.dir / "logs" / f"{child.name}.ready"
        ready.unlink(missing_ok=True)
        child.log = str(self.dir / "logs" / f"{child.name}.log")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self.insecure:
            env.pop("FDS_SECRET_FILE", None)  # it would configure a secret after all
        with open(child.log, "ab") as log:
            child.proc = subprocess.Popen(
                [sys.executable, "-m", "fds", *child.args, "--ready-file", str(ready), *self._auth_args(),
                 *self._tls_args()],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)

    def _auth_args(self) -> list[str]:
        return ["--insecure"] if self.insecure else ["--secret-file", str(self._ensure_secret())]

    def _tls_args(self) -> list[str]:
        args: list[str] = []
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key), ("--tls-ca", self.tls_ca)):
            if path:
                args += [flag, str(path)]
        return args

    def _wait_ready(self, children: list[Child], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for child in children:
            ready = self.dir / "logs" / f"{child.name}.ready"
            while not ready.exists():
                if not child.alive():
                    raise RuntimeError(f"{child.name} exited with status {child.proc.returncode if child.proc else '?'}"
                                       f" during start-up; see {child.log}:\n{_tail(child.log)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{child.name} did not start within {timeout:.0f}s; see {child.log}")
                time.sleep(0.02)
            child.url = ready.read_text().strip()

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the cluster is healthy (every row has k live, complete holders) and every tract
        server that is not dead or decommissioned is alive and uses the current table."""
        deadline = time.monotonic() + timeout
        headers = self.headers("read")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else True
        last: Any = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"{self.metaserver_url}/v1/cluster", headers=headers, timeout=5,
                                   verify=verify).json()
                last = status
                servers = status["servers"]
                if (status["state"] == "ready" and status["healthy"] and len(servers) >= (self.tractservers or 0)
                        and all(s["alive"] and s["table_version"] == status["table_version"] for s in servers
                                if s["state"] not in ("dead", "decommissioned"))):
                    return dict(status)
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"cluster not healthy after {timeout:.0f}s: {last}")

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped or killed child again, with the same data directory and port."""
        child = self.child(name)
        if child.alive():
            self.kill(name, signal.SIGTERM)
        if child.url and "--port" in child.args:
            child.args[child.args.index("--port") + 1] = child.url.rsplit(":", 1)[1]
        self._spawn(child)
        self._wait_ready([child], timeout)
        self.write_file()

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 15.0) -> None:
        """Send ``sig`` to one child (by its PID) and reap it."""
        child = self.child(name)
        if child.proc is None or child.proc.poll() is not None:
            return
        child.proc.send_signal(sig)
        try:
            child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            child.proc.kill()
            child.proc.wait()

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every child: SIGTERM, then SIGKILL for any that linger."""
        for child in reversed(self.children):
            if child.alive():
                assert child.proc is not None
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in reversed(self.children):
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait()

    def write_file(self) -> None:
        payload = {"metaserver": self.metaserver_url, "gateway": self.gateway_url, "settings": self.settings(),
                   "secret_file": "" if self.insecure else str(self._ensure_secret()),
                   "children": [c.describe() for c in self.children]}
        write_durably(self.dir / CLUSTER_FILE, json.dumps(payload, indent=2).encode())

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _up(args: argparse.Namespace) -> int:
    cluster = LocalCluster(Path(args.dir), tractservers=args.tractservers, replicas=args.replicas,
                           tract_size=args.tract_size, port=args.port, gateway=not args.no_gateway,
                           capacity_bytes=args.capacity_bytes)
    for warning in cluster.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"starting fds: {cluster.tractservers} tract servers, k={cluster.replicas}, "
          f"tract size {cluster.tract_size} bytes, data in {cluster.dir}", flush=True)
    try:
        cluster.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"fds local up: {exc}", file=sys.stderr)
        return 1
    print(f"  metaserver  {cluster.metaserver_url}")
    for child in cluster.tract_children:
        print(f"  {child.name:<11} {child.url}  ({child.dir})")
    if cluster.gateway:
        print(f"  gateway     {cluster.gateway_url}   REST: PUT/GET {cluster.gateway_url}/v1/blobs/<guid>")
    print(f"  status page {cluster.metaserver_url}/status?token={cluster.token('read', 24 * 3600)}")
    print(f"cluster file: {cluster.dir / CLUSTER_FILE}   secret: {cluster.secret_file} (owner-only)")
    print("ready. Try: fds put FILE, fds status. Ctrl-C stops the cluster.", flush=True)
    reported: set[str] = set()
    while not stopping:
        for child in cluster.children:
            if not child.alive() and child.name not in reported:
                reported.add(child.name)
                print(f"warning: {child.name} (pid {child.pid}) exited; see {child.log}", file=sys.stderr, flush=True)
        time.sleep(0.2)
    print("stopping fds...", flush=True)
    cluster.stop()
    print("stopped.")
    return 0


def add_parsers(sub: Any) -> None:
    local = sub.add_parser("local", help="run a whole cluster on this machine")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    p = local_sub.add_parser("up", help="start a metaserver, tract servers and a gateway; Ctrl-C stops them")
    p.add_argument("--dir", default="./.fds", help="where the cluster keeps its data (default ./.fds)")
    p.add_argument("--tractservers", type=int, help="number of tract servers (default 4)")
    p.add_argument("--replicas", type=int, help="replication level (default 1 if fewer than 3 servers, else 3)")
    p.add_argument("--tract-size", dest="tract_size", type=int, help="bytes per tract (default 8 MiB)")
    p.add_argument("--port", type=int, default=7000, help="metaserver port; the gateway takes the next one "
                   "(0 picks free ports)")
    p.add_argument("--capacity-bytes", dest="capacity_bytes", type=int, help="limit each tract server's storage")
    p.add_argument("--no-gateway", dest="no_gateway", action="store_true", help="do not start the REST gateway")
    p.set_defaults(run=_up)
