"""Names and fds:// figures (issue 12), measured side by side on one machine.

    python benchmarks/names.py [--parquet-mb 1024] [--keys 100000] [--rounds 3] [--replicas 2] [--json OUT]

Starts a local cluster (4 tract servers, 8 MiB tracts) in a temp dir, then:

1. **pyarrow, one parquet file**: ``pq.read_table`` of one file (``--parquet-mb``, 8 row groups of
   int64 and float64 columns, uncompressed) from ``fds://`` and from the local disk, rounds
   alternating which goes first. The local file is read cold (its pages dropped with
   ``posix_fadvise(DONTNEED)`` before each read, as a file not read lately) and warm (from the page
   cache, as a file just read); tract servers read with O_DIRECT, so fds is always "cold".
2. **dask**: ``dd.read_parquet`` of 8 files (the same data) + a groupby sum, on a ``distributed``
   LocalCluster of 2 worker processes, from fds and from local files (cold), alternating.
3. **listing**: ``--keys`` empty objects written 64 at a time; then listing them all
   (``Bucket.iter``, pages of 10,000), and ``fs.find`` through fsspec.
4. **4 KiB objects**: puts and gets per second, one at a time and 64 at a time.

Prints medians and per-round ratios; ``--json`` writes every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fds import tune_allocator  # noqa: E402
from fds.client import Client  # noqa: E402
from fds.fs import FdsFileSystem  # noqa: E402
from fds.local import LocalCluster  # noqa: E402

BUCKET = "bench"


def _drop_cache(path: Path) -> None:
    for file in ([path] if path.is_file() else sorted(path.rglob("*.parquet"))):
        fd = os.open(file, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _make_parquet(directory: Path, megabytes: int) -> tuple[Path, Path]:
    """One file of 8 row groups, and the same rows as 8 files (a dataset for dask)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = megabytes * (1 << 20) // 32  # 4 columns of 8 bytes
    rng = np.random.default_rng(7)
    table = pa.table({"key": rng.integers(0, 1000, rows), "a": rng.integers(0, 1 << 40, rows),
                      "b": rng.random(rows), "c": rng.random(rows)})
    one = directory / "one.parquet"
    pq.write_table(table, one, row_group_size=-(-rows // 8), compression="none")
    many = directory / "many"
    many.mkdir()
    step = -(-rows // 8)
    for i in range(8):
        pq.write_table(table.slice(i * step, step), many / f"part-{i}.parquet", compression="none")
    return one, many


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_pyarrow(fs: FdsFileSystem, one: Path, rounds: int) -> dict[str, Any]:
    import pyarrow.parquet as pq

    size = one.stat().st_size
    fs.put_file(str(one), f"{BUCKET}/one.parquet")
    rows = pq.read_table(f"{BUCKET}/one.parquet", filesystem=fs).num_rows
    assert rows == pq.read_metadata(one).num_rows
    fds, cold, warm = [], [], []
    for r in range(rounds):
        def read_fds() -> None:
            fds.append(_timed(lambda: pq.read_table(f"{BUCKET}/one.parquet", filesystem=fs)))

        def read_local() -> None:
            _drop_cache(one)
            cold.append(_timed(lambda: pq.read_table(one)))
            warm.append(_timed(lambda: pq.read_table(one)))

        for step in ((read_fds, read_local) if r % 2 == 0 else (read_local, read_fds)):
            step()
    return _summary("pyarrow read_table, one file", size, {"fds": fds, "local_cold": cold, "local_warm": warm})


def bench_dask(fs: FdsFileSystem, many: Path, options: dict[str, Any], rounds: int) -> dict[str, Any]:
    import dask.dataframe as dd
    import distributed

    size = sum(p.stat().st_size for p in many.iterdir())
    fs.put(str(many) + "/", f"{BUCKET}/many/", recursive=True)
    fds, local = [], []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as workers, distributed.Client(workers):
        def run(url: str, **kw: Any) -> Any:
            return dd.read_parquet(url, **kw).groupby("key")["b"].sum().compute()

        expected = run(str(many))
        assert (run(f"fds://{BUCKET}/many", storage_options=options) - expected).abs().max() < 1e-6
        for r in range(rounds):
            def on_fds() -> None:
                fds.append(_timed(lambda: run(f"fds://{BUCKET}/many", storage_options=options)))

            def on_local() -> None:
                _drop_cache(many)
                local.append(_timed(lambda: run(str(many))))

            for step in ((on_fds, on_local) if r % 2 == 0 else (on_local, on_fds)):
                step()
    return _summary("dask read_parquet + groupby, 8 files, 2 worker processes", size,
                    {"fds": fds, "local_cold": local})


def _summary(what: str, size: int, runs: dict[str, list[float]]) -> dict[str, Any]:
    out: dict[str, Any] = {"what": what, "bytes": size, "seconds": runs,
                           "median_s": {k: statistics.median(v) for k, v in runs.items()},
                           "median_gib_s": {k: size / statistics.median(v) / (1 << 30) for k, v in runs.items()}}
    for other in runs:
        if other != "fds":
            ratios = [b / a for a, b in zip(runs["fds"], runs[other], strict=True)]
            out[f"speedup_vs_{other}"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return out


async def bench_names(cluster: LocalCluster, keys: int) -> dict[str, Any]:
    async with cluster.client() as client:
        bucket = await client.create_bucket("listing")
        sem = asyncio.Semaphore(64)

        async def put(i: int) -> None:
            async with sem:
                await bucket.put(f"k/{i:08d}", b"")

        start = time.perf_counter()
        await asyncio.gather(*(put(i) for i in range(keys)))
        wrote = time.perf_counter() - start
        lists = []
        for _ in range(3):
            start = time.perf_counter()
            count = sum([1 async for _ in bucket.iter("k/")])
            lists.append(time.perf_counter() - start)
            assert count == keys, count
        small = await _small_objects(client)
    return {"keys": keys, "write_64_at_a_time_s": wrote, "puts_per_s_empty_64": keys / wrote,
            "list_all_s": lists, "list_all_median_s": statistics.median(lists), "small": small}


async def _small_objects(client: Client, n: int = 2000) -> dict[str, float]:
    bucket = await client.create_bucket("small")
    data = os.urandom(4096)
    out: dict[str, float] = {}
    for width in (1, 64):
        count = n if width > 1 else n // 10
        for name in ("put", "get"):
            start = time.perf_counter()
            await asyncio.gather(*(_one(bucket, name, f"w{width}/{i}", data, sem)
                                   for sem in [asyncio.Semaphore(width)] for i in range(count)))
            out[f"{name}_per_s_{width}_at_a_time"] = count / (time.perf_counter() - start)
    return out


async def _one(bucket: Any, op: str, key: str, data: bytes, sem: asyncio.Semaphore) -> None:
    async with sem:
        if op == "put":
            await bucket.put(key, data)
        else:
            assert await bucket.get(key) == data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parquet-mb", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["pyarrow", "dask", "names"])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tune_allocator()
    base = Path(tempfile.mkdtemp(prefix="bench-names-", dir=os.environ.get("TMPDIR", "/tmp")))
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "cpus": os.cpu_count(),
                               "load_before": os.getloadavg()}
    with LocalCluster(base / "cluster", tractservers=4, replicas=args.replicas, tract_size=8 << 20, port=0,
                      gateway=False) as cluster:
        options = {"metaserver": cluster.metaserver_url, "secret_file": str(cluster.secret_file)}
        fs = FdsFileSystem(**options)
        fs.makedirs(BUCKET, exist_ok=True)
        one, many = _make_parquet(base, args.parquet_mb)
        if "pyarrow" not in args.skip:
            results["pyarrow"] = bench_pyarrow(fs, one, args.rounds)
            print(json.dumps(results["pyarrow"], indent=1), flush=True)
        if "dask" not in args.skip:
            results["dask"] = bench_dask(fs, many, options, args.rounds)
            print(json.dumps(results["dask"], indent=1), flush=True)
        if "names" not in args.skip:
            results["names"] = asyncio.run(bench_names(cluster, args.keys))
            start = time.perf_counter()
            found = fs.find("listing/k/")
            results["names"]["fsspec_find_s"] = time.perf_counter() - start
            assert len(found) == args.keys
            print(json.dumps(results["names"], indent=1), flush=True)
    results["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    import shutil

    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
