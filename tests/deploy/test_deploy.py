"""deploy/: the Ansible playbook, the systemd units it installs, and the helper scripts.

The tools come from the ``deploy`` extra (``pip install -e ".[deploy]"``, as ``.ci/run`` does); a
test whose tool is missing skips itself and says which.

The real run (``deployed`` below) applies ``site.yml`` to this machine, ``ansible_connection=local``,
into a temporary root, as the current user, twice. Its inventory sets what a test root needs:
``fds_become=false`` and ``fds_manage_system=false`` (no OS packages, no ``fds`` user, no chown),
``--skip-tags services`` (no systemctl: there is no systemd to talk to), ``fds_require_mounts=false``
(temporary directories stand in for disks), and ``fds_pip_install=false`` with ``fds_venv`` set to
this interpreter's venv: a pip install of fds and its dependencies into a new venv takes minutes,
so the run packs and copies the source like a real one but leaves the venv alone. Everything else
(configs, units, drop-ins, the config checker, their validation) is the real thing; then the
servers are started from the command lines in the installed units and form a cluster. A third run,
with the service tasks, talks to a stand-in systemctl (a script keeping unit states in a file) to
check which servers the play starts and which its handlers restart.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import os
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from apps.minutesort._config import WorkerConfig, load_worker_config
from fds.auth import load_secret, mint, write_secret
from fds.config import GatewayConfig, MetaserverConfig, TractServerConfig, load_config

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ANSIBLE = DEPLOY / "ansible"
UNITS = DEPLOY / "systemd"
VENV_BIN = Path(sys.executable).parent
DEPLOY_EXTRA = 'pip install -e ".[deploy]"'
UNIT_FILES = ["fds-metaserver.service", "fds-tractserver@.service", "fds-gateway.service", "fds-s3.service",
              "fds-minutesort-worker.service"]


def _tool(name: str) -> str:
    """The tool from this venv, else from PATH; skips the test when it is nowhere."""
    found = VENV_BIN / name
    if found.exists():
        return str(found)
    on_path = shutil.which(name)
    if on_path is None:
        pytest.skip(f"{name} is not installed ({DEPLOY_EXTRA} installs it)")
    return on_path


def _ansible_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FDS_", "ANSIBLE_"))}
    env.update(ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"), ANSIBLE_REMOTE_TEMP=str(tmp / "ansible-remote"),
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}")
    return env


def _load_script(name: str) -> ModuleType:
    """Import a deploy/bin script (no .py suffix) as a module."""
    path = DEPLOY / "bin" / name
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


# --- Static checks -------------------------------------------------------------------------------

def test_playbook_syntax(tmp_path: Path) -> None:
    playbook = _tool("ansible-playbook")
    for args in (["-i", "inventory.example.yml", "site.yml"], ["render-units.yml"]):
        run = subprocess.run([playbook, *args, "--syntax-check"], cwd=ANSIBLE, env=_ansible_env(tmp_path),
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr


def test_ansible_lint(tmp_path: Path) -> None:
    lint = _tool("ansible-lint")
    env = _ansible_env(tmp_path) | {"HOME": str(tmp_path)}  # its caches go to the temp dir
    run = subprocess.run([lint, "--offline", "-c", ".ansible-lint", "site.yml", "render-units.yml"],
                         cwd=ANSIBLE, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Profile 'production' was required, and it passed" in run.stderr, run.stderr


def test_example_inventory_names_disks_and_domains() -> None:
    yaml = pytest.importorskip("yaml", reason=f"PyYAML comes with ansible-core ({DEPLOY_EXTRA})")
    inventory = yaml.safe_load((ANSIBLE / "inventory.example.yml").read_text())
    hosts = inventory["all"]["children"]["tractservers"]["hosts"]
    assert len(hosts) >= 3
    for name, host in hosts.items():
        assert host["fds_domain"], name
        assert host["fds_disks"] and all(d["name"] and d["path"].startswith("/") for d in host["fds_disks"]), name
    assert inventory["all"]["children"]["metaservers"]["hosts"]


# --- The helper scripts --------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_fds_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """FDS_* variables would override the files under test (fds.config reads them)."""
    for name in [n for n in os.environ if n.startswith("FDS_")]:
        monkeypatch.delenv(name)


def _check(capsys: pytest.CaptureFixture[str], role: str, text: str | None, tmp: Path) -> tuple[int, str]:
    checker = _load_script("fds-check-config")
    path = tmp / f"{role}.toml"
    if text is not None:
        path.write_text(text)
    code = checker.main([role, str(path)])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize(("text", "message"), [
    ('[tractserver]\ndir = "DIR"\nmetaserver = "http://meta:7000"\nport = 7100\n', None),
    ('[tractserver]\ndir = "DIR"\nporrt = 7100\n', "unknown setting 'porrt'"),
    ('[tractserver]\ndir = "DIR"\nport = "seven"\n', "must be a number"),
    ('[gateway]\nport = 7080\n', "has no [tractserver] table"),
    ('[tractserver]\ndir = "relative/ts"\n', "must be an absolute path"),
    ('[tractserver]\ndir = "DIR"\nmetaserver = "meta:7000"\n', "http:// or https://"),
    ('[tractserver\ndir = "DIR"\n', "not valid TOML"),
    (None, "cannot read"),
])
def test_check_config_tractserver(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                  text: str | None, message: str | None) -> None:
    text = text if text is None else text.replace("DIR", str(tmp_path / "disk" / "fds"))
    code, out = _check(capsys, "tractserver", text, tmp_path)
    if message is None:
        assert code == 0 and ": ok (tractserver:" in out, out
    else:
        assert code == 1 and message in out, out


def test_check_config_other_roles(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _check(capsys, "metaserver", f'[metaserver]\ndir = "{tmp_path}/meta"\nreplicas = 3\n', tmp_path)[0] == 0
    assert _check(capsys, "gateway", '[gateway]\nmetaserver = "http://meta:7000"\n', tmp_path)[0] == 0
    secret = tmp_path / "secret"
    write_secret(secret)
    worker = f'[minutesort-worker]\nhost = "0.0.0.0"\nport = 7300\nsecret_file = "{secret}"\n'
    assert _check(capsys, "minutesort-worker", worker, tmp_path)[0] == 0
    code, out = _check(capsys, "minutesort-worker", '[minutesort-worker]\nport = 7300\n', tmp_path)
    assert code == 1 and "no cluster secret" in out
    code, out = _check(capsys, "minutesort-worker", worker + "data_port = 7300\n", tmp_path)
    assert code == 1 and "port and data_port must differ" in out
    code, out = _check(capsys, "minutesort-worker", '[minutesort-worker]\nhead = "http://h:7300"\n', tmp_path)
    assert code == 1 and "unknown setting 'head'" in out  # the one-shot worker's setting: not a service's
    code, out = _check(capsys, "gatewy", "[gatewy]\n", tmp_path)
    assert code == 1 and "usage:" in out


def test_check_config_exit_status(tmp_path: Path) -> None:
    """As systemd runs it (ExecStartPre): a bad config is a non-zero exit and a message on stderr."""
    bad = tmp_path / "gateway.toml"
    bad.write_text("[gateway]\nmax_inflight = 3\n")
    run = subprocess.run([sys.executable, str(DEPLOY / "bin" / "fds-check-config"), "gateway", str(bad)],
                         capture_output=True, text=True, timeout=60, env={"PATH": os.environ.get("PATH", "")})
    assert run.returncode == 1 and "unknown setting 'max_inflight'" in run.stderr


def test_pack_source_is_reproducible(tmp_path: Path) -> None:
    packer = _load_script("fds-pack-source")
    out = tmp_path / "fds-src.tar.gz"
    assert packer.main([str(REPO), str(out)]) == 0
    first = out.read_bytes()
    assert packer.main([str(REPO), str(out)]) == 0
    assert out.read_bytes() == first
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "fds-src/pyproject.toml" in names and "fds-src/fds/config.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


# --- The real run --------------------------------------------------------------------------------

@dataclass
class Deployment:
    root: Path
    venv: Path
    ports: dict[str, int]
    runs: list[subprocess.CompletedProcess[str]]
    inventory: dict[str, Any]

    @property
    def config_dir(self) -> Path:
        return self.root / "etc" / "fds"

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc" / "systemd" / "system"

    def disk(self, name: str) -> Path:
        return self.root / "disks" / name

    @property
    def metaserver_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metaserver']}"


def _free_ports(count: int, taken: set[int]) -> int:
    """The first of ``count`` consecutive ports free on loopback now (and not in ``taken``), from below the
    kernel's ephemeral range: the servers bind them only after the playbook has run (a minute or two), and a
    port from the ephemeral range may meanwhile be handed to any outgoing connection on the machine."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(max(1024, low - 12000), low - count)
        wanted = set(range(first, first + count))
        if wanted & taken:
            continue
        try:
            for port in wanted:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        taken.update(wanted)
        return first
    raise RuntimeError("no free ports")


