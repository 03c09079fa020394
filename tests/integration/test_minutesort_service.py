"""Standing MinuteSort workers (`fds-minutesort worker --serve`) as real processes, with a real cluster.

Two worker services serve sort after sort (`fds-minutesort sort --worker-urls`, a real head
process), each sort in a fresh child process; a busy service refuses another sort with 409; a
service killed mid-sort fails that sort with a message, and so does a sort process killed under a
service that lives on. A service with a warm arena (`--arena`) lends it to sort after sort, and a
sort larger than the arena takes fresh memory for the rest; bad `--arena` values are refused. Inputs
are generated and outputs validated in this process, to save the start-up of a CLI process for each.
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

from apps.minutesort import Sorter
from apps.minutesort._blobio import generate_blob
from apps.minutesort._check import validate_blobs
from fds.client import Client
from fds.local import LocalCluster
from tests.support.credentials import AUTH
from tests.support.processes import stop_process

MS = [sys.executable, "-m", "apps.minutesort.cli"]


def _ms(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MS, *args], capture_output=True, text=True, timeout=timeout)


def _last_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.stdout.strip(), result.stderr
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


class Service:
    """One `fds-minutesort worker --serve` process, on free ports."""

    def __init__(self, directory: Path, *flags: str) -> None:
        self.ready = directory / "ready"
        self.log = directory / "service.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([*MS, "worker", "--serve", "--port", "0", "--data-port", "0",
                                          "--ready-file", str(self.ready), *flags],
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
        stop_process(self.proc, 20)


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
        assert len(outputs) == 8 and json.loads(manifest.read_text())["output_blobs"] == outputs
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


def _slow_sort(cluster: LocalCluster, guid: str, urls: str, port: int = 0) -> subprocess.Popen[str]:
    """A sort that takes a while: worker 0 reads its fixed share 300 times slower, a tract at a time (a
    second or more per tract even on a quiet machine, so it is surely still reading when the tests kill it)."""
    return subprocess.Popen([sys.executable, "-X", "faulthandler", *MS[1:], "sort", guid, "--worker-urls", urls,
                             "--static", "--unit-tracts", "1", "--slow-worker", "0:300", "--quiet", "--port", str(port),
                             "--manifest", os.devnull,
                             "--metaserver", cluster.metaserver_url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _slow_worker_pid(head: str, timeout: float = 60) -> int:
    """The pid of the sort's worker 0 (the slow one), once every worker has registered with the head."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = httpx.get(f"{head}/v1/status", headers=AUTH, timeout=5).json()
            if status["epoch"] == 0 and status["units"]:
                return int(status["workers"][0]["pid"])
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the workers did not register"
        time.sleep(0.05)


def _outcome(head: subprocess.Popen[str], timeout: float = 30) -> tuple[str, str]:
    """The head's stdout and stderr once it has exited (it must not hang)."""
    try:
        out, err = head.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        head.send_signal(signal.SIGABRT)  # faulthandler dumps every thread's stack
        _, err = head.communicate(timeout=10)
        raise AssertionError(f"the head hung:\n{err[-5000:]}") from None
    return out, err


@pytest.mark.slow
def test_busy_refusals_and_killed_workers(make_cluster: Callable[..., LocalCluster], services: list[Service]) -> None:
    """While two services sort, each refuses another sort with 409 (a direct invitation, and a second
    `sort` through the CLI). SIGKILL of one service mid-sort: its sort process stops too, the head gives
    its work to the other service's worker, and the sort finishes, valid. Then SIGKILL of the sort process
    of a sort on one service alone (an out-of-memory kill, say) leaves no worker: that sort fails, with
    the service's message, and the service lives on."""
    cluster = make_cluster()
    guid, checksum = asyncio.run(_gen_in_process(cluster.metaserver_url, 200_000, skew=False))
    urls = ",".join(s.url for s in services)
    port = _free_port()
    head = _slow_sort(cluster, guid, urls, port)
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

        # SIGKILL the standing worker running the slow worker 0, mid-sort: the sort goes on without it.
        slow = _slow_worker_pid(f"http://127.0.0.1:{port}")
        victim = next(i for i, s in enumerate(services) if s.status()["current"]["pid"] == slow)
        services.insert(0, services.pop(victim))  # services[0] is the victim from here on
        victim_child = slow
        services[0].proc.send_signal(signal.SIGKILL)
        services[0].proc.wait()
        out, err = _outcome(head, timeout=120)
        assert head.returncode == 0, err
        report = json.loads(out.strip().splitlines()[-1])
        assert len(report["deaths"]) == 1 and f"its service (pid {services[0].proc.pid}) died mid-sort" \
            in report["deaths"][0], report["deaths"]
        summary = asyncio.run(validate_blobs(cluster.metaserver_url, report["output_blobs"]))
        assert summary.valid and summary.records == 200_000 and summary.checksum == checksum, summary
        assert _gone(victim_child), "the killed service's sort process lives on"
        last = services[1].wait_until("idle", lambda st: st["state"] == "idle")["recent"][0]
        assert last["job"] == job and last["state"] == "done", last
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
        _, err = _outcome(head)
        assert head.returncode == 1  # no worker left (it said "every worker died" if the sort had begun)
        assert f"standing worker {survivor.url}: the sort process (pid {child}) was killed by SIGKILL" in err, err
        assert survivor.proc.poll() is None
        last = survivor.wait_until("idle", lambda st: st["state"] == "idle")["recent"][0]
        assert (last["state"], last["exit_status"]) == ("failed", -signal.SIGKILL), last
        assert last["pid"] == child
    finally:
        if head.poll() is None:
            head.kill()
        head.communicate()


