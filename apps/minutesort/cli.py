"""``fds-minutesort``: the MinuteSort benchmark on fds.

- ``gen``: gensort-compatible records written into a blob; prints its GUID.
- ``sort``: sort a record blob into one output blob per key range, and write
  a manifest listing them in key order.
- ``validate``: valsort over output blobs in order (or a plain file).
- ``run``: gen, sort and validate, with a report (``--local`` starts a cluster).
- ``worker``: a sort worker on another host: ``--head URL`` for one sort
  (``sort --remote-workers``), or ``--serve`` for a standing worker that takes
  part in every sort whose head invites it (``sort --worker-urls``).

Each command prints what it did to stderr (progress bars on a terminal, then
one summary line) and its result to stdout: a GUID for ``gen`` (one JSON
object with ``--json``), one JSON object for the others. The work itself is
:mod:`apps.minutesort._api`, which Python programs call directly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from apps.minutesort._aio import run_async
from apps.minutesort._api import ByteProgress, PhaseProgress, read_manifest, run, sort, write_manifest
from apps.minutesort._auth import insecure_process
from apps.minutesort._blobio import generate_blob
from apps.minutesort._check import blob_checksum, validate_blobs
from apps.minutesort._config import size_bytes
from apps.minutesort._gensort import RECORD_SIZE
from apps.minutesort._types import SortFailed, SortOptions, SortResult
from apps.minutesort._valsort import validate_file
from fds import tune_allocator
from fds.cli.discover import NoCluster, find_metaserver
from fds.client import Client, FDSError, Unavailable
from fds.progress import byte_bar, count_bar

__all__ = ["main", "parse_size", "build_parser"]

_METASERVER_HELP = "metaserver URL (default: $FDS_METASERVER, then ./.fds/cluster.json)"


def parse_size(text: str) -> int:
    """Bytes from '1GB', '500MB', '2GiB' or a plain number; the Sort Benchmark counts decimal units."""
    try:
        return size_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _err(message: object, code: int = 1) -> int:
    print(f"fds-minutesort: {message}", file=sys.stderr)
    return code


# -- progress on a terminal ------------------------------------------------------------------------------
_UNITS_OF = {"read": "units", "sort": "buckets"}


@contextlib.contextmanager
def _bars(quiet: bool) -> Iterator[PhaseProgress]:
    """The ``(phase, done, total)`` callback of a sort or run: one bar per phase as it is reached
    (:mod:`fds.progress`: drawn only on a terminal, and not with ``--quiet``), each gone when the next begins."""
    with contextlib.ExitStack() as stack:
        shown: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in shown:
                stack.close()  # the previous phase's bar
                shown.clear()
                bar = byte_bar(phase, total, quiet=quiet) if phase == "gen" \
                    else count_bar(phase, total, unit=_UNITS_OF.get(phase, ""), quiet=quiet)
                shown[phase] = stack.enter_context(bar)
            shown[phase].update(done, total=total)

        yield update


def _byte_counter(progress: PhaseProgress, phase: str, total: int) -> ByteProgress:
    """A per-tract byte callback feeding ``progress`` as phase ``phase``."""
    done = 0

    def advance(nbytes: int) -> None:
        nonlocal done
        done += nbytes
        progress(phase, done, total)

    return advance


# -- gen -----------------------------------------------------------------------------------------------
def _gen(args: argparse.Namespace) -> int:
    if args.records is None and args.size is None:
        return _err("gen: give --records N or --size SIZE", 2)
    count = args.records if args.records is not None else args.size // RECORD_SIZE
    if count < 0 or args.start < 0:
        return _err("gen: record counts and offsets are 0 or more", 2)
    try:
        metaserver = find_metaserver(args.metaserver)
    except NoCluster as exc:
        return _err(exc, 3)

    async def work() -> str:
        async with Client(metaserver) as fds:
            with _bars(args.quiet) as progress:
                blob = await generate_blob(fds, count, start=args.start, ascii=args.ascii, skew=args.skew,
                                           guid=args.blob, workers=args.workers,
                                           progress=_byte_counter(progress, "gen", count * RECORD_SIZE))
            return blob.guid

    started = time.perf_counter()
    try:
        guid = run_async(work())
    except FDSError as exc:
        return _err(exc, 3 if isinstance(exc, Unavailable) else 1)
    seconds = time.perf_counter() - started
    gb = count * RECORD_SIZE / 1e9
    print(f"generated {count:,} records ({gb:.3f} GB) into blob {guid} in {seconds:.2f} s "
          f"({gb / max(seconds, 1e-9):.2f} GB/s)", file=sys.stderr)
    if args.json:
        print(json.dumps({"input_blob": guid, "records": count, "bytes": count * RECORD_SIZE, "start": args.start,
                          "ascii": args.ascii, "skew": args.skew, "gen_seconds": round(seconds, 3)}))
    else:
        print(guid)
    return 0


# -- sort ----------------------------------------------------------------------------------------------
def _worker_urls(args: argparse.Namespace) -> list[str]:
    """Standing workers from ``--worker-urls`` and ``--worker-urls-file`` (one URL a line, # comments)."""
    urls = [u.strip() for u in (args.worker_urls or "").split(",") if u.strip()]
    if args.worker_urls_file:
        text = Path(args.worker_urls_file).read_text()
        urls += [line.split("#", 1)[0].strip() for line in text.splitlines() if line.split("#", 1)[0].strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"worker URL {url!r}: give http://HOST:PORT of a `fds-minutesort worker --serve`")
    if len(set(urls)) != len(urls):
        raise ValueError("a standing worker is listed twice: it runs one sort process at a time")
    return urls


def _options(args: argparse.Namespace) -> SortOptions:
    """The sort's options from the flags; :class:`ValueError` when they do not fit together."""
    urls = _worker_urls(args)
    workers = args.workers
    if urls:
        if workers is not None and workers != len(urls):
            raise ValueError(f"--workers {workers} but {len(urls)} standing workers listed: leave out --workers")
        if args.remote_workers:
            raise ValueError("--remote-workers waits for workers to register; with --worker-urls the head invites "
                             "them")
        workers = len(urls)
    elif workers is None:
        workers = 2
    if workers < 1:
        raise ValueError("--workers must be at least 1")
    slow_worker, slow_factor = args.slow_worker if args.slow_worker else (None, 1.0)
    return SortOptions(workers=workers, daytona=args.daytona, static=args.static, unit_tracts=args.unit_tracts,
                       slow_worker=slow_worker, slow_factor=slow_factor, spawn=not args.remote_workers,
                       worker_urls=urls, host=args.host, port=args.port, advertise_url=args.advertise_url or "",
                       silence_timeout=args.silence_timeout, memory=args.memory or 0,
                       record_memory=args.record_memory or 0, buckets_per_worker=args.buckets_per_worker,
                       fixed_buckets=args.fixed_buckets, spill_all=args.spill_all, solo_bytes=args.solo_bytes)


def _sort(args: argparse.Namespace) -> int:
    try:
        metaserver = find_metaserver(args.metaserver)
        options = _options(args)
    except NoCluster as exc:
        return _err(exc, 3)
    except (OSError, ValueError) as exc:
        return _err(exc, 2)
    try:
        with _bars(args.quiet) as progress:
            result = run_async(sort(metaserver, args.input, options, progress=progress))
    except (SortFailed, FDSError) as exc:
        return _err(exc, 3 if isinstance(exc, Unavailable) else 1)
    manifest = Path(args.manifest or f"minutesort-{result.input_blob[:8]}.json")
    write_manifest(manifest, result)
    print(f"sorted {result.records:,} records ({result.bytes / 1e9:.3f} GB) in {result.seconds:.2f} s "
          f"({result.bytes / 1e9 / result.seconds:.2f} GB/s) into {len(result.output_blobs)} blobs; "
          f"manifest {manifest}" + _recovered(result), file=sys.stderr)
    print(json.dumps({**result.to_json(), "manifest": str(manifest)}))
    return 0


def _recovered(result: SortResult) -> str:
    """What the summary line says about spilling and lost workers (nothing when there was neither)."""
    said = ""
    if result.spilled_bytes:
        said += f"; {result.spilled_bytes / 1e9:.2f} GB spilled to fds (more than the workers' memory)"
    if result.deaths:
        said += f"; {len(result.deaths)} worker(s) lost on the way, their work went to the others"
    return said


# -- validate --------------------------------------------------------------------------------------------
def _validate(args: argparse.Namespace) -> int:
    expected = args.checksum
    if args.file:
        try:
            summary = validate_file(args.file)
        except (OSError, ValueError) as exc:
            return _err(f"cannot validate {args.file}: {exc}")
    else:
        try:
            metaserver = find_metaserver(args.metaserver)
        except NoCluster as exc:
            return _err(exc, 3)
        guids = list(args.blobs or [])
        input_blob = args.input
        if args.manifest:
            try:
                guids, listed_input = read_manifest(args.manifest)
            except ValueError as exc:
                return _err(exc)
            input_blob = input_blob or listed_input
        if not guids:
            return _err("give --manifest FILE, --blobs GUID..., or --file PATH", 2)
        try:
            summary = run_async(validate_blobs(metaserver, guids))
            if expected is None and input_blob:
                expected = run_async(blob_checksum(metaserver, input_blob))
        except FDSError as exc:
            return _err(exc)
        except ValueError as exc:  # a blob that ends mid-record
            return _err(f"not records: {exc}")
    valid = summary.valid and (expected is None or expected == summary.checksum)
    report = {**summary.to_json(), "valid": valid}
    if expected is not None:
        report["expected_checksum"] = f"{expected:x}"
    verdict = ", SUCCESS - all records are in order" if valid else (
        f", FAILURE: {summary.unordered} records out of order"
        + (", checksum differs from the input's" if expected is not None and expected != summary.checksum else ""))
    print(f"records {summary.records:,}, duplicate keys {summary.duplicates:,}, checksum {summary.checksum_hex}"
          + (f" (input {expected:x})" if expected is not None else "") + verdict, file=sys.stderr)
    print(json.dumps(report))
    return 0 if valid else 1


# -- run -----------------------------------------------------------------------------------------------
def _run(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
    except (OSError, ValueError) as exc:
        return _err(exc, 2)
    count = args.records if args.records is not None else (args.size // RECORD_SIZE if args.size else None)
    if not count and not args.input:
        return _err("give --size SIZE (e.g. 1GB), --records N, or --input GUID", 2)
    if count and args.input:
        return _err("--input sorts an existing blob: leave out --size and --records", 2)
    cluster = None
    try:
        running = _running_cluster(Path(args.dir)) if args.local else None
        if running:
            print(f"using the local cluster already running in {args.dir} ({running[0]})", file=sys.stderr)
            metaserver = running[0]
            if running[1]:
                os.environ.setdefault("FDS_SECRET_FILE", running[1])
        elif args.local:
            from fds.local import LocalCluster

            try:
                cluster = LocalCluster(Path(args.dir), tractservers=args.tractservers, replicas=args.replicas,
                                       port=0, gateway=False)
            except ValueError as exc:  # settings that cannot work
                return _err(exc)
            for warning in cluster.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            print(f"starting a local cluster in {cluster.dir} ({cluster.tractservers} tract servers, "
                  f"k={cluster.replicas})", file=sys.stderr)
            cluster.start()
            metaserver = cluster.metaserver_url
            if cluster.secret_file is not None:  # this process, and the workers it starts, find it there
                os.environ["FDS_SECRET_FILE"] = str(cluster.secret_file)
        else:
            metaserver = find_metaserver(args.metaserver)
        with _bars(args.quiet) as progress:
            report = run_async(run(metaserver, records=count or 0, input_blob=args.input, options=options,
                                   skew=args.skew, keep=args.keep, manifest=args.manifest, progress=progress,
                                   gen_progress=_byte_counter(progress, "gen", (count or 0) * RECORD_SIZE)))
    except NoCluster as exc:
        return _err(exc, 3)
    except (SortFailed, FDSError, RuntimeError, TimeoutError) as exc:
        return _err(exc)
    finally:
        if cluster is not None:
            cluster.stop()
    gb = report.bytes / 1e9
    print(f"\nfds-minutesort run: {report.records:,} records, {gb:.3f} GB, {report.sort.mode}, "
          f"{report.workers} workers", file=sys.stderr)
    for name, seconds in report.phases.items():
        print(f"  {name:<20} {seconds:8.2f} s", file=sys.stderr)
    if report.sort.spilled_bytes:
        print(f"  {'spilled to fds':<20} {report.sort.spilled_bytes / 1e9:8.2f} GB", file=sys.stderr)
    for death in report.sort.deaths:
        print(f"  {'worker lost':<20} {death} (its work went to the others)", file=sys.stderr)
    print(f"  {'sort time':<20} {report.sort.seconds:8.2f} s  ({gb / report.sort.seconds:.2f} GB/s)\n"
          f"  {'checksum':<20} {report.checksum}\n"
          f"  {'verdict':<20} {'VALID' if report.valid else 'INVALID'}", file=sys.stderr)
    print(json.dumps(report.to_json()))
    return 0 if report.valid else 1


def _running_cluster(directory: Path) -> tuple[str, str] | None:
    """(metaserver URL, secret file) of a cluster already serving from ``directory`` (``fds local up``), if any."""
    import httpx

    from fds.local import ClusterFile

    try:
        recorded = ClusterFile.read(directory)
        if not recorded.metaserver:
            return None
        httpx.get(f"{recorded.metaserver}/healthz", timeout=2.0).raise_for_status()
    except (OSError, ValueError, httpx.HTTPError):
        return None
    return recorded.metaserver, recorded.secret_file


# -- worker --------------------------------------------------------------------------------------------
def _worker(args: argparse.Namespace) -> int:
    from apps.minutesort._worker import run_worker

    serve = args.serve or bool(args.config) or bool(args.ready_file)
    if serve == bool(args.head):
        return _err("worker: give --head URL (one sort) or --serve (a standing worker), not both", 2)
    logging.basicConfig(level=os.environ.get("FDS_LOG_LEVEL", "INFO" if serve else "WARNING").upper(),
                        stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if serve:
        return _serve_worker(args)
    if args.insecure:
        insecure_process()
    sock = socket.socket(fileno=args.listen_fd) if args.listen_fd is not None else None
    try:
        return run_async(run_worker(args.head, host=args.host or "127.0.0.1", advertise=args.advertise_url or "",
                                    throttle=args.throttle, job=args.job or "", sock=sock,
                                    service_pid=args.service_pid, service_url=args.service_url or "",
                                    budget=args.memory or 0, arena_fd=args.arena_fd))
    except KeyboardInterrupt:
        return 130
    except Exception:  # noqa: BLE001 - a crash, told apart from a failure the head knows of (status 1)
        logging.getLogger("fds.minutesort").exception("worker crashed")
        return 70


def _serve_worker(args: argparse.Namespace) -> int:
    from apps.minutesort._config import check_worker_config, load_worker_config
    from apps.minutesort._service import run_service
    from fds.config import ConfigError

    overrides = {"host": args.host, "port": args.port, "data_port": args.data_port,
                 "advertise_url": args.advertise_url, "advertise_data_url": args.advertise_data_url,
                 "secret_file": args.secret_file, "metaserver": args.metaserver, "arena": args.arena,
                 "memory": str(args.memory) if args.memory else None}
    try:
        config = load_worker_config(args.config, overrides)
        check_worker_config(config)
    except ConfigError as exc:
        return _err(exc, 2)
    try:
        return run_async(run_service(config, ready_file=args.ready_file))
    except ConfigError as exc:
        return _err(exc, 2)
    except KeyboardInterrupt:
        return 130


# -- the parser ------------------------------------------------------------------------------------------
def _slow_worker(text: str) -> tuple[int, float]:
    """``I[:FACTOR]`` for --slow-worker, or a usage error that says what is wrong."""
    index, _, factor = text.partition(":")
    try:
        parsed = int(index), float(factor or 3.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not I[:FACTOR], e.g. 0:3") from None
    if parsed[0] < 0 or not 0 < parsed[1] < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be >= 0 and FACTOR positive")
    return parsed


def _hex(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a hexadecimal checksum") from None


def _sort_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="sort workers, one process each (default 2, or one per "
                                                "--worker-urls)")
    p.add_argument("--daytona", action="store_true", help="sample the input to pick bucket boundaries (default: "
                                                          "Indy, uniform boundaries)")
    p.add_argument("--static", action="store_true", help="split the input into fixed equal ranges up front "
                                                         "instead of handing it out on demand (for comparison)")
    p.add_argument("--unit-tracts", dest="unit_tracts", type=int, default=4,
                   help="tracts per unit of work, read with that many requests in flight (default 4)")
    p.add_argument("--slow-worker", dest="slow_worker", metavar="I[:FACTOR]", type=_slow_worker,
                   help="make worker I read and sort FACTOR times slower (default 3), for the straggler experiments")
    p.add_argument("--memory", type=parse_size, metavar="SIZE",
                   help="memory each worker may use in all, e.g. 1GB (default: each worker's own --memory, else "
                        "70%% of its host's available memory, shared by the workers there); what does not fit "
                        "spills to fds")
    p.add_argument("--record-memory", dest="record_memory", type=parse_size, metavar="SIZE",
                   help="records each worker may hold in memory (default: what --memory leaves)")
    p.add_argument("--buckets-per-worker", dest="buckets_per_worker", type=int, default=4,
                   help="key ranges per worker when everything fits in memory (default 4): handed out on demand")
    p.add_argument("--fixed-buckets", dest="fixed_buckets", action="store_true",
                   help="each worker sorts the buckets it holds, none handed out on demand (for comparison)")
    p.add_argument("--spill-all", dest="spill_all", action="store_true",
                   help="write every bucket to fds before sorting it (materialise everything, for comparison)")
    p.add_argument("--solo-bytes", dest="solo_bytes", type=parse_size, default=0, metavar="SIZE",
                   help="sort inputs up to SIZE in this process, without workers (default 0: never)")
    p.add_argument("--remote-workers", dest="remote_workers", action="store_true",
                   help="start no workers: wait for --workers of them to register (`fds-minutesort worker --head`)")
    p.add_argument("--worker-urls", dest="worker_urls", metavar="URL[,URL...]",
                   help="invite these standing workers (`fds-minutesort worker --serve`), one worker each")
    p.add_argument("--worker-urls-file", dest="worker_urls_file", metavar="FILE",
                   help="standing workers' URLs, one a line (# comments), added to --worker-urls")
    p.add_argument("--host", default="127.0.0.1", help="address the head listens on")
    p.add_argument("--port", type=int, default=0, help="port the head listens on (0: any)")
    p.add_argument("--advertise-url", dest="advertise_url",
                   help="URL workers reach the head at (default http://HOST:PORT; set it with --host 0.0.0.0)")
    p.add_argument("--silence-timeout", dest="silence_timeout", type=float, default=15.0,
                   help="a worker silent this many seconds counts as dead (default 15)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--metaserver", help=_METASERVER_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fds-minutesort", description="The MinuteSort benchmark on fds.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("gen", help="write gensort-compatible records into a new blob; prints its GUID")
    p.add_argument("--records", type=int, help="how many records")
    p.add_argument("--size", type=parse_size, help="how much data, e.g. 1GB (100-byte records)")
    p.add_argument("--start", type=int, default=0, help="first record number (gensort -b)")
    p.add_argument("--ascii", action="store_true", help="printable records (gensort -a)")
    p.add_argument("--skew", action="store_true", help="skewed keys (gensort -s)")
    p.add_argument("--blob", help="GUID for the new blob (default: a random one)")
    p.add_argument("--workers", type=int, default=2, help="generator processes (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object (GUID, records, bytes, time) instead")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--metaserver", help=_METASERVER_HELP)
    p.set_defaults(run=_gen)

    p = sub.add_parser("sort", help="sort a record blob into one output blob per key range")
    p.add_argument("input", metavar="INPUT_BLOB", help="GUID of a blob of 100-byte records")
    p.add_argument("--manifest", help="where to write the manifest (default ./minutesort-<input>.json)")
    _sort_flags(p)
    p.set_defaults(run=_sort)

    p = sub.add_parser("validate", help="check sorted output like valsort: order, count, duplicates, checksum")
    p.add_argument("--manifest", help="a manifest written by `sort` (output blobs in key order)")
    p.add_argument("--blobs", nargs="+", metavar="GUID", help="output blobs, in key order")
    p.add_argument("--file", help="a plain file of records instead of blobs")
    p.add_argument("--input", metavar="GUID", help="input blob whose checksum the output must match")
    p.add_argument("--checksum", type=_hex, help="expected checksum (hex), e.g. from valsort -s")
    p.add_argument("--metaserver", help=_METASERVER_HELP)
    p.set_defaults(run=_validate)

    p = sub.add_parser("run", help="gen, sort and validate, with a report")
    p.add_argument("--size", type=parse_size, help="how much data, e.g. 1GB")
    p.add_argument("--records", type=int, help="how many records")
    p.add_argument("--input", metavar="GUID", help="sort and validate this blob of records instead of generating one "
                                                  "(it is kept)")
    p.add_argument("--skew", action="store_true", help="skewed keys (use with --daytona)")
    p.add_argument("--local", action="store_true", help="start a local cluster in --dir first (as `fds local up`)")
    p.add_argument("--dir", default="./.fds", help="the local cluster's data directory (default ./.fds)")
    p.add_argument("--tractservers", type=int, help="tract servers of a new local cluster (default 4)")
    p.add_argument("--replicas", type=int, help="replication of a new local cluster")
    p.add_argument("--keep", action="store_true", help="keep the input and output blobs (fetch them later with "
                                                       "`fds get`, after `fds local up`)")
    p.add_argument("--manifest", help="also write the manifest here")
    _sort_flags(p)
    p.set_defaults(run=_run)

    p = sub.add_parser("worker", help="a sort worker on this host: for one sort (--head) or standing (--serve)",
                       description="With --head URL: register with that sort's head, sort, exit. With --serve: "
                                   "run until stopped, taking part in each sort whose head invites it "
                                   "(`sort --worker-urls`), one at a time, each in a child process.")
    p.add_argument("--head", help="one sort: the URL of its head (`sort --remote-workers --port PORT`)")
    p.add_argument("--serve", action="store_true", help="a standing worker: serve sorts until stopped")
    p.add_argument("--config", help="--serve: settings file, table [minutesort-worker] (implies --serve)")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="--serve: API port heads invite it on (default 7300)")
    p.add_argument("--data-port", dest="data_port", type=int,
                   help="--serve: port peers send bins to (default 7301; 0: any)")
    p.add_argument("--advertise-url", dest="advertise_url",
                   help="URL others reach this worker at: with --head, peers' bins; with --serve, heads")
    p.add_argument("--advertise-data-url", dest="advertise_data_url", help="--serve: URL peers send bins to")
    p.add_argument("--secret-file", dest="secret_file", help="--serve: the cluster secret (default: as fds clients)")
    p.add_argument("--ready-file", dest="ready_file", help="--serve: write the URL here once serving")
    p.add_argument("--metaserver", help="--serve: the cluster whose small blobs it sorts on its own (POST /v1/solo; "
                                        "default $FDS_METASERVER)")
    p.add_argument("--throttle", type=float, default=1.0, help="work this many times slower (straggler tests)")
    p.add_argument("--memory", type=parse_size, metavar="SIZE",
                   help="memory this worker (with --serve: each of its sort processes) may use in all "
                        "(default: the head decides)")
    p.add_argument("--arena", metavar="SIZE|auto",
                   help="--serve: warm memory to keep for sorts, touched once at start-up and lent to each sort "
                        "process (faster than fresh memory on VMs); auto: the --memory budget less 256 MiB "
                        "(default: none)")
    p.add_argument("--job", help="with --head: the sort this worker was invited to (the head checks it)")
    # Set by a standing worker for the child it starts per sort.
    p.add_argument("--listen-fd", dest="listen_fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--arena-fd", dest="arena_fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--service-pid", dest="service_pid", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--service-url", dest="service_url", help=argparse.SUPPRESS)
    p.add_argument("--insecure", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=_worker)
    return parser


def _quiet_logs() -> None:
    """Progress and results only on the terminal: the head's and workers' servers log each refused request
    (``fds.access``), which is for servers' logs, not a user's screen; ``FDS_LOG_LEVEL`` brings them back."""
    if not os.environ.get("FDS_LOG_LEVEL"):
        logging.getLogger("fds.access").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_logs()
    tune_allocator()  # heads and workers move tracts and bins of megabytes (fds.buffers.tune_allocator)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("fds-minutesort: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