def _recap(output: str) -> dict[str, int]:
    match = re.search(r"^localhost\s*:\s*(.*)$", output, re.MULTILINE)
    assert match, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def _play(root: Path, inventory: dict[str, Any], *args: str,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run site.yml on this machine with ``inventory``; fail the test if the play fails."""
    (root / "inventory.yml").write_text(json.dumps(inventory, indent=1))  # JSON is YAML
    run = subprocess.run([_tool("ansible-playbook"), "-i", str(root / "inventory.yml"), "site.yml", *args],
                         cwd=ANSIBLE, env=env or _ansible_env(root), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    _tool("ansible-playbook")
    root = tmp_path_factory.mktemp("deployroot")
    taken: set[int] = set()
    ports = {"metaserver": _free_ports(1, taken), "gateway": _free_ports(1, taken), "s3": _free_ports(1, taken),
             "tractserver": _free_ports(2, taken), "d1": _free_ports(2, taken), "worker": _free_ports(2, taken)}
    for disk in ("d0", "d1"):
        (root / "disks" / disk).mkdir(parents=True)
    # A snapshot of the source to pack: an edit to the work tree between the two runs would
    # (rightly) make the second one reinstall.
    source = root / "source"
    for name in ("pyproject.toml", "README.md"):
        source.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    for name in ("fds", "apps"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    here = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "ansible_host": "127.0.0.1"}
    inventory = {"all": {
        "vars": {
            **here,
            "fds_become": False, "fds_manage_system": False, "fds_require_mounts": False, "fds_pip_install": False,
            "fds_venv": sys.prefix,
            "fds_prefix": f"{root}/opt/fds", "fds_config_dir": f"{root}/etc/fds",
            "fds_state_dir": f"{root}/var/lib/fds", "fds_unit_dir": f"{root}/etc/systemd/system",
            "fds_controller_cache": f"{root}/controller-cache",
            "fds_source_dir": str(source),
            "fds_listen_host": "127.0.0.1", "fds_replicas": 1,
            "fds_metaserver_port": ports["metaserver"], "fds_gateway_port": ports["gateway"],
            "fds_s3_port": ports["s3"],
            "fds_tractserver_port": ports["tractserver"],
            "fds_tractserver_settings": {"scrub_interval": 0, "heartbeat_interval": 0.2},
            "fds_minutesort_worker_port": ports["worker"], "fds_minutesort_worker_data_port": ports["worker"] + 1,
        },
        "children": {
            "metaservers": {"hosts": {"localhost": {}}},
            "gateways": {"hosts": {"localhost": {}}},
            "s3_servers": {"hosts": {"localhost": {}}},
            "minutesort_workers": {"hosts": {"localhost": {}}},
            "tractservers": {"hosts": {"localhost": {
                "fds_domain": "host0",
                "fds_disks": [{"name": "d0", "path": str(root / "disks" / "d0")},
                              {"name": "d1", "path": str(root / "disks" / "d1"), "port": ports["d1"],
                               "settings": {"capacity_bytes": 10**9}}],
            }}},
        },
    }}
    runs = [_play(root, inventory, "--skip-tags", "services") for _ in range(2)]
    return Deployment(root, Path(sys.prefix), ports, runs, inventory)


@pytest.mark.slow
def test_first_run_changes_things_second_run_nothing(deployed: Deployment) -> None:
    first, second = (_recap(run.stdout) for run in deployed.runs)
    assert first["failed"] == 0 and first["changed"] > 0
    assert second["failed"] == 0 and second["changed"] == 0, deployed.runs[1].stdout[-5000:]


@pytest.mark.slow
def test_configs_load_and_name_the_right_dirs_and_urls(deployed: Deployment) -> None:
    ports, cdir = deployed.ports, deployed.config_dir

    def load(cls: type, section: str, name: str) -> object:
        return load_config(cls, section, file=str(cdir / name), environ={})

    meta = load(MetaserverConfig, "metaserver", "metaserver.toml")
    assert isinstance(meta, MetaserverConfig)
    assert (meta.dir, meta.host, meta.port) == (str(deployed.root / "var/lib/fds/metaserver"), "127.0.0.1",
                                                ports["metaserver"])
    assert (meta.replicas, meta.expected_servers, meta.heartbeat_timeout) == (1, 2, 10.0)
    assert Path(meta.dir).is_dir()

    expected_ports = {"d0": ports["tractserver"], "d1": ports["d1"]}
    for disk, port in expected_ports.items():
        ts = load(TractServerConfig, "tractserver", f"tractserver-{disk}.toml")
        assert isinstance(ts, TractServerConfig)
        assert ts.dir == str(deployed.disk(disk) / "fds") and Path(ts.dir).is_dir()
        assert ts.metaserver == deployed.metaserver_url
        assert (ts.host, ts.port, ts.data_port) == ("127.0.0.1", port, port + 1)
        assert ts.advertise_url == f"http://127.0.0.1:{port}"
        assert ts.advertise_data_url == f"http://127.0.0.1:{port + 1}"
        assert ts.domain == "host0"
        assert (ts.scrub_interval, ts.heartbeat_interval) == (0.0, 0.2)
        assert ts.capacity_bytes == (10**9 if disk == "d1" else 0)
        assert (cdir / f"tractserver-{disk}.toml").stat().st_mode & 0o777 == 0o640

    gateway = load(GatewayConfig, "gateway", "gateway.toml")
    assert isinstance(gateway, GatewayConfig)
    assert (gateway.metaserver, gateway.port) == (deployed.metaserver_url, ports["gateway"])
    worker = load_worker_config(str(cdir / "minutesort-worker.toml"))
    assert isinstance(worker, WorkerConfig)
    assert (worker.host, worker.port, worker.data_port) == ("127.0.0.1", ports["worker"], ports["worker"] + 1)
    assert worker.advertise_url == f"http://127.0.0.1:{ports['worker']}"
    assert worker.advertise_data_url == f"http://127.0.0.1:{ports['worker'] + 1}"
    assert worker.secret_file == str(cdir / "secret")


@pytest.mark.slow
def test_units_and_drop_ins_written(deployed: Deployment) -> None:
    units = deployed.unit_dir
    for name in UNIT_FILES:
        assert (units / name).is_file(), name
    for disk in ("d0", "d1"):
        dropin = (units / f"fds-tractserver@{disk}.service.d" / "10-disk.conf").read_text()
        assert f"ReadWritePaths={deployed.disk(disk)}/fds\n" in dropin
        assert f"RequiresMountsFor={deployed.disk(disk)}\n" in dropin
    assert (deployed.root / "opt/fds/bin/fds-check-config").stat().st_mode & 0o111
    assert (deployed.root / "opt/fds/dist/fds-src.tar.gz").is_file()


@pytest.mark.slow
def test_installed_units_match_deploy_systemd(deployed: Deployment) -> None:
    """deploy/systemd holds the units rendered with default paths (render-units.yml); the roles
    install the same text with this run's paths."""
    defaults = [(str(deployed.venv), "/opt/fds/venv"), (f"{deployed.root}/opt/fds", "/opt/fds"),
                (f"{deployed.root}/etc/fds", "/etc/fds"), (f"{deployed.root}/var/lib/fds", "/var/lib/fds")]

    def as_default(text: str) -> str:
        for ours, default in defaults:
            text = text.replace(ours, default)
        return text

    for name in UNIT_FILES:
        installed = as_default((deployed.unit_dir / name).read_text())
        assert installed == (UNITS / name).read_text(), (
            f"deploy/systemd/{name} is out of date: ansible-playbook deploy/ansible/render-units.yml")
    dropin = (deployed.unit_dir / "fds-tractserver@d0.service.d/10-disk.conf").read_text()
    dropin = dropin.replace(str(deployed.disk("d0")), "/srv/sdb").replace("fds-tractserver@d0", "fds-tractserver@sdb")
    assert dropin == (UNITS / "fds-tractserver@sdb.service.d/10-disk.conf").read_text()


@pytest.mark.slow
def test_systemd_analyze_verify(deployed: Deployment) -> None:
    """The installed units (their paths all exist: this venv, the temp root) pass systemd's own check,
    template instances with their drop-ins included. Warnings count as failures."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    units = deployed.unit_dir
    names = [str(units / "fds-metaserver.service"), str(units / "fds-gateway.service"),
             str(units / "fds-minutesort-worker.service"), "fds-tractserver@d0.service", "fds-tractserver@d1.service"]
    run = subprocess.run([analyze, "verify", *names], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "SYSTEMD_LOG_COLOR": "0"})
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr


@pytest.mark.slow
def test_units_stay_sandboxed(deployed: Deployment) -> None:
    """systemd's own exposure score (0 best, 10 worst) stays at most 2.5 (1.7 when written), so
    dropping a hardening option shows up here."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package)")
    units = deployed.unit_dir
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:", "SYSTEMD_LOG_COLOR": "0"}
    for name in [str(units / "fds-metaserver.service"), str(units / "fds-gateway.service"),
                 str(units / "fds-minutesort-worker.service"), "fds-tractserver@d0.service"]:
        run = subprocess.run([analyze, "security", "--offline=true", "--threshold=25", "--no-pager", name],
                             capture_output=True, text=True, timeout=60, env=env)
        if "--offline" in run.stderr or "--threshold" in run.stderr:
            pytest.skip(f"this systemd-analyze has no offline security check: {run.stderr.strip()}")
        assert run.returncode == 0, name + "\n" + run.stdout[-2000:] + run.stderr