def _footprint(pid: int) -> tuple[int, int, int]:
    """(resident bytes, open file descriptors, threads) of a process."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return (int(status["VmRSS"].split()[0]) * 1024, len(os.listdir(f"/proc/{pid}/fd")),
            int(status["Threads"]))


def test_a_standing_worker_serves_many_small_sorts_without_a_leak(make_cluster: Callable[..., LocalCluster],
                                                                   tmp_path: Path) -> None:
    """A long-lived program sorts a 1 MB blob 80 times through one standing worker (`Sorter`, each sort in
    the worker's own process): every output is the sorted input, and after the first 20 the worker's
    memory, open files and threads stay where they were."""
    cluster = make_cluster()
    service = Service(tmp_path, "--metaserver", cluster.metaserver_url)
    try:
        guid, checksum = asyncio.run(_gen_in_process(cluster.metaserver_url, 10_000, skew=False))

        async def sorts(count: int) -> list[str]:
            outputs = []
            async with Sorter(cluster.metaserver_url, [service.url]) as sorter, \
                    Client(cluster.metaserver_url) as fds:
                for _ in range(count):
                    result = await sorter.sort(guid)
                    assert result.mode == "solo" and result.records == 10_000
                    outputs.append(result.output_blobs[0])
                    if len(outputs) > 1:
                        await fds.delete_blob(outputs[-2])
            return outputs

        asyncio.run(sorts(20))
        before = _footprint(service.proc.pid)
        last = asyncio.run(sorts(60))[-1]
        after = _footprint(service.proc.pid)
        summary = asyncio.run(validate_blobs(cluster.metaserver_url, [last]))
        assert summary.valid and summary.records == 10_000 and summary.checksum == checksum
        assert after[0] - before[0] < 16 << 20, (before, after)  # memory: well under one sort's worth per sort
        assert after[1] <= before[1] + 2, (before, after)  # file descriptors (connections come and go)
        assert after[2] <= before[2], (before, after)  # threads
        assert service.status()["solo_sorts"] == 80
    finally:
        service.stop()


def test_a_warm_arena_serves_sort_after_sort(make_cluster: Callable[..., LocalCluster], tmp_path: Path) -> None:
    """One standing worker with a 32 MiB arena sorts a 10 MB blob three times back to back (full sorts, a
    sort process each): every output valid, every buffer of the sort process placed in the arena, and the
    service's memory, open files and threads the same after the third as after the first. Then a 60 MB
    blob, larger than the arena: it fills the arena, takes fresh memory for the rest, and is valid."""
    cluster = make_cluster()
    ms = cluster.metaserver_url
    service = Service(tmp_path, "--arena", "32MiB")
    try:
        status = service.wait_until("the arena warm", lambda st: st["arena_warm_bytes"] == st["arena_bytes"])
        assert status["arena_bytes"] == 32 << 20, status

        async def sorts(guid: str, count: int, records: int, checksum: int) -> list[dict[str, int]]:
            used = []
            async with Sorter(ms, [service.url], solo=False) as sorter, Client(ms) as fds:
                for _ in range(count):
                    result = await sorter.sort(guid)
                    summary = await validate_blobs(ms, result.output_blobs)
                    assert summary.valid and summary.records == records and summary.checksum == checksum, summary
                    for blob in result.output_blobs:
                        await fds.delete_blob(blob)
                    used.append(result.workers[0].memory)
            return used

        small, small_sum = asyncio.run(_gen_in_process(ms, 100_000, skew=False))
        first = asyncio.run(sorts(small, 1, 100_000, small_sum))
        before = _footprint(service.proc.pid)
        used = first + asyncio.run(sorts(small, 2, 100_000, small_sum))
        after = _footprint(service.proc.pid)
        for memory in used:  # records, order and output tracts all in the arena
            assert memory["arena_bytes"] == 32 << 20 and memory["placed_fresh"] == 0, used
            assert memory["placed_in_arena"] > 10_000_000, used
        assert after[0] - before[0] < 16 << 20, (before, after)
        assert after[1] <= before[1] + 2 and after[2] <= before[2], (before, after)

        large, large_sum = asyncio.run(_gen_in_process(ms, 600_000, skew=False))
        memory = asyncio.run(sorts(large, 1, 600_000, large_sum))[0]
        assert memory["placed_in_arena"] > 16 << 20 and memory["placed_fresh"] > 20_000_000, memory
        status = service.status()
        assert status["sorts"] == 4 and [s["state"] for s in status["recent"]] == ["done"] * 4, status
    finally:
        service.stop()


@pytest.mark.parametrize(("flags", "message"), [
    (["--arena", "lots"], "arena: size 'lots': use a number with an optional unit"),
    (["--arena", "auto"], 'arena = "auto" sizes the arena from the memory budget: set memory too'),
    (["--arena", "2GB", "--memory", "1GB"], "is more than each sort's memory budget"),
    (["--arena", "900TB"], "is more than this host can lend sorts"),
])
def test_bad_arena_values_are_refused(flags: list[str], message: str, tmp_path: Path) -> None:
    result = _ms("worker", "--serve", "--port", "0", "--data-port", "0", "--ready-file", str(tmp_path / "ready"),
                 *flags, timeout=60)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert not (tmp_path / "ready").exists()
