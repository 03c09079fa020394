"""`fds-minutesort sort | validate | run` through a real cluster with real worker processes."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from apps.minutesort._gensort import generate
from fds.client import Client
from fds.local import LocalCluster
from tests.support.credentials import AUTH


def _ms(*args: str, cwd: Path | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "apps.minutesort.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def _last_json(result: subprocess.CompletedProcess[str]) -> dict:  # type: ignore[type-arg]
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
@pytest.mark.parametrize("flags", [[], ["--daytona"], ["--daytona", "--skew"]], ids=["indy", "daytona", "skew"])
def test_run_sorts_50mb_and_validates(cluster_k1: LocalCluster, flags: list[str], tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    result = _ms("run", "--size", "50MB", "--workers", "2", "--quiet", "--keep", "--manifest", str(manifest),
                 "--metaserver", cluster_k1.metaserver_url, *flags)
    assert result.returncode == 0, result.stderr
    report = _last_json(result)
    for key in ("records", "bytes", "sort_seconds", "checksum", "valid", "input_blob", "output_blobs"):
        assert key in report
    assert report["valid"] is True and report["records"] == 500_000 and report["bytes"] == 50_000_000
    assert report["checksum"] == report["input_checksum"]
    assert len(report["output_blobs"]) == 2 and sum(report["bucket_records"]) == 500_000
    if "--daytona" in flags:  # sampled boundaries keep the buckets balanced, skewed keys or not
        assert min(report["bucket_records"]) > 0.4 * 500_000, report["bucket_records"]
    # The manifest lists the output in key order; validate checks it independently, against the input.
    assert json.loads(manifest.read_text())["output_blobs"] == report["output_blobs"]
    check = _ms("validate", "--manifest", str(manifest), "--input", report["input_blob"],
                "--metaserver", cluster_k1.metaserver_url)
    assert check.returncode == 0, check.stderr
    assert _last_json(check)["valid"] is True and _last_json(check)["records"] == 500_000


def test_sort_output_is_exactly_the_sorted_input(cluster_k1: LocalCluster, tmp_path: Path) -> None:
    """Concatenated in manifest order, the output blobs are the input's records sorted by key."""
    gen = _ms("gen", "--records", "60000", "--skew", "--metaserver", cluster_k1.metaserver_url)
    guid = _last_json(gen)["input_blob"]
    manifest = tmp_path / "m.json"
    result = _ms("sort", guid, "--workers", "3", "--daytona", "--quiet", "--manifest", str(manifest),
                 "--metaserver", cluster_k1.metaserver_url)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(manifest.read_text())["output_blobs"]
    assert len(outputs) == 3

    async def read_all() -> bytes:
        async with Client(cluster_k1.metaserver_url) as fds:
            chunks = []
            for g in outputs:
                blob = await fds.open_blob(g)
                chunks += [bytes(d) async for _, d in blob.read_tracts(range(await blob.size()))]
            return b"".join(chunks)

    got = asyncio.run(read_all())
    records = generate(0, 60000, skew=True)
    want = sorted(records[i].tobytes() for i in range(len(records)))
    got_records = [got[i:i + 100] for i in range(0, len(got), 100)]
    assert [r[:10] for r in got_records] == [r[:10] for r in want]  # keys in order
    assert sorted(got_records) == want  # and exactly the input's records


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
        (["validate", "--blobs", "0" * 32, "--checksum", "zz"], 2, "not a hexadecimal checksum"),
        (["validate", "--manifest", str(tmp_path / "missing.json")], 1, "cannot read the manifest"),
        (["validate", "--manifest", str(tmp_path / "bad.json")], 1, "is not a manifest"),
        (["validate", "--manifest", str(tmp_path / "odd.json")], 1, "is not a manifest"),
        (["run", "--local", "--dir", str(tmp_path / "c"), "--tractservers", "0", "--records", "100"], 1,
         "--tractservers must be at least 1"),  # fds.local's ValueError, said plainly
    ]
    for args, code, says in cases:
        proc = _ms(*args, "--metaserver", ms)
        assert proc.returncode == code and says in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_worker_that_dies_fails_the_run_clearly(cluster_k1: LocalCluster) -> None:
    """SIGKILL one of two remote workers mid-run: the sort exits non-zero with a message, it does not hang."""
    gen = _ms("gen", "--size", "30MB", "--metaserver", cluster_k1.metaserver_url)
    guid = _last_json(gen)["input_blob"]
    port = _free_port()
    head = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "apps.minutesort.cli", "sort", guid,
                             "--workers", "2",
                             "--remote-workers", "--port", str(port), "--silence-timeout", "4", "--quiet",
                             "--unit-tracts", "1", "--metaserver", cluster_k1.metaserver_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    workers = [subprocess.Popen([sys.executable, "-m", "apps.minutesort.cli", "worker", "--head", url,
                                 "--throttle", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # both registered: the job is published
            try:
                if httpx.get(f"{url}/v1/job", timeout=2, headers=AUTH).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("the workers did not register with the head")
        time.sleep(1.0)  # and reading (slowly)
        assert head.poll() is None, head.communicate()
        workers[0].send_signal(signal.SIGKILL)
        try:
            out, err = head.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            head.send_signal(signal.SIGABRT)  # faulthandler dumps every thread's stack
            out, err = head.communicate(timeout=10)
            raise AssertionError(f"the head hung after a worker died:\n{err[-5000:]}") from None
        assert head.returncode == 1
        assert "sort failed" in err and "worker" in err, err
    finally:
        for proc in [head, *workers]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