def _unit_commands(unit: Path, key: str, instance: str = "") -> list[list[str]]:
    lines = [line.split("=", 1)[1] for line in unit.read_text().splitlines() if line.startswith(f"{key}=")]
    return [shlex.split(line.replace("%i", instance)) for line in lines]


@pytest.fixture
def started(deployed: Deployment) -> Iterator[list[subprocess.Popen[bytes]]]:
    """The servers, started from the ExecStartPre and ExecStart lines of the installed units."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}
    procs: list[subprocess.Popen[bytes]] = []
    units = deployed.unit_dir
    try:
        for unit, instance in [("fds-metaserver.service", ""), ("fds-tractserver@.service", "d0"),
                               ("fds-tractserver@.service", "d1"), ("fds-gateway.service", ""),
                               ("fds-minutesort-worker.service", "")]:
            for pre in _unit_commands(units / unit, "ExecStartPre", instance):
                check = subprocess.run(pre, env=env, capture_output=True, text=True, timeout=60)
                assert check.returncode == 0, check.stderr
            (command,) = _unit_commands(units / unit, "ExecStart", instance)
            with open(deployed.root / f"{unit.split('.')[0]}{instance}.log", "wb") as log:
                procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        yield procs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait(what: str, ready: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow
def test_units_command_lines_start_a_cluster(deployed: Deployment, started: list[subprocess.Popen[bytes]]) -> None:
    """The unit command lines with the written configs: a metaserver, two tract servers (their
    failure domain and advertised URLs as configured), a gateway that stores a blob, and a standing
    MinuteSort worker that sorts a blob for a head that invites it."""
    meta = deployed.metaserver_url
    gateway = f"http://127.0.0.1:{deployed.ports['gateway']}"
    secret = deployed.config_dir / "secret"  # made by the play, the same on every host
    assert secret.stat().st_mode & 0o777 == 0o640
    auth = {"authorization": f"Bearer {mint(load_secret(secret), 'write')}"}

    def cluster_ready() -> bool:
        assert all(p.poll() is None for p in started), "a server exited; see the logs in " + str(deployed.root)
        status = httpx.get(f"{meta}/v1/cluster", headers=auth, timeout=5).json()
        return status["state"] == "ready" and sum(s["alive"] for s in status["servers"]) == 2

    _wait("two tract servers to register", cluster_ready)
    assert httpx.get(f"{meta}/v1/cluster", timeout=5).status_code == 401  # secure by default
    run = subprocess.run([str(deployed.venv / "bin" / "fds"), "status", "--metaserver", meta, "--json"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "FDS_SECRET_FILE": str(secret)})
    assert run.returncode == 0, run.stderr
    status = json.loads(run.stdout)
    ports = {deployed.ports["tractserver"], deployed.ports["d1"]}
    assert {s["url"] for s in status["servers"]} == {f"http://127.0.0.1:{p}" for p in ports}
    assert {s["domain"] for s in status["servers"]} == {"host0"}

    _wait("the gateway", lambda: httpx.get(f"{gateway}/healthz", timeout=5).status_code == 200)
    guid = httpx.post(f"{gateway}/v1/blobs", headers=auth, timeout=30).json()["guid"]
    assert httpx.put(f"{gateway}/v1/blobs/{guid}", content=b"deployed", headers=auth, timeout=30).status_code == 201
    assert httpx.get(f"{gateway}/v1/blobs/{guid}", headers=auth, timeout=30).content == b"deployed"

    worker = f"http://127.0.0.1:{deployed.ports['worker']}"
    _wait("the MinuteSort worker",
          lambda: httpx.get(f"{worker}/v1/status", headers=auth, timeout=5).json()["state"] == "idle")
    assert httpx.get(f"{worker}/v1/status", timeout=5).status_code == 401
    env = {**os.environ, "FDS_SECRET_FILE": str(secret)}

    def minutesort(*args: str) -> dict[str, Any]:
        run = subprocess.run([str(deployed.venv / "bin" / "fds-minutesort"), *args, "--metaserver", meta],
                             capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 0, run.stderr
        result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
        return result

    records = minutesort("gen", "--records", "20000", "--json")["input_blob"]
    manifest = deployed.root / "minutesort.json"
    minutesort("sort", records, "--worker-urls", worker, "--quiet", "--manifest", str(manifest))
    assert minutesort("validate", "--manifest", str(manifest), "--input", records)["valid"] is True


# --- The service tasks and handlers, against a stand-in systemctl ------------------------------------

FAKE_SYSTEMCTL = """\
#!{python}
# A stand-in for systemctl, enough for Ansible's systemd_service module: units in a JSON file.
import json, os, sys
path = os.environ["FAKE_SYSTEMCTL_STATE"]
with open(path) as fh:
    state = json.load(fh)
