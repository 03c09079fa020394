"""What first-touching memory costs on this machine: fresh anonymous memory against a warm memfd.

    python benchmarks/fresh_memory.py [--gib 2]

This VM backs a guest page only when it is first touched and takes freed memory back, so a fresh
process that maps gigabytes pays for every page. The probe times, in one run:

1. fresh anonymous memory (``mmap``), first touch then a full write;
2. a memfd the parent touches once (fresh too);
3. a child process mapping that memfd ``MAP_SHARED | MAP_POPULATE`` and writing it, twice:
   what a standing worker's sort child would pay with an arena kept warm by its service.
"""

from __future__ import annotations

import argparse
import mmap
import os
import subprocess
import sys
import time

import numpy as np


def _touch(region: mmap.mmap, size: int, label: str) -> None:
    data = np.frombuffer(region, dtype=np.uint8)
    start = time.perf_counter()
    data[::4096] = 1
    first = time.perf_counter() - start
    start = time.perf_counter()
    data[:] = 3
    full = time.perf_counter() - start
    print(f"{label:34} first touch {first:6.2f} s ({size / first / 1e9:6.2f} GB/s), "
          f"then a full write {size / full / 1e9:5.2f} GB/s", flush=True)
    del data


def _child(fd: int, size: int) -> None:
    start = time.perf_counter()
    region = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
    print(f"{'child: map + populate the memfd':34} {time.perf_counter() - start:6.2f} s", flush=True)
    _touch(region, size, "child: on the warm memfd")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = int(args.gib * (1 << 30))
    if args.child is not None:
        _child(args.child, size)
        return 0
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    _touch(region, size, "fresh anonymous memory")
    region.close()
    fd = os.memfd_create("arena")
    os.ftruncate(fd, size)
    arena = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
    _touch(arena, size, "memfd, first touch in the parent")
    for _ in range(2):
        subprocess.run([sys.executable, __file__, "--gib", str(args.gib), "--child", str(fd)], pass_fds=(fd,),
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
