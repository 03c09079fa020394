"""Local clusters: a metaserver, tract servers and a gateway on one machine, each its own process.

::

    from pathlib import Path
    from fds.local import LocalCluster

    with LocalCluster(Path("/tmp/c"), tractservers=4, replicas=3) as cluster:
        with cluster.sync_client() as fds:
            blob = fds.create_blob()
            ...
        cluster.kill("ts1")              # SIGKILL, by PID
        cluster.restart("ts1")           # same data directory, same port
        cluster.wait_healthy()

``fds local up`` is this class behind a command line, and the tests and
benchmarks use it too, so the cluster a user starts is the cluster the tests
exercise. To use a cluster that ``fds local up`` runs, attach to it:
``LocalCluster.open(".fds").client()``.

``DIR/cluster.json`` (:class:`ClusterFile`, the one reader and writer of that
file) lists every child (role, name, URL, data dir, PID) and the cluster's
settings and where its secret is (``DIR/secret``, readable by its owner only;
local ``fds`` commands pick it up). Started again on a directory that holds a
cluster, the stored settings win over arguments that disagree (with a
warning in :attr:`LocalCluster.warnings`), and the servers come back with
all their data.

The servers run as child processes (``python -m fds ROLE``), so importing this
module imports no web framework. Errors are ordinary exceptions:
:class:`ValueError` for settings that cannot work, :class:`RuntimeError` for a
server that exits while starting (with the end of its log),
:class:`TimeoutError` for one that is not ready in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from fds.auth import Scope, load_secret, mint, write_secret
from fds.config import DEFAULT_TRACT_SIZE
from fds.durable import ensure_dir, write_durably

if TYPE_CHECKING:
    from fds.client import Client, SyncClient

__all__ = [
    "LocalCluster",
    "Child",
    "ClusterFile",
    "ChildRecord",
    "CLUSTER_FILE",
    "S3_CREDENTIALS",
    "DEFAULT_DIR",
    "cluster_healthy",
    "start_server",
    "wait_ready",
]

CLUSTER_FILE = "cluster.json"
"""The cluster file's name inside a cluster's directory."""
DEFAULT_DIR = Path(".fds")
"""Where ``fds local up`` keeps a cluster unless told otherwise (relative to the working directory)."""
_SETTINGS = ("tractservers", "replicas", "tract_size")
S3_CREDENTIALS = "s3-credentials"
"""The S3 credentials file's name inside a cluster's directory."""
T = TypeVar("T")


# -- the cluster file ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChildRecord:
    """What the cluster file says about one server process."""

    role: str
    name: str
    url: str = ""
    dir: str = ""
    pid: int | None = None
    log: str = ""


@dataclass(frozen=True)
class ClusterFile:
    """``DIR/cluster.json``: where a local cluster's servers are, its settings, and where its secret is.

    Every field may be missing from a file (a cluster that has not started yet names no metaserver);
    :meth:`read` refuses only a file that is not JSON or holds a field of the wrong type.
    """

    metaserver: str = ""
    gateway: str = ""
    s3: str = ""
    """The S3 endpoint's URL; empty for a cluster without one."""
    secret_file: str = ""
    """The cluster secret's path; empty for a cluster started with ``insecure=True``."""
    tractservers: int | None = None
    replicas: int | None = None
    tract_size: int | None = None
    children: tuple[ChildRecord, ...] = ()

    @staticmethod
    def path(directory: str | os.PathLike[str]) -> Path:
        """The cluster file of the cluster in ``directory``."""
        return Path(directory) / CLUSTER_FILE

    @classmethod
    def read(cls, directory: str | os.PathLike[str]) -> ClusterFile:
        """Read ``directory``'s cluster file. :class:`FileNotFoundError` if there is none, another
        :class:`OSError` if it cannot be read, :class:`ValueError` (saying what is wrong) if it is malformed."""
        path = cls.path(directory)
        data = path.read_bytes()
        try:
            raw = json.loads(data)
        except ValueError as exc:  # UnicodeDecodeError too
            raise ValueError(f"{path} is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path} holds {type(raw).__name__}, not an object")
        settings = {} if raw.get("settings") is None else raw["settings"]
        if not isinstance(settings, dict):
            raise ValueError(f"{path}: 'settings' must be an object")
        children = [] if raw.get("children") is None else raw["children"]
        if not isinstance(children, list) or not all(isinstance(c, dict) for c in children):
            raise ValueError(f"{path}: 'children' must be a list of objects")
        try:
            return cls(metaserver=_typed(raw, "metaserver", str, ""), gateway=_typed(raw, "gateway", str, ""),
                       s3=_typed(raw, "s3", str, ""),
                       secret_file=_typed(raw, "secret_file", str, ""),
                       tractservers=_typed(settings, "tractservers", int, None),
                       replicas=_typed(settings, "replicas", int, None),
                       tract_size=_typed(settings, "tract_size", int, None),
                       children=tuple(ChildRecord(role=_typed(c, "role", str, ""), name=_typed(c, "name", str, ""),
                                                  url=_typed(c, "url", str, ""), dir=_typed(c, "dir", str, ""),
                                                  pid=_typed(c, "pid", int, None), log=_typed(c, "log", str, ""))
                                      for c in children))
        except TypeError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def settings(self) -> dict[str, int] | None:
        """The stored settings (tract servers, replicas, tract size), or None if the file has none."""
        values = {"tractservers": self.tractservers, "replicas": self.replicas, "tract_size": self.tract_size}
        if any(v is None for v in values.values()):
            return None
        return {k: int(v) for k, v in values.items() if v is not None}

    def to_json(self) -> dict[str, Any]:
        """The file's JSON object."""
        settings = {"tractservers": self.tractservers, "replicas": self.replicas, "tract_size": self.tract_size}
        return {"metaserver": self.metaserver, "gateway": self.gateway, "s3": self.s3, "settings": settings,
                "secret_file": self.secret_file,
                "children": [{"role": c.role, "name": c.name, "url": c.url, "dir": c.dir, "pid": c.pid, "log": c.log}
                             for c in self.children]}

    def write(self, directory: str | os.PathLike[str]) -> None:
        """Write the file into ``directory`` (made if missing), durably: a reader sees the old file or the
        new one, whole."""
        ensure_dir(Path(directory))
        write_durably(self.path(directory), json.dumps(self.to_json(), indent=2).encode())