args = [a for a in sys.argv[1:] if not a.startswith("-")]
verb, unit = args[0], (args[1] if len(args) > 1 else "")
units = state["units"]
if verb == "show":
    u = units.get(unit)
    if u is None:
        print(f"Id={{unit}}\\nLoadState=not-found\\nActiveState=inactive")
    else:
        print(f"Id={{unit}}\\nLoadState=loaded\\nActiveState={{'active' if u['active'] else 'inactive'}}")
    sys.exit(0)
if verb == "is-enabled":
    enabled = units.get(unit, {{}}).get("enabled", False)
    print("enabled" if enabled else "disabled")
    sys.exit(0 if enabled else 1)
if verb in ("start", "restart", "stop", "enable", "disable"):
    u = units.setdefault(unit, {{"active": False, "enabled": False}})
    if verb in ("start", "restart", "stop"):
        u["active"] = verb != "stop"
    else:
        u["enabled"] = verb == "enable"
    state["log"].append([verb, unit])
    with open(path, "w") as fh:
        json.dump(state, fh)
    sys.exit(0)
sys.exit(0 if verb in ("daemon-reload", "daemon-reexec") else 1)
"""


@pytest.mark.slow
def test_services_start_what_is_stopped_and_restart_only_what_changed(deployed: Deployment) -> None:
    """With the services tag, against a stand-in systemctl: a stopped disk's server is enabled and
    started (and not restarted again by the handler), a running one whose config changed is
    restarted, and servers whose files did not change are left alone. The MinuteSort worker, stopped,
    is enabled and started like the others."""
    root = deployed.root
    fake = root / "fake-bin"
    fake.mkdir(exist_ok=True)
    (fake / "systemctl").write_text(FAKE_SYSTEMCTL.format(python=sys.executable))
    (fake / "systemctl").chmod(0o755)
    running = {"active": True, "enabled": True}
    units = {"fds-metaserver.service": running, "fds-gateway.service": running, "fds-s3.service": running,
             "fds-tractserver@d0.service": {"active": False, "enabled": False},
             "fds-tractserver@d1.service": running,
             "fds-minutesort-worker.service": {"active": False, "enabled": False}}
    state = root / "systemctl.json"
    state.write_text(json.dumps({"units": units, "log": []}))
    inventory = json.loads(json.dumps(deployed.inventory))
    inventory["all"]["vars"]["fds_tractserver_settings"]["fill_in_flight"] = 8  # both disks' configs change
    env = _ansible_env(root) | {"FAKE_SYSTEMCTL_STATE": str(state)}
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    _play(root, inventory, env=env)
    log = sorted(tuple(entry) for entry in json.loads(state.read_text())["log"])
    assert log == [("enable", "fds-minutesort-worker.service"), ("enable", "fds-tractserver@d0.service"),
                   ("restart", "fds-tractserver@d1.service"), ("start", "fds-minutesort-worker.service"),
                   ("start", "fds-tractserver@d0.service")]
