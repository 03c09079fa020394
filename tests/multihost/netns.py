"""A private network of "hosts" made of Linux network namespaces, for multi-host tests.

Layout (nothing is added to the root namespace)::

    ns <run>-switch:  bridge "br0", one port "p-<host>" per host
    ns <run>-<host>:  "lo" and "eth0" (the other end of that port), address 10.77.0.N/24

Every namespace of one :class:`Network` is named ``fdsmh<pid>x<n>-...``: ``<pid>`` is the
test process that made it, ``<n>`` counts networks within that process. Two test runs at once
therefore never share a name, and :func:`remove_stale` can tell a left-over of an aborted run
(its pid is gone) from a network in use. Every process started with :meth:`Network.popen` (or
handed to :meth:`Network.track`) is tracked by PID and stopped in :meth:`Network.close`, which
then deletes the namespaces (and with the switch namespace, every veth). Use the network as a
context manager, so that happens even when the test fails.

Cutting a host off sets its switch port down: the host keeps its address and its processes
keep running, but nothing reaches it and nothing leaves it, as if its cable were pulled.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO

__all__ = ["Host", "Network", "unavailable_reason", "remove_stale", "PREFIX"]

PREFIX = "fdsmh"
"""Every namespace this helper makes starts with this, then the owner's pid."""

_OWNED = re.compile(rf"^{PREFIX}(\d+)x\d+-")
_counter = itertools.count()


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS``; on failure raise with ip's own message."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip() or f'exit {done.returncode}'}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    listed = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in listed.splitlines() if line.strip()]


def _pids_in(netns: str) -> list[int]:
    """PIDs of every process inside ``netns`` (``ip netns pids``)."""
    out = _ip("netns", "pids", netns, check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def _delete_namespace(netns: str) -> None:
    """Stop whatever still runs in one of *our* namespaces (by PID), then delete it."""
    for pid in _pids_in(netns):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _ip("netns", "delete", netns, check=False)


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be used here, or None if they can (probes by making one)."""
    if shutil.which("ip") is None:
        return "the `ip` command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"{PREFIX}{os.getpid()}x{next(_counter)}-probe"
    done = _ip("netns", "add", probe, check=False)
    if done.returncode != 0:
        return f"`ip netns add` failed: {done.stderr.strip() or f'exit {done.returncode}'}"
    try:
        bridge = _ip("-n", probe, "link", "add", "name", "br0", "type", "bridge", check=False)
        if bridge.returncode != 0:
            return f"cannot create a bridge in a namespace: {bridge.stderr.strip()}"
        veth = _ip("-n", probe, "link", "add", "name", "a", "type", "veth", "peer", "name", "b", check=False)
        if veth.returncode != 0:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
    finally:
        _ip("netns", "delete", probe, check=False)
    return None


def remove_stale() -> list[str]:
    """Delete namespaces left by runs of this helper whose process is gone; returns their names.

    Only names of the form ``fdsmh<pid>x<n>-...`` whose ``<pid>`` is no longer
    running are touched, so a run in progress, or anything else's namespace,
    is left alone.
    """
    removed = []
    for netns in _namespaces():
        owner = _OWNED.match(netns)
        if owner and not _pid_alive(int(owner.group(1))):
            _delete_namespace(netns)
            removed.append(netns)
    return removed


@dataclass
class Host:
    """One namespace with one address on the private network."""

    name: str
    netns: str
    address: str
    port: str
    """The switch's port for this host (in the switch namespace)."""


@dataclass
class Network:
    """A switch and the hosts plugged into it. ``with Network() as net: ...`` tears it all down."""

    subnet: str = "10.77.0"
    """First three octets; hosts get ``subnet.N/24``. Each network has its own switch, so two
    networks may use the same subnet without seeing each other."""
    run: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}x{next(_counter)}")
    hosts: dict[str, Host] = field(default_factory=dict)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _made: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.run}-switch"

    def __enter__(self) -> Network:
        try:
            self._add_namespace(self.switch)
            _ip("-n", self.switch, "link", "add", "name", "br0", "type", "bridge")
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, netns: str) -> None:
        _ip("netns", "add", netns)
        self._made.append(netns)
        _ip("-n", netns, "link", "set", "lo", "up")

    def add_host(self, name: str, number: int) -> Host:
        """A new namespace ``name`` at ``subnet.number``, plugged into the switch."""
        if name in self.hosts or not re.fullmatch(r"[a-z0-9]{1,12}", name):
            raise ValueError(f"host name {name!r} is taken or not 1-12 lowercase letters and digits")
        host = Host(name, f"{self.run}-{name}", f"{self.subnet}.{number}", f"p-{name}")
        self._add_namespace(host.netns)
        _ip("link", "add", "name", "eth0", "netns", host.netns, "type", "veth",
            "peer", "name", host.port, "netns", self.switch)
        _ip("-n", self.switch, "link", "set", host.port, "master", "br0", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
        _ip("-n", host.netns, "link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def cut(self, name: str) -> None:
        """Pull the host's cable: its switch port goes down; its processes keep running."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def restore(self, name: str) -> None:
        """Plug the host's cable back in."""
        _ip("-n", self.switch, "link", "set", self.hosts[name].port, "up")

    def exec_prefix(self, name: str) -> list[str]:
        """The command prefix that runs a program inside host ``name``: ``ip netns exec``, which execs it,
        so the PID is the program's. Start a process with it elsewhere, then :meth:`track` it."""
        return ["ip", "netns", "exec", self.hosts[name].netns]

    def track(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop ``proc`` (by its PID) in :meth:`close`."""
        self.procs.append(proc)

    def popen(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              stdin: int | IO[bytes] | None = subprocess.DEVNULL,
              stdout: int | IO[bytes] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside host ``name`` (:meth:`exec_prefix`), tracked and stopped by :meth:`close`."""
        proc = subprocess.Popen([*self.exec_prefix(name), *argv], stdin=stdin, stdout=stdout, env=env,
                                start_new_session=True)
        self.track(proc)
        return proc

    def close(self, timeout: float = 10.0) -> None:
        """Stop every tracked process (SIGTERM, then SIGKILL), then delete every namespace made."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for netns in reversed(self._made):
            _delete_namespace(netns)  # anything a tracked process left behind in it goes too
        self._made.clear()
