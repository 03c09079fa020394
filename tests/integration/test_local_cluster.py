"""`fds local up` and fds.local: one command (or one object), a whole cluster; run again, the same cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fds.local import LocalCluster
from tests.support.clusters import SMALL_TRACT
from tests.support.credentials import AUTH, SECRET_FILE
from tests.support.processes import stop_process


def _write_two_tracts(cluster: LocalCluster, data: bytes) -> str:
    """Through ``cluster.client()`` (the async client): a new blob of two tracts; its GUID."""
    async def main() -> str:
        async with cluster.client() as fds:
            blob = await fds.create_blob()
            await blob.extend(2)
            await blob.write_tracts([(0, data), (1, data[::-1])])
            return blob.guid

    return asyncio.run(main())


def _read_two_tracts(cluster: LocalCluster, guid: str) -> tuple[bytes, bytes]:
    """Through ``cluster.sync_client()`` (the blocking client)."""
    with cluster.sync_client() as fds:
        blob = fds.open_blob(guid)
        return bytes(blob.read_tract(0)), bytes(blob.read_tract(1))


@pytest.mark.slow
def test_restart_on_same_dir_keeps_data_and_stored_settings(tmp_path: Path) -> None:
    data = os.urandom(SMALL_TRACT)
    first = LocalCluster(tmp_path / "c", tractservers=3, replicas=3, tract_size=SMALL_TRACT, port=0,
                         gateway=False, heartbeat_interval=0.2, secret_file=SECRET_FILE)
    with first:
        guid = _write_two_tracts(first, data)
        assert _read_two_tracts(first, guid) == (data, data[::-1])
        table = httpx.get(f"{first.metaserver_url}/v1/table", headers=AUTH).json()
    # A restarted metaserver gives its members one heartbeat timeout to come back; on a busy machine the
    # tract servers can take longer than the tests' 3 s to start, and would be declared dead and re-replicated.
    again = LocalCluster(tmp_path / "c", tractservers=5, replicas=1, port=0, gateway=False, heartbeat_interval=0.2,
                         heartbeat_timeout=30.0)
    assert again.settings() == {"tractservers": 3, "replicas": 3, "tract_size": SMALL_TRACT}
    assert any("--tractservers 5 ignored" in w for w in again.warnings)
    assert any("--replicas 1 ignored" in w for w in again.warnings)
    with again:
        assert _read_two_tracts(again, guid) == (data, data[::-1])
        # Same servers, same rows; only addresses moved (new ports), which bumps the table version.
        now = httpx.get(f"{again.metaserver_url}/v1/table", headers=AUTH).json()
        assert now["rows"] == table["rows"] and now["row_versions"] == table["row_versions"]
        assert [s["id"] for s in now["servers"]] == [s["id"] for s in table["servers"]]


def test_a_server_that_cannot_start_is_a_runtime_error_and_leaves_nothing_running(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        cluster = LocalCluster(tmp_path / "c", tractservers=1, port=taken.getsockname()[1], gateway=False,
                               secret_file=SECRET_FILE)
        with pytest.raises(RuntimeError, match="metaserver exited with status") as caught:
            cluster.start()
    assert "address already in use" in str(caught.value).lower()  # the end of its log says why
    assert cluster.children and not any(c.alive() for c in cluster.children)


def test_fds_local_up_refuses_settings_that_cannot_work(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "fds", "local", "up", "--dir", str(tmp_path / "d"),
                          "--tractservers", "2", "--replicas", "3"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr == "fds local up: 3 replicas need at least 3 tract servers, not 2\n"
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_fds_local_up_command(tmp_path: Path) -> None:
    """The real command: prints endpoints, writes cluster.json with PIDs, stops every child on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fds", "local", "up", "--dir", str(tmp_path / "d"), "--port", "0",
         "--tractservers", "2", "--tract-size", str(SMALL_TRACT)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: list[int] = []
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ready.") or time.monotonic() > deadline:
                break
        out = "".join(lines)
        assert "ready." in out, out
        assert "k=1" in out  # fewer than 3 servers: k=1 by default
        info = json.loads((tmp_path / "d" / "cluster.json").read_text())
        roles = sorted(c["role"] for c in info["children"])
        assert roles == ["gateway", "metaserver", "s3", "tractserver", "tractserver"]
        children = [c["pid"] for c in info["children"]]
        for pid in children:
            os.kill(pid, 0)  # alive
        assert info["metaserver"] in out and info["gateway"] in out
        assert httpx.get(f"{info['gateway']}/healthz").status_code == 200  # the one open route
        secret = Path(info["secret_file"])  # secure by default: a fresh secret, for its owner only
        assert secret == (tmp_path / "d" / "secret").resolve() and secret.stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"{info['metaserver']}/v1/table").status_code == 401
        # Another process attaches to the running cluster through its cluster file, and uses it.
        attached = LocalCluster.open(tmp_path / "d")
        assert attached.metaserver_url == info["metaserver"] and attached.secret_file == secret
        assert attached.wait_healthy(10)["healthy"]
        data = os.urandom(1000)
        assert _read_two_tracts(attached, _write_two_tracts(attached, data)) == (data, data[::-1])
        with pytest.raises(RuntimeError, match="belong to the process that started them"):
            attached.kill("ts0")
        assert all(c.alive() for c in attached.children)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for pid in children:
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"child {pid} still running after fds local up stopped")
    finally:
        # A failed assertion may come before `children` was read: take them from the cluster file, and let
        # the command stop them itself first (SIGKILL of the command alone would orphan them).
        cluster_file = tmp_path / "d" / "cluster.json"
        if not children and cluster_file.exists():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                children = [c["pid"] for c in json.loads(cluster_file.read_text())["children"]]
        stop_process(proc, 30)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
