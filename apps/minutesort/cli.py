"""``fds-minutesort``: the MinuteSort benchmark on fds.

- ``gen``: gensort-compatible records written into a blob, generated in parallel.
- ``sort``: a head and N worker processes sort a record blob into one output
  blob per key range, and write a manifest listing them in key order.
- ``validate``: valsort over output blobs in order (or a plain file).
- ``run``: gen, sort and validate, with a report (``--local`` starts a cluster).
- ``worker``: a sort worker on another host: ``--head URL`` for one sort
  (``sort --remote-workers``), or ``--serve`` for a standing worker that takes
  part in every sort whose head invites it (``sort --worker-urls``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from apps.minutesort._aio import run_async
from apps.minutesort._blobio import RECORD, generate_blob
from apps.minutesort._commands import add_commands, byte_bar
from fds import tune_allocator
from fds.cli.discover import NoCluster, find_metaserver
from fds.client import Client, FDSError, Unavailable

__all__ = ["main", "parse_size"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """Bytes from '1GB', '500MB', '2GiB' or a plain number; the Sort Benchmark counts decimal units."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"size {text!r}: use a number with an optional unit, e.g. 1GB, 500MB, 2GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def _gen(args: argparse.Namespace) -> int:
    if args.records is None and args.size is None:
        print("fds-minutesort gen: give --records N or --size SIZE", file=sys.stderr)
        return 2
    count = args.records if args.records is not None else args.size // RECORD
    if count < 0 or args.start < 0:
        print("fds-minutesort gen: record counts and offsets are 0 or more", file=sys.stderr)
        return 2
    try:
        metaserver = find_metaserver(args.metaserver)
    except NoCluster as exc:
        print(f"fds-minutesort: {exc}", file=sys.stderr)
        return 3

    async def work() -> dict[str, object]:
        async with Client(metaserver) as fds:
            started = time.perf_counter()
            with byte_bar("gen", count * RECORD) as advance:
                blob = await generate_blob(fds, count, start=args.start, ascii=args.ascii, skew=args.skew,
                                           guid=args.blob, workers=args.workers, progress=advance)
            seconds = time.perf_counter() - started
            return {"input_blob": blob.guid, "records": count, "bytes": count * RECORD, "start": args.start,
                    "ascii": args.ascii, "skew": args.skew, "gen_seconds": round(seconds, 3)}

    try:
        report = run_async(work())
    except Unavailable as exc:
        print(f"fds-minutesort: {exc}", file=sys.stderr)
        return 3
    except FDSError as exc:
        print(f"fds-minutesort: {exc}", file=sys.stderr)
        return 1
    seconds = float(str(report["gen_seconds"]))
    print(f"generated {count:,} records ({count * RECORD / 1e9:.3f} GB) into blob {report['input_blob']} "
          f"in {seconds:.2f} s ({count * RECORD / 1e9 / max(seconds, 1e-9):.2f} GB/s)", file=sys.stderr)
    print(json.dumps(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fds-minutesort", description="The MinuteSort benchmark on fds.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("gen", help="write gensort-compatible records into a new blob")
    p.add_argument("--records", type=int, help="how many records")
    p.add_argument("--size", type=parse_size, help="how much data, e.g. 1GB (100-byte records)")
    p.add_argument("--start", type=int, default=0, help="first record number (gensort -b)")
    p.add_argument("--ascii", action="store_true", help="printable records (gensort -a)")
    p.add_argument("--skew", action="store_true", help="skewed keys (gensort -s)")
    p.add_argument("--blob", help="GUID for the new blob (default: a random one)")
    p.add_argument("--workers", type=int, default=2, help="generator processes (default 2)")
    p.add_argument("--metaserver", help="metaserver URL (default: $FDS_METASERVER, then ./.fds/cluster.json)")
    p.set_defaults(run=_gen)
    add_commands(sub, parse_size)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()  # heads and workers move tracts and bins of megabytes (fds.buffers.tune_allocator)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("fds-minutesort: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
