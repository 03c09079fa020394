"""The ``fds`` command next to the library it wraps: put and get of one N GB file on a local cluster.

    python benchmarks/cli.py [--gb 2] [--repeat 3] [--replicas 1] [--before DIR] [--json OUT]

Starts a real LocalCluster (4 tract servers, 8 MiB tracts) in a temp dir and
makes an N GB source file there. Then, in each of --repeat rounds, side by
side so drift on a shared machine hits every figure alike:

- ``disk write``: a plain buffered write of a new N GB file (8 MiB writes from
  one reused buffer, then fsync): what this VM gives any tool that writes a
  fresh file durably (see docs/benchmarks.md on this VM's memory); ``disk
  write direct``: the same with O_DIRECT, the ceiling of ``fds get``'s way;
- ``library put`` / ``library get``: ``fds.client`` writing N GB of tracts from
  memory and reading them back into nothing (benchmarks/cluster.py's figure);
  ``library write_from file`` / ``read_into file``: the library's own file
  helpers, from the source file and into a new file (no fsync);
- ``cli put``: ``fds put FILE``, a real subprocess, wall time;
- ``cli get``: ``fds get GUID OUT`` into a new file, into stdout redirected to
  /dev/null, into stdout read through a pipe, and into a character device
  (``mknod`` of /dev/null's numbers in the temp dir; root only);
- ``cli start``: ``fds stat GUID``, the fixed cost every command pays
  (interpreter start-up, imports, one metadata request).

Every CLI figure includes that fixed cost. Rates are GiB/s of the file's
size; the summary is the median over rounds. ``--before DIR`` also runs, in
the same rounds, the CLI of another source tree (``git archive REF | tar -x
-C DIR``): before/after figures from one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from fds.buffers import aligned
from fds.client import Client
from fds.local import LocalCluster

TRACT = 8 * 1024 * 1024
GIB = 1024**3


def make_source(path: Path, size: int) -> None:
    """An incompressible file of ``size`` bytes (64 MiB of random data, each 8 MiB piece varied)."""
    block = bytearray(os.urandom(64 * 1024 * 1024))
    with open(path, "wb") as fh:
        done = 0
        while done < size:
            piece = memoryview(block)[(done % len(block)):][:min(TRACT, size - done)]
            fh.write(piece)
            done += len(piece)
            block[done % len(block)] ^= 0xFF  # no two pieces alike
        fh.flush()
        os.fsync(fh.fileno())


def disk_write(path: Path, size: int, direct: bool = False) -> float:
    """Seconds to write a new file of ``size`` bytes, 8 MiB at a time (buffered or O_DIRECT), then fsync."""
    buf = aligned(TRACT)
    buf[:] = os.urandom(TRACT)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | (os.O_DIRECT if direct else 0), 0o644)
    try:
        done = 0
        while done < size:
            done += os.write(fd, buf if direct else buf[:min(TRACT, size - done)])
        os.ftruncate(fd, size)
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


async def library(metaserver: str, size: int, src: Path, out: Path) -> dict[str, float]:
    """Seconds for the library to write ``size`` bytes of tracts from memory and read them into nothing;
    then to write ``src`` with ``Blob.write_from`` and read it into the new file ``out`` with ``Blob.read_into``."""
    payloads = [os.urandom(TRACT) for _ in range(4)]
    tracts = -(-size // TRACT)
    seconds: dict[str, float] = {}
    async with Client(metaserver) as fds:
        blob = await fds.create_blob()
        await blob.extend(tracts)
        t0 = time.perf_counter()
        await blob.write_tracts((i, payloads[i % 4]) for i in range(tracts))
        t1 = time.perf_counter()
        async for _ in blob.read_tracts(range(tracts)):
            pass
        t2 = time.perf_counter()
        seconds["library put"], seconds["library get"] = t1 - t0, t2 - t1
        await fds.delete_blob(blob.raw)
        blob = await fds.create_blob()
        t0 = time.perf_counter()
        await blob.write_from(src)
        t1 = time.perf_counter()
        await blob.read_into(out)
        t2 = time.perf_counter()
        seconds["library write_from file"], seconds["library read_into file"] = t1 - t0, t2 - t1
        await fds.delete_blob(blob.raw)
    out.unlink()
    return seconds


def _fds(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    # cwd: the temp dir, or `python -m fds` would import ./fds from wherever this was started
    proc = subprocess.run([sys.executable, "-m", "fds", *args], env=env, stderr=subprocess.PIPE, check=False,
                          cwd=env["FDS_BENCH_DIR"], **kwargs)
    if proc.returncode:
        raise SystemExit(f"fds {' '.join(args)} failed: {proc.stderr.decode().strip()}")
    return proc


def timed(run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def get_through_pipe(guid: str, env: dict[str, str], size: int) -> None:
    """``fds get GUID -`` with stdout a pipe, drained the way ``| cat >/dev/null`` would."""
    proc = subprocess.Popen([sys.executable, "-m", "fds", "get", guid, "-"], env=env, stdout=subprocess.PIPE,
                            cwd=env["FDS_BENCH_DIR"])
    assert proc.stdout is not None
    buf = bytearray(1 << 20)
    got = 0
    while n := os.readv(proc.stdout.fileno(), [buf]):
        got += n
    if proc.wait() or got != size:
        raise SystemExit(f"fds get through a pipe: exit {proc.returncode}, {got} of {size} bytes")


def char_device(path: Path) -> bool:
    """Make a character device like /dev/null at ``path``; False where mknod is not allowed."""
    dev = os.stat("/dev/null").st_rdev
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, dev)
    except PermissionError:
        return False
    return True


def cli_round(label: str, work: Path, src: Path, size: int, env: dict[str, str]) -> dict[str, float]:
    """The CLI figures of one round, keyed ``LABEL cli ...``."""
    seconds: dict[str, float] = {}
    out = work / "out.bin"
    guid = ""

    def put_file() -> None:
        nonlocal guid
        guid = _fds(["put", str(src)], env, stdout=subprocess.PIPE).stdout.decode().strip()

    seconds["cli put"] = timed(put_file)
    seconds["cli start"] = timed(lambda: _fds(["stat", guid], env, stdout=subprocess.DEVNULL))
    seconds["cli get file"] = timed(lambda: _fds(["get", guid, str(out)], env))
    if out.stat().st_size != size:
        raise SystemExit(f"fds get wrote {out.stat().st_size} bytes, not {size}")
    out.unlink()
    with open(os.devnull, "wb") as null:
        seconds["cli get stdout>/dev/null"] = timed(lambda: _fds(["get", guid, "-"], env, stdout=null))
    seconds["cli get stdout|pipe"] = timed(lambda: get_through_pipe(guid, env, size))
    device = work / "null-device"
    if device.exists() or char_device(device):
        seconds["cli get chardev"] = timed(lambda: _fds(["get", guid, str(device)], env))
        if not stat.S_ISCHR(device.stat().st_mode):
            device.unlink()  # this CLI replaced the device with a file (issue 10's bug): no figure
            seconds["cli get chardev"] = float("nan")
    _fds(["rm", guid], env)
    return {f"{label}{key}": value for key, value in seconds.items()}


def collect_garbage(cluster: LocalCluster) -> None:
    """Have every tract server delete the tracts of deleted blobs now (each round writes ~16 GB at 2 GB)."""
    for server in cluster.tract_children:
        httpx.post(f"{server.url}/v1/admin/collect", headers=cluster.headers(), timeout=300).raise_for_status()


def _before_env(env: dict[str, str], before: Path) -> dict[str, str]:
    return {**env, "PYTHONPATH": str(before.resolve())}


def _cli_source(env: dict[str, str]) -> str:
    """Where the ``fds`` a CLI run imports comes from (a check that --before really runs the other tree)."""
    return subprocess.run([sys.executable, "-c", "import fds; print(fds.__file__)"], env=env, cwd=env["FDS_BENCH_DIR"],
                          capture_output=True, text=True, check=True).stdout.strip()


def one_round(cluster: LocalCluster, work: Path, src: Path, size: int, env: dict[str, str],
              before: Path | None) -> dict[str, float]:
    seconds: dict[str, float] = {}
    out = work / "out.bin"
    for direct in (False, True):
        seconds["disk write direct" if direct else "disk write"] = disk_write(out, size, direct)
        out.unlink()
    seconds.update(asyncio.run(library(cluster.metaserver_url, size, src, out)))
    if before is not None:
        seconds.update(cli_round("before: ", work, src, size, _before_env(env, before)))
    seconds.update(cli_round("", work, src, size, env))
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0, help="file size in GB (10^9 bytes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--before", type=Path, help="also run the CLI of this source tree (before/after)")
    parser.add_argument("--json", help="write all figures here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stop the cluster on the way out
    size = int(args.gb * 1e9)
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fds-bench-cli-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster", tractservers=4, replicas=args.replicas, tract_size=TRACT, port=0,
                               gateway=False, collector_interval=0)
        with cluster:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}
            env.update(FDS_METASERVER=cluster.metaserver_url, FDS_SECRET_FILE=str(cluster.secret_file),
                       FDS_BENCH_DIR=str(work))
            print(f"cli: {_cli_source(env)}" + (f"; before: {_cli_source(_before_env(env, args.before))}"
                                                if args.before else ""), flush=True)
            os.environ.update(FDS_SECRET_FILE=str(cluster.secret_file))  # for the library runs in this process
            src = work / "source.bin"
            make_source(src, size)
            for r in range(args.repeat):
                rounds.append(one_round(cluster, work, src, size, env, args.before))
                collect_garbage(cluster)
                print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in rounds[-1].items()), flush=True)
    summary = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"\n{size / 1e9:g} GB, k={args.replicas}, 4 tract servers, {os.cpu_count()} CPUs; "
          f"median of {len(rounds)} rounds:")
    for key, secs in summary.items():
        rate = "" if key.endswith("cli start") else f"  {size / secs / GIB:5.2f} GiB/s"
        print(f"  {key:34s} {secs:6.2f} s{rate}")
    if args.json:
        report = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "bytes": size,
                  "replicas": args.replicas, "before": str(args.before) if args.before else None,
                  "seconds": summary, "rounds": rounds}
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
