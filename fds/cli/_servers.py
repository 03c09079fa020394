"""``fds metaserver``, ``fds tractserver``, ``fds gateway``: run one server process."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fds.config import ConfigError, GatewayConfig, MetaserverConfig, TractServerConfig, load_config
from fds.errors import FDSError

__all__ = ["add_parsers"]

_SHARED = ["host", "port", "secret_file", "insecure", "tls_cert", "tls_key", "tls_ca"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with a table for this role")
    p.add_argument("--host", help="address to listen on")
    p.add_argument("--port", type=int, help="port to listen on (0 picks a free one)")
    p.add_argument("--ready-file", help="write the server's URL here once it accepts connections")
    p.add_argument("--secret-file", dest="secret_file", help="file holding the cluster secret (fds secret new FILE)")
    p.add_argument("--insecure", action="store_const", const=1, default=None,
                   help="check no credentials (a trusted lab network only)")
    p.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate chain: serve HTTPS")
    p.add_argument("--tls-key", dest="tls_key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-ca", dest="tls_ca", help="PEM bundle to verify other servers' certificates by")


def _load(cls: type[Any], section: str, args: argparse.Namespace, names: list[str]) -> Any:
    try:
        return load_config(cls, section, file=args.config,
                           overrides={n: getattr(args, n, None) for n in [*_SHARED, *names]})
    except ConfigError as exc:
        raise SystemExit(f"fds {section}: {exc}") from None


def _metaserver(args: argparse.Namespace) -> int:
    from fds.metaserver import run

    config = _load(MetaserverConfig, "metaserver", args,
                   ["dir", "replicas", "tract_size", "expected_servers", "heartbeat_timeout", "detect_interval",
                    "auto_rebalance", "seed", "lease_seconds", "outage_silent"])
    try:
        run(config, ready_file=args.ready_file)
    except FDSError as exc:
        print(f"fds metaserver: {exc}", file=sys.stderr)
        return 1
    return 0


def _tractserver(args: argparse.Namespace) -> int:
    from fds.tractserver import run

    config = _load(TractServerConfig, "tractserver", args,
                   ["dir", "metaserver", "advertise_url", "data_port", "advertise_data_url", "domain",
                    "capacity_bytes", "heartbeat_interval", "collector_interval", "io_threads", "cache_bytes",
                    "direct_io", "scrub_interval", "scrub_rate", "fill_in_flight", "name_grace"])
    run(config, ready_file=args.ready_file)
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from fds.gateway import run

    config = _load(GatewayConfig, "gateway", args, ["metaserver", "max_in_flight"])
    run(config, ready_file=args.ready_file)
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("metaserver", help="run the metadata server")
    _common(p)
    p.add_argument("--dir", help="state directory (RocksDB)")
    p.add_argument("--replicas", type=int, help="replication level k (fixed at first start)")
    p.add_argument("--tract-size", dest="tract_size", type=int, help="bytes per tract (fixed at first start)")
    p.add_argument("--expected-servers", dest="expected_servers", type=int,
                   help="build the table once this many tract servers registered")
    p.add_argument("--heartbeat-timeout", dest="heartbeat_timeout", type=float,
                   help="seconds without a heartbeat before a tract server is declared dead")
    p.add_argument("--detect-interval", dest="detect_interval", type=float,
                   help="seconds between failure-detector passes")
    p.add_argument("--auto-rebalance", dest="auto_rebalance", type=int, choices=[0, 1],
                   help="1: hand rows to new servers automatically (default); 0: never")
    p.add_argument("--seed", type=int, help="seed for table building and replacement choices")
    p.add_argument("--lease-seconds", dest="lease_seconds", type=float,
                   help="how long a tract server may serve after a heartbeat the metaserver acknowledged "
                        "(0: 80%% of the heartbeat timeout; -1: no leases)")
    p.add_argument("--outage-silent", dest="outage_silent", type=int,
                   help="hold repair while tract servers of more than this many failure domains are silent (-1: k-1)")
    p.set_defaults(run=_metaserver)

    p = sub.add_parser("tractserver", help="run a tract server for one disk")
    _common(p)
    p.add_argument("--dir", help="data directory on the disk this server owns")
    p.add_argument("--metaserver", help="metaserver URL")
    p.add_argument("--advertise-url", dest="advertise_url", help="URL others use to reach this server")
    p.add_argument("--data-port", dest="data_port", type=int,
                   help="port for tract PUT/GET without the framework (0: a free one, -1: none)")
    p.add_argument("--advertise-data-url", dest="advertise_data_url", help="URL others use to reach the data port")
    p.add_argument("--domain", help="failure domain (default: the server id)")
    p.add_argument("--capacity-bytes", dest="capacity_bytes", type=int, help="limit on stored bytes")
    p.add_argument("--heartbeat-interval", dest="heartbeat_interval", type=float)
    p.add_argument("--collector-interval", dest="collector_interval", type=float)
    p.add_argument("--name-grace", dest="name_grace", type=float,
                   help="seconds a replaced or deleted object's blob is kept for reads in flight (default 60)")
    p.add_argument("--io-threads", dest="io_threads", type=int)
    p.add_argument("--direct-io", dest="direct_io", type=int, choices=[0, 1],
                   help="1: O_DIRECT tract I/O; 0: through the page cache")
    p.add_argument("--cache-bytes", dest="cache_bytes", type=int,
                   help="memory for recently used tracts (default 0: off)")
    p.add_argument("--scrub-interval", dest="scrub_interval", type=float,
                   help="seconds between integrity scrub passes (0: never)")
    p.add_argument("--scrub-rate", dest="scrub_rate", type=int, help="bytes a second the scrubber may read")
    p.add_argument("--fill-in-flight", dest="fill_in_flight", type=int,
                   help="tracts copied at once while filling rows (recovery)")
    p.set_defaults(run=_tractserver)

    p = sub.add_parser("gateway", help="run the REST gateway for whole-blob PUT/GET")
    _common(p)
    p.add_argument("--metaserver", help="metaserver URL")
    p.add_argument("--max-in-flight", dest="max_in_flight", type=int)
    p.set_defaults(run=_gateway)
