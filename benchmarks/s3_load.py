"""Load on an S3 endpoint: PUT and GET of one object size, many in flight; ops/s, GiB/s, p50/p99.

    python benchmarks/s3_load.py [--sizes 4096 8388608] [--in-flight 8 16] [--replicas 1] [--seconds 8]
                                 [--client aiohttp|boto3] [--payload unsigned|sha256] [--checksum none|crc32]
                                 [--endpoint URL --access-key A --secret-key S] [--json OUT]

Without ``--endpoint`` it starts a LocalCluster (4 tract servers, 8 MiB tracts, an S3 server) in a temp
dir for each ``--replicas``. Each (size, in-flight) case first PUTs for ``--seconds`` (keys cycling over
``2 x in-flight`` names, so GETs find them), then GETs them for ``--seconds``.

Clients (the same for any endpoint, so figures compare):

- ``aiohttp`` (default): one process, one event loop, a keep-alive pool of ``in-flight`` connections,
  SigV4 signed here (the signing key derived once). The body's SHA-256 and CRC32 are computed once per
  size, not per request, so the client spends its CPU on HTTP, not hashing: what is measured is the
  server. ``--payload sha256`` sends the hex SHA-256 (as botocore does over plain HTTP) and the server
  must check it; ``unsigned`` sends ``UNSIGNED-PAYLOAD`` (as botocore does over HTTPS). ``--checksum
  crc32`` adds ``x-amz-checksum-crc32`` (botocore >= 1.36 does by default).
- ``boto3``: ``put_object``/``get_object`` from ``in-flight`` threads on one client (a pool of as many
  connections): what a boto3 user gets, client costs included (botocore hashes every body itself).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fds.s3._sigv4 import UNSIGNED, canonical_request, signing_key  # noqa: E402

BUCKET = "s3load"
GIB = 1024**3


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Signer:
    """SigV4 for path-style requests, the signing key derived once per day."""

    def __init__(self, endpoint: str, access: str, secret: str, region: str = "us-east-1") -> None:
        self.endpoint = endpoint.rstrip("/")
        self.host = urlsplit(endpoint).netloc
        self.access, self.secret, self.region = access, secret, region
        self._keys: dict[str, bytes] = {}

    def headers(self, method: str, path: str, payload: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        now = datetime.datetime.now(datetime.UTC)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        key = self._keys.get(scope)
        if key is None:
            key = self._keys[scope] = signing_key(self.secret, scope)
        headers = {"host": self.host, "x-amz-date": amz_date, "x-amz-content-sha256": payload, **(extra or {})}
        signed = tuple(sorted(headers))
        canonical = canonical_request(method, quote(path, safe="/-_.~"), "", headers, signed, payload)
        import hmac

        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access}/{scope}, "
                                    f"SignedHeaders={';'.join(signed)}, Signature={signature}")
        del headers["host"]
        return headers


SERVERS: dict[str, list[int]] = {}
"""PIDs of the processes measured, by group (``s3``, ``cluster``: tract servers and metaserver), when known."""
_TICK = os.sysconf("SC_CLK_TCK")


def _family(pids: list[int]) -> set[int]:
    """``pids`` and every live descendant (``fds s3 --workers N`` forks its workers; Swift's servers theirs)."""
    seen: set[int] = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return seen


def _cpu() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each group of :data:`SERVERS` (with their children), and by
    this client."""
    out = {"client": sum(os.times()[:2])}
    for group, pids in SERVERS.items():
        total = 0.0
        for pid in _family(pids):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                total += (int(fields[11]) + int(fields[12])) / _TICK
        out[group] = total
    return out


def _figures(lat: list[float], size: int, elapsed: float, cpu_before: dict[str, float]) -> dict[str, float]:
    """Rates and latencies, and CPU milliseconds per operation of each process group (steadier than rates on a
    shared machine: what a request costs, not how much of the machine it got)."""
    cpu_after = _cpu()
    out = {"ops_s": len(lat) / elapsed, "gib_s": len(lat) * size / elapsed / GIB,
           "p50_ms": _pct(lat, 0.5) * 1e3, "p99_ms": _pct(lat, 0.99) * 1e3, "ops": len(lat)}
    for group, before in cpu_before.items():
        out[f"cpu_ms_{group}"] = (cpu_after[group] - before) * 1e3 / max(1, len(lat))
    return out


async def _drive(fn: Callable[[str], Awaitable[None]], names: list[str], size: int, in_flight: int,
                 seconds: float) -> dict[str, float]:
    """``in_flight`` loops calling ``fn`` on the names in turn for ``seconds``."""
    lat: list[float] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    async def worker() -> None:
        while time.perf_counter() < deadline:
            name = names[next(counter) % len(names)]
            t = time.perf_counter()
            await fn(name)
            lat.append(time.perf_counter() - t)

    cpu = _cpu()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return _figures(lat, size, time.perf_counter() - start, cpu)


def _drive_threads(fn: Callable[[str], None], names: list[str], size: int, in_flight: int,
                   seconds: float) -> dict[str, float]:
    """``in_flight`` threads calling ``fn`` on the names in turn for ``seconds``."""
    lat: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    counter = iter(range(1 << 62))

    def worker() -> None:
        while time.perf_counter() < deadline:
            with lock:
                name = names[next(counter) % len(names)]
            t = time.perf_counter()
            fn(name)
            with lock:
                lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(in_flight)]
    cpu = _cpu()
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return _figures(lat, size, time.perf_counter() - start, cpu)


async def _aiohttp_case(signer: Signer, size: int, in_flight: int, seconds: float, payload_mode: str,
                        checksum: str) -> dict[str, Any]:
    import aiohttp

    body = os.urandom(size)
    payload = hashlib.sha256(body).hexdigest() if payload_mode == "sha256" else UNSIGNED
    extra = {"content-type": "application/octet-stream"}
    if checksum == "crc32":
        extra["x-amz-checksum-crc32"] = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    names = [f"obj-{size}-{i}" for i in range(2 * in_flight)]
    connector = aiohttp.TCPConnector(limit=in_flight, force_close=False)
    out: dict[str, Any] = {"size": size, "in_flight": in_flight}
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     skip_auto_headers=("User-Agent", "Content-Type")) as session:
        async def put(name: str) -> None:
            path = f"/{BUCKET}/{name}"
            headers = signer.headers("PUT", path, payload, extra)
            async with session.put(signer.endpoint + path, data=body, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"PUT {path}: {resp.status} {(await resp.read())[:300]!r}")
                await resp.read()

        async def get(name: str) -> None:
            path = f"/{BUCKET}/{name}"
            headers = signer.headers("GET", path, "UNSIGNED-PAYLOAD" if payload_mode == "unsigned"
                                     else hashlib.sha256(b"").hexdigest())
            async with session.get(signer.endpoint + path, headers=headers) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"GET {path}: {resp.status} {(await resp.read())[:300]!r}")
                got = 0
                async for chunk in resp.content.iter_any():
                    got += len(chunk)
                if got != size:
                    raise RuntimeError(f"GET {path}: {got} bytes, want {size}")

        for op, fn in (("put", put), ("get", get)):
            await asyncio.gather(*(fn(n) for n in names))  # warm: connections, allocators, every key exists
            out[op] = await _drive(fn, names, size, in_flight, seconds)
    return out


def _boto3_case(endpoint: str, access: str, secret: str, size: int, in_flight: int,
                seconds: float) -> dict[str, Any]:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                          region_name="us-east-1",
                          config=Config(max_pool_connections=in_flight, retries={"max_attempts": 1},
                                        s3={"addressing_style": "path"}))
    body = os.urandom(size)
    names = [f"obj-{size}-{i}" for i in range(2 * in_flight)]
    out: dict[str, Any] = {"size": size, "in_flight": in_flight}

    def put(name: str) -> None:
        client.put_object(Bucket=BUCKET, Key=name, Body=body)

    def get(name: str) -> None:
        got = client.get_object(Bucket=BUCKET, Key=name)["Body"].read()
        if len(got) != size:
            raise RuntimeError(f"GET {name}: {len(got)} bytes, want {size}")

    for op, fn in (("put", put), ("get", get)):
        for name in names:
            fn(name)
        out[op] = _drive_threads(fn, names, size, in_flight, seconds)
    return out


def _make_bucket(signer: Signer) -> None:
    import urllib.error
    import urllib.request

    headers = signer.headers("PUT", f"/{BUCKET}", hashlib.sha256(b"").hexdigest())
    request = urllib.request.Request(f"{signer.endpoint}/{BUCKET}", method="PUT", headers=headers, data=b"")
    try:
        urllib.request.urlopen(request).read()
    except urllib.error.HTTPError as exc:
        if exc.code != 409:
            raise


def run_cases(endpoint: str, access: str, secret: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    signer = Signer(endpoint, access, secret)
    _make_bucket(signer)
    results = []
    for size in args.sizes:
        for in_flight in args.in_flight:
            if args.client == "boto3":
                result = _boto3_case(endpoint, access, secret, size, in_flight, args.seconds)
            else:
                result = asyncio.run(_aiohttp_case(signer, size, in_flight, args.seconds, args.payload,
                                                   args.checksum))
            results.append(result)
            print(_line(result), flush=True)
    return results


def _line(r: dict[str, Any]) -> str:
    def one(op: str) -> str:
        f = r[op]
        rate = f"{f['gib_s']:.3f} GiB/s" if r["size"] >= 1 << 20 else f"{f['ops_s']:.0f} ops/s"
        cpu = "".join(f" {g} {f[f'cpu_ms_{g}']:.1f}" for g in ("s3", "cluster", "client") if f"cpu_ms_{g}" in f)
        return f"{op.upper()} {rate} p50 {f['p50_ms']:.1f} ms p99 {f['p99_ms']:.1f} ms (cpu ms/op{cpu})"

    return f"size {r['size']:>9} in flight {r['in_flight']:>2}: {one('put')}; {one('get')}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8 << 20])
    parser.add_argument("--in-flight", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--replicas", type=int, nargs="+", default=[1])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--client", choices=["aiohttp", "boto3"], default="aiohttp")
    parser.add_argument("--payload", choices=["unsigned", "sha256"], default="sha256")
    parser.add_argument("--checksum", choices=["none", "crc32"], default="crc32")
    parser.add_argument("--endpoint")
    parser.add_argument("--access-key")
    parser.add_argument("--secret-key")
    parser.add_argument("--s3-args", nargs="*", default=[], help="extra flags for `fds s3`")
    parser.add_argument("--s3-workers", type=int, help="fds s3 --workers N (its processes' CPU is summed)")
    parser.add_argument("--code", help="run the cluster's servers from this copy of the fds package's parent "
                        "directory (PYTHONPATH), to compare two versions")
    parser.add_argument("--hold", action="store_true", help="print the endpoint and wait (for profiling)")
    parser.add_argument("--json")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; client {args.client}, payload {args.payload}, "
          f"checksum {args.checksum}", flush=True)
    report: dict[str, Any] = {"args": vars(args), "load_before": os.getloadavg(), "runs": []}
    if args.endpoint:
        report["runs"].append({"endpoint": args.endpoint,
                               "cases": run_cases(args.endpoint, args.access_key, args.secret_key, args)})
    else:
        from fds import tune_allocator
        from fds.local import LocalCluster

        tune_allocator()
        for replicas in args.replicas:
            with tempfile.TemporaryDirectory() as tmp:
                with LocalCluster(Path(tmp), tractservers=4, replicas=replicas, s3=True, gateway=False,
                                  s3_args=args.s3_args + (["--workers", str(args.s3_workers)]
                                                          if args.s3_workers else []),
                                  env={"PYTHONPATH": args.code} if args.code else {}) as cluster:
                    access, secret = cluster.s3_credentials()
                    SERVERS["s3"] = [c.pid for c in cluster.children if c.role == "s3" and c.pid]
                    SERVERS["cluster"] = [c.pid for c in cluster.children if c.role != "s3" and c.pid]
                    print(f"k={replicas}: {cluster.s3_url} (s3 pid {cluster.child('s3').pid})", flush=True)
                    if args.hold:
                        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # leave the with: stop the cluster
                        print(f"--endpoint {cluster.s3_url} --access-key {access} --secret-key {secret}", flush=True)
                        try:
                            time.sleep(1e9)
                        except KeyboardInterrupt:
                            pass
                    report["runs"].append({"replicas": replicas,
                                           "cases": run_cases(cluster.s3_url, access, secret, args)})
    report["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
