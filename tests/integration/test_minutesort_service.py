"""Standing MinuteSort workers (`fds-minutesort worker --serve`) as real processes, with a real cluster.

Two worker services serve sort after sort (`fds-minutesort sort --worker-urls`, a real head
process), each sort in a fresh child process; a busy service refuses another sort with 409; a
service killed mid-sort fails that sort with a message, and so does a sort process killed under a
service that lives on. Inputs are generated and outputs validated in this process, to save the
start-up of a CLI process for each.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.minutesort._blobio import generate_blob
from apps.minutesort._check import validate_blobs
from fds.client import Client
from fds.local import LocalCluster
from tests.support.credentials import AUTH

MS = [sys.executable, "-m", "apps.minutesort.cli"]


def _ms(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MS, *args], capture_output=True, text=True, timeout=timeout)


def _last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout.strip(), result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


class Service:
    """One `fds-minutesort worker --serve` process, on free ports."""

    def __init__(self, directory: Path) -> None:
        self.ready = directory / "ready"
        self.log = directory / "service.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*MS, "worker", "--serve", "--port", "0", "--data-port", "0",
                                          "--ready-file", str(self.ready)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not self.ready.exists():
            assert self.proc.poll() is None, f"worker service exited:\n{self.log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "worker service did not start"
            time.sleep(0.05)
        self.url = self.ready.read_text()

    def status(self) -> dict[str, Any]:
        resp = httpx.get(f"{self.url}/v1/status", headers=AUTH, timeout=10)
        assert resp.status_code == 200, resp.text
        status: dict[str, Any] = resp.json()
        return status

    def wait_until(self, what: str, ready: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if ready(status):
                return status
            assert time.monotonic() < deadline, f"{self.url}: timed out waiting for {what}: {status}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    """Two standing workers; stopped at teardown, along with any sort process they left."""
    started: list[Service] = []
    children: set[int] = set()
    try:
        for i in range(2):
            (tmp_path / f"w{i}").mkdir()
            started.append(Service(tmp_path / f"w{i}"))
        yield started
    finally:
        for service in started:
            if service.proc.poll() is None:
                status = service.status()
                children.update(s["pid"] for s in [status["current"], *status["recent"]] if s)
            service.stop()
        for pid in children:  # a service stops its sort process; this catches one that did not
            _kill_if_alive(pid)


def _kill_if_alive(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _gone(pid: int, timeout: float = 15) -> bool:
    """Whether process ``pid`` has exited (or is a zombie nobody reaped) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_two_standing_workers_sort_twice_back_to_back(make_cluster: Callable[..., LocalCluster],
                                                      services: list[Service], tmp_path: Path) -> None:
    """Two sorts through the same two services, one right after the other: both outputs are valid,
    each sort ran in its own process on each service, and the services are idle again after each."""
    cluster = make_cluster()
    ms = cluster.metaserver_url
    urls = ",".join(s.url for s in services)
    pids: list[set[int]] = [set(), set()]
    for number, (records, skew) in enumerate([(300_000, False), (200_000, True)]):
        guid, checksum = asyncio.run(_gen_in_process(ms, records, skew))
        manifest = tmp_path / f"m{number}.json"
        result = _ms("sort", guid, "--worker-urls", urls, "--quiet", "--manifest", str(manifest),
                     "--metaserver", ms, *(["--daytona"] if skew else []))
        assert result.returncode == 0, result.stderr
        outputs = _last_json(result)["output_blobs"]
        assert len(outputs) == 2 and json.loads(manifest.read_text())["output_blobs"] == outputs
        summary = asyncio.run(validate_blobs(ms, outputs))  # valsort over the outputs in manifest order
        assert summary.valid and summary.records == records and summary.checksum == checksum, summary
        for i, service in enumerate(services):
            status = service.status()  # the head waited for the sort processes to end
            assert status["state"] == "idle" and status["current"] is None, status
            assert status["sorts"] == number + 1
            last = status["recent"][0]
            assert last["state"] == "done" and last["exit_status"] == 0, last
            pids[i].add(last["pid"])
    assert all(len(p) == 2 for p in pids), pids  # a fresh process per sort
    assert all(s.proc.poll() is None for s in services)


async def _gen_in_process(metaserver: str, records: int, skew: bool) -> tuple[str, int]:
    """A record blob as `fds-minutesort gen` writes it, and valsort's checksum of its records."""
    checksums: list[int] = []
    async with Client(metaserver) as fds:
        blob = await generate_blob(fds, records, skew=skew, checksums=checksums)
    return blob.guid, sum(checksums) & ((1 << 128) - 1)


