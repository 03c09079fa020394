"""A/B the data path of two checkouts, side by side, on one machine: each round runs A then B (or B then A).

    python benchmarks/ab.py --a /path/to/other/checkout [--b .] [--replicas 1 3] [--rounds 10] [--json OUT]

A shared machine's load moves by more than the few percent an A/B wants to see, on a scale of
seconds to minutes; running ``benchmarks/cluster.py`` for one side and then the other measures the
load as much as the code. So this starts one local cluster of each checkout (4 tract servers,
8 MiB tracts, started with that checkout's code: ``python -m fds local up`` in its directory) and
keeps both up; each round then runs one ``benchmarks/cluster.py`` write-then-read pass
(``_one_run``: 128 tracts, 16 in flight) against A and one against B, each in a fresh client
process of its own checkout, alternating which goes first. It reports, per replication level,
the median of each side and the median and quartiles of the per-round ratios B/A of: write and
read GiB/s, and the CPU seconds per GiB moved (written plus read) of the client process and of
the four tract servers together. CPU per GiB is the steadier figure on a loaded machine: a busy
neighbour makes every step wait, but adds less to the work each step does.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ONE = ("import asyncio, json, sys, time; sys.path.insert(0, '.'); from fds import tune_allocator; tune_allocator(); "
        "from benchmarks.cluster import _one_run; t = time.process_time(); "
        "r = asyncio.run(_one_run(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))); "
        "r['client_cpu_s'] = time.process_time() - t; print(json.dumps(r))")
_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


class _Cluster:
    """``fds local up`` of one checkout, in a temp dir."""

    def __init__(self, checkout: Path, replicas: int, base: Path) -> None:
        self.checkout = checkout
        self.dir = Path(tempfile.mkdtemp(prefix="ab-", dir=base))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fds", "local", "up", "--dir", str(self.dir), "--tractservers", "4",
             "--replicas", str(replicas), "--tract-size", str(8 << 20), "--port", "0", "--no-gateway"],
            cwd=checkout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"ready."):
                break
        else:
            raise RuntimeError(f"fds local up in {checkout} did not start")
        info = json.loads((self.dir / "cluster.json").read_text())
        self.url = info["metaserver"]
        self.servers = [c["pid"] for c in info["children"] if c["role"] == "tractserver"]
        self.env = {**os.environ, "FDS_SECRET_FILE": info["secret_file"]}

    def run(self, tracts: int, in_flight: int) -> dict[str, float]:
        """One write-then-read pass; adds the CPU seconds it cost the client and the tract servers per GiB."""
        before = sum(_cpu_seconds(pid) for pid in self.servers)
        out = subprocess.run([sys.executable, "-c", _ONE, self.url, str(tracts), str(in_flight)],
                             cwd=self.checkout, env=self.env, capture_output=True, text=True, check=True)
        result = dict(json.loads(out.stdout.strip().splitlines()[-1]))
        gib = 2 * tracts * (8 << 20) / 2**30  # written and read
        result["client_cpu_s_per_gib"] = result.pop("client_cpu_s") / gib
        result["server_cpu_s_per_gib"] = (sum(_cpu_seconds(pid) for pid in self.servers) - before) / gib
        return result

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", required=True, type=Path, help="checkout A (the baseline)")
    parser.add_argument("--b", default=Path("."), type=Path, help="checkout B (default: this one)")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--tracts", type=int, default=128)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--dir", default=os.environ.get("TMPDIR", "/tmp"), type=Path)
    parser.add_argument("--json", help="also write every run here")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"a": str(args.a.resolve()), "b": str(args.b.resolve()), "rounds": args.rounds,
                               "load_before": os.getloadavg()}
    for k in args.replicas:
        a, b = _Cluster(args.a.resolve(), k, args.dir), _Cluster(args.b.resolve(), k, args.dir)
        runs: dict[str, list[dict[str, float]]] = {"a": [], "b": []}
        try:
            for r in range(args.rounds):
                order = [("a", a), ("b", b)] if r % 2 == 0 else [("b", b), ("a", a)]
                for side, cluster in order:
                    runs[side].append(cluster.run(args.tracts, args.in_flight))
                time.sleep(0.5)
        finally:
            a.stop()
            b.stop()
        summary: dict[str, Any] = {}
        for key in ("write_gib_s", "read_gib_s", "client_cpu_s_per_gib", "server_cpu_s_per_gib"):
            ratios = [rb[key] / ra[key] for ra, rb in zip(runs["a"], runs["b"], strict=True)]
            summary[key] = {"a_median": statistics.median(r[key] for r in runs["a"]),
                            "b_median": statistics.median(r[key] for r in runs["b"]),
                            "ratio_median": statistics.median(ratios),
                            "ratio_quartiles": statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios}
            s = summary[key]
            print(f"k={k} {key}: A {s['a_median']:.3f}  B {s['b_median']:.3f}  B/A per round: median "
                  f"{s['ratio_median']:.3f}, quartiles {', '.join(f'{q:.3f}' for q in s['ratio_quartiles'])}",
                  flush=True)
        results[f"k{k}"] = {"summary": summary, "runs": runs}
    results["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
