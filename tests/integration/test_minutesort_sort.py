"""`fds-minutesort sort | validate | run` through a real cluster with real worker processes.

Inputs are small (1 MiB tracts, tens of MB) so every path runs in seconds: any record blob, a memory
budget far below the data (it spills), workers SIGKILLed mid-sort (the sort still finishes), a slow
sorter (its buckets go to the other worker on demand).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.minutesort._blobio import generate_blob
from apps.minutesort._check import validate_blobs
from apps.minutesort._gensort import generate
from fds.client import Client
from fds.local import LocalCluster
from tests.support.credentials import AUTH


def _ms(*args: str, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "apps.minutesort.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout.strip(), result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


@pytest.fixture(scope="module")
def input_12mb(cluster_k1: LocalCluster) -> tuple[str, int]:
    """One 12 MB input for the module's sorts that only read it (GUID, valsort checksum), made in this process."""
    checksums: list[int] = []

    async def gen() -> str:
        async with Client(cluster_k1.metaserver_url) as fds:
            return (await generate_blob(fds, 120_000, checksums=checksums)).guid

    guid = asyncio.run(gen())
    return guid, sum(checksums) & ((1 << 128) - 1)


def _gen(cluster: LocalCluster, *args: str) -> str:
    gen = _ms("gen", *args, "--metaserver", cluster.metaserver_url)
    assert gen.returncode == 0, gen.stderr
    return gen.stdout.strip()  # gen prints the GUID, as `fds put` does


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], ["--daytona"], ["--daytona", "--skew"]], ids=["indy", "daytona", "skew"])
def test_run_sorts_20mb_and_validates(cluster_k1: LocalCluster, flags: list[str], tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    result = _ms("run", "--size", "20MB", "--workers", "2", "--quiet", "--keep", "--manifest", str(manifest),
                 "--metaserver", cluster_k1.metaserver_url, *flags)
    assert result.returncode == 0, result.stderr
    report = _last_json(result)
    for key in ("records", "bytes", "sort_seconds", "checksum", "valid", "input_blob", "output_blobs"):
        assert key in report
    assert report["valid"] is True and report["records"] == 200_000 and report["bytes"] == 20_000_000
    assert report["checksum"] == report["input_checksum"]
    assert len(report["output_blobs"]) == 8 and sum(report["bucket_records"]) == 200_000  # 4 buckets per worker
    assert report["spilled_bytes"] == 0 and report["deaths"] == []
    if "--daytona" in flags:  # sampled boundaries keep the buckets balanced, skewed keys or not
        assert min(report["bucket_records"]) > 0.4 * 200_000 / 8, report["bucket_records"]
    # The manifest lists the output in key order; validate checks it independently, against the input.
    assert json.loads(manifest.read_text())["output_blobs"] == report["output_blobs"]
    check = _ms("validate", "--manifest", str(manifest), "--input", report["input_blob"],
                "--metaserver", cluster_k1.metaserver_url)
    assert check.returncode == 0, check.stderr
    assert _last_json(check)["valid"] is True and _last_json(check)["records"] == 200_000


def _read_outputs(metaserver: str, outputs: list[str]) -> bytes:
    async def read_all() -> bytes:
        async with Client(metaserver) as fds:
            chunks = []
            for g in outputs:
                blob = await fds.open_blob(g)
                chunks += [bytes(d) async for _, d in blob.read_tracts(range(await blob.size()))]
            return b"".join(chunks)

    return asyncio.run(read_all())


def test_sort_output_is_exactly_the_sorted_input(cluster_k1: LocalCluster, tmp_path: Path) -> None:
    """Concatenated in manifest order, the output blobs are the input's records sorted by key."""
    guid = _gen(cluster_k1, "--records", "60000", "--skew")
    manifest = tmp_path / "m.json"
    result = _ms("sort", guid, "--workers", "3", "--daytona", "--quiet", "--manifest", str(manifest),
                 "--metaserver", cluster_k1.metaserver_url)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(manifest.read_text())["output_blobs"]
    assert len(outputs) == 12
    got = _read_outputs(cluster_k1.metaserver_url, outputs)
    records = generate(0, 60000, skew=True)
    want = sorted(records[i].tobytes() for i in range(len(records)))
    got_records = [got[i:i + 100] for i in range(0, len(got), 100)]
    assert [r[:10] for r in got_records] == [r[:10] for r in want]  # keys in order
    assert sorted(got_records) == want  # and exactly the input's records


def test_a_gensort_file_put_with_fds_put_sorts_and_validates(cluster_k1: LocalCluster, tmp_path: Path) -> None:
    """A plain file of gensort records, loaded with `fds put`: full 1 MiB tracts, so records straddle tract
    boundaries, and a short last tract. `run --input` sorts it as it is and validates the output."""
    path = tmp_path / "input.dat"
    path.write_bytes(generate(1234, 33_333).tobytes())  # 3,333,300 bytes: 4 tracts, the last 187,572 bytes
    env = {**os.environ, "FDS_METASERVER": cluster_k1.metaserver_url}
    put = subprocess.run([sys.executable, "-m", "fds", "put", str(path)], capture_output=True, text=True,
                         timeout=60, env=env)
    assert put.returncode == 0, put.stderr
    guid = put.stdout.strip()
    run = _ms("run", "--input", guid, "--keep", "--unit-tracts", "1", "--quiet",
              "--metaserver", cluster_k1.metaserver_url)  # sort, then validate against the input's checksum
    assert run.returncode == 0, run.stderr
    report = _last_json(run)
    assert report["valid"] is True and report["records"] == 33_333
    got = _read_outputs(cluster_k1.metaserver_url, report["output_blobs"])
    data = path.read_bytes()
    assert got == b"".join(sorted(data[i:i + 100] for i in range(0, len(data), 100)))


def test_a_budget_far_below_the_data_spills_and_validates(cluster_k1: LocalCluster) -> None:
    """30 MB of records, 4 MB of memory for records per worker: buckets spill to fds and are sorted in a
    second pass; no worker ever holds more records than it may."""
    result = _ms("run", "--size", "30MB", "--record-memory", "4MB", "--quiet",
                 "--metaserver", cluster_k1.metaserver_url)
    assert result.returncode == 0, result.stderr
    report = _last_json(result)
    assert report["valid"] is True and report["records"] == 300_000
    assert report["spilled_bytes"] >= 30_000_000 - 2 * 4_000_000, report["spilled_bytes"]
    assert len(report["output_blobs"]) >= 8
    for peak, capacity in zip(report["peak_records_per_worker_bytes"], report["records_capacity_per_worker_bytes"],
                              strict=True):
        assert 0 < peak <= capacity == 4_000_000


def test_a_sort_that_cannot_fit_even_by_spilling_is_refused_up_front(cluster_k1: LocalCluster,
                                                                     input_12mb: tuple[str, int],
                                                                     tmp_path: Path) -> None:
    guid = input_12mb[0]
    result = _ms("sort", guid, "--memory", "50MB", "--quiet", "--metaserver", cluster_k1.metaserver_url,
                 cwd=tmp_path)
    assert result.returncode == 1
    assert "a worker needs at least" in result.stderr and "give it more (--memory)" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_sort_refuses_bad_input(cluster_k1: LocalCluster) -> None:
    ms = cluster_k1.metaserver_url
    unknown = _ms("sort", "0" * 32, "--metaserver", ms, "--quiet")
    assert unknown.returncode == 1 and "no blob" in unknown.stderr

    async def odd_blob() -> str:
        async with Client(ms) as fds:
            blob = await fds.create_blob()
            await blob.extend(1)
            await blob.write_tract(0, b"x" * 150)  # one and a half records
            return blob.guid

    odd = _ms("sort", asyncio.run(odd_blob()), "--metaserver", ms, "--quiet")
    assert odd.returncode == 1 and "not a whole number of 100-byte records" in odd.stderr
    zero = _ms("sort", "0" * 32, "--workers", "0", "--metaserver", ms)
    assert zero.returncode == 2 and "at least 1" in zero.stderr
    assert _ms("validate", "--metaserver", ms).returncode == 2


def test_cli_refuses_malformed_arguments_without_a_traceback(cluster_k1: LocalCluster, tmp_path: Path) -> None:
    ms = cluster_k1.metaserver_url
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "odd.json").write_text('{"output_blobs": 7}')
    cases = [
        (["sort", "0" * 32, "--slow-worker", "abc"], 2, "is not I[:FACTOR]"),
        (["sort", "0" * 32, "--slow-worker", "0:-1"], 2, "FACTOR positive"),
        (["sort", "0" * 32, "--memory", "lots"], 2, "use a number"),
        (["validate", "--blobs", "0" * 32, "--checksum", "zz"], 2, "not a hexadecimal checksum"),
        (["validate", "--manifest", str(tmp_path / "missing.json")], 1, "cannot read the manifest"),
        (["validate", "--manifest", str(tmp_path / "bad.json")], 1, "is not a manifest"),
        (["validate", "--manifest", str(tmp_path / "odd.json")], 1, "is not a manifest"),
        (["run", "--size", "1MB", "--input", "0" * 32], 2, "leave out --size"),
        (["run", "--local", "--dir", str(tmp_path / "c"), "--tractservers", "0", "--records", "100"], 1,
         "--tractservers must be at least 1"),  # fds.local's ValueError, said plainly
    ]
    for args, code, says in cases:
        proc = _ms(*args, "--metaserver", ms)
        assert proc.returncode == code and says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


