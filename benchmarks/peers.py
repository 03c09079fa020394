"""The sorts a user would otherwise run on this machine, file to file: numpy, GNU sort, and Ray.

    pip install -e ".[bench]"                      # Ray (not a test dependency)
    python benchmarks/peers.py --sizes 1GB 4GB --repeat 3
    python benchmarks/peers.py --sizes 1GB --peers numpy gnusort

For each size it writes the input once, gensort-1.5 records made by
:func:`apps.minutesort.generate` (binary; ASCII for GNU sort, which sorts
lines), then times each peer as a fresh process, start-up included, from
reading the input file to the output durable on disk (fsync):

- **numpy**: one process reads the file, ``argsort``s the 10-byte keys, writes
  the rows in order;
- **gnusort**: ``LC_ALL=C sort --parallel=2`` on the ASCII records (whole-line
  byte order is key order);
- **ray**: a task shuffle sort (``ray.init(num_cpus=2)``): map tasks read
  64 MB pieces and split them into key ranges, reduce tasks sort each range
  and write its own output file.

Every output is checked like valsort (order, count, and checksum equal to the
input's). Figures are medians; the page cache is left as it is (the input
was just written), which favours the peers, since fds reads from its own
tract files with O_DIRECT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from apps.minutesort import RECORD_SIZE, Summary, combine, generate, validate_file
from apps.minutesort.cli import parse_size

_CHUNK = 1_000_000
"""Records generated per step when writing an input file."""


def write_input(path: Path, records: int, *, ascii: bool) -> None:
    with open(path, "wb") as out:
        for start in range(0, records, _CHUNK):
            out.write(generate(start, min(_CHUNK, records - start), ascii=ascii).tobytes())
        out.flush()
        os.fsync(out.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- the peers, each run as its own process: `python benchmarks/peers.py --run PEER IN OUT` ---------------
def numpy_sort(source: Path, target: Path) -> None:
    data = np.fromfile(source, dtype=np.uint8).reshape(-1, RECORD_SIZE)
    keys = np.ascontiguousarray(data[:, :10]).view("S10").ravel()
    order = np.argsort(keys, kind="stable")
    data[order].tofile(target)
    _fsync(target)


def gnu_sort(source: Path, target: Path) -> None:
    subprocess.run(["sort", "--parallel=2", "-S", "40%", "-o", str(target), str(source)], check=True,
                   env={**os.environ, "LC_ALL": "C"})
    _fsync(target)


def ray_sort(source: Path, target: Path) -> None:
    """A task shuffle sort: maps split 64 MB pieces by key range, reduces sort a range each and write it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR)
    size = source.stat().st_size
    piece = 64 * 10**6 // RECORD_SIZE * RECORD_SIZE
    ranges = 8
    bounds = [(i << 64) // ranges for i in range(1, ranges)]

    @ray.remote(num_returns=ranges)
    def split(offset: int, length: int) -> list[np.ndarray]:
        with open(source, "rb") as f:
            f.seek(offset)
            data = np.frombuffer(f.read(length), dtype=np.uint8).reshape(-1, RECORD_SIZE)
        prefix = np.ascontiguousarray(data[:, :8]).view(">u8").ravel()
        which = np.searchsorted(np.array(bounds, dtype=np.uint64), prefix, side="right")
        return [data[which == r] for r in range(ranges)]

    @ray.remote
    def merge(r: int, *parts: np.ndarray) -> int:
        data = np.concatenate(parts)
        keys = np.ascontiguousarray(data[:, :10]).view("S10").ravel()
        out = target.with_name(f"{target.name}.{r:03d}")
        data[np.argsort(keys, kind="stable")].tofile(out)
        _fsync(out)
        return len(data)

    maps: list[Any] = [split.remote(offset, min(piece, size - offset)) for offset in range(0, size, piece)]
    columns = [[m[r] for m in maps] for r in range(ranges)]  # num_returns: one reference per key range
    total = sum(ray.get([merge.remote(r, *columns[r]) for r in range(ranges)]))
    assert total * RECORD_SIZE == size
    ray.shutdown()


PEERS = {"numpy": numpy_sort, "gnusort": gnu_sort, "ray": ray_sort}


def outputs(target: Path) -> list[Path]:
    """The output files of one run, in key order (Ray writes one per key range)."""
    parts = sorted(target.parent.glob(f"{target.name}.*"))
    return parts or [target]


def check(target: Path, expected: Summary) -> Summary:
    summary = combine(validate_file(p) for p in outputs(target))
    if not summary.valid or summary.records != expected.records or summary.checksum != expected.checksum:
        raise RuntimeError(f"{target}: invalid output: {summary} (input: {expected})")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1GB", "4GB"])
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--run", nargs=3, metavar=("PEER", "IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        PEERS[args.run[0]](Path(args.run[1]), Path(args.run[2]))
        return 0
    where = Path(tempfile.mkdtemp(prefix="minutesort-peers-", dir=args.dir))
    results: list[dict[str, Any]] = []
    print("| input | peer | wall s (median) | all runs |")
    print("|---|---|---|---|")
    try:
        for text in args.sizes:
            records = parse_size(text) // RECORD_SIZE
            inputs = {}
            for ascii in sorted({p == "gnusort" for p in args.peers}):
                path = where / f"input-{'ascii' if ascii else 'binary'}.dat"
                write_input(path, records, ascii=ascii)
                inputs[ascii] = (path, validate_file(path))
            for peer in args.peers:
                source, expected = inputs[peer == "gnusort"]
                seconds = []
                for _ in range(args.repeat):
                    target = where / f"output-{peer}.dat"
                    started = time.perf_counter()
                    subprocess.run([sys.executable, __file__, "--run", peer, str(source), str(target)], check=True)
                    seconds.append(round(time.perf_counter() - started, 2))
                    check(target, expected)
                    for path in outputs(target):
                        path.unlink()
                results.append({"size": text, "peer": peer, "median_seconds": median(seconds), "all": seconds})
                print(f"| {text} | {peer} | {median(seconds):.2f} | {seconds} |", flush=True)
            for path, _ in inputs.values():
                path.unlink()
    finally:
        shutil.rmtree(where, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
