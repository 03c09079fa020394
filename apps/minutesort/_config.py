"""The standing worker's settings: ``[minutesort-worker]`` in ``--config FILE``, then ``FDS_*``.

Read with :func:`fds.config.load_config`, as every fds server reads its
own; ``deploy/bin/fds-check-config minutesort-worker FILE`` checks a file
with the same two functions before the unit starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from apps.minutesort._budget import MEMORY_SHARE, mem_available
from fds.auth import AuthError, load_secret
from fds.config import ConfigError, load_config

__all__ = ["SECTION", "WorkerConfig", "load_worker_config", "check_worker_config", "size_bytes", "arena_bytes",
           "ARENA_MARGIN"]

SECTION = "minutesort-worker"
"""The config file's table."""
ARENA_MARGIN = 256 << 20
"""``arena = "auto"``: the memory budget less this (a sort process's interpreter and its transfers in flight)."""

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def size_bytes(text: str) -> int:
    """Bytes from '1GB', '500MB', '2GiB' or a plain number (decimal units, as the Sort Benchmark counts);
    ValueError saying how to write one."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(f"size {text!r}: use a number with an optional unit, e.g. 1GB, 500MB, 2GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


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
    memory: str = ""
    """Memory each sort process may use in all, e.g. ``"8GB"`` (its budget; empty: the sort's head decides,
    from the memory the host has available)."""
    arena: str = ""
    """Warm memory kept for sorts (docs/design.md, standing workers): ``"2.5GB"``, ``"auto"`` (the ``memory``
    budget less 256 MiB), or empty/``"0"``: none. The worker touches it once at start-up and lends it to each
    sort process, which receives its records there instead of in fresh memory; the host holds it while the
    worker runs, idle or not. It counts against each sort's budget."""


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
    arena = arena_bytes(config)
    if config.secret_file:
        try:
            load_secret(config.secret_file)
        except AuthError as exc:
            raise ConfigError(str(exc)) from None
    elif not config.insecure:
        raise ConfigError("no cluster secret: set secret_file (`fds secret new FILE` makes one), or insecure = 1 "
                          "to run without authentication on a trusted network")
    return (f"host={config.host}, port={config.port}, data_port={config.data_port}"
            + (f", advertise_url={config.advertise_url}" if config.advertise_url else "")
            + (f", arena={arena / 1e9:.2f} GB" if arena else ""))


def memory_bytes(config: WorkerConfig) -> int:
    """The ``memory`` setting in bytes (0: not set); :class:`ConfigError` if it is not a size."""
    if not config.memory.strip():
        return 0
    try:
        return size_bytes(config.memory)
    except ValueError as exc:
        raise ConfigError(f"memory: {exc}") from None


def arena_bytes(config: WorkerConfig, available: int | None = None) -> int:
    """The ``arena`` setting in bytes (0: none), or :class:`ConfigError` saying why it cannot be had.

    An arena must fit the ``memory`` budget (it counts against it) and the
    share of the host's available memory (``available``, by default
    ``MemAvailable`` now) that sorts may take.
    """
    text = config.arena.strip().lower()
    memory = memory_bytes(config)
    if text in ("", "0", "off", "none"):
        return 0
    if text == "auto":
        if not memory:
            raise ConfigError('arena = "auto" sizes the arena from the memory budget: set memory too (e.g. '
                              'memory = "8GB"), or give the arena a size (e.g. arena = "2.5GB")')
        arena = memory - ARENA_MARGIN
        if arena <= 0:
            raise ConfigError(f"arena = \"auto\": memory = {config.memory!r} leaves nothing for an arena after "
                              f"{ARENA_MARGIN >> 20} MiB for the sort process itself; give more memory")
    else:
        try:
            arena = size_bytes(text)
        except ValueError as exc:
            raise ConfigError(f'arena: {exc}, or "auto" (from memory), or "0" (none)') from None
        if not arena:
            return 0
    if memory and arena > memory:
        raise ConfigError(f"arena {arena / 1e9:.2f} GB is more than each sort's memory budget ({config.memory}): the "
                          "arena counts against the budget; make it smaller, or the budget larger")
    available = mem_available() if available is None else available
    if available and arena > MEMORY_SHARE * available:
        raise ConfigError(f"arena {arena / 1e9:.2f} GB is more than this host can lend sorts: "
                          f"{MEMORY_SHARE:.0%} of the {available / 1e9:.2f} GB it has available now; make it smaller")
    return arena