def _typed(raw: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = raw.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{key!r} must be {'a string' if kind is str else 'an integer'}, not {value!r}")
    return value


# -- one server process --------------------------------------------------------------------------------------------

@dataclass
class Child:
    """One server process: ``python -m fds ARGS``, its log, and (once ready) its URL."""

    role: str
    name: str
    dir: str
    args: list[str]
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log: str = ""
    ready_file: str = ""
    recorded_pid: int | None = None
    """For a child of an attached cluster (:meth:`LocalCluster.open`): the PID its cluster file names."""

    @property
    def pid(self) -> int | None:
        """The process id (the recorded one for an attached cluster's child); None before it starts."""
        return self.proc.pid if self.proc else self.recorded_pid

    def alive(self) -> bool:
        """Whether the process runs. For an attached cluster's child, whether its recorded PID exists."""
        if self.proc is not None:
            return self.proc.poll() is None
        if self.recorded_pid is None:
            return False
        try:
            os.kill(self.recorded_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def record(self) -> ChildRecord:
        """What the cluster file says about this child."""
        return ChildRecord(role=self.role, name=self.name, url=self.url, dir=self.dir, pid=self.pid, log=self.log)

    def start(self, *, log: str | os.PathLike[str], ready_file: str | os.PathLike[str],
              env: Mapping[str, str] | None = None, prefix: Sequence[str] = (), extra_args: Sequence[str] = ()) -> None:
        """Start the process with :attr:`args` and ``extra_args`` (see :func:`start_server`); :func:`wait_ready`
        then gives it its URL."""
        self.log, self.ready_file, self.url = os.fspath(log), os.fspath(ready_file), ""
        self.proc = start_server([*self.args, *extra_args], log=log, ready_file=ready_file, env=env, prefix=prefix)


def start_server(args: Sequence[str], *, log: str | os.PathLike[str], ready_file: str | os.PathLike[str],
                 env: Mapping[str, str] | None = None, prefix: Sequence[str] = ()) -> subprocess.Popen[bytes]:
    """Start ``python -m fds ARGS --ready-file READY_FILE`` in a session of its own, output appended to ``log``.

    The server writes its URL into ``ready_file`` once it serves (:func:`wait_ready`). ``prefix`` runs
    it through a program that execs it (``ip netns exec NS``), so the PID is still the server's.
    """
    Path(ready_file).unlink(missing_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen([*prefix, sys.executable, "-m", "fds", *args, "--ready-file", os.fspath(ready_file)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=None if env is None else dict(env), start_new_session=True)


def wait_ready(children: Sequence[Child], timeout: float = 60.0) -> None:
    """Wait until every child (started with :meth:`Child.start`) has written its ready file; set their URLs.

    :class:`RuntimeError` (with the end of its log) if one exits first, :class:`TimeoutError` if all
    are not ready within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    for child in children:
        ready = Path(child.ready_file)
        while not ready.exists():
            if not child.alive():
                status = child.proc.returncode if child.proc else "?"
                raise RuntimeError(f"{child.name} exited with status {status} during start-up; see {child.log}:\n"
                                   f"{_tail(child.log)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} did not start within {timeout:.0f}s; see {child.log}")
            time.sleep(0.02)
        child.url = ready.read_text().strip()


def cluster_healthy(status: Mapping[str, Any], servers: int = 0) -> bool:
    """Whether a metaserver's ``GET /v1/cluster`` answer shows a cluster ready for work: the table is built
    and healthy (every row has k live, complete holders), at least ``servers`` tract servers are members,
    and every one that is not dead or decommissioned is alive and uses the current table."""
    members = status["servers"]
    return bool(status["state"] == "ready" and status["healthy"] and len(members) >= servers
                and all(s["alive"] and s["table_version"] == status["table_version"] for s in members
                        if s["state"] not in ("dead", "decommissioned")))


# -- the cluster --------------------------------------------------------------------------------------------------

@dataclass
class LocalCluster:
    """A metaserver, N tract servers and a gateway on loopback, each its own process.

    ``start()`` (or ``with``) starts them and waits until the cluster is healthy; ``stop()`` stops every one.
    Settings left None take the defaults of ``fds local up`` (4 tract servers; k=3, or k=1 below 3 servers;
    8 MiB tracts), or the stored ones of a cluster already in ``dir``.
    """

    dir: Path
    tractservers: int | None = None
    replicas: int | None = None
    tract_size: int | None = None
    port: int = 0
    """The metaserver's port (the gateway takes the next one); 0 picks free ports."""
    gateway: bool = True
    s3: bool = False
    """Start an S3 endpoint too (``fds local up`` does), with a first access key in ``DIR/s3-credentials``."""
    s3_args: list[str] = field(default_factory=list)
    """Extra flags for ``fds s3`` (``--min-part-size N``...)."""
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float | None = None
    """Seconds before a silent tract server is declared dead; default max(3, 6 x heartbeat_interval)."""
    collector_interval: float = 60.0
    capacity_bytes: int | None = None
    cache_bytes: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every server process."""
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
    """Arguments that were ignored, and why (stored settings win)."""
    attached: bool = False
    """True for a cluster another process runs (:meth:`open`): it can be used, not started or stopped."""

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        self._settle_settings()

    @classmethod
    def open(cls, dir: str | os.PathLike[str] = DEFAULT_DIR) -> LocalCluster:
        """Attach to the cluster that ``fds local up`` (or another process's LocalCluster) runs from ``dir``.

        The result knows the servers' URLs, makes clients, tokens and headers, and waits for health; the
        processes belong to the process that started them, so :meth:`start`, :meth:`stop`, :meth:`kill`,
        :meth:`restart` and :meth:`add_tractserver` refuse (:class:`RuntimeError`).
        :class:`FileNotFoundError` if ``dir`` holds no cluster file, :class:`ValueError` if it names no
        metaserver (the cluster never started) or is malformed.
        """
        stored = ClusterFile.read(dir)
        if not stored.metaserver:
            raise ValueError(f"{ClusterFile.path(dir)} names no metaserver: the cluster has not started")
        cluster = cls(Path(dir), gateway=bool(stored.gateway), s3=bool(stored.s3), insecure=not stored.secret_file,
                      secret_file=Path(stored.secret_file) if stored.secret_file else None, attached=True)
        cluster.children = [Child(c.role, c.name, c.dir, [], url=c.url, log=c.log, recorded_pid=c.pid)
                            for c in stored.children]
        if not any(c.role == "metaserver" for c in cluster.children):
            cluster.children.insert(0, Child("metaserver", "metaserver", "", [], url=stored.metaserver))
        return cluster

    # -- settings ------------------------------------------------------------------------------------------------
    def _stored(self) -> ClusterFile:
        """The cluster file in ``dir``; an empty one if there is none or it cannot be read."""
        try:
            return ClusterFile.read(self.dir)
        except (OSError, ValueError):
            return ClusterFile()

    def _settle_settings(self) -> None:
        wanted = {"tractservers": self.tractservers, "replicas": self.replicas, "tract_size": self.tract_size}
        stored = self._stored().settings()
        if stored:
            for name in _SETTINGS:
                if wanted[name] is not None and wanted[name] != stored[name]:
                    self.warnings.append(f"--{name.replace('_', '-')} {wanted[name]} ignored: the cluster in "
                                         f"{self.dir} was created with {stored[name]}, and stored settings win")
                setattr(self, name, stored[name])
            return
        self.tractservers = 4 if self.tractservers is None else self.tractservers
        if self.tractservers < 1:
            raise ValueError(f"--tractservers must be at least 1, not {self.tractservers}")
        if self.replicas is None:
            self.replicas = 1 if self.tractservers < 3 else 3
        if self.replicas > self.tractservers:
            raise ValueError(f"{self.replicas} replicas need at least {self.replicas} tract servers, "
                             f"not {self.tractservers}")
        self.tract_size = self.tract_size or DEFAULT_TRACT_SIZE

    def settings(self) -> dict[str, Any]:
        """Tract servers, replicas and tract size: what the cluster file stores and a restart keeps."""
        return {name: getattr(self, name) for name in _SETTINGS}

    # -- credentials ---------------------------------------------------------------------------------------------
    def _ensure_secret(self) -> Path:
        if self.secret_file is None:
            stored = self._stored().secret_file
            self.secret_file = Path(stored) if stored else self.dir / "secret"
        self.secret_file = Path(self.secret_file).resolve()
        if not self.secret_file.exists():
            if self.attached:
                raise RuntimeError(f"the cluster secret {self.secret_file} is gone")
            write_secret(self.secret_file)
        return self.secret_file

    def token(self, scope: Scope = "cluster", ttl: float = 3600.0) -> str:
        """A token for this cluster (``cluster`` scope may do anything)."""
        return mint(load_secret(self._ensure_secret()), scope, ttl)

    def headers(self, scope: Scope = "cluster") -> dict[str, str]:
        """The ``Authorization`` header for raw HTTP calls to this cluster's servers."""
        return {} if self.insecure else {"authorization": f"Bearer {self.token(scope)}"}

    def client(self, **options: Any) -> Client:
        """A :class:`fds.client.Client` for this cluster, holding its secret; ``options`` go to the client
        (``max_in_flight``, ``timeout``, ``token`` to act with a narrower token...). Use it in an event
        loop, ``async with``. With TLS, the client trusts the cluster's ``tls_ca`` if it has one, else what
        ``$FDS_TLS_CA`` names (or :func:`fds.tls.configure`), as every client does."""
        from fds.client import Client

        return Client(self.metaserver_url, **self._client_options(options))

    def sync_client(self, **options: Any) -> SyncClient:
        """The blocking twin of :meth:`client`: a :class:`fds.client.SyncClient`, for scripts (``with``)."""
        from fds.client import SyncClient

        return SyncClient(self.metaserver_url, **self._client_options(options))

    def _client_options(self, options: dict[str, Any]) -> dict[str, Any]:
        if not self.insecure and "token" not in options:
            options.setdefault("secret_file", str(self._ensure_secret()))
        if self.tls_ca:
            options.setdefault("tls_ca", str(self.tls_ca))
        return options

    # -- who is where --------------------------------------------------------------------------------------------
    @property
    def metaserver_url(self) -> str:
        """The metaserver's URL (once started): what clients and ``fds --metaserver`` take."""
        return self.child("metaserver").url

    @property
    def gateway_url(self) -> str:
        """The gateway's URL; empty for a cluster without one."""
        return self.child("gateway").url if self.gateway else ""

    @property
    def s3_url(self) -> str:
        """The S3 endpoint's URL (path-style: ``URL/BUCKET/KEY``); empty for a cluster without one."""
        return self.child("s3").url if self.s3 else ""

    @property
    def s3_credentials_file(self) -> Path:
        """``DIR/s3-credentials``: an aws cli credentials file (profile ``fds``, owner-only) holding the first
        access key, written when the S3 endpoint first starts."""
        return self.dir / S3_CREDENTIALS

    def s3_credentials(self) -> tuple[str, str]:
        """``(access key id, secret access key)`` of the first access key (from :attr:`s3_credentials_file`)."""
        from fds.s3keys import read_credentials_file

        return read_credentials_file(self.s3_credentials_file)

    def s3_key(self, *, read_only: bool = False) -> tuple[str, str]:
        """Make another access key; ``(access key id, secret access key)``."""
        from fds.s3keys import create_key

        async def make() -> tuple[str, str]:
            async with self.client() as client:
                key = await create_key(client, load_secret(self._ensure_secret()), read_only=read_only)
            return key.access_key, key.secret

        return _run_async(make())

    def child(self, name: str) -> Child:
        """The child called ``name`` (``metaserver``, ``gateway``, ``ts0``, ``ts1``...); KeyError if none is."""
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    @property
    def tract_children(self) -> list[Child]:
        """The tract server children, in the order they were added (``ts0``, ``ts1``...)."""
        return [c for c in self.children if c.role == "tractserver"]

    def server_id(self, name: str) -> str:
        """The tract server id a child registered with (from its data directory)."""
        return str(json.loads((Path(self.child(name).dir) / "server.json").read_text())["id"])

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> None:
        """Start every server and wait until the table is built and every tract server is alive."""
        self._own("start")
        ensure_dir(self.dir / "logs")
        if not self.insecure:
            self._ensure_secret()
        self.children = [Child("metaserver", "metaserver", str(self.dir / "metaserver"), [
            "metaserver", "--dir", str(self.dir / "metaserver"), "--port", str(self.port),
            "--replicas", str(self.replicas), "--tract-size", str(self.tract_size),
            "--expected-servers", str(self.tractservers),
            "--heartbeat-timeout", str(self.heartbeat_timeout or max(3.0, 6 * self.heartbeat_interval)),
        ])]
        try:
            self._spawn(self.children[0])
            wait_ready(self.children[:1], timeout)
            for i in range(self.tractservers or 0):
                self.children.append(self._tract_child(f"ts{i}"))
            for child in self.tract_children:
                self._spawn(child)
            wait_ready(self.tract_children, timeout)
            self.wait_healthy(timeout)
            if self.gateway:
                gw = Child("gateway", "gateway", "", ["gateway", "--metaserver", self.metaserver_url,
                                                      "--port", str(self.port + 1 if self.port else 0)])
                self.children.append(gw)
                self._spawn(gw)
                wait_ready([gw], timeout)
            if self.s3:
                s3 = Child("s3", "s3", "", ["s3", "--metaserver", self.metaserver_url,
                                            "--port", str(self.port + 2 if self.port else 0), *self.s3_args])
                self.children.append(s3)
                self._spawn(s3)
                wait_ready([s3], timeout)
                self._ensure_s3_credentials()
        except BaseException:
            self.stop()
            raise
        self.write_file()

    def _ensure_s3_credentials(self) -> None:
        """Write ``DIR/s3-credentials`` with a new access key, unless it is there already."""
        if self.s3_credentials_file.exists() or self.insecure:
            return
        from fds.s3keys import create_key, write_credentials_file

        async def make() -> None:
            async with self.client() as client:
                key = await create_key(client, load_secret(self._ensure_secret()))
            write_credentials_file(self.s3_credentials_file, key)

        _run_async(make())

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
        self._own("add a tract server to")
        names = {c.name for c in self.children}
        name = next(f"ts{i}" for i in range(len(names) + 1) if f"ts{i}" not in names)
        child = self._tract_child(name)
        self.children.append(child)
        self._spawn(child)
        wait_ready([child], timeout)
        self.write_file()
        return child

    def _spawn(self, child: Child) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if self.insecure:
            env.pop("FDS_SECRET_FILE", None)  # it would configure a secret after all
        child.start(log=self.dir / "logs" / f"{child.name}.log", ready_file=self.dir / "logs" / f"{child.name}.ready",
                    env=env, extra_args=[*self._auth_args(), *self._tls_args()])

    def _auth_args(self) -> list[str]:
        return ["--insecure"] if self.insecure else ["--secret-file", str(self._ensure_secret())]

    def _tls_args(self) -> list[str]:
        args: list[str] = []
        for flag, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key), ("--tls-ca", self.tls_ca)):
            if path:
                args += [flag, str(path)]
        return args

    def wait_healthy(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the cluster is healthy (:func:`cluster_healthy`); the metaserver's last status.
        :class:`TimeoutError`, with the last status seen, if it is not within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        headers = self.headers("read")
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(self.tls_ca)) if self.tls_ca else True
        last: Any = None
        while time.monotonic() < deadline:
            try:
                status = httpx.get(f"{self.metaserver_url}/v1/cluster", headers=headers, timeout=5,
                                   verify=verify).json()
                last = status
                if cluster_healthy(status, self.tractservers or 0):
                    return dict(status)
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"cluster not healthy after {timeout:.0f}s: {last}")

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start a stopped or killed child again, with the same data directory and port."""
        self._own("restart servers of")
        child = self.child(name)
        if child.alive():
            self.kill(name, signal.SIGTERM)
        if child.url and "--port" in child.args:
            child.args[child.args.index("--port") + 1] = child.url.rsplit(":", 1)[1]
        self._spawn(child)
        wait_ready([child], timeout)
        self.write_file()

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 15.0) -> None:
        """Send ``sig`` to one child (by its PID) and reap it (SIGKILL if it outlives ``timeout``)."""
        self._own("kill servers of")
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
        """Stop every child: SIGTERM, then SIGKILL for any that linger past ``timeout``."""
        self._own("stop")
        for child in reversed(self.children):
            if child.proc is not None and child.alive():
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

    def _own(self, what: str) -> None:
        if self.attached:
            raise RuntimeError(f"cannot {what} the cluster in {self.dir}: it was attached to (LocalCluster.open), "
                               f"and its servers belong to the process that started them")

    def write_file(self) -> None:
        """Write ``DIR/cluster.json`` (:class:`ClusterFile`): done by start, restart and add_tractserver."""
        ClusterFile(metaserver=self.metaserver_url, gateway=self.gateway_url, s3=self.s3_url,
                    secret_file="" if self.insecure else str(self._ensure_secret()),
                    tractservers=self.tractservers, replicas=self.replicas, tract_size=self.tract_size,
                    children=tuple(c.record() for c in self.children)).write(self.dir)

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a fresh event loop in a thread of its own (the caller may be in a loop)."""
    result: list[T] = []
    failure: list[BaseException] = []

    def main() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=main, name="fds-local")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def _tail(path: str | os.PathLike[str], lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
