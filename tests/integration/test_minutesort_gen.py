"""`fds-minutesort gen` writes exactly gensort's records into a blob, through a real cluster."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from apps.minutesort._blobio import iter_record_tracts
from apps.minutesort._gensort import generate
from fds.client import Client
from fds.local import LocalCluster
from tests.support.credentials import SECRET_FILE


def _gen(metaserver: str | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "apps.minutesort.cli", "gen", *args]
    if metaserver:
        command += ["--metaserver", metaserver]
    return subprocess.run(command, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "FDS_SECRET_FILE": str(SECRET_FILE)},
                          cwd=cwd)


def _blob_bytes(metaserver: str, guid: str) -> bytes:
    async def read() -> bytes:
        async with Client(metaserver) as fds:
            blob = await fds.open_blob(guid)
            return b"".join([bytes(chunk) async for chunk in iter_record_tracts(blob)])

    return asyncio.run(read())


@pytest.mark.parametrize("flags", [[], ["--skew"], ["--ascii"]])
def test_gen_matches_gensort(cluster_k1: LocalCluster, flags: list[str]) -> None:
    # 1 MiB tracts hold 10,485 records: 25,000 records span three tracts, the last one short.
    result = _gen(cluster_k1.metaserver_url, "--records", "25000", "--start", "123456789", "--json", *flags)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["records"] == 25000 and report["bytes"] == 2_500_000
    expected = generate(123456789, 25000, ascii="--ascii" in flags, skew="--skew" in flags).tobytes()
    assert _blob_bytes(cluster_k1.metaserver_url, report["input_blob"]) == expected


def test_gen_prints_the_guid(cluster_k1: LocalCluster) -> None:
    """As the README says, and as `fds put` does: the GUID alone on stdout, so GUID=$(... gen ...) works."""
    result = _gen(cluster_k1.metaserver_url, "--records", "100")
    assert result.returncode == 0, result.stderr
    guid = result.stdout.strip()
    assert str(uuid.UUID(guid)) == guid, result.stdout
    assert _blob_bytes(cluster_k1.metaserver_url, guid) == generate(0, 100).tobytes()
    assert "generated 100 records" in result.stderr


@pytest.mark.slow
def test_gen_refuses_bad_input(cluster_k1: LocalCluster, tmp_path: Path) -> None:
    assert _gen(cluster_k1.metaserver_url, "--records", "-5").returncode == 2
    assert _gen(cluster_k1.metaserver_url).returncode == 2
    bad_size = _gen(cluster_k1.metaserver_url, "--size", "lots")
    assert bad_size.returncode == 2 and "use a number" in bad_size.stderr
    nowhere = _gen(None, "--records", "10", cwd=tmp_path)  # no flag, no env, no ./.fds here
    assert nowhere.returncode == 3 and "fds local up" in nowhere.stderr
