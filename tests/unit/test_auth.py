"""Tokens, secrets and credential discovery (pure logic; the servers' side is in tests/integration/test_auth.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fds.auth import AuthError, Credentials, Verifier, load_secret, mint, required_scope, write_secret
from fds.errors import Unauthorized

SECRET = b"a" * 64


def test_mint_and_verify() -> None:
    verifier = Verifier(secret=SECRET)
    for scope in ("read", "write", "cluster"):
        token = mint(SECRET, scope, 60)  # type: ignore[arg-type]
        assert token.startswith(f"fds1.{scope}.")
        assert verifier.verify(token) == scope


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the MAC
    lambda t: t.replace("fds1.read.", "fds1.cluster."),  # the scope: a read token cannot promote itself
    lambda t: t.replace(".read.", ".read.9"),  # the expiry
    lambda t: "fds2" + t[4:],
    lambda t: t + ".extra",
    lambda t: "",
    lambda t: "fds1.read.soon.00.mac",
])
def test_tampered_tokens_are_refused(mutate: object) -> None:
    token = mint(SECRET, "read", 60)
    with pytest.raises(Unauthorized) as err:
        Verifier(secret=SECRET).verify(mutate(token))  # type: ignore[operator]
    assert err.value.code == "bad_token"


def test_expiry_and_the_cache() -> None:
    verifier = Verifier(secret=SECRET)
    token = mint(SECRET, "write", 10, now=1000.0)
    assert verifier.verify(token, now=1005.0) == "write"
    with pytest.raises(Unauthorized) as err:  # the cache remembers the expiry, not a verdict
        verifier.verify(token, now=1011.0)
    assert err.value.code == "token_expired" and "expired at" in err.value.message
    small = Verifier(secret=SECRET, cache_size=2)
    for _ in range(5):
        small.verify(mint(SECRET, "read", 60))
    assert len(small._cache) <= 2


def test_other_secret_and_token_only_verifier() -> None:
    token = mint(SECRET, "write", 60)
    with pytest.raises(Unauthorized):
        Verifier(secret=b"b" * 64).verify(token)
    holder = Verifier(token=token)  # a process holding only a token admits that token alone
    assert holder.verify(token) == "write"
    with pytest.raises(Unauthorized):
        holder.verify(mint(SECRET, "write", 60))


def test_required_scope() -> None:
    assert required_scope("GET", "/healthz") is None
    assert required_scope("GET", "/v1/table") == "read"
    assert required_scope("HEAD", "/v1/tracts/x/0") == "read"
    assert required_scope("PUT", "/v1/tracts/x/0") == "write"
    assert required_scope("GET", "/v1/admin/anything") == "cluster"
    assert required_scope("POST", "/v1/servers/ts-1/heartbeat") == "cluster"
    assert required_scope("PUT", "/v1/internal/meta/x") == "cluster"


def test_secret_files(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    secret = write_secret(path)
    assert path.stat().st_mode & 0o777 == 0o600 and load_secret(path) == secret.encode()
    with pytest.raises(FileExistsError):
        write_secret(path)
    path.chmod(0o644)
    with pytest.raises(AuthError, match="readable by everyone"):
        load_secret(path)
    short = tmp_path / "short"
    write_secret(short, "abc")
    with pytest.raises(AuthError, match="too short"):
        load_secret(short)
    with pytest.raises(AuthError, match="cannot read"):
        load_secret(tmp_path / "missing")


def test_discovery_order(tmp_path: Path) -> None:
    secret_file = tmp_path / "s"
    write_secret(secret_file, "c" * 64)
    local = tmp_path / "project" / ".fds"
    local.mkdir(parents=True)
    other = tmp_path / "other"
    write_secret(other, "d" * 64)
    (local / "cluster.json").write_text(json.dumps({"secret_file": str(other)}))
    cwd = local.parent
    env = {"FDS_TOKEN": "tok", "FDS_SECRET_FILE": str(secret_file)}
    assert Credentials.discover(token="given", environ=env, cwd=cwd).token == "given"
    assert Credentials.discover(secret_file=other, environ=env, cwd=cwd).secret == b"d" * 64
    assert Credentials.discover(environ=env, cwd=cwd).token == "tok"
    assert Credentials.discover(environ={"FDS_SECRET_FILE": str(secret_file)}, cwd=cwd).secret == b"c" * 64
    assert Credentials.discover(environ={}, cwd=cwd).secret == b"d" * 64  # ./.fds, as fds local up left it
    nothing = Credentials.discover(environ={}, cwd=tmp_path)
    assert nothing.headers() == {} and nothing.source == "none"


def test_credentials_renew_before_expiry() -> None:
    creds = Credentials(secret=SECRET, scope="read", ttl=60)
    first = creds.current()
    assert first == creds.current()  # reused while fresh
    creds._renew_at = 0.0  # due
    second = creds.current()
    assert second != first and Verifier(secret=SECRET).verify(second or "") == "read"
    assert creds.headers() == {"authorization": f"Bearer {second}"}
