"""Outages and lost servers on a k=3 local cluster: time to healthy, and bytes copied.

    python benchmarks/outage.py [--servers 4] [--gb 0.2] [--pause 12] [--scenario all-return three-return lost]
                                [--json OUT]

Each scenario starts a real LocalCluster (8 MiB tracts, heartbeat timeout 3 s, so a lease of 2.4 s),
writes ``--gb`` of blobs, then:

- ``all-return``: pauses every tract server (SIGSTOP) for ``--pause`` seconds (the issue's 12 s), resumes
  them all, and times until the cluster is healthy and settled (then reads every byte back);
- ``three-return``: pauses every tract server, resumes all but one after ``--pause`` seconds, and times
  reading every byte back (from then on) while the last stays paused, until it has been declared dead and
  its rows re-replicated; then resumes it and times its rejoining;
- ``lost``: SIGKILLs one tract server and deletes its disk, and times the re-replication of its data.

Bytes copied are the tract servers' own counters (``copied_bytes`` in ``/v1/stats``: every tract a fill or
a scrub copied from a row-mate). The target for an outage in which every disk comes back intact is zero.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fds.client import Client  # noqa: E402
from fds.local import LocalCluster  # noqa: E402

TRACT = 8 * 1024 * 1024


async def _write(url: str, total: int, seed: int) -> dict[str, str]:
    """Write ``total`` bytes as blobs of up to 16 tracts; returns each blob's sha256."""
    rng = random.Random(seed)
    digests: dict[str, str] = {}
    async with Client(url, max_in_flight=16) as fds:
        written = 0
        while written < total:
            tracts = min(16, -(-(total - written) // TRACT))
            data = [rng.randbytes(TRACT) for _ in range(tracts)]
            blob = await fds.create_blob()
            await blob.extend(tracts)
            await blob.write_tracts(enumerate(data))
            digests[blob.guid] = hashlib.sha256(b"".join(data)).hexdigest()
            written += tracts * TRACT
    return digests


async def _read_all(url: str, digests: dict[str, str]) -> None:
    async with Client(url, max_in_flight=16) as fds:
        for guid, digest in digests.items():
            blob = await fds.open_blob(guid)
            h = hashlib.sha256()
            async for chunk in blob.iter_bytes():
                h.update(chunk)
            if h.hexdigest() != digest:
                raise AssertionError(f"blob {guid} read back different bytes")


class _Run:
    def __init__(self, servers: int, gb: float, base: Path, seed: int) -> None:
        self.where = Path(tempfile.mkdtemp(prefix=f"outage-{servers}-", dir=base))
        self.cluster = LocalCluster(self.where, tractservers=servers, replicas=3, tract_size=TRACT, port=0,
                                    gateway=False, heartbeat_interval=0.5, heartbeat_timeout=3.0)
        self.cluster.start()
        os.environ["FDS_SECRET_FILE"] = str(self.cluster.secret_file)
        self.auth = self.cluster.headers("read")
        self.ms = self.cluster.metaserver_url
        self.digests = asyncio.run(_write(self.ms, int(gb * 1e9), seed))
        time.sleep(1.5)  # heartbeats carry the final figures
        self.stored = sum(s["bytes_used"] for s in self.status()["servers"])

    def status(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.ms}/v1/cluster", timeout=10, headers=self.auth).json())

    def table(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.ms}/v1/table", timeout=10, headers=self.auth).json())

    def copied(self, paused: tuple[str, ...] = ()) -> dict[str, int]:
        out = {}
        for child in self.cluster.tract_children:
            if child.alive() and child.name not in paused:
                # (servers from before issue 11 do not count their copies: -1 each)
                out[child.name] = httpx.get(f"{child.url}/v1/stats", timeout=10,
                                            headers=self.auth).json().get("copied_bytes", -1)
        return out

    def signal(self, names: list[str], sig: int) -> None:
        for name in names:
            os.kill(self.cluster.child(name).pid or 0, sig)

    def read_all(self) -> float:
        started = time.monotonic()
        asyncio.run(_read_all(self.ms, self.digests))
        return time.monotonic() - started

    def wait_settled(self, timeout: float = 600.0) -> float:
        """Seconds until healthy, nothing filling or absent, every row k holders, and every live server up."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            status, table = self.status(), self.table()
            if (status["healthy"] and not table["filling"] and not table.get("absent") and not status.get("publishing")
                    and all(len(row) == 3 for row in table["rows"])
                    and all(s["alive"] for s in status["servers"] if s["state"] != "dead")):
                return time.monotonic() - started
            time.sleep(0.05)
        raise TimeoutError(f"not settled after {timeout}s: {self.status()}")

    def close(self) -> None:
        for child in self.cluster.tract_children:
            if child.alive():
                os.kill(child.pid or 0, signal.SIGCONT)
        self.cluster.stop()
        shutil.rmtree(self.where, ignore_errors=True)


def all_return(run: _Run, pause: float) -> dict[str, Any]:
    names = [c.name for c in run.cluster.tract_children]
    rows_before = run.table()["rows"]
    run.signal(names, signal.SIGSTOP)
    time.sleep(pause)
    outage = run.status().get("outage")
    run.signal(names, signal.SIGCONT)
    resumed = time.monotonic()
    run.wait_settled()
    healthy = time.monotonic() - resumed
    status = run.status()
    return {"outage_reported": outage["message"] if outage else None, "healthy_seconds": round(healthy, 2),
            "declared_dead": sum(s["state"] == "dead" for s in status["servers"]),
            "rows_changed": sum(a != b for a, b in zip(rows_before, run.table()["rows"], strict=True)),
            "copied_bytes": sum(run.copied().values()), "read_all_seconds": round(run.read_all(), 2)}


def three_return(run: _Run, pause: float) -> dict[str, Any]:
    """The read of every byte runs in a thread while the main thread watches the metaserver."""
    names = [c.name for c in run.cluster.tract_children]
    last = names[-1]
    last_id = run.cluster.server_id(last)
    run.signal(names, signal.SIGSTOP)
    time.sleep(pause)
    run.signal(names[:-1], signal.SIGCONT)
    resumed = time.monotonic()
    readable: list[float] = []
    reader = threading.Thread(target=lambda: readable.append(run.read_all()))
    reader.start()
    declared = repaired = None
    while declared is None or repaired is None:
        status = run.status()
        now = time.monotonic() - resumed
        if declared is None and any(s["id"] == last_id and s["state"] == "dead" for s in status["servers"]):
            declared = now
        if (declared is not None and status["healthy"] and not status["recovery"]["rows_filling"]
                and not status.get("publishing")):
            repaired = now
        time.sleep(0.05)
    reader.join()
    copied_repair = sum(run.copied(paused=(last,)).values())
    run.signal([last], signal.SIGCONT)
    rejoined = run.wait_settled()
    copied = run.copied()
    return {"readable_seconds": round(readable[0], 2), "declared_dead_after_seconds": round(declared, 2),
            "healthy_without_it_seconds": round(repaired, 2), "copied_for_repair_bytes": copied_repair,
            "rejoined_seconds": round(rejoined, 2), "copied_by_returning_server_bytes": copied[last],
            "copied_after_return_bytes": sum(copied.values()) - copied_repair,
            "read_all_after_return_seconds": round(run.read_all(), 2)}


def lost(run: _Run) -> dict[str, Any]:
    victim = run.cluster.tract_children[0]
    victim_id = run.cluster.server_id(victim.name)
    held = httpx.get(f"{victim.url}/v1/stats", timeout=10, headers=run.auth).json()["bytes_used"]
    killed = time.monotonic()
    run.cluster.kill(victim.name, signal.SIGKILL)
    shutil.rmtree(victim.dir, ignore_errors=True)
    while not any(s["id"] == victim_id and s["state"] == "dead" for s in run.status()["servers"]):
        time.sleep(0.05)
    detected = time.monotonic() - killed
    settled_at = time.monotonic()
    while True:
        status = run.status()
        if status["healthy"] and not status["recovery"]["rows_filling"] and not status.get("publishing"):
            break
        time.sleep(0.05)
    healthy = time.monotonic() - killed
    return {"lost_bytes": held, "detect_seconds": round(detected, 2),
            "repair_seconds": round(time.monotonic() - settled_at, 2), "healthy_seconds": round(healthy, 2),
            "copied_bytes": sum(run.copied().values()), "readable_seconds": round(run.read_all(), 2)}


def main(argv: list[str] | None = None) -> int:
    from fds import tune_allocator

    tune_allocator()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--gb", type=float, default=0.2, help="data written first (GB, before k=3)")
    parser.add_argument("--pause", type=float, default=12.0, help="seconds every server stays paused")
    parser.add_argument("--scenario", nargs="+", default=["all-return", "three-return", "lost"],
                        choices=["all-return", "three-return", "lost"])
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"servers": args.servers, "gb": args.gb, "pause": args.pause}
    for scenario in args.scenario:
        run = _Run(args.servers, args.gb, Path(args.dir), args.seed)
        try:
            if scenario == "all-return":
                result = all_return(run, args.pause)
            elif scenario == "three-return":
                result = three_return(run, args.pause)
            else:
                result = lost(run)
        finally:
            run.close()
        result["stored_bytes"] = run.stored
        results[scenario] = result
        print(f"{scenario}: {json.dumps(result)}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
