"""OpenStack Swift all-in-one on loopback, with its S3 API (the s3api middleware), for side-by-side figures.

    with SwiftAIO(Path("/tmp/swift"), replicas=3, venv=Path("/tmp/swift-venv")) as swift:
        swift.endpoint, swift.access_key, swift.secret_key   # an S3 endpoint and key

Swift is not a dependency of fds: :func:`ensure_venv` makes a venv of its own (``swift>=2.38,<2.39`` from
PyPI) on first use. The layout is a SAIO's: one proxy (pipeline ``... cache s3api tempauth ... proxy-server``,
memcached for its cache), one account and one container server, and one object server per device, 4 devices
in 4 zones, rings of ``replicas`` copies (part power 8). Every daemon takes Swift's defaults (``workers =
auto``: one per core, fsync on PUT); logs go to ``DIR/logs``. The processes are this object's children,
tracked by PID and stopped (SIGTERM, then SIGKILL) on exit.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["SwiftAIO", "ensure_venv"]

SWIFT_REQUIREMENT = "swift>=2.38,<2.39"
ACCESS_KEY = "bench:tester"
SECRET_KEY = "testing"


def ensure_venv(venv: Path) -> Path:
    """A venv holding Swift 2.38 (made and installed if missing); returns its bin directory."""
    bin_dir = venv / "bin"
    if not (bin_dir / "swift-proxy-server").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(bin_dir / "pip"), "install", "--quiet", SWIFT_REQUIREMENT], check=True)
    return bin_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SwiftAIO:
    """A Swift all-in-one with s3api in ``dir``: ``devices`` object servers, ``replicas`` copies of each object."""

    def __init__(self, dir: Path, *, replicas: int, venv: Path, devices: int = 4) -> None:
        self.dir = Path(dir)
        self.replicas = replicas
        self.devices = devices
        self.bin = ensure_venv(venv)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.proxy_port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.proxy_port}"
        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY

    @property
    def pids(self) -> list[int]:
        """The PIDs of every Swift daemon and memcached (workers included, for CPU accounting)."""
        pids = []
        for proc in self.procs:
            pids.append(proc.pid)
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            if children.exists():
                pids += [int(p) for p in children.read_text().split()]
        return pids

    # -- configuration -------------------------------------------------------------------------------------------
    def _write_configs(self) -> None:
        conf = self.dir / "etc"
        for sub in ("etc", "srv", "logs", "run"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for i in range(self.devices):
            (self.dir / "srv" / f"d{i}").mkdir(exist_ok=True)
        (conf / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = fdsbench\nswift_hash_path_prefix = fdsbench\n"
            "[storage-policy:0]\nname = gold\ndefault = yes\n")
        user = pwd.getpwuid(os.getuid()).pw_name
        common = (f"[DEFAULT]\ndevices = {self.dir / 'srv'}\nmount_check = false\nbind_ip = 127.0.0.1\n"
                  f"swift_dir = {conf}\nuser = {user}\nlog_address = {self.dir / 'run' / 'no-syslog'}\n"
                  "log_level = WARNING\n")
        self.object_ports = [_free_port() for _ in range(self.devices)]
        self.account_port, self.container_port = _free_port(), _free_port()
        for name, port, app in [("account", self.account_port, "account"),
                                ("container", self.container_port, "container"),
                                *[(f"object{i}", p, "object") for i, p in enumerate(self.object_ports)]]:
            (conf / f"{name}-server.conf").write_text(
                common + f"bind_port = {port}\n\n[pipeline:main]\npipeline = {app}-server\n\n"
                f"[app:{app}-server]\nuse = egg:swift#{app}\n\n"
                + ("[object-updater]\n[object-replicator]\n[object-auditor]\n" if app == "object" else "")
                + (f"[{app}-replicator]\n[{app}-updater]\n[{app}-auditor]\n" if app != "object" else ""))
        self.memcached_port = _free_port()
        (conf / "proxy-server.conf").write_text(
            common + f"bind_port = {self.proxy_port}\n\n[pipeline:main]\n"
            "pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth "
            "copy dlo slo proxy-logging proxy-server\n\n"
            "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n\n"
            "[filter:catch_errors]\nuse = egg:swift#catch_errors\n[filter:gatekeeper]\nuse = egg:swift#gatekeeper\n"
            "[filter:healthcheck]\nuse = egg:swift#healthcheck\n[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n"
            f"[filter:cache]\nuse = egg:swift#memcache\nmemcache_servers = 127.0.0.1:{self.memcached_port}\n"
            "[filter:listing_formats]\nuse = egg:swift#listing_formats\n"
            "[filter:s3api]\nuse = egg:swift#s3api\nlocation = us-east-1\n"
            "[filter:tempauth]\nuse = egg:swift#tempauth\nuser_bench_tester = testing .admin\n"
            "[filter:copy]\nuse = egg:swift#copy\n[filter:dlo]\nuse = egg:swift#dlo\n"
            "[filter:slo]\nuse = egg:swift#slo\n")

    def _build_rings(self) -> None:
        builder = str(self.bin / "swift-ring-builder")
        conf = self.dir / "etc"
        for ring, ports in (("account", [self.account_port] * self.devices),
                            ("container", [self.container_port] * self.devices),
                            ("object", self.object_ports)):
            path = str(conf / f"{ring}.builder")
            subprocess.run([builder, path, "create", "8", str(self.replicas), "0"], check=True,
                           stdout=subprocess.DEVNULL)
            for i, port in enumerate(ports):
                subprocess.run([builder, path, "add", f"r1z{i + 1}-127.0.0.1:{port}/d{i}", "100"], check=True,
                               stdout=subprocess.DEVNULL)
            subprocess.run([builder, path, "rebalance"], check=False, stdout=subprocess.DEVNULL)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def _spawn(self, args: list[str], log: str) -> None:
        with open(self.dir / "logs" / log, "ab") as out:
            self.procs.append(subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                               start_new_session=True))

    def start(self, timeout: float = 60.0) -> None:
        self._write_configs()
        self._build_rings()
        conf = self.dir / "etc"
        self._spawn(["memcached", "-l", "127.0.0.1", "-p", str(self.memcached_port), "-U", "0", "-m", "64",
                     "-u", pwd.getpwuid(os.getuid()).pw_name], "memcached.log")
        for name in ["account", "container", *[f"object{i}" for i in range(self.devices)], "proxy"]:
            server = "object" if name.startswith("object") else name
            self._spawn([str(self.bin / f"swift-{server}-server"), str(conf / f"{name}-server.conf")], f"{name}.log")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.endpoint}/healthcheck", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            for proc in self.procs:
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"a Swift process exited ({proc.args}); see {self.dir / 'logs'}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"Swift's proxy did not answer in {timeout} s; see {self.dir / 'logs'}")
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=15)
        self.procs = []

    def __enter__(self) -> SwiftAIO:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
