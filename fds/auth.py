"""Cluster authentication: one secret, signed expiring tokens, three scopes.

Every fds cluster has a **secret** (32 random bytes, hex, in a file readable
by its owner only; ``fds local up`` makes one, ``fds secret new FILE`` too).
Whoever holds it can **mint tokens**::

    fds1.<scope>.<expires>.<nonce>.<mac>     mac = HMAC-SHA256(secret, "fds1.<scope>.<expires>.<nonce>")

A token is sent as ``Authorization: Bearer TOKEN`` (browsers may send it as
the cookie ``fds_token`` instead). Scopes nest: ``read`` may GET and HEAD,
``write`` may also change blobs, ``cluster`` (what servers use between
themselves) may also call the membership, internal and admin routes. A
token names its expiry, so one leaked token is worth little for long.

Servers check every request (:func:`check`), on the FastAPI apps through
:class:`fds.web.AuthMiddleware` and on the tract servers' data port directly.
This module is what a client may import too: it needs neither FastAPI nor
any other server dependency. The
cost is one HMAC per *distinct* token, not per request and never per byte:
a verified token is remembered until it expires. ``/healthz`` is open, so
load balancers and systemd can probe liveness without a secret (and
``/favicon.ico``, an empty 204, so a browser's first request logs no 401).

Clients find credentials with :meth:`Credentials.discover`: an explicit
token or secret file, else ``$FDS_TOKEN``, else ``$FDS_SECRET_FILE``, else
the secret of the ``fds local up`` cluster in ``./.fds``. Holding the
secret, a client mints short-lived tokens itself and renews them before
they expire; holding only a token, it sends that token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import httpx

from fds.errors import Forbidden, Unauthorized
from fds.logs import HEADER, request_id

__all__ = [
    "Scope",
    "SCOPES",
    "Credentials",
    "Verifier",
    "HttpxAuth",
    "new_secret",
    "write_secret",
    "load_secret",
    "mint",
    "required_scope",
    "check",
    "admitted_until",
    "configure",
    "process_credentials",
    "client_headers",
    "AuthError",
]

Scope = Literal["read", "write", "cluster"]
SCOPES: tuple[Scope, ...] = ("read", "write", "cluster")
_RANK = {"read": 0, "write": 1, "cluster": 2}
_PREFIX = "fds1"
_OPEN_PATHS = frozenset({"/healthz", "/favicon.ico"})
_CLUSTER_PREFIXES = ("/v1/internal/", "/v1/admin/", "/v1/servers")
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HOW = ("send 'Authorization: Bearer TOKEN': mint one with `fds token` on a machine holding the cluster "
        "secret, or point FDS_SECRET_FILE at the secret (FDS_TOKEN at a token)")


class AuthError(ValueError):
    """A secret file is missing, unreadable, malformed or too open; the message says which."""


# -- secrets --------------------------------------------------------------------
def new_secret() -> str:
    """32 random bytes, as 64 hex digits."""
    return secrets.token_hex(32)


def write_secret(path: str | os.PathLike[str], secret: str | None = None) -> str:
    """Create ``path`` holding a new (or the given) secret, readable by its owner only; returns it.

    Refuses to overwrite an existing file: replacing a cluster's secret locks out every server and client.
    """
    secret = secret or new_secret()
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (secret + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return secret


def load_secret(path: str | os.PathLike[str]) -> bytes:
    """The secret in ``path``. Refuses a file that anyone but its owner and group may read."""
    try:
        st = os.stat(path)
        text = Path(path).read_text().strip()
    except OSError as exc:
        raise AuthError(f"cannot read the cluster secret {os.fspath(path)}: {exc.strerror}") from None
    if st.st_mode & stat.S_IROTH:
        raise AuthError(f"the cluster secret {os.fspath(path)} is readable by everyone; "
                        f"run `chmod o-r {os.fspath(path)}`")
    if len(text) < 32:
        raise AuthError(f"the cluster secret {os.fspath(path)} is too short ({len(text)} characters, "
                        "want at least 32); make one with `fds secret new FILE`")
    return text.encode()


# -- tokens ---------------------------------------------------------------------
def _mac(secret: bytes, body: str) -> str:
    digest = hmac.new(secret, body.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mint(secret: bytes, scope: Scope = "write", ttl: float = 3600.0, *, now: float | None = None) -> str:
    """A token of ``scope`` that expires ``ttl`` seconds from now."""
    if scope not in _RANK:
        raise ValueError(f"unknown scope {scope!r}; use one of {', '.join(SCOPES)}")
    expires = int((time.time() if now is None else now) + ttl)
    body = f"{_PREFIX}.{scope}.{expires}.{secrets.token_hex(4)}"
    return f"{body}.{_mac(secret, body)}"


def _describe_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class Verifier:
    """Checks tokens against one secret (or, holding only a token, admits that token alone).

    Verified tokens are remembered (up to ``cache_size``) so a busy client
    costs one HMAC per token, not per request.
    """

    secret: bytes | None = None
    token: str | None = None
    cache_size: int = 4096
    _cache: dict[str, tuple[Scope, int]] = field(default_factory=dict)

    def verify(self, token: str, *, now: float | None = None) -> Scope:
        """The token's scope, or raise :class:`fds.errors.Unauthorized` saying what is wrong."""
        return self.verified(token, now=now)[0]

    def verified(self, token: str, *, now: float | None = None) -> tuple[Scope, int]:
        """The token's scope and expiry (Unix seconds), or raise :class:`fds.errors.Unauthorized`."""
        now = time.time() if now is None else now
        known = self._cache.get(token)
        if known is None:
            known = self._parse(token)
            if len(self._cache) >= self.cache_size:
                self._cache.clear()
            self._cache[token] = known
        if known[1] < now:
            raise Unauthorized(f"token expired at {_describe_time(known[1])}; {_HOW}", code="token_expired")
        return known

    def _parse(self, token: str) -> tuple[Scope, int]:
        parts = token.split(".")
        # Tokens are ASCII; hmac.compare_digest raises TypeError on other text (a 500, not a 401).
        if (not token.isascii() or len(parts) != 5 or parts[0] != _PREFIX or parts[1] not in _RANK
                or not parts[2].isdigit()):
            raise Unauthorized(f"malformed token (want fds1.SCOPE.EXPIRES.NONCE.MAC); {_HOW}", code="bad_token")
        if self.secret is not None:
            good = hmac.compare_digest(_mac(self.secret, ".".join(parts[:4])), parts[4])
        else:
            good = self.token is not None and hmac.compare_digest(token, self.token)
        if not good:
            raise Unauthorized(f"token not signed with this cluster's secret; {_HOW}", code="bad_token")
        return cast(Scope, parts[1]), int(parts[2])


