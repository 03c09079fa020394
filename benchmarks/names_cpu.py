"""Named puts, gets and listing: rate and CPU per operation, which load on a shared machine does not inflate.

    python benchmarks/names_cpu.py [--puts 1500] [--sizes 0 4096]

Starts a local cluster (4 tract servers, k=2, 8 MiB tracts) and, for each of ``--sizes``, puts
``--puts`` objects of that size, 64 in flight, into a bucket of its own and then gets them all back
(64 in flight); then puts 200 empty ones one at a time, and lists the first bucket twice. For each:
operations per second, the tract servers' CPU (user + system, summed over the four, from /proc) per
operation, and the client's. To compare two versions side by side, run it with
``PYTHONPATH=/path/to/tree`` (this script and the servers, which inherit it, import fds from there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fds import tune_allocator  # noqa: E402
from fds.local import LocalCluster  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


async def _puts(cluster: LocalCluster, pids: list[int], bucket_name: str, n: int, width: int, size: int,
                *, gets: bool = False) -> None:
    async with cluster.client() as client:
        bucket = await client.create_bucket(bucket_name)
        data = os.urandom(size)
        sem = asyncio.Semaphore(width)

        async def put(i: int) -> None:
            async with sem:
                await bucket.put(f"k/{i:08d}", data)

        async def get(i: int) -> None:
            async with sem:
                assert await bucket.get(f"k/{i:08d}") == data

        for op, call in (("put", put), ("get", get))[:2 if gets else 1]:
            servers, own, start = [_cpu(p) for p in pids], _cpu(os.getpid()), time.perf_counter()
            await asyncio.gather(*(call(i) for i in range(n)))
            wall = time.perf_counter() - start
            server_ms = (sum(_cpu(p) for p in pids) - sum(servers)) / n * 1000
            print(f"{n} {op}s of {size} B, {width} in flight: {n / wall:.1f} {op}s/s; server CPU {server_ms:.2f} "
                  f"ms/{op}, client CPU {(_cpu(os.getpid()) - own) / n * 1000:.2f} ms/{op}; "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)


async def _list(cluster: LocalCluster, pids: list[int], bucket_name: str) -> None:
    async with cluster.client() as client:
        bucket = client.bucket(bucket_name)
        servers, own, start = [_cpu(p) for p in pids], _cpu(os.getpid()), time.perf_counter()
        count = sum([1 async for _ in bucket.iter("k/")])
        print(f"list {count}: {time.perf_counter() - start:.3f} s; server CPU "
              f"{sum(_cpu(p) for p in pids) - sum(servers):.3f} s, client CPU {_cpu(os.getpid()) - own:.3f} s",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--puts", type=int, default=1500)
    ap.add_argument("--sizes", type=int, nargs="+", default=[0, 4096])
    args = ap.parse_args()
    tune_allocator()
    base = Path(tempfile.mkdtemp(prefix="bench-names-cpu-", dir=os.environ.get("TMPDIR", "/tmp")))
    with LocalCluster(base / "cluster", tractservers=4, replicas=2, tract_size=8 << 20, port=0,
                      gateway=False) as cluster:
        pids = [c.pid for c in cluster.tract_children if c.pid is not None]
        for size in args.sizes:
            asyncio.run(_puts(cluster, pids, f"size-{size}", args.puts, 64, size, gets=True))
        asyncio.run(_puts(cluster, pids, "serial", 200, 1, 0))
        for _ in range(2):
            asyncio.run(_list(cluster, pids, f"size-{args.sizes[0]}"))
    import shutil

    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
