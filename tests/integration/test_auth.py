"""Authentication over real HTTP: every route of every server refuses a request without valid credentials.

The routes are not listed by hand: each server's own OpenAPI document
(fetched with a token) names them, so a route added later is covered too.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fds.auth import load_secret, mint, write_secret
from fds.local import LocalCluster
from tests.support.clusters import shared_cluster
from tests.support.credentials import AUTH, SECRET_FILE

_PARAM = re.compile(r"\{(\w+)\}")
_SAMPLE = {"guid": uuid.UUID(int=7).hex, "tract": "0", "server_id": "ts-000000000000"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """k=1 with a gateway, so every role is there."""
    yield from shared_cluster(tmp_path_factory, "auth", tractservers=2, gateway=True)


def _servers(cluster: LocalCluster) -> dict[str, str]:
    table = httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH).json()
    return {"metaserver": cluster.metaserver_url, "tractserver": table["servers"][0]["url"],
            "gateway": cluster.gateway_url}


def _routes(base: str) -> list[tuple[str, str]]:
    """(method, path) of every route the server documents, plus the documentation itself."""
    spec = httpx.get(f"{base}/openapi.json", headers=AUTH).json()
    routes = [(method.upper(), _PARAM.sub(lambda m: _SAMPLE.get(m.group(1), "x"), path))
              for path, item in spec["paths"].items() for method in item]
    return routes + [("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/no/such/route")]


def _refused(resp: httpx.Response, status: int, code: str) -> str:
    assert resp.status_code == status, (resp.request.method, resp.request.url, resp.status_code, resp.text)
    if status == 401:
        assert resp.headers["www-authenticate"].startswith("Bearer")
    if resp.request.method == "HEAD":  # no body to explain itself in
        return "fds token (HEAD: status only)"
    error = resp.json()["error"]
    assert error["code"] == code, error
    return str(error["message"])


@pytest.mark.parametrize("role", ["metaserver", "tractserver", "gateway"])
def test_every_route_refuses_missing_and_bad_credentials(cluster: LocalCluster, role: str) -> None:
    base = _servers(cluster)[role]
    routes = _routes(base)
    assert len(routes) > 4
    other_secret = b"f" * 64  # some other cluster's secret
    bad = {
        "no_credentials": {},
        "bad_token": {"authorization": "Bearer fds1.cluster.99999999999.0000.AAAA"},
        "token_expired": {"authorization": f"Bearer {mint(load_secret(SECRET_FILE), 'cluster', -5)}"},
    }
    for method, path in routes:
        if path == "/healthz":
            assert httpx.request(method, base + path).status_code == 200  # the one open route
            continue
        for code, headers in bad.items():
            message = _refused(httpx.request(method, base + path, headers=headers), 401, code)
            assert "fds token" in message or "expired" in message
        forged = {"authorization": f"Bearer {mint(other_secret, 'cluster')}"}
        _refused(httpx.request(method, base + path, headers=forged), 401, "bad_token")
        _refused(httpx.request(method, base + path, headers={"authorization": "Basic dXNlcjpwYXNz"}), 401, "bad_token")


@pytest.mark.parametrize("role", ["metaserver", "tractserver", "gateway"])
def test_scopes_nest(cluster: LocalCluster, role: str) -> None:
    """A read token may GET and HEAD; a write token may not call cluster routes; nothing a token
    may do is refused for its scope."""
    base = _servers(cluster)[role]
    read = {"authorization": f"Bearer {cluster.token('read')}"}
    write = {"authorization": f"Bearer {cluster.token('write')}"}
    for method, path in _routes(base):
        if path == "/healthz":
            continue
        cluster_route = path.startswith(("/v1/internal/", "/v1/admin/", "/v1/servers"))
        as_read = httpx.request(method, base + path, headers=read)
        if method in ("GET", "HEAD") and not cluster_route:
            assert as_read.status_code not in (401, 403), (method, path, as_read.text)
        else:
            assert "may not" in _refused(as_read, 403, "scope")
        as_write = httpx.request(method, base + path, headers=write)
        if cluster_route:
            _refused(as_write, 403, "scope")
        else:
            assert as_write.status_code not in (401, 403), (method, path, as_write.text)


def test_data_port_refuses_without_credentials(cluster: LocalCluster) -> None:
    table = httpx.get(f"{cluster.metaserver_url}/v1/table", headers=AUTH).json()
    data = table["servers"][0]["data_url"]
    url = f"{data}/v1/tracts/{_SAMPLE['guid']}/0?version={table['version']}&incarnation=1"
    _refused(httpx.put(url, content=b"x"), 401, "no_credentials")
    _refused(httpx.get(url, headers={"authorization": "Bearer nonsense"}), 401, "bad_token")
    _refused(httpx.put(url, content=b"x", headers={"authorization": f"Bearer {cluster.token('read')}"}), 403, "scope")
    # with a token the request gets past authentication (to a 4xx about the tract itself)
    assert httpx.get(url, headers=AUTH).status_code not in (401, 403)


def test_a_browser_may_send_the_token_as_a_cookie(cluster: LocalCluster) -> None:
    url = f"{cluster.metaserver_url}/v1/cluster"
    assert httpx.get(url, headers={"cookie": f"theme=dark; fds_token={cluster.token('read')}"}).status_code == 200
    _refused(httpx.get(url, headers={"cookie": "fds_token=forged"}), 401, "bad_token")


def test_gateway_with_a_read_only_token(cluster: LocalCluster) -> None:
    """The gateway checks the caller's scope itself: a read token reads blobs and may not write them."""
    gw = cluster.gateway_url
    guid = httpx.post(f"{gw}/v1/blobs", headers=AUTH).json()["guid"]
    assert httpx.put(f"{gw}/v1/blobs/{guid}", content=b"hello", headers=AUTH).status_code == 201
    read = {"authorization": f"Bearer {cluster.token('read')}"}
    assert httpx.get(f"{gw}/v1/blobs/{guid}", headers=read).content == b"hello"
    _refused(httpx.put(f"{gw}/v1/blobs/{guid}", content=b"bye", headers=read), 403, "scope")
    _refused(httpx.delete(f"{gw}/v1/blobs/{guid}", headers=read), 403, "scope")
    assert httpx.get(f"{gw}/v1/blobs/{guid}", headers=read).content == b"hello"


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    ready = tmp_path / "ready"
    ready.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}  # FDS_SECRET_FILE would configure it
    return subprocess.Popen([sys.executable, "-m", "fds", *args, "--port", "0", "--ready-file", str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_servers_refuse_to_start_without_a_secret(tmp_path: Path) -> None:
    """Secure by default: no secret_file and no insecure = 1 is a start-up error that says what to do."""
    for role in (["metaserver", "--dir", str(tmp_path / "m")], ["gateway"],
                 ["tractserver", "--dir", str(tmp_path / "t"), "--metaserver", f"http://127.0.0.1:{_free_port()}"]):
        proc = _start(role, tmp_path)
        try:
            out, _ = proc.communicate(timeout=60)
        finally:  # a server that started after all must not outlive the test
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode != 0 and "no cluster secret" in out and "fds secret new" in out, out
        assert "Traceback" not in out
    open_secret = tmp_path / "open"
    write_secret(open_secret)
    open_secret.chmod(0o644)
    proc = _start(["gateway", "--secret-file", str(open_secret)], tmp_path)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and "readable by everyone" in out and "chmod o-r" in out, out


def test_insecure_servers_admit_everyone(tmp_path: Path) -> None:
    proc = _start(["metaserver", "--dir", str(tmp_path / "m"), "--insecure"], tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "ready").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        url = (tmp_path / "ready").read_text().strip()
        assert httpx.get(f"{url}/v1/cluster").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert "insecure" in out


def _fds(*args: str, env: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fds", *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env})


def test_fds_secret_and_token_commands(tmp_path: Path, cluster: LocalCluster) -> None:
    secret = tmp_path / "s"
    made = _fds("secret", "new", str(secret), env={})
    assert made.returncode == 0 and secret.stat().st_mode & 0o777 == 0o600 and len(load_secret(secret)) == 64
    again = _fds("secret", "new", str(secret), env={})
    assert again.returncode == 1 and "exists" in again.stderr  # never replaced in place
    token = _fds("token", "--read-only", "--ttl", "60", env={"FDS_SECRET_FILE": str(SECRET_FILE)})
    assert token.returncode == 0 and token.stdout.startswith("fds1.read.")
    headers = {"authorization": f"Bearer {token.stdout.strip()}"}
    assert httpx.get(f"{cluster.metaserver_url}/v1/table", headers=headers).status_code == 200
    assert httpx.post(f"{cluster.metaserver_url}/v1/admin/tick", headers=headers).status_code == 403
    none = _fds("token", env={})
    assert none.returncode == 1 and "no cluster secret" in none.stderr


def test_status_page_login_sets_a_cookie_and_drops_the_token_from_the_address(cluster: LocalCluster) -> None:
    page = f"{cluster.metaserver_url}/status"
    token = cluster.token("read", 600)
    resp = httpx.get(page, params={"token": token})
    assert resp.status_code == 303 and resp.headers["location"] == "/status"
    cookie = resp.headers["set-cookie"]
    assert cookie.startswith(f"fds_token={token};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    max_age = int(re.search(r"Max-Age=(\d+)", cookie).group(1))  # type: ignore[union-attr]
    assert 500 < max_age <= 600  # the cookie lasts as long as the token
    with httpx.Client() as browser:  # follows the redirect with the cookie, as a browser does
        shown = browser.get(page, params={"token": token}, follow_redirects=True)
        assert shown.status_code == 200 and "text/html" in shown.headers["content-type"]
        assert str(shown.url) == page
        assert browser.get(f"{cluster.metaserver_url}/v1/cluster").status_code == 200
    _refused(httpx.get(page, params={"token": "forged"}), 401, "bad_token")
    _refused(httpx.get(f"{cluster.metaserver_url}/v1/table", params={"token": token}), 401, "no_credentials")