def required_scope(method: str, path: str) -> Scope | None:
    """The scope a request needs; ``None`` for the open liveness route."""
    if path in _OPEN_PATHS:
        return None
    if path.startswith(_CLUSTER_PREFIXES):
        return "cluster"
    return "read" if method.upper() in _READ_METHODS else "write"


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if value:
        kind, _, token = value.strip().partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise Unauthorized(f"unsupported Authorization header (want 'Bearer TOKEN'); {_HOW}", code="bad_token")
        return token.strip()
    cookie = headers.get("cookie")
    if cookie:
        for part in cookie.split(";"):
            name, _, token = part.strip().partition("=")
            if name == "fds_token" and token:
                return token
    return None


# -- the server side ------------------------------------------------------------
_verifier: Verifier | None = None
_configured = False
_insecure = False


def configure(*, secret: bytes | None = None, token: str | None = None, insecure: bool = False,
              scope: Scope = "cluster") -> None:
    """Set this process's credentials: what it checks incoming requests with and sends on its own calls.

    A server holding the secret verifies signatures and mints ``scope``
    tokens for its own calls. ``insecure`` admits every request (only for
    servers configured with ``insecure = 1``).
    """
    global _verifier, _insecure, _process, _configured
    _configured = True
    _insecure = insecure
    _verifier = Verifier(secret=secret, token=token) if (secret or token) else None
    _process = Credentials(secret=secret, token=token, scope=scope)


def _server_verifier() -> Verifier | None:
    """The configured verifier; a process never configured (a sort's head, say) checks with what it holds."""
    global _verifier, _configured
    if not _configured:
        creds = process_credentials()
        _verifier = Verifier(secret=creds.secret, token=creds.token) if (creds.secret or creds.token) else None
        _configured = True
    return _verifier


