"""MinuteSort on this machine: sort time by size, and the straggler experiment.

    python benchmarks/minutesort.py --sizes 1GB 4GB --repeat 3
    python benchmarks/minutesort.py --sizes 8GB 10GB 12GB            # how far 60 s goes
    python benchmarks/minutesort.py --stragglers --size 2GB --repeat 3

It starts one local cluster (4 tract servers, k=1, 8 MiB tracts; processes
tracked by PID, data under ``--dir``) and runs ``fds-minutesort run`` against
it: gen, then the timed sort (start-up of the workers included), then
validate, then delete. Each figure is the median of ``--repeat`` runs; the
report gives every run's sort time and the phase breakdown of the median run.

``--stragglers`` runs the same sort four ways: normal, worker 0 reading 3x
slower with on-demand units, and both again with a static split.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

from fds.local import LocalCluster


def run(metaserver: str, size: str, flags: list[str]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "apps.minutesort.cli", "run", "--size", size, "--quiet",
                           "--metaserver", metaserver, *flags], capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"run {size} {flags} failed: {proc.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def repeated(metaserver: str, size: str, flags: list[str], times: int) -> dict[str, Any]:
    reports = sorted((run(metaserver, size, flags) for _ in range(times)), key=lambda r: r["sort_seconds"])
    middle = reports[len(reports) // 2]
    return {**middle, "all_sort_seconds": [r["sort_seconds"] for r in reports],
            "median_sort_seconds": median(r["sort_seconds"] for r in reports)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1GB", "4GB"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--stragglers", action="store_true")
    parser.add_argument("--size", default="2GB", help="size for --stragglers")
    parser.add_argument("--slow", default="0:3", help="--slow-worker for --stragglers")
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    where = Path(tempfile.mkdtemp(prefix="minutesort-", dir=args.dir))
    cluster = LocalCluster(where, tractservers=4, replicas=1, port=0, gateway=False)
    cluster.start()
    os.environ["FDS_SECRET_FILE"] = str(cluster.secret_file)  # `fds-minutesort run` (a subprocess) finds it there
    results: list[dict[str, Any]] = []
    try:
        base = ["--workers", str(args.workers)]
        if args.stragglers:
            cases = [("on demand", []), (f"on demand, worker {args.slow} slow", ["--slow-worker", args.slow]),
                     ("static split", ["--static"]),
                     (f"static split, worker {args.slow} slow", ["--static", "--slow-worker", args.slow])]
            print("| input | mode | sort s (median) | all runs | tracts per worker |")
            print("|---|---|---|---|---|")
            for name, flags in cases:
                r = repeated(cluster.metaserver_url, args.size, base + flags, args.repeat)
                results.append({"case": name, **r})
                print(f"| {args.size} | {name} | {r['median_sort_seconds']:.2f} | {r['all_sort_seconds']} | "
                      f"{r['tracts_per_worker']} |", flush=True)
        else:
            print("| size | sort s (median) | all runs | GB/s | phases of the median run | worker phases | "
                  "peak RSS / share |")
            print("|---|---|---|---|---|---|---|")
            for size in args.sizes:
                r = repeated(cluster.metaserver_url, size, base, args.repeat)
                results.append(r)
                print(f"| {size} | {r['median_sort_seconds']:.2f} | {r['all_sort_seconds']} | {r['gb_per_s']} | "
                      f"{r['phases']} | {r['worker_seconds']} | {r['peak_rss_per_worker_vs_share']} |", flush=True)
    finally:
        cluster.stop()
        shutil.rmtree(where, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
