"""Fuzz MinuteSort's servers: the head, a sort worker, and a standing worker service, all real processes.

- **Head**: ``fds-minutesort sort --remote-workers`` waiting for its workers;
  every route is fuzzed but ``/v1/abort`` and ``/v1/lost``, which end the sort
  (or a worker) on purpose.
  Afterwards the head must still run, and an abort must end it with its
  message and status 1, not a traceback.
- **Worker**: a real ``fds-minutesort worker`` process, given its job by a
  stand-in head in this process (:class:`tests.fuzz._minutesort.StandInHead`),
  which holds its request for a task, so its routes (its schema, and
  ``/v1/bins`` and ``/v1/buckets``, which are not in it) can be fuzzed at
  leisure. Afterwards the stand-in head tells it to sort bucket 0 from the
  bins of attempt 1: it must sort exactly the records of the bins it
  accepted for that bucket and attempt, and exit 0.
- **Worker service**: ``fds-minutesort worker --serve``, invited to sorts of
  heads that do not exist; it must stay up and stop cleanly.
"""

from __future__ import annotations

import signal
import subprocess
import time
import zlib
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from fds.local import LocalCluster
from tests.fuzz._fuzzing import auth_variants, fuzz_server, response_problem
from tests.fuzz._minutesort import JOB, MS, StandInHead, stop
from tests.fuzz.conftest import assert_all_alive


@pytest.mark.slow
def test_head_api(head_process: tuple[subprocess.Popen[bytes], str, Path], fuzz_cluster: LocalCluster,
                  fuzz_examples: int, fuzz_seed: int) -> None:
    proc, head, log = head_process
    good = fuzz_cluster.headers("cluster")
    findings = fuzz_server(head, good, {"index": [0, 1, 2, -1], "worker": [0, 1, 2, -1],
                                        "url": ["http://127.0.0.1:9"]},
                           auth_variants(good, fuzz_cluster.headers("read")), examples=fuzz_examples,
                           run_seed=fuzz_seed, skip={"POST /v1/abort", "POST /v1/lost"})
    assert not findings.bugs, findings.report()
    assert proc.poll() is None, f"the head exited during the fuzz:\n{log.read_text()[-3000:]}"
    assert httpx.post(f"{head}/v1/abort", json={"reason": "fuzzing is over"}, headers=good).status_code == 200
    assert proc.wait(30) == 1
    text = log.read_text()
    assert "sort failed: fuzzing is over" in text and "Traceback" not in text, text[-3000:]


_BIN_PATHS = st.one_of(st.just("0"),
                       st.sampled_from(["1", "-1", "00", "\u0660", "0/extra", "%30", "..", "", "x" * 300]),
                       st.text(st.characters(codec="ascii", categories=("L", "N", "P")), max_size=20))
_JOBS = st.one_of(st.just(JOB), st.sampled_from(["", "ff" * 12, JOB.upper(), JOB + "&job=x", '"', "\\"]),
                  st.text(max_size=20))


_ATTEMPTS = st.one_of(st.just("1"), st.sampled_from(["1", "2", "0", "-3", "x", "", "1e3", "9" * 30]))


def _bucket_of(path: str) -> int | None:
    """The bucket a bin's URL path names, read as the worker reads it (None: not a bucket)."""
    try:
        return int(unquote(path).rstrip("/").rsplit("/", 1)[-1])
    except ValueError:
        return None