def _slow_sort(cluster: LocalCluster, guid: str, urls: str) -> subprocess.Popen[str]:
    """A sort that takes a while: worker 0 reads its fixed share 100 times slower, a tract at a time."""
    return subprocess.Popen([sys.executable, "-X", "faulthandler", *MS[1:], "sort", guid, "--worker-urls", urls,
                             "--static", "--unit-tracts", "1", "--slow-worker", "0:100", "--quiet",
                             "--metaserver", cluster.metaserver_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _outcome(head: subprocess.Popen[str], timeout: float = 30) -> str:
    """The head's stderr once it has exited (it must not hang)."""
    try:
        _, err = head.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        head.send_signal(signal.SIGABRT)  # faulthandler dumps every thread's stack
        _, err = head.communicate(timeout=10)
        raise AssertionError(f"the head hung:\n{err[-5000:]}") from None
    return err


@pytest.mark.slow
def test_busy_refusals_and_killed_workers(make_cluster: Callable[..., LocalCluster], services: list[Service]) -> None:
    """While two services sort, each refuses another sort with 409 (a direct invitation, and a second
    `sort` through the CLI). SIGKILL of one service mid-sort fails the sort with a message naming it,
    and its sort process does not outlive it. Then SIGKILL of the other's sort process (an
    out-of-memory kill, say) fails that sort too, with the service's message, and the service lives on."""
    cluster = make_cluster()
    guid, _ = asyncio.run(_gen_in_process(cluster.metaserver_url, 200_000, skew=False))
    urls = ",".join(s.url for s in services)
    head = _slow_sort(cluster, guid, urls)
    try:
        busy = [s.wait_until("the sort", lambda st: st["state"] == "busy") for s in services]
        job = busy[0]["current"]["job"]
        assert busy[1]["current"]["job"] == job
        time.sleep(1.0)  # the workers registered and are reading
        assert head.poll() is None, head.communicate()

        # Busy: a direct invitation to another sort gets 409, saying which sort holds the worker ...
        resp = httpx.post(f"{services[1].url}/v1/sorts", json={"head": "http://127.0.0.1:9", "job": "ab" * 12},
                          headers=AUTH, timeout=10)
        assert resp.status_code == 409, resp.text
        assert resp.json()["error"]["code"] == "busy" and job in resp.json()["error"]["message"]
        # ... and a second sort through the CLI fails at once, naming the busy worker.
        second = _ms("sort", guid, "--worker-urls", urls, "--quiet", "--metaserver", cluster.metaserver_url)
        assert second.returncode == 1
        assert "refused the sort (409)" in second.stderr and f"busy with sort {job}" in second.stderr, second.stderr
        assert services[1].status()["current"]["job"] == job  # the refused sort did not disturb the running one

        # SIGKILL a standing worker mid-sort: the sort fails with a message, it does not hang.
        victim_child = services[0].status()["current"]["pid"]
        services[0].proc.send_signal(signal.SIGKILL)
        services[0].proc.wait()
        err = _outcome(head)
        assert head.returncode == 1
        assert "sort failed" in err, err
        assert f"standing worker {services[0].url}): its service (pid {services[0].proc.pid}) died mid-sort" in err, err
        assert _gone(victim_child), "the killed service's sort process lives on"
        # The other service dropped the failed sort and is free for the next.
        last = services[1].wait_until("idle", lambda st: st["state"] == "idle")["recent"][0]
        assert last["job"] == job and last["state"] in ("cancelled", "failed"), last
    finally:
        if head.poll() is None:
            head.kill()
        head.communicate()

    survivor = services[1]
    head = _slow_sort(cluster, guid, survivor.url)  # one worker
    try:
        child = survivor.wait_until("the sort", lambda st: st["state"] == "busy")["current"]["pid"]
        time.sleep(0.5)
        os.kill(child, signal.SIGKILL)
        err = _outcome(head)
        assert head.returncode == 1
        assert f"standing worker {survivor.url}: the sort process (pid {child}) was killed by SIGKILL" in err, err
        assert survivor.proc.poll() is None
        last = survivor.wait_until("idle", lambda st: st["state"] == "idle")["recent"][0]
        assert (last["state"], last["exit_status"]) == ("failed", -signal.SIGKILL), last
        assert last["pid"] == child
    finally:
        if head.poll() is None:
            head.kill()
        head.communicate()
