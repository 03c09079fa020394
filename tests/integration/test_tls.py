"""A small cluster with TLS on: self-signed certificates (a throwaway CA from trustme), every port HTTPS.

The client runs as the real ``fds`` command in a subprocess, trusting the CA
through ``$FDS_TLS_CA`` as an operator's would.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fds.local import LocalCluster
from tests.support.clusters import SMALL_TRACT, shared_cluster
from tests.support.credentials import AUTH, SECRET_FILE
from tests.support.tls import write_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_pki(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]) -> Iterator[LocalCluster]:
    yield from shared_cluster(tmp_path_factory, "tls", tractservers=3, replicas=2, gateway=True,
                              tls_cert=pki["cert"], tls_key=pki["key"], tls_ca=pki["ca"])


def _fds(*args: str, env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}
    return subprocess.run([sys.executable, "-m", "fds", *args], env={**base, **env}, input=stdin,
                          capture_output=True, timeout=120)


def test_every_server_advertises_and_serves_https(cluster: LocalCluster, pki: dict[str, Path]) -> None:
    trust = ssl.create_default_context(cafile=str(pki["ca"]))
    table = httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH, verify=trust).json()
    urls = [cluster.metaserver_url, cluster.gateway_url]
    urls += [s["url"] for s in table["servers"]] + [s["data_url"] for s in table["servers"]]
    assert all(url.startswith("https://127.0.0.1:") for url in urls), urls
    for url in urls:
        assert httpx.get(f"{url}/healthz", verify=trust).status_code in (200, 404)  # the data port has no /healthz
        with pytest.raises(httpx.HTTPError):  # plain HTTP to a TLS port gets no HTTP answer
            httpx.get(url.replace("https://", "http://") + "/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):  # nor one not trusting the CA
            httpx.get(f"{url}/healthz", timeout=5)


def test_blobs_round_trip_over_tls(cluster: LocalCluster, pki: dict[str, Path]) -> None:
    env = {"FDS_METASERVER": cluster.metaserver_url, "FDS_SECRET_FILE": str(SECRET_FILE), "FDS_TLS_CA": str(pki["ca"])}
    data = os.urandom(2 * SMALL_TRACT + 777)
    put = _fds("put", "-", env=env, stdin=data)
    assert put.returncode == 0, put.stderr
    guid = put.stdout.decode().strip()
    got = _fds("get", guid, "-", env=env)
    assert got.returncode == 0 and got.stdout == data, got.stderr
    # the gateway reads it over TLS from the tract servers, and serves it over TLS
    trust = ssl.create_default_context(cafile=str(pki["ca"]))
    assert httpx.get(f"{cluster.gateway_url}/v1/blobs/{guid}", headers=AUTH, verify=trust).content == data
    # a client that does not trust the CA fails with a message, not a traceback
    untrusting = _fds("get", guid, "-", env={k: v for k, v in env.items() if k != "FDS_TLS_CA"})
    err = untrusting.stderr.decode()
    assert untrusting.returncode != 0 and "certificate verify failed" in err and "Traceback" not in err, err


def test_replication_and_recovery_copy_over_tls(cluster: LocalCluster, pki: dict[str, Path]) -> None:
    """Server-to-server traffic (metadata prepares, recovery copies) uses TLS too: kill a server, the
    survivors re-replicate its rows, and the blob still reads back."""
    env = {"FDS_METASERVER": cluster.metaserver_url, "FDS_SECRET_FILE": str(SECRET_FILE), "FDS_TLS_CA": str(pki["ca"])}
    data = os.urandom(3 * SMALL_TRACT)
    guid = _fds("put", "-", env=env, stdin=data).stdout.decode().strip()
    victim = cluster.server_id("ts0")
    trust = ssl.create_default_context(cafile=str(pki["ca"]))
    before = httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH, verify=trust).json()
    cluster.kill("ts0")
    deadline = time.monotonic() + 60
    while True:  # declared dead, its rows handed to the survivors
        status = httpx.get(f"{cluster.metaserver_url}/v1/cluster", headers=AUTH, verify=trust).json()
        if any(s["id"] == victim and s["state"] == "dead" for s in status["servers"]):
            break
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
    status = cluster.wait_healthy(timeout=60)
    assert status["healthy"] and status["recovery"]["rows_under_replicated"] == 0
    after = httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH, verify=trust).json()
    ids = [s["id"] for s in after["servers"]]
    assert after["version"] > before["version"]
    assert all(ids[i] != victim for row in after["rows"] for i in row)
    assert status["recovery"]["last_seconds"] is not None  # a repair ran to completion
    got = _fds("get", guid, "-", env=env)
    assert got.returncode == 0 and got.stdout == data, got.stderr


@pytest.mark.parametrize(("flags", "says"), [
    (["--tls-cert", "CERT"], "set both tls_cert and tls_key"),
    (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], "no such file"),
    (["--tls-cert", "CA", "--tls-key", "CA"], "not a usable PEM certificate and key"),
])
def test_bad_tls_settings_stop_the_start_with_a_message(tmp_path: Path, pki: dict[str, Path], flags: list[str],
                                                        says: str) -> None:
    flags = [{"CERT": str(pki["cert"]), "CA": str(pki["ca"])}.get(f, f) for f in flags]
    proc = subprocess.run([sys.executable, "-m", "fds", "metaserver", "--dir", str(tmp_path / "m"), "--port", "0",
                           "--secret-file", str(SECRET_FILE), *flags], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
