"""fds's S3 endpoint against OpenStack Swift's (2.38, s3api middleware), side by side, with the same client.

    python benchmarks/s3.py [--replicas 1 3] [--sizes 8388608 67108864] [--in-flight 8 16]
                            [--small-in-flight 16] [--seconds 6] [--rounds 2] [--client aiohttp|boto3]
                            [--swift-venv /tmp/swift-venv] [--json OUT]

For each replication level k, both systems run at once on this machine and stay up: fds as a LocalCluster
(metaserver, 4 tract servers, 8 MiB tracts, k copies, its S3 server) and Swift as an all-in-one
(``benchmarks/swift_aio.py``: proxy with s3api + tempauth + memcached, account and container servers, 4 object
servers on 4 devices, a ring of k copies; Swift's own defaults, one worker per core). Swift comes from a venv
of its own (made on first use), never from fds's dependencies.

Each round runs every case on both, the order alternating by round, with one client for both:
``benchmarks/s3_load.py``'s (aiohttp, SigV4 signed here, the body's SHA-256 and CRC32 computed once per
size, so the client's CPU goes to HTTP, as botocore over plain HTTP sends them) or boto3 itself. A case PUTs
``2 x in-flight`` keys once (warm), then PUTs for ``--seconds``, then GETs for ``--seconds``. Reported:
GiB/s for large objects, operations/s and p50/p99 latency for 4 KiB ones, the servers' CPU milliseconds
per operation, medians over rounds, and fds / Swift for each.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from swift_aio import SwiftAIO  # noqa: E402

from fds import tune_allocator  # noqa: E402
from fds.local import LocalCluster  # noqa: E402


def _load_generator() -> Any:
    """benchmarks/s3_load.py as a module: its client and case runner, shared with the fds-only figures."""
    spec = importlib.util.spec_from_file_location("s3_load", Path(__file__).with_name("s3_load.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cases(load: Any, endpoint: str, access: str, secret: str, pids: list[int], args: argparse.Namespace,
           ) -> list[dict[str, Any]]:
    load.SERVERS.clear()
    load.SERVERS["server"] = pids
    out = []
    for sizes, in_flight in ((args.sizes, args.in_flight), ([4096], [args.small_in_flight])):
        options = argparse.Namespace(sizes=sizes, in_flight=in_flight, seconds=args.seconds, client=args.client,
                                     payload="sha256", checksum="crc32")
        out += load.run_cases(endpoint, access, secret, options)
    return out


def _summary(results: dict[str, list[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Medians over rounds per (system, size, in flight, op), and fds / Swift."""
    rows = []
    first = results["fds"][0]
    for i, case in enumerate(first):
        for op in ("put", "get"):
            row: dict[str, Any] = {"size": case["size"], "in_flight": case["in_flight"], "op": op}
            for system in ("fds", "swift"):
                runs = [rnd[i][op] for rnd in results[system]]
                for field in ("gib_s", "ops_s", "p50_ms", "p99_ms", "cpu_ms_server"):
                    row[f"{system}_{field}"] = statistics.median(r[field] for r in runs)
                row[f"{system}_rounds"] = [round(r["gib_s" if case["size"] > 4096 else "ops_s"], 3) for r in runs]
            row["ratio"] = row["fds_ops_s"] / row["swift_ops_s"] if row["swift_ops_s"] else float("inf")
            rows.append(row)
    return rows


def _print(replicas: int, rows: list[dict[str, Any]]) -> None:
    print(f"\nk={replicas} (medians; fds / Swift)")
    for r in rows:
        if r["size"] > 4096:
            rate = f"fds {r['fds_gib_s']:.3f} GiB/s, Swift {r['swift_gib_s']:.3f} GiB/s"
        else:
            rate = (f"fds {r['fds_ops_s']:.0f} ops/s p50 {r['fds_p50_ms']:.1f} p99 {r['fds_p99_ms']:.1f} ms, "
                    f"Swift {r['swift_ops_s']:.0f} ops/s p50 {r['swift_p50_ms']:.1f} p99 {r['swift_p99_ms']:.1f} ms")
        print(f"  {r['size'] >> 20 or r['size']:>5}{' MiB' if r['size'] > 4096 else ' B  '} x{r['in_flight']:<2} "
              f"{r['op'].upper():<3} {rate}; ratio {r['ratio']:.2f}x; server CPU ms/op fds "
              f"{r['fds_cpu_ms_server']:.1f}, Swift {r['swift_cpu_ms_server']:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8 << 20, 64 << 20])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--small-in-flight", type=int, default=16, help="in flight for the 4 KiB objects")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--client", choices=["aiohttp", "boto3"], default="aiohttp")
    parser.add_argument("--swift-venv", type=Path, default=Path(tempfile.gettempdir()) / "swift-venv")
    parser.add_argument("--only", choices=["fds", "swift"], help="measure one system (no ratios)")
    parser.add_argument("--s3-workers", type=int, help="fds s3 --workers N")
    parser.add_argument("--json")
    args = parser.parse_args()
    load = _load_generator()
    tune_allocator()
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "load_before": os.getloadavg(),
                              "levels": []}
    print(f"load average {os.getloadavg()[0]:.1f}; client {args.client}", flush=True)
    for replicas in args.replicas:
        with tempfile.TemporaryDirectory(prefix="s3bench-") as tmp:
            cluster = LocalCluster(Path(tmp) / "fds", tractservers=4, replicas=replicas, s3=True, gateway=False,
                                   s3_args=["--workers", str(args.s3_workers)] if args.s3_workers else [])
            swift = SwiftAIO(Path(tmp) / "swift", replicas=replicas, venv=args.swift_venv)
            systems = [s for s in ("fds", "swift") if args.only in (None, s)]
            results: dict[str, list[list[dict[str, Any]]]] = {s: [] for s in systems}
            try:
                if "fds" in systems:
                    cluster.start()
                if "swift" in systems:
                    swift.start()
                for rnd in range(args.rounds):
                    for system in systems if rnd % 2 == 0 else systems[::-1]:
                        print(f"k={replicas} round {rnd + 1} {system}", flush=True)
                        if system == "fds":
                            access, secret = cluster.s3_credentials()
                            pids = [c.pid for c in cluster.children if c.pid]
                            results["fds"].append(_cases(load, cluster.s3_url, access, secret, pids, args))
                        else:
                            results["swift"].append(_cases(load, swift.endpoint, swift.access_key,
                                                           swift.secret_key, swift.pids, args))
            finally:
                swift.stop()
                cluster.stop()
            level: dict[str, Any] = {"replicas": replicas, "results": results, "load": os.getloadavg()}
            if len(systems) == 2:
                level["summary"] = _summary(results)
                _print(replicas, level["summary"])
            report["levels"].append(level)
    report["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
