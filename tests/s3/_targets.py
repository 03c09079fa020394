"""S3 endpoints the S3 tests run against: fds's own (``fds s3`` in a local cluster) and moto's model of S3.

A :class:`S3Target` is an endpoint URL and an access key; it makes boto3 clients, and the
environment and files the command-line clients (aws, s3cmd, rclone) read their settings from.
moto runs as a child process (``moto.server.ThreadedMotoServer`` on an ephemeral port), tracked by
PID and stopped at teardown, so it competes for the test process's GIL no more than fds does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from fds.local import LocalCluster
from tests.support.clusters import DEFAULTS, drop_data

__all__ = ["S3Target", "REGION", "start_moto", "start_fds", "new_bucket_name"]

REGION = "us-east-1"
"""The region every client signs for (fds serves one region; moto's default)."""


@dataclass(frozen=True)
class S3Target:
    """One S3 endpoint and an access key for it."""

    name: str
    """``moto`` or ``fds``: also the pytest id of the parametrised tests."""
    endpoint: str
    access_key: str
    secret_key: str
    credentials_path: Path | None = None
    """An aws-cli credentials file (profile ``fds``) holding this key, where the endpoint wrote one."""

    @property
    def hostport(self) -> str:
        """``host:port`` of the endpoint (what s3cmd and the minio client take)."""
        return self.endpoint.split("://", 1)[1].rstrip("/")

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client: path-style, SigV4, no retries (a test sees every first answer, 5xx included)."""
        settings: dict[str, Any] = {"signature_version": "s3v4", "s3": {"addressing_style": "path"},
                                    "retries": {"max_attempts": 1, "mode": "standard"},
                                    "connect_timeout": 10, "read_timeout": 120}
        settings.update(config)
        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, config=Config(**settings))

    def credentials_file(self, path: Path, profile: str = "fds") -> Path:
        """Write this key as an aws-cli credentials file (owner-only) and return its path."""
        path.write_text(f"[{profile}]\naws_access_key_id = {self.access_key}\n"
                        f"aws_secret_access_key = {self.secret_key}\n")
        path.chmod(0o600)
        return path


def new_bucket_name(prefix: str = "t") -> str:
    """A fresh valid bucket name (lower case, 3-63 characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:20]}"


_MOTO = textwrap.dedent("""
    import sys
    from moto.server import ThreadedMotoServer
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    print(f"http://{host}:{port}", flush=True)
    sys.stdin.read()          # until the test process closes our stdin (or dies)
    server.stop()
""")


def start_moto() -> Iterator[S3Target]:
    """For a fixture: ``yield from start_moto()`` runs moto's S3 in a child process while the fixture lives."""
    proc = subprocess.Popen([sys.executable, "-c", _MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                            env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "false"})
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().strip()
        if not endpoint.startswith("http://"):
            raise RuntimeError(f"moto did not start (exit {proc.poll()})")
        yield S3Target("moto", endpoint, "moto-access-key", "moto-secret-key")
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_fds(factory: pytest.TempPathFactory, name: str, **options: Any) -> Iterator[tuple[S3Target, LocalCluster]]:
    """For a fixture: a local cluster (test defaults and ``options``) with its S3 server, and a target for it.

    The endpoint is the cluster's ``s3_url`` and the key the first one, from ``DIR/s3-credentials``
    (profile ``fds``), as a user of ``fds local up`` finds them.
    """
    cluster = LocalCluster(factory.mktemp(name), **{**DEFAULTS, **options, "s3": True})
    cluster.start()
    try:
        access, secret = cluster.s3_credentials()
        yield S3Target("fds", cluster.s3_url, access, secret, cluster.s3_credentials_file), cluster
    finally:
        cluster.stop()
        drop_data(cluster)
