"""MinuteSort on this machine: sort time by size, and the straggler experiment.

    python benchmarks/minutesort.py --sizes 1GB 4GB --repeat 3
    python benchmarks/minutesort.py --sizes 8GB 10GB 12GB            # how far 60 s goes
    python benchmarks/minutesort.py --stragglers --size 2GB --repeat 3

It starts one local cluster (4 tract servers, k=1, 8 MiB tracts; processes
tracked by PID, data under ``--dir``) and calls :func:`apps.minutesort.run`
against it, as ``fds-minutesort run`` does: gen, then the timed sort (start-up
of the workers included), then validate, then delete. Each figure is the median of ``--repeat`` runs; the
report gives every run's sort time and the phase breakdown of the median run.

``--stragglers`` runs the same sort four ways: normal, worker 0 reading 3x
slower with on-demand units, and both again with a static split.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apps.minutesort import SortOptions, run_async  # noqa: E402
from apps.minutesort import run as run_sort  # noqa: E402
from apps.minutesort.cli import parse_size  # noqa: E402
from fds.cli._local import LocalCluster  # noqa: E402


def run(metaserver: str, size: str, options: dict[str, Any]) -> dict[str, Any]:
    """One ``fds-minutesort run``: gen, sort, validate, delete; its report (refuses an invalid sort)."""
    result = run_async(run_sort(metaserver, records=parse_size(size) // 100, options=SortOptions(**options)))
    if not result.valid:
        raise RuntimeError(f"run {size} {options}: the output is not valid: {result.to_json()}")
    return result.to_json()


def repeated(metaserver: str, size: str, options: dict[str, Any], times: int) -> dict[str, Any]:
    reports = sorted((run(metaserver, size, options) for _ in range(times)), key=lambda r: r["sort_seconds"])
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
    os.environ["FDS_SECRET_FILE"] = str(cluster.secret_file)  # this process and the workers find it there
    results: list[dict[str, Any]] = []
    try:
        base: dict[str, Any] = {"workers": args.workers}
        index, _, factor = args.slow.partition(":")
        slow: dict[str, Any] = {"slow_worker": int(index), "slow_factor": float(factor or 3)}
        if args.stragglers:
            cases: list[tuple[str, dict[str, Any]]] = [("on demand", {}), (f"on demand, worker {args.slow} slow", slow),
                     ("static split", {"static": True}),
                     (f"static split, worker {args.slow} slow", {"static": True, **slow})]
            print("| input | mode | sort s (median) | all runs | tracts per worker |")
            print("|---|---|---|---|---|")
            for name, flags in cases:
                r = repeated(cluster.metaserver_url, args.size, {**base, **flags}, args.repeat)
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
