"""Configuration in one typed place, read once at start.

Each role has a dataclass of settings. Values come, later winning, from:
the defaults below, the role's table in a TOML file (``--config FILE``,
tables ``[metaserver]``, ``[tractserver]``, ``[gateway]``), environment
variables ``FDS_<FIELD>`` (e.g. ``FDS_PORT=7101``), then command-line flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = [
    "DEFAULT_TRACT_SIZE",
    "MetaserverConfig",
    "TractServerConfig",
    "GatewayConfig",
    "S3Config",
    "SecurityConfig",
    "load_config",
    "ConfigError",
]

DEFAULT_TRACT_SIZE = 8 * 1024 * 1024
"""8 MiB, the paper's tract size (docs/design.md §1)."""


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names it."""


@dataclass
class SecurityConfig:
    """Settings every server shares: the cluster secret, and TLS."""

    secret_file: str = ""
    """File holding the cluster secret (``fds secret new FILE``). Required unless ``insecure = 1``."""
    insecure: int = 0
    """1: check no credentials at all (a lab on a trusted network only); 0: every request needs a token."""
    tls_cert: str = ""
    """PEM certificate chain this server presents; set with ``tls_key`` to serve HTTPS."""
    tls_key: str = ""
    """PEM private key of ``tls_cert``."""
    tls_ca: str = ""
    """PEM bundle to verify other servers' certificates by (self-signed clusters); empty: the system's CAs."""


@dataclass
class MetaserverConfig(SecurityConfig):
    dir: str = "./.fds/metaserver"
    host: str = "127.0.0.1"
    port: int = 7000
    replicas: int = 1
    tract_size: int = DEFAULT_TRACT_SIZE
    expected_servers: int = 1
    """The table is built once this many tract servers have registered."""
    heartbeat_timeout: float = 5.0
    """Seconds without a heartbeat before a server is declared dead and its rows are re-replicated
    (with k >= 2). Seconds suit a laptop; on a real network, allow for GC pauses and brief partitions."""
    detect_interval: float = 0.5
    """Seconds between passes of the failure detector and repair planner."""
    lease_seconds: float = 0.0
    """How long a tract server may serve reads and take writes after sending a heartbeat the metaserver
    acknowledged; past it, it refuses them (503 lease_expired) until the next acknowledgement. The
    metaserver publishes no table that takes a server out of a row until the server has that table or
    its lease has surely run out, so a server cut off from the metaserver never serves a row it lost.
    The price: a metaserver outage longer than the lease stops the data path. 0: 80% of
    heartbeat_timeout (so a silent server's lease is over when it is declared dead); -1: no leases
    (servers never stop serving on their own; nothing fences a server cut off from the metaserver)."""
    outage_silent: int = -1
    """Repair is held while tract servers of more than this many failure domains are silent at once: that is
    an outage (power, network), not disks dying, and re-replicating would only copy what is about to come
    back. -1: k - 1, the failures k copies survive (no row holds two servers of one domain, so a silent
    domain costs a row at most one copy). An operator releases a server with ``fds admin declare-dead ID``.
    On large clusters, where a few silent disks at a time are routine, raise it."""
    auto_rebalance: int = 1
    """1: hand rows to newly added servers automatically once the cluster is healthy; 0: never."""
    seed: int | None = None
    """Seed for table building and replacement choices; random when unset."""


@dataclass
class TractServerConfig(SecurityConfig):
    dir: str = "./.fds/ts0"
    metaserver: str = "http://127.0.0.1:7000"
    host: str = "127.0.0.1"
    port: int = 7100
    advertise_url: str = ""
    """The URL others use to reach this server; defaults to http://host:port."""
    data_port: int = 0
    """Port of the data port (tract PUT/GET without the framework); 0 picks a free one, -1 disables it."""
    advertise_data_url: str = ""
    """The URL others use to reach the data port; defaults to http://host:data_port."""
    domain: str = ""
    """Failure domain; defaults to the server id (every server its own domain)."""
    capacity_bytes: int = 0
    """Bytes this server may store; 0 means the size of its file system."""
    heartbeat_interval: float = 1.0
    collector_interval: float = 60.0
    """Seconds between passes of the orphan-tract collector; 0 disables it."""
    scrub_interval: float = 3600.0
    """Seconds between passes of the integrity scrubber; 0 disables it."""
    scrub_rate: int = 64 * 1024 * 1024
    """Bytes per second the scrubber may read (it competes with clients for the disk)."""
    fill_in_flight: int = 4
    """Tracts copied at once when this server fills rows (recovery, hand-over)."""
    io_threads: int = 16
    """Threads for disk I/O: durable writes want several in parallel."""
    direct_io: int = 1
    """1: tract data bypasses the page cache (O_DIRECT); 0: buffered I/O through the page cache."""
    name_grace: float = 60.0
    """Seconds the blob of a replaced or deleted object is kept before it is deleted, so reads in flight (which
    looked the name up before it changed) finish. The bucket's namespace primary deletes it."""
    cache_bytes: int = 0
    """Memory for recently written and read tracts (data bypasses the page cache); 0, the default,
    disables it: on this 2-core machine it cost more on writes than it gained on reads
    (docs/benchmarks.md)."""


@dataclass
class GatewayConfig(SecurityConfig):
    metaserver: str = "http://127.0.0.1:7000"
    host: str = "127.0.0.1"
    port: int = 7080
    max_in_flight: int = 16
    """Tract requests in flight per gateway request."""


@dataclass
class S3Config(SecurityConfig):
    metaserver: str = "http://127.0.0.1:7000"
    host: str = "127.0.0.1"
    port: int = 7090
    max_in_flight: int = 16
    """Tract requests in flight per S3 request."""
    region: str = "us-east-1"
    """The region GetBucketLocation names; requests signed for any region are accepted."""
    min_part_size: int = 5 * 1024 * 1024
    """The smallest a multipart upload's parts but the last may be (S3's 5 MiB; EntityTooSmall below)."""
    upload_expiry: float = 86400.0
    """Seconds after which a multipart upload neither completed nor aborted is aborted, its parts deleted."""
    sweep_interval: float = 600.0
    """Seconds between passes over abandoned multipart uploads; 0 disables them."""
    key_cache_seconds: float = 10.0
    """How long an access key, once looked up, is trusted without looking again (a deleted key stops
    working within this time)."""
    workers: int = 1
    """Processes serving the port (forked, sharing its socket); each is a whole S3 server."""


C = TypeVar("C")


def _coerce(name: str, kind: str, raw: Any) -> Any:
    """Convert a TOML or environment value to the field's declared type."""
    text = str(raw).strip()
    try:
        if kind.startswith("int"):
            return None if (text == "" and "None" in kind) else int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        raise ConfigError(f"setting {name!r} must be a number, got {raw!r}") from None
    return text


def load_config(cls: type[C], section: str, *, file: str | None = None,
                overrides: dict[str, Any] | None = None,
                environ: dict[str, str] | None = None) -> C:
    """Build a ``cls`` config from defaults, TOML ``[section]``, ``FDS_*`` env, and overrides.

    ``overrides`` are command-line values; ``None`` means "not given".
    """
    environ = dict(os.environ) if environ is None else environ
    values: dict[str, Any] = {}
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if file:
        try:
            with open(file, "rb") as fh:
                table = tomllib.load(fh).get(section, {})
        except OSError as exc:
            raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {file} is not valid TOML: {exc}") from None
        for key, value in table.items():
            key = key.replace("-", "_")
            if key not in names:
                raise ConfigError(f"unknown setting {key!r} in [{section}] of {file}; known: {', '.join(names)}")
            values[key] = _coerce(key, str(names[key].type), value)
    for name, fld in names.items():
        env = environ.get(f"FDS_{name.upper()}")
        if env is not None:
            values[name] = _coerce(name, str(fld.type), env)
    for name, value in (overrides or {}).items():
        if value is not None and name in names:
            values[name] = value
    return cls(**values)

