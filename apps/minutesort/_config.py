"""The standing worker's settings: ``[minutesort-worker]`` in ``--config FILE``, then ``FDS_*``.

Read with :func:`fds.config.load_config`, as every fds server reads its
own; ``deploy/bin/fds-check-config minutesort-worker FILE`` checks a file
with the same two functions before the unit starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from fds.auth import AuthError, load_secret
from fds.config import ConfigError, load_config

__all__ = ["SECTION", "WorkerConfig", "load_worker_config", "check_worker_config"]

SECTION = "minutesort-worker"
"""The config file's table."""


@dataclass
class WorkerConfig:
    """Settings of the standing worker: ``[minutesort-worker]`` in ``--config FILE``, then ``FDS_*``."""

    host: str = "127.0.0.1"
    port: int = 7300
    """API port: heads invite the worker here (0 picks a free port: see ``--ready-file``)."""
    data_port: int = 7301
    """Peers send bins here during a sort; 0 picks a free port at start."""
    advertise_url: str = ""
    """The URL heads use; defaults to http://host:port."""
    advertise_data_url: str = ""
    """The URL peers send bins to; defaults to http://host:data_port."""
    secret_file: str = ""
    """The cluster secret: checks requests, signs this worker's calls (``$FDS_SECRET_FILE`` sets it too).
    Required unless ``insecure = 1``, as for every fds server."""
    insecure: int = 0
    """1: check no credentials and send none (a trusted lab network only)."""
    metaserver: str = ""
    """The cluster this worker sorts small blobs of on its own (``POST /v1/solo``); defaults to
    ``$FDS_METASERVER``. Sorts a head invites it to name their cluster themselves."""
    solo_bytes: int = 256 * 1024 * 1024
    """The largest blob it sorts on its own, in its own process; larger ones need a head and workers."""


def load_worker_config(file: str | None = None, overrides: dict[str, object] | None = None) -> WorkerConfig:
    """The worker's config from defaults, ``file``'s ``[minutesort-worker]`` table, ``FDS_*`` and ``overrides``."""
    return load_config(WorkerConfig, SECTION, file=file, overrides=overrides)


def check_worker_config(config: WorkerConfig) -> str:
    """Refuse settings that would not start a reachable worker; a one-line summary otherwise."""
    for name in ("port", "data_port"):
        value = getattr(config, name)
        if not 0 <= value <= 65535:
            raise ConfigError(f"{name} must be a port number (0-65535), got {value}")
    if config.port and config.port == config.data_port:
        raise ConfigError(f"port and data_port must differ (both {config.port})")
    for name in ("advertise_url", "advertise_data_url", "metaserver"):
        value = getattr(config, name)
        if value and not value.startswith(("http://", "https://")):
            raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    if config.solo_bytes < 0:
        raise ConfigError(f"solo_bytes must be 0 or more, got {config.solo_bytes}")
    if config.secret_file:
        try:
            load_secret(config.secret_file)
        except AuthError as exc:
            raise ConfigError(str(exc)) from None
    elif not config.insecure:
        raise ConfigError("no cluster secret: set secret_file (`fds secret new FILE` makes one), or insecure = 1 "
                          "to run without authentication on a trusted network")
    return (f"host={config.host}, port={config.port}, data_port={config.data_port}"
            + (f", advertise_url={config.advertise_url}" if config.advertise_url else ""))
