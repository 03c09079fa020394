"""TLS: optional, per server, with certificate paths in the config.

A server whose config sets ``tls_cert`` and ``tls_key`` serves HTTPS on its
API port and on its data port, and advertises ``https://`` URLs, so clients
and other servers follow without further settings. ``tls_ca`` names the PEM
bundle this process trusts when it calls other servers (a cluster's own CA,
or self-signed certificates); clients outside a server take it from
``$FDS_TLS_CA``. Without either, the system's CAs are trusted.

Authentication (:mod:`fds.auth`) is independent: tokens ride inside TLS when
it is on, and a cluster without TLS should keep to a trusted network.
"""

from __future__ import annotations

import os
import ssl

__all__ = ["TLSError", "configure", "server_context", "server_files", "client_context", "scheme"]


class TLSError(ValueError):
    """A certificate, key or CA bundle is missing or unusable; the message names it."""


_server: ssl.SSLContext | None = None
_files: tuple[str, str] | None = None
_ca: str | None = None
_client: ssl.SSLContext | None = None


def configure(*, cert: str = "", key: str = "", ca: str = "") -> None:
    """Set this process's TLS: serve with ``cert``/``key`` (both or neither); trust ``ca`` when calling out."""
    global _server, _files, _ca, _client
    if bool(cert) != bool(key):
        raise TLSError("set both tls_cert and tls_key to serve HTTPS, or neither")
    _server, _files = None, None
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(cert, key)
        except FileNotFoundError as exc:
            raise TLSError(f"cannot read {exc.filename}: no such file") from None
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(f"tls_cert {cert} / tls_key {key} are not a usable PEM certificate and key: {exc}") from None
        _server, _files = context, (cert, key)
    _ca = ca or None
    _client = None
    if _ca:
        client_context()  # fail now, at start-up, on an unreadable bundle


def server_context() -> ssl.SSLContext | None:
    """The context to serve with, or None for plain HTTP."""
    return _server


def server_files() -> tuple[str, str] | None:
    """(certificate, key) paths to serve with (uvicorn loads them itself), or None."""
    return _files


def scheme() -> str:
    """``https`` when this process serves TLS, else ``http``."""
    return "https" if _server is not None else "http"


_by_ca: dict[str, ssl.SSLContext] = {}


def client_context(ca: str | None = None) -> ssl.SSLContext:
    """The context for calls to servers: trusts ``ca`` if given (a context per bundle, made once), else this
    process's ``tls_ca`` (or ``$FDS_TLS_CA``), else the system's CAs."""
    global _client
    if ca:
        found = _by_ca.get(ca)
        if found is None:
            try:
                found = _by_ca[ca] = ssl.create_default_context(cafile=ca)
            except (ssl.SSLError, OSError) as exc:
                raise TLSError(f"cannot load the CA bundle {ca}: {exc}") from None
        return found
    if _client is None:
        ca = _ca or os.environ.get("FDS_TLS_CA", "").strip() or None
        try:
            _client = ssl.create_default_context(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise TLSError(f"cannot load the CA bundle {ca}: {exc}") from None
    return _client
