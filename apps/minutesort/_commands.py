"""``fds-minutesort sort | validate | run | worker``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from apps.minutesort._aio import run_async
from apps.minutesort._auth import http_client, insecure_process
from apps.minutesort._blobio import RECORD, generate_blob
from apps.minutesort._check import blob_checksum, validate_blobs
from apps.minutesort._head import SortFailed, SortOptions, SortResult, run_sort
from apps.minutesort._valsort import Summary, validate_file
from apps.minutesort._worker import run_worker
from fds.cli.discover import NoCluster, find_metaserver
from fds.client import Client, FDSError, Unavailable

__all__ = ["add_commands"]

_MASK128 = (1 << 128) - 1


def _err(message: object, code: int = 1) -> int:
    print(f"fds-minutesort: {message}", file=sys.stderr)
    return code


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


def _resolve_workers(args: argparse.Namespace) -> str | None:
    """Fill in ``args.workers`` and ``args.urls``; the reason the flags do not fit together, if they do not."""
    try:
        args.urls = _worker_urls(args)
    except (OSError, ValueError) as exc:
        return str(exc)
    if args.urls:
        if args.workers is not None and args.workers != len(args.urls):
            return f"--workers {args.workers} but {len(args.urls)} standing workers listed: leave out --workers"
        if args.remote_workers:
            return "--remote-workers waits for workers to register; with --worker-urls the head invites them"
        args.workers = len(args.urls)
    elif args.workers is None:
        args.workers = 2
    if args.workers < 1:
        return "--workers must be at least 1"
    return None


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


def _options(args: argparse.Namespace) -> SortOptions:
    slow_worker, slow_factor = args.slow_worker if args.slow_worker else (None, 1.0)
    return SortOptions(workers=args.workers, daytona=args.daytona, static=args.static,
                       unit_tracts=args.unit_tracts, slow_worker=slow_worker, slow_factor=slow_factor,
                       spawn=not args.remote_workers, worker_urls=args.urls, host=args.host, port=args.port,
                       advertise_url=args.advertise_url or "", silence_timeout=args.silence_timeout)


def _write_manifest(path: Path, result: SortResult, summary: Summary | None = None) -> None:
    manifest: dict[str, Any] = {
        "input_blob": result.input_blob, "output_blobs": result.output_blobs, "records": result.records,
        "bytes": result.bytes, "bucket_records": result.bucket_records, "mode": result.mode,
        "sort_seconds": round(result.seconds, 3),
    }
    if summary is not None:
        manifest["checksum"] = summary.checksum_hex
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def _progress_printer(quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} tracts"),
                   TimeElapsedColumn(), transient=True)
    bar.start()
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task("read + shuffle", total=total)
        bar.update(tasks[phase], completed=done)

    update.stop = bar.stop  # type: ignore[attr-defined]
    return update


async def _sort_and_report(metaserver: str, guid: str, options: SortOptions, quiet: bool) -> SortResult:
    progress = _progress_printer(quiet)
    try:
        return await run_sort(metaserver, guid, options, progress=progress)
    finally:
        if progress is not None:
            progress.stop()


def _sort(args: argparse.Namespace) -> int:
    try:
        metaserver = find_metaserver(args.metaserver)
    except NoCluster as exc:
        return _err(exc, 3)
    problem = _resolve_workers(args)
    if problem:
        return _err(problem, 2)
    try:
        result = run_async(_sort_and_report(metaserver, args.input, _options(args), args.quiet))
    except (SortFailed, FDSError) as exc:
        return _err(exc, 3 if isinstance(exc, Unavailable) else 1)
    manifest = Path(args.manifest or f"minutesort-{result.input_blob[:8]}.json")
    _write_manifest(manifest, result)
    print(f"sorted {result.records:,} records ({result.bytes / 1e9:.3f} GB) in {result.seconds:.2f} s "
          f"({result.bytes / 1e9 / result.seconds:.2f} GB/s) into {len(result.output_blobs)} blobs; "
          f"manifest {manifest}", file=sys.stderr)
    print(json.dumps({"records": result.records, "bytes": result.bytes, "sort_seconds": round(result.seconds, 3),
                      "input_blob": result.input_blob, "output_blobs": result.output_blobs,
                      "manifest": str(manifest), "phases": {k: round(v, 3) for k, v in result.phases.items()},
                      "worker_seconds": [{k: round(v, 3) for k, v in w["seconds"].items()} for w in result.workers],
                      "tracts_per_worker": [w["tracts_given"] for w in result.workers]}))
    return 0


def _validate(args: argparse.Namespace) -> int:
    if args.file:
        summary = validate_file(args.file)
        expected = args.checksum
    else:
        try:
            metaserver = find_metaserver(args.metaserver)
        except NoCluster as exc:
            return _err(exc, 3)
        guids = list(args.blobs or [])
        expected = args.checksum
        input_blob = args.input
        if args.manifest:
            try:
                manifest = json.loads(Path(args.manifest).read_text())
                guids = [str(g) for g in manifest["output_blobs"]]
                input_blob = input_blob or manifest.get("input_blob")
            except OSError as exc:
                return _err(f"cannot read the manifest {args.manifest}: {exc.strerror}")
            except (ValueError, KeyError, TypeError, AttributeError):
                return _err(f"{args.manifest} is not a manifest written by `fds-minutesort sort` "
                            "(JSON with \"output_blobs\")")
        if not guids:
            return _err("give --manifest FILE, --blobs GUID..., or --file PATH", 2)
        try:
            summary = run_async(validate_blobs(metaserver, guids))
            if expected is None and input_blob:
                expected = run_async(blob_checksum(metaserver, input_blob))
        except FDSError as exc:
            return _err(exc)
    report = {**summary.to_json(), "valid": summary.valid and (expected is None or expected == summary.checksum)}
    if expected is not None:
        report["expected_checksum"] = f"{expected:x}"
    print(f"records {summary.records:,}, duplicate keys {summary.duplicates:,}, checksum {summary.checksum_hex}"
          + (f" (input {expected:x})" if expected is not None else "")
          + (", SUCCESS - all records are in order" if report["valid"] else
             f", FAILURE: {summary.unordered} records out of order"
             + (", checksum differs from the input's" if expected is not None and expected != summary.checksum
                else "")), file=sys.stderr)
    print(json.dumps(report))
    return 0 if report["valid"] else 1


def _run(args: argparse.Namespace) -> int:
    from fds.local import LocalCluster

    problem = _resolve_workers(args)
    if problem:
        return _err(problem, 2)
    count = args.records if args.records is not None else (args.size // RECORD if args.size else None)
    if not count:
        return _err("give --size SIZE (e.g. 1GB) or --records N", 2)
    cluster = None
    try:
        running = _running_cluster(Path(args.dir)) if args.local else None
        if running:
            print(f"using the local cluster already running in {args.dir} ({running})", file=sys.stderr)
            metaserver = running
        elif args.local:
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
        else:
            metaserver = find_metaserver(args.metaserver)
        report = run_async(_run_phases(metaserver, count, args))
    except NoCluster as exc:
        return _err(exc, 3)
    except (SortFailed, FDSError, RuntimeError, TimeoutError) as exc:
        return _err(exc)
    finally:
        if cluster is not None:
            cluster.stop()
    gb = report["bytes"] / 1e9
    print(f"\nfds-minutesort run: {report['records']:,} records, {gb:.3f} GB, {report['mode']}, "
          f"{args.workers} workers", file=sys.stderr)
    for name, seconds in report["phases"].items():
        print(f"  {name:<14} {seconds:8.2f} s", file=sys.stderr)
    print(f"  sort time      {report['sort_seconds']:8.2f} s  ({gb / report['sort_seconds']:.2f} GB/s)\n"
          f"  checksum       {report['checksum']}\n"
          f"  verdict        {'VALID' if report['valid'] else 'INVALID'}", file=sys.stderr)
    print(json.dumps(report))
    return 0 if report["valid"] else 1


def _running_cluster(directory: Path) -> str | None:
    """The metaserver URL of a cluster already serving from ``directory`` (``fds local up``), if any."""
    import httpx

    from fds.local import ClusterFile

    async def answers(url: str) -> bool:
        async with http_client(2.0) as http:
            return (await http.get(f"{url}/v1/cluster")).status_code == 200

    try:
        url = ClusterFile.read(directory).metaserver
        if url and run_async(answers(url)):
            return url
    except (OSError, ValueError, httpx.HTTPError):
        pass
    return None


def byte_bar(description: str, total: int, quiet: bool = False) -> Any:
    """A rich progress bar over ``total`` bytes on a terminal (a context manager yielding a callback), or a no-op."""
    import contextlib

    if quiet or not sys.stderr.isatty():
        return contextlib.nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    @contextlib.contextmanager
    def bar() -> Any:
        with Progress(TextColumn(description), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(description, total=total)
            yield lambda n: progress.advance(task, n)

    return bar()


async def _run_phases(metaserver: str, count: int, args: argparse.Namespace) -> dict[str, Any]:
    phases: dict[str, float] = {}
    checksums: list[int] = []
    t0 = time.perf_counter()
    async with Client(metaserver) as fds:
        with byte_bar("gen", count * RECORD, args.quiet) as advance:
            blob = await generate_blob(fds, count, skew=args.skew, workers=2, checksums=checksums,
                                       progress=advance)
    phases["gen"] = time.perf_counter() - t0
    input_checksum = sum(checksums) & _MASK128
    result = await _sort_and_report(metaserver, blob.guid, _options(args), args.quiet)
    phases.update({f"sort: {k}": v for k, v in result.phases.items()})
    t1 = time.perf_counter()
    summary = await validate_blobs(metaserver, result.output_blobs)
    phases["validate"] = time.perf_counter() - t1
    valid = summary.valid and summary.checksum == input_checksum and summary.records == count
    if args.manifest:
        _write_manifest(Path(args.manifest), result, summary)
    if not args.keep:
        async with Client(metaserver) as fds:
            for guid in [blob.guid, *result.output_blobs]:
                await fds.delete_blob(guid)
    rss = [w["peak_rss_bytes"] for w in result.workers]
    return {
        "records": count, "bytes": count * RECORD, "sort_seconds": round(result.seconds, 3),
        "gb_per_s": round(count * RECORD / 1e9 / result.seconds, 3), "checksum": summary.checksum_hex,
        "input_checksum": f"{input_checksum:x}", "duplicates": summary.duplicates, "valid": valid,
        "input_blob": blob.guid, "output_blobs": result.output_blobs, "mode": result.mode,
        "workers": args.workers, "phases": {k: round(v, 3) for k, v in phases.items()},
        "bucket_records": result.bucket_records,
        "tracts_per_worker": [w["tracts_given"] for w in result.workers],
        "worker_seconds": [{k: round(v, 3) for k, v in w["seconds"].items()} for w in result.workers],
        "peak_rss_per_worker_bytes": rss,
        "peak_rss_per_worker_vs_share": round(max(rss) / (count * RECORD / args.workers), 2) if rss else None,
        "kept": bool(args.keep),
    }


def _worker(args: argparse.Namespace) -> int:
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
                                    service_pid=args.service_pid, service_url=args.service_url or ""))
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
                 "secret_file": args.secret_file}
    try:
        config = load_worker_config(args.config, overrides)
        check_worker_config(config)
    except ConfigError as exc:
        return _err(exc, 2)
    try:
        return run_async(run_service(config, ready_file=args.ready_file))
    except KeyboardInterrupt:
        return 130


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
                   help="make worker I read FACTOR times slower (default 3), for the straggler experiment")
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
                   help="fail the run when a worker is silent this many seconds (default 15)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--metaserver", help="metaserver URL (default: $FDS_METASERVER, then ./.fds/cluster.json)")


def add_commands(sub: Any, parse_size: Any) -> None:
    p = sub.add_parser("sort", help="sort a record blob into one output blob per key range")
    p.add_argument("input", metavar="INPUT_BLOB", help="GUID of a blob written by `fds-minutesort gen`")
    p.add_argument("--manifest", help="where to write the manifest (default ./minutesort-<input>.json)")
    _sort_flags(p)
    p.set_defaults(run=_sort)

    p = sub.add_parser("validate", help="check sorted output like valsort: order, count, duplicates, checksum")
    p.add_argument("--manifest", help="a manifest written by `sort` (output blobs in key order)")
    p.add_argument("--blobs", nargs="+", metavar="GUID", help="output blobs, in key order")
    p.add_argument("--file", help="a plain file of records instead of blobs")
    p.add_argument("--input", metavar="GUID", help="input blob whose checksum the output must match")
    p.add_argument("--checksum", type=_hex, help="expected checksum (hex), e.g. from valsort -s or `gen`")
    p.add_argument("--metaserver", help="metaserver URL (default: $FDS_METASERVER, then ./.fds/cluster.json)")
    p.set_defaults(run=_validate)

    p = sub.add_parser("run", help="gen, sort and validate, with a report")
    p.add_argument("--size", type=parse_size, help="how much data, e.g. 1GB")
    p.add_argument("--records", type=int, help="how many records")
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
    p.add_argument("--throttle", type=float, default=1.0, help="read this many times slower (straggler tests)")
    p.add_argument("--job", help="with --head: the sort this worker was invited to (the head checks it)")
    # Set by a standing worker for the child it starts per sort.
    p.add_argument("--listen-fd", dest="listen_fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--service-pid", dest="service_pid", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--service-url", dest="service_url", help=argparse.SUPPRESS)
    p.add_argument("--insecure", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=_worker)
