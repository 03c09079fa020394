"""`fds local up`: one command, a whole cluster; run again, the same cluster with its data."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fds.cli._local import LocalCluster
from fds.client import Client
from tests.conftest import AUTH, SECRET_FILE, SMALL_TRACT


def _roundtrip(metaserver: str, data: bytes, guid: str | None = None, secret_file: str | None = None) -> str:
    async def main() -> str:
        async with Client(metaserver, secret_file=secret_file) as fds:
            if guid is None:
                blob = await fds.create_blob()
                await blob.extend(2)
                await blob.write_tracts([(0, data), (1, data[::-1])])
            else:
                blob = await fds.open_blob(guid)
            assert await blob.read_tract(0) == data
            assert await blob.read_tract(1) == data[::-1]
            return blob.guid

    return asyncio.run(main())


def test_restart_on_same_dir_keeps_data_and_stored_settings(tmp_path: Path) -> None:
    data = os.urandom(SMALL_TRACT)
    first = LocalCluster(tmp_path / "c", tractservers=3, replicas=3, tract_size=SMALL_TRACT, port=0,
                         gateway=False, heartbeat_interval=0.2, secret_file=SECRET_FILE)
    with first:
        guid = _roundtrip(first.metaserver_url, data)
        table = httpx.get(f"{first.metaserver_url}/v1/table", headers=AUTH).json()
    again = LocalCluster(tmp_path / "c", tractservers=5, replicas=1, port=0, gateway=False, heartbeat_interval=0.2)
    assert again.settings() == {"tractservers": 3, "replicas": 3, "tract_size": SMALL_TRACT}
    assert any("--tractservers 5 ignored" in w for w in again.warnings)
    assert any("--replicas 1 ignored" in w for w in again.warnings)
    with again:
        _roundtrip(again.metaserver_url, data, guid)
        # Same servers, same rows; only addresses moved (new ports), which bumps the table version.
        now = httpx.get(f"{again.metaserver_url}/v1/table", headers=AUTH).json()
        assert now["rows"] == table["rows"] and now["row_versions"] == table["row_versions"]
        assert [s["id"] for s in now["servers"]] == [s["id"] for s in table["servers"]]


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
        assert roles == ["gateway", "metaserver", "tractserver", "tractserver"]
        children = [c["pid"] for c in info["children"]]
        for pid in children:
            os.kill(pid, 0)  # alive
        assert info["metaserver"] in out and info["gateway"] in out
        assert httpx.get(f"{info['gateway']}/healthz").status_code == 200  # the one open route
        secret = Path(info["secret_file"])  # secure by default: a fresh secret, for its owner only
        assert secret == (tmp_path / "d" / "secret").resolve() and secret.stat().st_mode & 0o777 == 0o600
        assert httpx.get(f"{info['metaserver']}/v1/table").status_code == 401
        _roundtrip(info["metaserver"], os.urandom(1000), secret_file=str(secret))
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
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
