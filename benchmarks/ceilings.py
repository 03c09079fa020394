"""Two ceilings on this machine, for judging fds's own figures against.

(a) HTTP: ``benchmarks/bare_app.py`` (PUT discards the body, GET returns a
    fixed 8 MiB body) under uvicorn with our servers' settings, driven with
    8 MiB PUTs and GETs, 8 in flight, by several clients: our ``HTTPPool`` on
    uvloop, aiohttp, stdlib ``http.client`` on 8 threads, and httpx. Each
    client runs in a fresh subprocess (this script re-invoked with
    ``--client``), so allocator state and the GIL do not leak between them.
(b) Durable writes: 8 MiB files written, fsynced and renamed, with the
    directory fsynced (``fds.durable.write_durably``), by 1, 4 and 8 writer
    threads, on the disk our data directories use; plus reading them back
    with ``os.read`` from a warm page cache, for reference.

Every figure is the median of 3 repetitions, in GiB/s. Usage::

    python benchmarks/ceilings.py [--seconds S] [--json OUT]

Other benchmarks can ``from ceilings import http_ceiling, durable_ceiling``
(with ``benchmarks/`` on ``sys.path``); both return plain dicts.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from fds import tune_allocator
from fds.buffers import aligned
from fds.durable import create_durably, read_direct, write_durably

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

GiB = 1024**3
BODY_BYTES = 8 * 1024 * 1024
IN_FLIGHT = 8
REPEATS = 3
CLIENTS = ("fds", "aiohttp", "stdlib", "httpx")
METHODS = ("PUT", "GET")
WRITERS = (1, 4, 8)


# -- (a) the HTTP ceiling: one client run, in its own process --------------------


def _body() -> bytes:
    return os.urandom(1024) * (BODY_BYTES // 1024)


async def _drive(request: Callable[[], Any], seconds: float, max_requests: int) -> tuple[int, float]:
    """Run ``request`` from IN_FLIGHT tasks until the deadline; return (requests, elapsed)."""
    await asyncio.gather(*(request() for _ in range(IN_FLIGHT)))  # warm up: open every connection
    done = 0
    started = time.perf_counter()
    deadline = started + seconds

    async def worker() -> None:
        nonlocal done
        while done < max_requests and time.perf_counter() < deadline:
            done += 1  # claimed before the await, so max_requests is never overshot
            await request()

    await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return done, time.perf_counter() - started


async def _run_fds(url: str, method: str, seconds: float, max_requests: int) -> tuple[int, float]:
    # Benchmarks may use the private data-path client directly: it is what we measure.
    from fds.httpclient import HTTPPool

    body = _body() if method == "PUT" else None
    pool = HTTPPool(timeout=60.0)

    async def request() -> None:
        response = await pool.request(method, url, body=body)
        if response.status >= 300 or (method == "GET" and len(response.body) != BODY_BYTES):
            raise RuntimeError(f"fds {method}: HTTP {response.status}, {len(response.body)} bytes")

    try:
        return await _drive(request, seconds, max_requests)
    finally:
        await pool.aclose()


async def _run_aiohttp(url: str, method: str, seconds: float, max_requests: int) -> tuple[int, float]:
    import aiohttp

    body = _body()
    connector = aiohttp.TCPConnector(limit=IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def request() -> None:
            if method == "PUT":
                async with session.put(url, data=body) as response:
                    await response.read()
            else:
                async with session.get(url) as response:
                    data = await response.read()
                    if len(data) != BODY_BYTES:
                        raise RuntimeError(f"aiohttp GET: {len(data)} bytes")
            if response.status >= 300:
                raise RuntimeError(f"aiohttp {method}: HTTP {response.status}")

        return await _drive(request, seconds, max_requests)


async def _run_httpx(url: str, method: str, seconds: float, max_requests: int) -> tuple[int, float]:
    import httpx

    body = _body()
    limits = httpx.Limits(max_connections=IN_FLIGHT, max_keepalive_connections=IN_FLIGHT)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def request() -> None:
            if method == "PUT":
                response = await client.put(url, content=body)
            else:
                response = await client.get(url)
                if len(response.content) != BODY_BYTES:
                    raise RuntimeError(f"httpx GET: {len(response.content)} bytes")
            if response.status_code >= 300:
                raise RuntimeError(f"httpx {method}: HTTP {response.status_code}")

        return await _drive(request, seconds, max_requests)


def _run_stdlib(url: str, method: str, seconds: float, max_requests: int) -> tuple[int, float]:
    """http.client, one keep-alive connection per thread, IN_FLIGHT threads."""
    host, port = url.split("//", 1)[1].rstrip("/").split(":")
    body = _body() if method == "PUT" else None
    lock = threading.Lock()
    done = 0
    start = threading.Barrier(IN_FLIGHT + 1)
    deadline = 0.0
    errors: list[BaseException] = []

    def one(conn: http.client.HTTPConnection) -> None:
        conn.request(method, "/", body=body)
        response = conn.getresponse()
        data = response.read()
        if response.status >= 300 or (method == "GET" and len(data) != BODY_BYTES):
            raise RuntimeError(f"stdlib {method}: HTTP {response.status}, {len(data)} bytes")

    def thread() -> None:
        nonlocal done
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        try:
            one(conn)  # warm up
            start.wait()
            start.wait()  # the main thread sets the deadline between the two
            while time.perf_counter() < deadline:
                with lock:
                    if done >= max_requests:
                        break
                    done += 1
                one(conn)
        except BaseException as exc:
            errors.append(exc)
            start.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=thread, daemon=True) for _ in range(IN_FLIGHT)]
    for t in threads:
        t.start()
    started = time.perf_counter()
    try:
        start.wait()
        started = time.perf_counter()
        deadline = started + seconds
        start.wait()
    except threading.BrokenBarrierError:
        pass  # a thread failed; its error is in ``errors``
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return done, time.perf_counter() - started


def run_client(name: str, method: str, url: str, seconds: float, max_requests: int,
               tune: bool) -> dict[str, Any]:
    """One measurement in this process. Returns what ``--client`` prints."""
    if tune:
        tune_allocator()
    if name == "stdlib":
        requests, elapsed = _run_stdlib(url, method, seconds, max_requests)
    else:
        import uvloop

        runner = {"fds": _run_fds, "aiohttp": _run_aiohttp, "httpx": _run_httpx}[name]
        requests, elapsed = uvloop.run(runner(url, method, seconds, max_requests))
    return {"client": name, "method": method, "requests": requests, "seconds": round(elapsed, 4),
            "gib_s": requests * BODY_BYTES / GiB / elapsed, "tuned_allocator": tune}


# -- (a) the HTTP ceiling: server and orchestration ------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("PUT", "/", body=b"")
        return conn.getresponse().status == 204
    except OSError:
        return False
    finally:
        conn.close()


@contextmanager
def bare_server(timeout: float = 20.0) -> Iterator[str]:
    """Run bare_app under uvicorn; yield its URL; stop it by its PID, always."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--loop", "uvloop", "--http", "httptools",
         "--no-access-log", "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port)],
        cwd=HERE, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not _answers(port):
            if proc.poll() is not None:
                raise RuntimeError(f"bare_app exited with status {proc.returncode} before answering")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bare_app did not answer on port {port} within {timeout:.0f}s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _client_subprocess(name: str, method: str, url: str, seconds: float, max_requests: int,
                       tune: bool) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--client", name, "--method", method, "--url", url,
               "--seconds", str(seconds), "--max-requests", str(max_requests)]
    if tune:
        command.append("--tune-allocator")
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 90)
    if done.returncode != 0:
        raise RuntimeError(f"client {name} {method} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def http_ceiling(*, seconds: float = 1.0, max_requests: int = 400, clients: Sequence[str] = CLIENTS,
                 methods: Sequence[str] = METHODS, repeats: int = REPEATS, tune_all: bool = False,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """GiB/s of 8 MiB PUTs and GETs through a bare uvicorn app, per client and method.

    Each client/method pair runs ``repeats`` times (interleaved, so slow drift
    on a shared machine hits every client alike) for at most ``seconds`` or
    ``max_requests`` requests, in a fresh subprocess. Our HTTPPool always runs
    with :func:`fds.tune_allocator`, as the fds command does; the others
    only with ``tune_all``.
    """
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {(c, m): [] for c in clients for m in methods}
    with bare_server() as url:
        # Warm the server (its allocator and the page cache of its imports) before the first timed run.
        _client_subprocess("stdlib", "PUT", url, min(seconds, 0.5), 40, True)
        _client_subprocess("stdlib", "GET", url, min(seconds, 0.5), 40, True)
        for rep in range(repeats):
            for client in clients:
                for method in methods:
                    run = _client_subprocess(client, method, url, seconds, max_requests,
                                             tune_all or client == "fds")
                    runs[client, method].append(run)
                    if progress:
                        progress(f"  http rep {rep + 1}/{repeats} {client:8} {method:4} {run['gib_s']:.2f} GiB/s")
    results = {
        client: {
            method: {
                "gib_s": statistics.median(r["gib_s"] for r in runs[client, method]),
                "runs_gib_s": [round(r["gib_s"], 3) for r in runs[client, method]],
                "requests": [r["requests"] for r in runs[client, method]],
            }
            for method in methods
        }
        for client in clients
    }
    return {"body_bytes": BODY_BYTES, "in_flight": IN_FLIGHT, "repeats": repeats, "seconds_per_run": seconds,
            "tuned_allocator": {c: tune_all or c == "fds" for c in clients}, "clients": results}


# -- (b) the durable-write ceiling ---------------------------------------------------


def _default_dir() -> Path:
    """A temp dir on the disk our data directories (under the repository) live on."""
    system = Path(tempfile.gettempdir())
    if os.stat(system).st_dev == os.stat(REPO).st_dev:
        return system
    return REPO / ".fds"  # /tmp is elsewhere (tmpfs?): use the repository's disk


def _parallel(threads: int, jobs: Sequence[Any], work: Callable[[Any], None]) -> float:
    """Run ``work`` over ``jobs`` on ``threads`` threads; return the elapsed seconds."""
    with ThreadPoolExecutor(threads) as pool:
        started = time.perf_counter()
        list(pool.map(work, jobs))
        return time.perf_counter() - started


def _read_whole(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        got = 0
        while chunk := os.read(fd, BODY_BYTES):
            got += len(chunk)
        if got != BODY_BYTES:
            raise RuntimeError(f"{path}: read {got} bytes")
    finally:
        os.close(fd)


def durable_ceiling(*, writers: Sequence[int] = WRITERS, files: int = 32, repeats: int = REPEATS,
                    directory: str | os.PathLike[str] | None = None,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """GiB/s of durably written 8 MiB files for each writer count, and of reading them back.

    Each repetition writes ``files`` files with ``write_durably`` (write,
    fsync, rename, fsync the directory), spread over the writer threads, then
    reads them all back with ``os.read`` from the page cache using as many
    threads, then deletes them. The temp dir is removed at the end.
    """
    tune_allocator()  # os.read allocates an 8 MiB bytes per call
    parent = Path(directory) if directory is not None else _default_dir()
    parent.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="fds-ceilings-", dir=parent))
    body = _body()
    total = files * BODY_BYTES
    results: dict[str, Any] = {}
    try:
        for count in writers:
            write_rates: list[float] = []
            read_rates: list[float] = []
            direct_write: list[float] = []
            direct_read: list[float] = []
            aligned_body = aligned(BODY_BYTES)
            aligned_body[:] = body
            for rep in range(repeats):
                # The tract servers' own path: O_DIRECT create + fdatasync + shared directory fsync,
                # then O_DIRECT reads (nothing of it is in the page cache).
                paths = [root / f"d{count}-r{rep}-{i:04d}" for i in range(files)]
                elapsed = _parallel(count, paths, lambda path, b=aligned_body: create_durably(path, b, direct=True))
                direct_write.append(total / GiB / elapsed)
                direct_read.append(total / GiB / _parallel(count, paths, lambda path: read_direct(path, BODY_BYTES)))
                for path in paths:
                    path.unlink()
                paths = [root / f"w{count}-r{rep}-{i:04d}" for i in range(files)]
                elapsed = _parallel(count, paths, lambda path: write_durably(path, body))
                write_rates.append(total / GiB / elapsed)
                read_rates.append(total / GiB / _parallel(count, paths, _read_whole))
                for path in paths:
                    path.unlink()
                if progress:
                    progress(f"  disk rep {rep + 1}/{repeats} {count} writer(s) write {write_rates[-1]:.2f} GiB/s,"
                             f" read {read_rates[-1]:.2f} GiB/s")
            results[str(count)] = {
                "write_gib_s": statistics.median(write_rates),
                "read_gib_s": statistics.median(read_rates),
                "runs_write_gib_s": [round(r, 3) for r in write_rates],
                "runs_read_gib_s": [round(r, 3) for r in read_rates],
                "direct_write_gib_s": statistics.median(direct_write),
                "direct_read_gib_s": statistics.median(direct_read),
                "runs_direct_write_gib_s": [round(r, 3) for r in direct_write],
                "runs_direct_read_gib_s": [round(r, 3) for r in direct_read],
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {"file_bytes": BODY_BYTES, "files_per_run": files, "repeats": repeats, "directory": str(parent),
            "writers": results}


# -- the command line -------------------------------------------------------------


def _table(http: dict[str, Any], disk: dict[str, Any]) -> str:
    lines = [f"HTTP ceiling: bare_app under uvicorn (uvloop, httptools), 8 MiB bodies, {http['in_flight']} in flight,"
             f" median of {http['repeats']} runs of <= {http['seconds_per_run']:g} s",
             f"  {'client':28} {'PUT GiB/s':>10} {'GET GiB/s':>10}"]
    labels = {"fds": "fds HTTPPool (uvloop)", "aiohttp": "aiohttp ClientSession", "stdlib": "http.client, 8 threads",
              "httpx": "httpx AsyncClient"}
    for client, methods in http["clients"].items():
        cells = [f"{methods[m]['gib_s']:10.2f}" if m in methods else f"{'-':>10}" for m in METHODS]
        tuned = " *" if http["tuned_allocator"][client] else ""
        lines.append(f"  {labels.get(client, client) + tuned:28} {' '.join(cells)}")
    lines.append("  * glibc allocator tuned in the client (fds.tune_allocator)")
    lines += ["", f"Durable-write ceiling: 8 MiB files, write_durably, {disk['files_per_run']} files per run,"
              f" median of {disk['repeats']}, in {disk['directory']}",
              f"  {'writers':>7} {'write GiB/s':>12} {'read back GiB/s (warm cache)':>30}"
              f" {'O_DIRECT write':>15} {'O_DIRECT read':>14}"]
    for count, row in disk["writers"].items():
        lines.append(f"  {count:>7} {row['write_gib_s']:12.2f} {row['read_gib_s']:30.2f}"
                     f" {row['direct_write_gib_s']:15.2f} {row['direct_read_gib_s']:14.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=1.0, help="time limit of each HTTP client run (default 1)")
    parser.add_argument("--max-requests", type=int, default=400, help="request limit of each HTTP client run")
    parser.add_argument("--json", metavar="OUT", help="also write the figures to this JSON file")
    parser.add_argument("--files", type=int, default=32, help="8 MiB files per durable-write run (default 32)")
    parser.add_argument("--dir", help="parent of the temp dir for durable writes (default: on the repo's disk)")
    parser.add_argument("--only", choices=["http", "disk"], help="measure just one ceiling")
    parser.add_argument("--tune-all", action="store_true", help="tune the allocator in every client, not just ours")
    # Internal: one client run, as a subprocess of the orchestrating process.
    parser.add_argument("--client", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--tune-allocator", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.client:
        result = run_client(args.client, args.method, args.url, args.seconds, args.max_requests, args.tune_allocator)
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    started = time.perf_counter()
    http_result: dict[str, Any] = {"in_flight": IN_FLIGHT, "repeats": 0, "seconds_per_run": 0,
                                   "clients": {}, "tuned_allocator": {}}
    disk_result: dict[str, Any] = {"files_per_run": 0, "repeats": 0, "directory": "-", "writers": {}}
    if args.only in (None, "http"):
        http_result = http_ceiling(seconds=args.seconds, max_requests=args.max_requests, tune_all=args.tune_all,
                                   progress=say)
    if args.only in (None, "disk"):
        disk_result = durable_ceiling(files=args.files, directory=args.dir, progress=say)
    print(_table(http_result, disk_result))
    print(f"\n({time.perf_counter() - started:.0f} s; {os.cpu_count()} CPUs; {sys.version.split()[0]})")
    if args.json:
        report = {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "cpus": os.cpu_count(),
                  "python": sys.version.split()[0], "http": http_result, "durable": disk_result}
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
