"""MinuteSort on this machine: sort time by size, stragglers, spilling, and what a killed worker costs.

    python benchmarks/minutesort.py --sizes 1GB 4GB --repeat 3
    python benchmarks/minutesort.py --sizes 1GB 4GB --repeat 3 --baseline /tmp/old   # side by side with a checkout
    python benchmarks/minutesort.py --sizes 12GB 14GB --repeat 1                       # how far 60 s goes
    python benchmarks/minutesort.py --stragglers --size 2GB --repeat 3
    python benchmarks/minutesort.py --spill --size 8GB --memory 1GB                    # 2 GB in all, 2 workers
    python benchmarks/minutesort.py --kill --size 4GB --repeat 3
    python benchmarks/minutesort.py --standing --sizes 1GB 4GB --repeat 3 --arena 2.6GB  # fresh vs warm memory

It starts one local cluster (4 tract servers, k=1, 8 MiB tracts; processes
tracked by PID, data under ``--dir``) and calls :func:`apps.minutesort.run`
against it, as ``fds-minutesort run`` does: gen, then the timed sort (start-up
of the workers included), then validate, then delete. Each figure is the
median of ``--repeat`` runs, every run validated; the report gives every
run's sort time.

- ``--baseline PATH`` runs ``fds-minutesort run`` from a checkout of another
  commit (``git worktree add PATH COMMIT``) and from this tree, alternately,
  both as subprocesses against the same cluster.
- ``--stragglers``: worker 0 three times slower, with input and buckets on
  demand, input split up front (``--static``), and buckets fixed
  (``--fixed-buckets``).
- ``--spill``: the same input in memory and with ``--memory`` per worker.
- ``--kill``: the same input with no failure, with worker 0 SIGKILLed halfway
  through reading and halfway through sorting; buckets in memory (rebuilt
  by lineage) and all materialised in fds (``--spill-all``).
- ``--standing``: workers the sort starts itself, two standing workers
  (``worker --serve``, a sort process each per sort) without an arena
  (fresh memory every sort), and two with a warm ``--arena``, in turn; with
  each worker's minor page faults per phase and where its buffers went.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx

from apps.minutesort import SortOptions, run_async
from apps.minutesort import run as run_sort
from apps.minutesort.cli import parse_size
from fds.auth import client_headers
from fds.local import LocalCluster

HERE = Path(__file__).resolve().parents[1]


def start_services(where: Path, metaserver: str, flags: list[str], count: int = 2) -> tuple[list[Any], list[str]]:
    """``count`` standing workers (``fds-minutesort worker --serve FLAGS``): their processes and URLs."""
    from minutesort_latency import start_service  # benchmarks/ is this script's directory

    procs, urls = [], []
    for i in range(count):
        directory = where / f"service-{len(list(where.glob('service-*')))}-{i}"
        directory.mkdir(parents=True)
        proc, url = start_service(directory, metaserver, flags)
        procs.append(proc)
        urls.append(url)
    return procs, urls


def stop_services(procs: list[Any]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_warm(urls: list[str], timeout: float = 600) -> None:
    """Until every service's arena is touched (it warms in the background after start-up)."""
    for url in urls:
        deadline = time.monotonic() + timeout
        while True:
            status = httpx.get(f"{url}/v1/status", headers=client_headers(), timeout=10).json()
            if status["arena_warm_bytes"] >= status["arena_bytes"]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}: arena not warm after {timeout:.0f} s: {status}")
            time.sleep(0.5)


def memory_summary(report: dict[str, Any]) -> str:
    """Per worker: minor faults of each phase (thousands), GB placed in the arena / fresh."""
    parts = []
    for m in report.get("worker_memory", []):
        if not m:
            continue
        parts.append(f"{m['faults_start'] // 1000}k/{m['faults_read_deal'] // 1000}k/{m['faults_sort_write'] // 1000}k"
                     f" faults, {m['placed_in_arena'] / 1e9:.2f}/{m['placed_fresh'] / 1e9:.2f} GB")
    return "; ".join(parts)