@pytest.mark.slow
def test_worker_api(waiting_worker: tuple[StandInHead, subprocess.Popen[bytes], Path], fuzz_cluster: LocalCluster,
                    fuzz_examples: int, fuzz_seed: int) -> None:
    head, proc, log = waiting_worker
    worker = head.worker_url
    good = fuzz_cluster.headers("cluster")
    findings = fuzz_server(worker, good, {"job": [JOB, ""]}, auth_variants(good, fuzz_cluster.headers("read")),
                           examples=fuzz_examples, run_seed=fuzz_seed)
    assert not findings.bugs, findings.report()
    bugs: list[str] = []
    accepted = 0

    @settings(max_examples=fuzz_examples * 5, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @seed(zlib.crc32(b"bins") ^ fuzz_seed)
    @given(bucket=_BIN_PATHS, job=_JOBS, attempt=_ATTEMPTS,
           method=st.sampled_from(["PUT", "PUT", "PUT", "POST", "GET"]), records=st.integers(0, 30),
           extra=st.integers(0, 99), use_auth=st.integers(0, 9))
    def bins(bucket: str, job: str, attempt: str, method: str, records: int, extra: int, use_auth: int) -> None:
        nonlocal accepted
        body = bytes(range(100)) * records + b"x" * (extra if extra < 50 else 0)
        headers = good if use_auth else {}
        try:
            resp = httpx.request(method, f"{worker}/v1/bins/{bucket}", params={"sender": 1, "job": job,
                                                                                "attempt": attempt},
                                 content=body, headers=headers, timeout=30)
        except httpx.InvalidURL:
            return
        problem = response_problem(method, resp.status_code, resp.headers.get("content-type", ""), resp.content)
        if problem is not None:
            bugs.append(f"{method} /v1/bins/{bucket!r} job={job!r} attempt={attempt!r} {len(body)} bytes: {problem}")
        elif resp.status_code == 200 and attempt == "1" and _bucket_of(resp.request.url.path) == 0:
            accepted += len(body) // 100

    @settings(max_examples=fuzz_examples, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @seed(zlib.crc32(b"buckets") ^ fuzz_seed)
    @given(bucket=_BIN_PATHS, job=_JOBS, accept=st.text(max_size=20), use_auth=st.integers(0, 9))
    def hand_overs(bucket: str, job: str, accept: str, use_auth: int) -> None:
        if job == JOB and _bucket_of(f"/v1/buckets/{bucket}") == 0:
            job = "ff" * 12  # a real hand-over of bucket 0 would take it away before the sort below
        try:
            resp = httpx.get(f"{worker}/v1/buckets/{bucket}", params={"job": job, "accept": accept},
                             headers=good if use_auth else {}, timeout=30)
        except httpx.InvalidURL:
            return
        problem = response_problem("GET", resp.status_code, resp.headers.get("content-type", ""), resp.content)
        if problem is not None:
            bugs.append(f"GET /v1/buckets/{bucket!r} job={job!r} accept={accept!r}: {problem}")

    bins()
    hand_overs()
    assert not bugs, "\n".join(bugs[:20])
    assert proc.poll() is None, f"the worker exited during the fuzz:\n{log.read_text()[-3000:]}"

    # The worker sorts exactly what it accepted for bucket 0 from attempt 1, writes it, reports, and exits 0.
    head.sort(accept=[1], expected=accepted)
    assert proc.wait(120) == 0, log.read_text()[-3000:]
    assert head.sorted is not None and head.sorted["failed"] is None, (head.sorted, log.read_text()[-3000:])
    assert head.sorted["records"] == accepted and not head.aborts, (head.sorted, head.aborts)
    assert head.finished is not None
    assert_all_alive(fuzz_cluster)


@pytest.mark.slow
def test_worker_service_api(fuzz_cluster: LocalCluster, tmp_path: Path, fuzz_examples: int, fuzz_seed: int) -> None:
    ready = tmp_path / "ready"
    log = tmp_path / "service.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*MS, "worker", "--serve", "--port", "0", "--data-port", "0", "--ready-file",
                                 str(ready)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the worker service did not start"
            time.sleep(0.05)
        url = ready.read_text().strip()
        good = fuzz_cluster.headers("cluster")
        findings = fuzz_server(url, good, {"head": ["http://127.0.0.1:9"], "job": [JOB, "ab" * 4]},
                               auth_variants(good, fuzz_cluster.headers("read")), examples=fuzz_examples,
                               run_seed=fuzz_seed)
        assert not findings.bugs, findings.report()
        assert proc.poll() is None, log.read_text()[-3000:]
        assert httpx.get(f"{url}/v1/status", headers=good, timeout=10).status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        stop(proc)