@pytest.mark.slow
def test_a_slow_sorter_hands_its_buckets_to_the_fast_one(cluster_k1: LocalCluster, input_12mb: tuple[str, int],
                                                        tmp_path: Path) -> None:
    """Worker 0 reads and sorts 5 times slower: with buckets on demand, worker 1 sorts most of them; with
    fixed buckets each sorts its own 4."""
    guid, checksum = input_12mb
    on_demand = _ms("sort", guid, "--slow-worker", "0:5", "--quiet", "--metaserver", cluster_k1.metaserver_url,
                    cwd=tmp_path)
    fixed = _ms("sort", guid, "--slow-worker", "0:5", "--fixed-buckets", "--quiet",
                "--metaserver", cluster_k1.metaserver_url, cwd=tmp_path)
    for result in (on_demand, fixed):
        assert result.returncode == 0, result.stderr
        report = _last_json(result)
        summary = asyncio.run(validate_blobs(cluster_k1.metaserver_url, report["output_blobs"]))
        assert summary.valid and summary.records == 120_000 and summary.checksum == checksum
    slow, fast = _last_json(on_demand)["buckets_per_worker"]
    assert fast > slow and slow + fast == 8, (slow, fast)
    assert _last_json(fixed)["buckets_per_worker"] == [4, 4]


