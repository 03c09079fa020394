"""The ``fds`` command: servers, the local cluster, and blob commands.

Exit codes: 0 success; 1 an fds error (the message says what went wrong);
2 bad usage; 3 the cluster could not be reached; 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from fds import __version__, tune_allocator

__all__ = ["main", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_UNREACHABLE"]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


def build_parser() -> argparse.ArgumentParser:
    from fds.cli import _auth, _blobs, _local, _s3, _servers

    parser = argparse.ArgumentParser(prog="fds", description="Flat Datacenter Storage.")
    parser.add_argument("--version", action="version", version=f"fds {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _servers.add_parsers(sub)
    _s3.add_parsers(sub)
    _local.add_parsers(sub)
    _blobs.add_parsers(sub)
    _auth.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()  # every command may move tracts; see fds.buffers.tune_allocator
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("fds: interrupted", file=sys.stderr)
        return 130
