"""``fds local up``: a whole cluster on one machine, as child processes, until Ctrl-C.

The cluster is :class:`fds.local.LocalCluster`; this module parses the
command line, prints where everything is, and stops the cluster on SIGINT or
SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from fds.local import DEFAULT_DIR, ClusterFile, LocalCluster

__all__ = ["add_parsers"]


def _up(args: argparse.Namespace) -> int:
    try:
        cluster = LocalCluster(Path(args.dir), tractservers=args.tractservers, replicas=args.replicas,
                               tract_size=args.tract_size, port=args.port, gateway=not args.no_gateway,
                               s3=not args.no_s3, capacity_bytes=args.capacity_bytes)
    except ValueError as exc:
        print(f"fds local up: {exc}", file=sys.stderr)
        return 1
    for warning in cluster.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"starting fds: {cluster.tractservers} tract servers, k={cluster.replicas}, "
          f"tract size {cluster.tract_size} bytes, data in {cluster.dir}", flush=True)
    try:
        cluster.start()
    except (RuntimeError, TimeoutError) as exc:
        print(f"fds local up: {exc}", file=sys.stderr)
        return 1
    print(f"  metaserver  {cluster.metaserver_url}")
    for child in cluster.tract_children:
        print(f"  {child.name:<11} {child.url}  ({child.dir})")
    if cluster.gateway:
        print(f"  gateway     {cluster.gateway_url}   REST: PUT/GET {cluster.gateway_url}/v1/blobs/<guid>")
    if cluster.s3:
        print(f"  s3          {cluster.s3_url}   access key in {cluster.s3_credentials_file} (profile fds)")
    print(f"  status page {cluster.metaserver_url}/status?token={cluster.token('read', 24 * 3600)}")
    print(f"cluster file: {ClusterFile.path(cluster.dir)}   secret: {cluster.secret_file} (owner-only)")
    if cluster.s3:
        shown = _relative(cluster.s3_credentials_file)
        print(f"S3: AWS_SHARED_CREDENTIALS_FILE={shown} aws --profile fds --endpoint-url {cluster.s3_url} s3 ls")
    print("ready. Try: fds put FILE, fds status. Ctrl-C stops the cluster.", flush=True)
    reported: set[str] = set()
    while not stopping:
        for child in cluster.children:
            if not child.alive() and child.name not in reported:
                reported.add(child.name)
                print(f"warning: {child.name} (pid {child.pid}) exited; see {child.log}", file=sys.stderr, flush=True)
        time.sleep(0.2)
    print("stopping fds...", flush=True)
    cluster.stop()
    print("stopped.")
    return 0


def _relative(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it (the line to copy stays short)."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def add_parsers(sub: Any) -> None:
    local = sub.add_parser("local", help="run a whole cluster on this machine")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    p = local_sub.add_parser("up", help="start a metaserver, tract servers and a gateway; Ctrl-C stops them")
    p.add_argument("--dir", default=f"./{DEFAULT_DIR}",
                   help=f"where the cluster keeps its data (default ./{DEFAULT_DIR})")
    p.add_argument("--tractservers", type=int, help="number of tract servers (default 4)")
    p.add_argument("--replicas", type=int, help="replication level (default 1 if fewer than 3 servers, else 3)")
    p.add_argument("--tract-size", dest="tract_size", type=int, help="bytes per tract (default 8 MiB)")
    p.add_argument("--port", type=int, default=7000, help="metaserver port; the gateway takes the next one, the "
                   "S3 endpoint the one after (0 picks free ports)")
    p.add_argument("--capacity-bytes", dest="capacity_bytes", type=int, help="limit each tract server's storage")
    p.add_argument("--no-gateway", dest="no_gateway", action="store_true", help="do not start the REST gateway")
    p.add_argument("--no-s3", dest="no_s3", action="store_true", help="do not start the S3 endpoint")
    p.set_defaults(run=_up)
