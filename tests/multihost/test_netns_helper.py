"""The namespace helper itself: hosts reach each other over their private addresses, a cut host is
unreachable until restored, teardown leaves nothing behind, and stale clean-up touches only the
left-overs of runs that are gone."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.multihost import netns
from tests.multihost.netns import Network, remove_stale, unavailable_reason

_CONNECT = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5).close()
except OSError as exc:
    print(type(exc).__name__, exc)
    sys.exit(1)
"""
_LISTEN = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
while True:
    server.accept()[0].close()
"""


@pytest.fixture
def net() -> Iterator[Network]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    with Network() as network:
        yield network


def _connects(net: Network, source: str, address: str, port: int) -> bool:
    proc = net.popen(source, [sys.executable, "-c", _CONNECT, address, str(port)], stdout=subprocess.PIPE)
    proc.communicate(timeout=30)
    return proc.returncode == 0


def test_hosts_talk_over_private_addresses_and_a_cut_host_is_unreachable(net: Network) -> None:
    a = net.add_host("a", 21)
    b = net.add_host("b", 22)
    server = net.popen("b", [sys.executable, "-c", _LISTEN, b.address, "7400"], stdout=subprocess.PIPE)
    assert server.stdout is not None and server.stdout.readline() == b"listening\n"
    assert server.pid in netns._pids_in(b.netns)  # `ip netns exec` execs: the tracked PID is the program
    assert not netns._pids_in(a.netns)

    assert _connects(net, "a", b.address, 7400)
    assert not _connects(net, "a", "127.0.0.1", 7400)  # b's port is not on a's loopback
    net.cut("b")
    assert not _connects(net, "a", b.address, 7400)
    assert server.poll() is None  # cut off, not stopped
    net.restore("b")
    assert _connects(net, "a", b.address, 7400)

    names = [net.switch, a.netns, b.netns]
    net.close()
    assert server.returncode is not None
    assert not set(names) & set(netns._namespaces())


def test_remove_stale_removes_only_namespaces_of_runs_that_are_gone() -> None:
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"network namespaces unavailable: {reason}")
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    stale = f"{netns.PREFIX}{gone.pid}x0-stale"
    live = f"{netns.PREFIX}{os.getpid()}x999-live"
    for name in (stale, live):
        netns._ip("netns", "add", name)
    try:
        removed = remove_stale()
        present = set(netns._namespaces())
        assert stale in removed and stale not in present
        assert live not in removed and live in present
    finally:
        for name in (stale, live):
            netns._ip("netns", "delete", name, check=False)
