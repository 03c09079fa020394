"""One client against a local cluster of 4 tract servers: throughput and latency.

    python benchmarks/cluster.py [--tracts N] [--in-flight C] [--replicas 1 3] [--cache-bytes B]
                                 [--ceilings] [--untuned] [--json OUT]

Starts a real LocalCluster (8 MiB tracts) in a temp dir for each
replication level, writes N tracts of one blob with C requests in flight,
reads them back, and reports GiB/s and per-tract p50/p99 latency (median of
--repeat runs). With --ceilings it also measures, in the same run, the HTTP
and durable-write ceilings (benchmarks/ceilings.py) and prints the ratios.
The client process tunes its allocator first (:func:`fds.tune_allocator`), as
the ``fds`` command does; ``--untuned`` shows what a program that does not
gets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fds.auth import Credentials
from fds.client import Client
from fds.local import LocalCluster

TRACT = 8 * 1024 * 1024
GIB = 1024**3


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _one_run(metaserver: str, tracts: int, in_flight: int, insecure: bool = False) -> dict[str, float]:
    payloads = [os.urandom(TRACT) for _ in range(4)]
    credentials = Credentials() if insecure else None  # none at all against --insecure servers
    async with Client(metaserver, max_in_flight=in_flight, credentials=credentials) as fds:
        blob = await fds.create_blob()
        await blob.extend(tracts)
        # Warm connections and the servers' allocators.
        await asyncio.gather(*(blob.write_tract(i, payloads[0]) for i in range(min(in_flight, tracts))))
        sem = asyncio.Semaphore(in_flight)
        write_lat: list[float] = []
        read_lat: list[float] = []

        async def write(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                await blob.write_tract(i, payloads[i % 4])
                write_lat.append(time.perf_counter() - t)

        async def read(i: int) -> None:
            async with sem:
                t = time.perf_counter()
                data = await blob.read_tract(i)
                read_lat.append(time.perf_counter() - t)
                assert len(data) == TRACT

        t0 = time.perf_counter()
        await asyncio.gather(*(write(i) for i in range(tracts)))
        t1 = time.perf_counter()
        await asyncio.gather(*(read(i) for i in range(tracts)))
        t2 = time.perf_counter()
        await fds.delete_blob(blob.guid)
    size = tracts * TRACT
    return {
        "write_gib_s": size / (t1 - t0) / GIB,
        "read_gib_s": size / (t2 - t1) / GIB,
        "write_p50_ms": _pct(write_lat, 0.5) * 1000,
        "write_p99_ms": _pct(write_lat, 0.99) * 1000,
        "read_p50_ms": _pct(read_lat, 0.5) * 1000,
        "read_p99_ms": _pct(read_lat, 0.99) * 1000,
    }


def cluster_bench(replicas: int, tracts: int, in_flight: int, repeat: int,
                  cache_bytes: int | None = None, direct_io: int | None = None,
                  insecure: bool = False) -> dict[str, Any]:
    env = {} if direct_io is None else {"FDS_DIRECT_IO": str(direct_io)}
    with tempfile.TemporaryDirectory(prefix="fds-bench-") as tmp:
        cluster = LocalCluster(Path(tmp), tractservers=4, replicas=replicas, port=0, gateway=False,
                               collector_interval=0, cache_bytes=cache_bytes, env=env, insecure=insecure)
        with cluster:
            import uvloop

            if not insecure:
                os.environ["FDS_SECRET_FILE"] = str(cluster.secret_file)  # the client finds its secret there
            runs = [uvloop.run(_one_run(cluster.metaserver_url, tracts, in_flight, insecure)) for _ in range(repeat)]
    result: dict[str, Any] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    result.update(replicas=replicas, tracts=tracts, in_flight=in_flight, runs=runs)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracts", type=int, default=128)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache-bytes", type=int, help="tract cache per server (default: the server's; 0 = off)")
    parser.add_argument("--direct-io", type=int, choices=[0, 1], help="tract servers' O_DIRECT setting")
    parser.add_argument("--ceilings", action="store_true", help="also measure HTTP and durable-write ceilings")
    parser.add_argument("--json", help="write all figures here")
    parser.add_argument("--untuned", action="store_true", help="leave this client process's allocator as glibc "
                        "starts it (no fds.tune_allocator())")
    parser.add_argument("--auth-cost", action="store_true",
                        help="instead: alternate clusters with auth on and off (--insecure), --repeat rounds each, "
                             "and print the ratio")
    args = parser.parse_args()
    if not args.untuned:
        from fds import tune_allocator

        tune_allocator()
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "fds": {},
                              "tuned_allocator": not args.untuned}
    if args.auth_cost:
        for k in args.replicas:
            modes: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
            for _ in range(args.repeat):  # alternate, so drift on this shared machine hits both alike
                for mode in modes:
                    modes[mode].append(cluster_bench(k, args.tracts, args.in_flight, 1, args.cache_bytes,
                                                     args.direct_io, insecure=mode == "off"))
            med = {mode: {key: statistics.median(r[key] for r in rs) for key in ("write_gib_s", "read_gib_s")}
                   for mode, rs in modes.items()}
            report["fds"][f"k{k}"] = {"auth": med, "runs": modes}
            print(f"fds k={k}: auth on write {med['on']['write_gib_s']:.2f} read {med['on']['read_gib_s']:.2f} GiB/s; "
                  f"off write {med['off']['write_gib_s']:.2f} read {med['off']['read_gib_s']:.2f} GiB/s; on/off "
                  f"write {med['on']['write_gib_s'] / med['off']['write_gib_s']:.3f} "
                  f"read {med['on']['read_gib_s'] / med['off']['read_gib_s']:.3f}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
        return
    for k in args.replicas:
        r = cluster_bench(k, args.tracts, args.in_flight, args.repeat, args.cache_bytes, args.direct_io)
        report["fds"][f"k{k}"] = r
        print(f"fds k={k} cache={args.cache_bytes} direct={args.direct_io}: write {r['write_gib_s']:.2f} GiB/s "
              f"(p50 {r['write_p50_ms']:.1f} ms, p99 {r['write_p99_ms']:.1f} ms)  read {r['read_gib_s']:.2f} GiB/s "
              f"(p50 {r['read_p50_ms']:.1f} ms, p99 {r['read_p99_ms']:.1f} ms)", flush=True)
    if args.ceilings:
        import ceilings  # type: ignore[import-not-found]

        http = ceilings.http_ceiling()
        durable = ceilings.durable_ceiling()
        report["ceilings"] = {"http": http, "durable": durable}
        print(json.dumps(report["ceilings"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
