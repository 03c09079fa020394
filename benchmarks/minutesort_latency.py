"""Millisecond sorts: latency of small fds-to-fds sorts from a long-lived program over standing workers.

    python benchmarks/minutesort_latency.py                      # 1 MB, 10 MB, 100 MB
    python benchmarks/minutesort_latency.py --sizes 1MB --runs 500

It starts one local cluster (4 tract servers, k=1, 8 MiB tracts) and two
standing workers (``fds-minutesort worker --serve``), all tracked by PID,
then, from this one process, sorts each input again and again through a
:class:`apps.minutesort.Sorter` and reports p50 and p99 of the time from the
call to the output being durable in fds (the call returns only then). Each
output is deleted after its run (outside the timing); the first output of
each size is validated. ``--full`` also times the same inputs sorted with
the shuffle (a head inviting both standing workers), for comparison.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from apps.minutesort import Sorter, run_async
from apps.minutesort._blobio import generate_blob
from apps.minutesort._check import validate_blobs
from apps.minutesort.cli import parse_size
from fds.client import Client
from fds.local import LocalCluster


def start_service(directory: Path, metaserver: str,
                  flags: list[str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    ready = directory / "ready"
    log = open(directory / "service.log", "wb")  # noqa: SIM115 - the process keeps it
    proc = subprocess.Popen([sys.executable, "-m", "apps.minutesort.cli", "worker", "--serve", "--port", "0",
                             "--data-port", "0", "--ready-file", str(ready), "--metaserver", metaserver,
                             *(flags or [])],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the worker service did not start: {(directory / 'service.log').read_text()}")
        time.sleep(0.05)
    return proc, ready.read_text().strip()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(metaserver: str, urls: list[str], size: int, runs: int, solo: bool) -> dict[str, Any]:
    async with Client(metaserver) as fds:
        guid = (await generate_blob(fds, size // 100)).guid
        seconds: list[float] = []
        steps: list[dict[str, float]] = []
        async with Sorter(metaserver, urls, solo=solo) as sorter:
            for run in range(runs):
                started = time.perf_counter()
                result = await sorter.sort(guid)
                seconds.append(time.perf_counter() - started)
                steps.append(result.phases)
                if run == 0:
                    summary = await validate_blobs(metaserver, result.output_blobs)
                    if not summary.valid or summary.records != size // 100:
                        raise RuntimeError(f"invalid output: {summary}")
                for output in result.output_blobs:
                    await fds.delete_blob(output)
        await fds.delete_blob(guid)
    middle = steps[sorted(range(runs), key=lambda i: seconds[i])[runs // 2]]
    return {"size": size, "runs": runs, "path": "solo" if solo else "full sort",
            "p50_ms": round(1000 * percentile(seconds, 0.5), 1), "p99_ms": round(1000 * percentile(seconds, 0.99), 1),
            "min_ms": round(1000 * min(seconds), 1), "max_ms": round(1000 * max(seconds), 1),
            "steps_of_median_run": middle}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1MB", "10MB", "100MB"])
    parser.add_argument("--runs", type=int, help="runs per size (default 200, 100, 20 for 1, 10, 100 MB)")
    parser.add_argument("--full", action="store_true", help="also time full sorts (with the shuffle), 5 runs each")
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    where = Path(tempfile.mkdtemp(prefix="minutesort-latency-", dir=args.dir))
    cluster = LocalCluster(where / "cluster", tractservers=4, replicas=1, port=0, gateway=False)
    cluster.start()
    os.environ["FDS_SECRET_FILE"] = str(cluster.secret_file)
    services: list[subprocess.Popen[bytes]] = []
    results = []
    try:
        urls = []
        for i in range(2):
            (where / f"w{i}").mkdir()
            proc, url = start_service(where / f"w{i}", cluster.metaserver_url)
            services.append(proc)
            urls.append(url)
        print("| input | path | runs | p50 | p99 | min | steps of the median run (s) |")
        print("|---|---|---|---|---|---|---|")
        for text in args.sizes:
            size = parse_size(text)
            runs = args.runs or (200 if size <= 2_000_000 else 100 if size <= 20_000_000 else 20)
            for solo in (True, False) if args.full else (True,):
                r = run_async(measure(cluster.metaserver_url, urls, size, runs if solo else 5, solo))
                results.append(r)
                print(f"| {text} | {r['path']} | {r['runs']} | {r['p50_ms']} ms | {r['p99_ms']} ms | {r['min_ms']} ms "
                      f"| {r['steps_of_median_run']} |", flush=True)
    finally:
        for proc in services:
            proc.send_signal(signal.SIGTERM)
        for proc in services:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        cluster.stop()
        shutil.rmtree(where, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