def run(metaserver: str, size: str, options: dict[str, Any], kill: str | None = None) -> dict[str, Any]:
    """One ``fds-minutesort run``: gen, sort, validate, delete; its report (refuses an invalid sort).

    ``kill``: SIGKILL worker 0 halfway through ``read`` or ``sort`` (by the head's status).
    """
    async def both() -> dict[str, Any]:
        port = _free_port()
        sorting = asyncio.ensure_future(run_sort(metaserver, records=parse_size(size) // 100,
                                                 options=SortOptions(**options, port=port)))
        killed = asyncio.ensure_future(_kill_worker_0(f"http://127.0.0.1:{port}", kill)) if kill else None
        result = await sorting
        if killed is not None:
            killed.cancel()
        if not result.valid:
            raise RuntimeError(f"run {size} {options}: the output is not valid: {result.to_json()}")
        return result.to_json()

    return run_async(both())


async def _kill_worker_0(head: str, phase: str) -> None:
    """SIGKILL worker 0 once half the units are read (``read``) or half the buckets sorted (``sort``)."""
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            await asyncio.sleep(0.05)
            try:
                status = (await http.get(f"{head}/v1/status", headers=client_headers())).json()
            except httpx.HTTPError:
                continue
            if not status.get("units"):
                continue
            if (phase == "read" and status["units_complete"] >= status["units"] // 2) or \
                    (phase == "sort" and status["buckets_done"] >= status["buckets"] // 2):
                os.kill(status["workers"][0]["pid"], signal.SIGKILL)
                return


def run_cli(tree: Path, metaserver: str, size: str) -> dict[str, Any]:
    """``fds-minutesort run`` of the checkout at ``tree``, as a subprocess; its report."""
    proc = subprocess.run([sys.executable, "-m", "apps.minutesort.cli", "run", "--size", size, "--quiet",
                           "--metaserver", metaserver], capture_output=True, text=True, timeout=3600, cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    if proc.returncode != 0:
        raise RuntimeError(f"{tree}: run {size} failed: {proc.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if not report["valid"]:
        raise RuntimeError(f"{tree}: run {size}: invalid output")
    return report


def summarise(reports: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(reports, key=lambda r: r["sort_seconds"])
    return {**ordered[len(ordered) // 2], "all_sort_seconds": [r["sort_seconds"] for r in reports],
            "median_sort_seconds": median(r["sort_seconds"] for r in reports)}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1GB", "4GB"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="a checkout of another commit, run side by side")
    parser.add_argument("--stragglers", action="store_true")
    parser.add_argument("--spill", action="store_true")
    parser.add_argument("--kill", action="store_true")
    parser.add_argument("--standing", action="store_true", help="standing workers: fresh memory vs a warm --arena")
    parser.add_argument("--arena", default="2.6GB", help="--arena of each warm standing worker (--standing)")
    parser.add_argument("--size", default="2GB", help="size for --stragglers, --spill, --kill")
    parser.add_argument("--slow", default="0:3", help="--slow-worker for --stragglers")
    parser.add_argument("--memory", default="1GB", help="--memory per worker for --spill")
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    where = Path(tempfile.mkdtemp(prefix="minutesort-", dir=args.dir))
    cluster = LocalCluster(where, tractservers=4, replicas=1, port=0, gateway=False)
    cluster.start()
    os.environ["FDS_SECRET_FILE"] = str(cluster.secret_file)  # this process and the workers find it there
    ms = cluster.metaserver_url
    results: list[dict[str, Any]] = []
    base: dict[str, Any] = {"workers": args.workers}
    print(f"<!-- {_load()} at the start -->")
    try:
        if args.stragglers or args.spill or args.kill:
            index, _, factor = args.slow.partition(":")
            slow: dict[str, Any] = {"slow_worker": int(index), "slow_factor": float(factor or 3)}
            cases: list[tuple[str, dict[str, Any], str | None]] = []
            if args.stragglers:
                cases = [("on demand", {}, None), (f"on demand, worker {args.slow} slow", slow, None),
                         ("static split", {"static": True}, None),
                         (f"static split, worker {args.slow} slow", {"static": True, **slow}, None),
                         ("fixed buckets", {"fixed_buckets": True}, None),
                         (f"fixed buckets, worker {args.slow} slow", {"fixed_buckets": True, **slow}, None)]
            if args.spill:
                cases += [("in memory", {}, None),
                          (f"--memory {args.memory} per worker", {"memory": parse_size(args.memory)}, None)]
            if args.kill:
                cases += [("in memory, no failure", {}, None), ("in memory, worker 0 killed reading", {}, "read"),
                          ("in memory, worker 0 killed sorting", {}, "sort"),
                          ("all materialised (--spill-all), no failure", {"spill_all": True}, None),
                          ("all materialised, worker 0 killed reading", {"spill_all": True}, "read"),
                          ("all materialised, worker 0 killed sorting", {"spill_all": True}, "sort")]
            print("| input | case | sort s (median) | all runs | tracts / buckets per worker | spilled GB | "
                  "lineage units | peak RSS per worker GB |")
            print("|---|---|---|---|---|---|---|---|")
            for name, flags, kill in cases:
                r = summarise([run(ms, args.size, {**base, **flags}, kill) for _ in range(args.repeat)])
                results.append({"case": name, **r})
                print(f"| {args.size} | {name} | {r['median_sort_seconds']:.2f} | {r['all_sort_seconds']} | "
                      f"{r['tracts_per_worker']} / {r['buckets_per_worker']} | {r['spilled_bytes'] / 1e9:.2f} | "
                      f"{r['lineage_units']} | {[round(b / 1e9, 2) for b in r['peak_rss_per_worker_bytes']]} |",
                      flush=True)
        elif args.standing:
            fresh_procs, fresh = start_services(where, ms, [])
            warm_procs, warm = start_services(where, ms, ["--arena", args.arena])
            try:
                wait_warm(warm)
                print(f"<!-- {_load()} with the arenas warm -->")
                print("| size | workers | sort s (median) | all runs | read+shuffle / sort+write s | "
                      "per worker: minor faults start/read+shuffle/sort+write, GB in arena/fresh |")
                print("|---|---|---|---|---|---|")
                for size in args.sizes:
                    pairs = {"spawned (sort starts them)": [], "standing, fresh memory": fresh,
                             f"standing, arena {args.arena}": warm}
                    by_case: dict[str, list[dict[str, Any]]] = {name: [] for name in pairs}
                    for i in range(args.repeat):  # in turn, each case first in turn
                        for name in list(pairs)[i % 3:] + list(pairs)[:i % 3]:
                            urls = {"worker_urls": pairs[name], "spawn": False} if pairs[name] else {}
                            by_case[name].append(run(ms, size, {**base, **urls}))
                    for name, reports in by_case.items():
                        r = summarise(reports)
                        results.append({"size": size, "case": name, **r})
                        print(f"| {size} | {name} | {r['median_sort_seconds']:.2f} | {r['all_sort_seconds']} | "
                              f"{r['phases'].get('sort: read_shuffle', 0):.1f} / "
                              f"{r['phases'].get('sort: sort_write', 0):.1f} | {memory_summary(r)} |", flush=True)
            finally:
                stop_services(fresh_procs + warm_procs)
        elif args.baseline:
            print("| size | tree | sort s (median) | all runs |")
            print("|---|---|---|---|")
            for size in args.sizes:
                runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "this tree": []}
                for _ in range(args.repeat):  # alternately, so both see the same machine
                    runs["baseline"].append(run_cli(args.baseline, ms, size))
                    runs["this tree"].append(run_cli(HERE, ms, size))
                for tree, reports in runs.items():
                    r = summarise(reports)
                    results.append({"size": size, "tree": tree, **r})
                    print(f"| {size} | {tree} | {r['median_sort_seconds']:.2f} | {r['all_sort_seconds']} |",
                          flush=True)
        else:
            print("| size | sort s (median) | all runs | GB/s | phases of the median run | worker phases | "
                  "peak RSS / share |")
            print("|---|---|---|---|---|---|---|")
            for size in args.sizes:
                r = summarise([run(ms, size, base) for _ in range(args.repeat)])
                results.append(r)
                print(f"| {size} | {r['median_sort_seconds']:.2f} | {r['all_sort_seconds']} | {r['gb_per_s']} | "
                      f"{r['phases']} | {r['worker_seconds']} | {r['peak_rss_per_worker_vs_share']} |", flush=True)
    finally:
        print(f"<!-- {_load()} at the end -->")
        cluster.stop()
        shutil.rmtree(where, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