def check(method: str, path: str, headers: Mapping[str, str]) -> None:
    """Admit a request, or raise :class:`Unauthorized` (401) or :class:`Forbidden` (403)."""
    needed = required_scope(method, path)
    if needed is None or _insecure:
        return
    token = _bearer(headers)
    if token is None:
        raise Unauthorized(f"no credentials; {_HOW}", code="no_credentials")
    verifier = _server_verifier()
    if verifier is None:
        raise Unauthorized("this server has no cluster secret configured, so it can check no token; "
                           "set secret_file in its config", code="no_secret")
    scope = verifier.verify(token)
    if _RANK[scope] < _RANK[needed]:
        raise Forbidden(f"a {scope!r} token may not {method} {path}; this needs a {needed!r} token "
                        f"(`fds token --scope {needed}`)", code="scope")


def admitted_until(token: str) -> int:
    """When ``token`` stops being admitted by this process (Unix seconds), or raise :class:`Unauthorized`.

    For a browser login (:mod:`fds.web` keeps the token in a cookie that
    long). A server configured ``insecure`` admits any token, for an hour.
    """
    if _insecure:
        return int(time.time()) + 3600
    verifier = _server_verifier()
    if verifier is None:
        raise Unauthorized("this server has no cluster secret configured", code="no_secret")
    return verifier.verified(token)[1]


# -- the client side ------------------------------------------------------------
@dataclass
class Credentials:
    """What a client sends: tokens minted from a secret (renewed before expiry), or one given token."""

    secret: bytes | None = None
    token: str | None = None
    scope: Scope = "write"
    ttl: float = 3600.0
    source: str = ""
    """Where these came from, for messages."""
    _minted: str | None = None
    _renew_at: float = 0.0

    def current(self) -> str | None:
        if self.token:
            return self.token
        if self.secret is None:
            return None
        now = time.time()
        if self._minted is None or now >= self._renew_at:
            self._minted = mint(self.secret, self.scope, self.ttl, now=now)
            self._renew_at = now + self.ttl / 2
        return self._minted

    def headers(self) -> dict[str, str]:
        token = self.current()
        return {"authorization": f"Bearer {token}"} if token else {}

    @classmethod
    def discover(cls, *, token: str | None = None, secret_file: str | os.PathLike[str] | None = None,
                 scope: Scope = "write", environ: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> Credentials:
        """Credentials from, first found: ``token``, ``secret_file``, ``$FDS_TOKEN``, ``$FDS_SECRET_FILE``,
        ``./.fds/cluster.json``'s secret. None found gives empty credentials (servers will answer 401)."""
        env = os.environ if environ is None else environ
        if token:
            return cls(token=token, scope=scope, source="token")
        if secret_file:
            return cls(secret=load_secret(secret_file), scope=scope, source=os.fspath(secret_file))
        if env.get("FDS_TOKEN", "").strip():
            return cls(token=env["FDS_TOKEN"].strip(), scope=scope, source="FDS_TOKEN")
        if env.get("FDS_SECRET_FILE", "").strip():
            path = env["FDS_SECRET_FILE"].strip()
            return cls(secret=load_secret(path), scope=scope, source=path)
        from fds.local import DEFAULT_DIR, ClusterFile  # fds.local imports this module

        try:
            stored = ClusterFile.read((cwd or Path.cwd()) / DEFAULT_DIR).secret_file
        except (OSError, ValueError):
            stored = ""
        if stored:
            return cls(secret=load_secret(stored), scope=scope, source=stored)
        return cls(source="none")


_process: Credentials | None = None


def process_credentials() -> Credentials:
    """This process's credentials: set by :func:`configure` (servers), else discovered once."""
    global _process
    if _process is None:
        _process = Credentials.discover()
    return _process


def client_headers() -> dict[str, str]:
    """Headers for one outgoing request: this process's credentials (a fresh token when due), and the
    id of the request being served, if any (:mod:`fds.logs`)."""
    headers = process_credentials().headers()
    rid = request_id.get()
    if rid:
        headers[HEADER] = rid
    return headers


class HttpxAuth(httpx.Auth):
    """httpx auth that sets the current token on every request, so long-lived clients renew it."""

    def __init__(self, credentials: Credentials | None = None) -> None:
        self.credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Any:
        creds = self.credentials or process_credentials()
        request.headers.update(creds.headers())
        rid = request_id.get()
        if rid and HEADER not in request.headers:
            request.headers[HEADER] = rid
        yield request
