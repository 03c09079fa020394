"""Certificates for tests that run clusters with TLS on: a throwaway CA (trustme) and one server certificate."""

from __future__ import annotations

from pathlib import Path

import trustme

__all__ = ["write_pki"]


def write_pki(where: Path) -> dict[str, Path]:
    """A fresh CA and a certificate for ``127.0.0.1`` and ``localhost`` it signed, as PEM files in ``where``.

    Returns their paths: ``"ca"`` (what clients trust), ``"cert"`` and ``"key"`` (what servers serve).
    """
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": where / "ca.pem", "cert": where / "cert.pem", "key": where / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    return paths