def _head_status(url: str) -> dict[str, Any]:
    resp = httpx.get(f"{url}/v1/status", headers=AUTH, timeout=10)
    resp.raise_for_status()
    status: dict[str, Any] = resp.json()
    return status


_PHASES: dict[str, tuple[Callable[[dict[str, Any]], bool], tuple[float, float]]] = {
    # When worker 0 (the victim) is in each phase, by the head's status, and how long after that to kill it.
    "reading": (lambda s: 0 in s["reading"].values(), (0.0, 0.15)),
    "shuffling": (lambda s: 0 in s["reading"].values(), (0.15, 0.3)),
    "sorting": (lambda s: 0 in s["sorting"].values(), (0.0, 0.02)),
    "writing": (lambda s: 0 in s["sorting"].values(), (0.1, 0.2)),
}


@pytest.mark.slow
@pytest.mark.parametrize("phase", list(_PHASES))
def test_a_worker_sigkilled_mid_sort_still_yields_valid_output(cluster_k1: LocalCluster, input_12mb: tuple[str, int],
                                                              phase: str, tmp_path: Path) -> None:
    """SIGKILL one of three workers at a seeded random instant of a phase: the head notices its process
    is gone, hands its units and buckets to the others (reading its lost buckets' records again), and the
    output is complete and in order. Worker 0 works 10 times slower, so each of its tasks lasts long enough
    to aim at: reading (early in a unit: its tract read and dealt), shuffling (late in a unit: its bins
    sent), sorting (a bucket, just as its order is computed), writing (later in the same task, as its rows
    are gathered and written)."""
    seed = int(os.environ.get("FDS_TEST_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (FDS_TEST_SEED={seed} reruns this)")
    rng = random.Random(seed)
    guid, checksum = input_12mb
    port = _free_port()
    head = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "apps.minutesort.cli", "sort", guid,
                             "--workers", "3", "--slow-worker", "0:10", "--unit-tracts", "1", "--port", str(port),
                             "--quiet", "--manifest", str(tmp_path / "m.json"),
                             "--metaserver", cluster_k1.metaserver_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, head.communicate()
            assert time.monotonic() < deadline, f"never saw worker 0 {phase}"
            try:
                status = _head_status(url)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            if status["workers"] and _PHASES[phase][0](status):
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(*_PHASES[phase][1]))
        victim = status["workers"][0]["pid"]
        # Was it still busy? On a loaded machine its last task may end during the sleep; killed idle, with no
        # work left to hand it, the head need never notice, and only the output can be checked.
        now = _head_status(url)
        busy = 0 in now["reading"].values() or 0 in now["sorting"].values()
        os.kill(victim, signal.SIGKILL)
        try:
            out, err = head.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            head.send_signal(signal.SIGABRT)  # faulthandler dumps every thread's stack
            out, err = head.communicate(timeout=10)
            raise AssertionError(f"the head hung after a worker died:\n{err[-5000:]}") from None
        assert head.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        summary = asyncio.run(validate_blobs(cluster_k1.metaserver_url, report["output_blobs"]))
        assert summary.valid and summary.records == 120_000 and summary.checksum == checksum, (summary, seed)
        assert len(report["deaths"]) <= 1, report["deaths"]
        if busy or report["deaths"]:
            assert len(report["deaths"]) == 1 and f"pid {victim}" in report["deaths"][0], (report["deaths"], seed)
    finally:
        if head.poll() is None:
            head.kill()
        head.communicate()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
