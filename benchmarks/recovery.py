"""Recovery time: kill one tract server of a k=3 local cluster and time full re-replication.

    python benchmarks/recovery.py --servers 4 8 16 --gb 2 [--json out.json]

For each cluster size it starts a real local cluster (one process per tract
server, 8 MiB tracts, data on the disk under ``--dir``), writes ``--gb`` of
blobs through the client, SIGKILLs one tract server, and polls the
metaserver until every row again has three complete holders. It reports:

- the data the dead server held (the lost copies that must be re-made);
- seconds from the kill to detection (the heartbeat timeout), and from
  detection to full replication (the repair proper);
- MB/s of repair per surviving server, and how many survivors took part;
- the busiest copier's share, which bounds the repair time.

All servers here share two cores and one disk, so adding servers adds no
hardware: the figures measure how evenly the work is spread, and the
per-server rates feed the model in ``benchmarks/recovery_model.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from fds.client import Client
from fds.local import LocalCluster

TRACT = 8 * 1024 * 1024


async def _write(url: str, total: int, seed: int) -> int:
    """Write ``total`` bytes as 64-tract blobs; returns the bytes written."""
    rng = random.Random(seed)
    blocks = [rng.randbytes(TRACT) for _ in range(4)]
    written = 0
    async with Client(url, max_in_flight=16) as fds:
        while written < total:
            tracts = min(64, -(-(total - written) // TRACT))
            blob = await fds.create_blob()
            await blob.extend(tracts)
            await blob.write_tracts((i, blocks[i % 4]) for i in range(tracts))
            written += tracts * TRACT
    return written


def run_one(servers: int, gb: float, base: Path, timeout: float, seed: int) -> dict[str, Any]:
    where = Path(tempfile.mkdtemp(prefix=f"recovery-{servers}-", dir=base))
    cluster = LocalCluster(where, tractservers=servers, replicas=3, tract_size=TRACT, port=0, gateway=False,
                           heartbeat_interval=0.5, heartbeat_timeout=3.0)
    cluster.start()
    os.environ["FDS_SECRET_FILE"] = str(cluster.secret_file)  # the client below finds its secret there
    auth = cluster.headers("read")
    try:
        ms = cluster.metaserver_url
        written = asyncio.run(_write(ms, int(gb * 1e9), seed))
        victim = cluster.tract_children[0]
        victim_id = cluster.server_id(victim.name)
        lost = httpx.get(f"{victim.url}/v1/stats", headers=auth).json()["bytes_used"]
        time.sleep(1.5)  # let heartbeats report the final state
        before = {s["id"]: s["bytes_used"] for s in httpx.get(f"{ms}/v1/cluster", headers=auth).json()["servers"]}
        killed = time.monotonic()
        cluster.kill(victim.name, signal.SIGKILL)
        detected = None
        takers: set[str] = set()
        status: dict[str, Any] = {}
        while time.monotonic() - killed < timeout:
            status = httpx.get(f"{ms}/v1/cluster", timeout=10, headers=auth).json()
            for s in status["servers"]:
                if s["filling_rows"]:
                    takers.add(s["id"])
            if detected is None and {s["id"]: s["state"] for s in status["servers"]}[victim_id] == "dead":
                detected = time.monotonic()
            if detected is not None and status["healthy"] and not status["recovery"]["rows_filling"]:
                break
            time.sleep(0.05)
        else:
            raise TimeoutError(f"{servers} servers: not repaired after {timeout}s: {status}")
        done = time.monotonic()
        assert detected is not None
        time.sleep(1.5)  # heartbeats carry each server's bytes after the copy
        after = {s["id"]: s["bytes_used"] for s in httpx.get(f"{ms}/v1/cluster", headers=auth).json()["servers"]}
        copied = {i: after[i] - before[i] for i in before if i != victim_id}
        repair = done - detected
        survivors = servers - 1
        busiest = max(copied.values()) if copied else 0
        return {
            "servers": servers, "written_bytes": written, "lost_bytes": lost,
            "detect_seconds": round(detected - killed, 2), "repair_seconds": round(repair, 2),
            "total_seconds": round(done - killed, 2),
            "repair_mb_s": round(lost / repair / 1e6, 1),
            "per_survivor_mb_s": round(lost / repair / 1e6 / survivors, 1),
            "survivors_taking_part": len(takers), "survivors": survivors,
            "busiest_copier_share": round(busiest / lost, 3) if lost else None,
            "even_share": round(1 / survivors, 3),
        }
    finally:
        cluster.stop()
        shutil.rmtree(where, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from fds import tune_allocator

    tune_allocator()  # as the fds command does: the writer moves 8 MiB tracts
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--gb", type=float, default=2.0, help="data written before the kill (GB, before k=3)")
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"), help="where the clusters keep data")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per size; the run with the median repair "
                                                               "time is reported")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results = []
    print("| servers | data GB | lost GB | detect s | repair s | repair MB/s | MB/s per survivor | "
          "survivors helping | busiest copier share (even) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in args.servers:
        runs = sorted((run_one(n, args.gb, Path(args.dir), args.timeout, args.seed + i) for i in range(args.repeat)),
                      key=lambda x: x["repair_seconds"])
        r = {**runs[len(runs) // 2], "repair_seconds_all": [x["repair_seconds"] for x in runs]}
        results.append(r)
        print(f"| {n} | {r['written_bytes'] / 1e9:.2f} | {r['lost_bytes'] / 1e9:.2f} | {r['detect_seconds']} | "
              f"{r['repair_seconds']} | {r['repair_mb_s']} | {r['per_survivor_mb_s']} | "
              f"{r['survivors_taking_part']}/{r['survivors']} | {r['busiest_copier_share']} "
              f"({r['even_share']}) |", flush=True)
        if args.repeat > 1:
            print(f"|   | repair seconds of all {args.repeat} runs: {r['repair_seconds_all']} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
