"""The ``fds`` command next to the library it wraps: put and get of one N GB file on a local cluster.

    python benchmarks/cli.py [--gb 2] [--repeat 3] [--replicas 1] [--json OUT]

Starts a real LocalCluster (4 tract servers, 8 MiB tracts) in a temp dir and
makes an N GB source file there. Then, in each of --repeat rounds, side by
side so drift on a shared machine hits every figure alike:

- ``disk write``: a plain buffered write of a new N GB file (8 MiB writes from
  one reused buffer, then fsync): what this VM gives any tool that writes a
  fresh file (see PERF-NOTES "This VM's memory");
- ``library put`` / ``library get``: ``fds.client`` writing N GB of tracts from
  memory and reading them back into nothing (benchmarks/cluster.py's figure);
- ``cli put``: ``fds put FILE``, a real subprocess, wall time;
- ``cli get``: ``fds get GUID OUT`` into a new file, into stdout redirected to
  /dev/null, into stdout read through a pipe, and into a character device
  (``mknod`` of /dev/null's numbers in the temp dir; root only);
- ``cli start``: ``fds stat GUID``, the fixed cost every command pays
  (interpreter start-up, imports, one metadata request).

Every CLI figure includes that fixed cost. Rates are GiB/s of the file's
size; the summary is the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fds.cli._local import LocalCluster  # noqa: E402
from fds.client import Client  # noqa: E402

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


def disk_write(path: Path, size: int) -> float:
    """Seconds to write a new file of ``size`` bytes, buffered, 8 MiB at a time, then fsync."""
    buf = os.urandom(TRACT)
    t0 = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        done = 0
        while done < size:
            done += os.write(fd, memoryview(buf)[:min(TRACT, size - done)])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


async def library(metaserver: str, size: int) -> tuple[float, float]:
    """Seconds for the library to write ``size`` bytes of tracts from memory, then to read them into nothing."""
    payloads = [os.urandom(TRACT) for _ in range(4)]
    tracts = -(-size // TRACT)
    async with Client(metaserver) as fds:
        blob = await fds.create_blob()
        await blob.extend(tracts)
        t0 = time.perf_counter()
        await blob.write_tracts((i, payloads[i % 4]) for i in range(tracts))
        t1 = time.perf_counter()
        async for _ in blob.read_tracts(range(tracts)):
            pass
        t2 = time.perf_counter()
        await fds.delete_blob(blob.raw)
    return t1 - t0, t2 - t1


def _fds(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([sys.executable, "-m", "fds", *args], env=env, stderr=subprocess.PIPE, check=False,
                          **kwargs)
    if proc.returncode:
        raise SystemExit(f"fds {' '.join(args)} failed: {proc.stderr.decode().strip()}")
    return proc


def timed(run: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def get_through_pipe(guid: str, env: dict[str, str], size: int) -> None:
    """``fds get GUID -`` with stdout a pipe, drained the way ``| cat >/dev/null`` would."""
    proc = subprocess.Popen([sys.executable, "-m", "fds", "get", guid, "-"], env=env, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    buf = bytearray(1 << 20)
    got = 0
    while n := proc.stdout.readinto(buf):
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


def one_round(cluster: LocalCluster, work: Path, src: Path, size: int, env: dict[str, str]) -> dict[str, float]:
    seconds: dict[str, float] = {}
    out = work / "out.bin"
    seconds["disk write"] = disk_write(out, size)
    out.unlink()
    put, get = asyncio.run(library(cluster.metaserver_url, size))
    seconds["library put"], seconds["library get"] = put, get
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
            device.unlink()  # the CLI replaced the device with a file (the bug this benchmark also shows)
            seconds["cli get chardev"] = float("nan")
    _fds(["rm", guid], env)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gb", type=float, default=2.0, help="file size in GB (10^9 bytes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--json", help="write all figures here")
    args = parser.parse_args()
    size = int(args.gb * 1e9)
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="fds-bench-cli-") as tmp:
        work = Path(tmp)
        cluster = LocalCluster(work / "cluster", tractservers=4, replicas=args.replicas, tract_size=TRACT, port=0,
                               gateway=False, collector_interval=0)
        with cluster:
            env = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}
            env.update(FDS_METASERVER=cluster.metaserver_url, FDS_SECRET_FILE=str(cluster.secret_file))
            os.environ.update(FDS_SECRET_FILE=str(cluster.secret_file))  # for the library runs in this process
            src = work / "source.bin"
            make_source(src, size)
            for r in range(args.repeat):
                rounds.append(one_round(cluster, work, src, size, env))
                print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in rounds[-1].items()), flush=True)
    summary = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print(f"\n{size / 1e9:g} GB, k={args.replicas}, 4 tract servers, {os.cpu_count()} CPUs; "
          f"median of {len(rounds)} rounds:")
    for key, secs in summary.items():
        rate = "" if key == "cli start" else f"  {size / secs / GIB:5.2f} GiB/s"
        print(f"  {key:26s} {secs:6.2f} s{rate}")
    if args.json:
        report = {"date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(), "bytes": size,
                  "replicas": args.replicas, "seconds": summary, "rounds": rounds}
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
