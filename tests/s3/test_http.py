"""The S3 port's HTTP/1.1 on raw sockets, as clients use it: 100-continue both ways, pipelining, chunked request
bodies, a client that leaves mid-body; and ``fds s3 --workers``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fds.local import LocalCluster
from tests.s3._targets import REGION, S3Target, new_bucket_name
from tests.support.processes import stop_process

pytestmark = pytest.mark.integration


def _head(target: S3Target, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
          *, sign: bool = True) -> bytes:
    """A request head, signed by botocore's SigV4 (payload hash in the signature)."""
    all_headers = {"x-amz-content-sha256": hashlib.sha256(body).hexdigest(), **(headers or {})}
    if sign:
        request = AWSRequest(method=method, url=target.endpoint + path, data=body, headers=all_headers)
        S3SigV4Auth(Credentials(target.access_key, target.secret_key), "s3", REGION).add_auth(request)
        all_headers = dict(request.headers.items())
    if "transfer-encoding" not in {k.lower() for k in all_headers}:
        all_headers.setdefault("content-length", str(len(body)))
    lines = [f"{method} {path} HTTP/1.1", f"host: {urlsplit(target.endpoint).netloc}"]
    lines += [f"{k}: {v}" for k, v in all_headers.items() if k.lower() != "host"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _connect(target: S3Target) -> socket.socket:
    parts = urlsplit(target.endpoint)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=20)
    return sock


class _Reader:
    """Responses read off one socket, one after another."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _more(self) -> bool:
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._more(), f"connection closed before a response head: {self.buf[:200]!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            assert self._more(), "connection closed mid-body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, headers, body


def _code(body: bytes) -> str:
    return ElementTree.fromstring(body).findtext("Code") or ""


@pytest.fixture(scope="module")
def raw_bucket(fds_target: S3Target) -> str:
    name = new_bucket_name("http")
    fds_target.client().create_bucket(Bucket=name)
    return name


def test_expect_continue_then_keep_alive(fds_target: S3Target, raw_bucket: str) -> None:
    body = os.urandom(3 << 20)
    with _connect(fds_target) as sock:
        reader = _Reader(sock)
        sock.sendall(_head(fds_target, "PUT", f"/{raw_bucket}/expect", body, {"expect": "100-continue"}))
        assert reader.response()[0] == 100  # asked for the body once the request passed its checks
        sock.sendall(body)
        status, headers, _ = reader.response()
        assert status == 200 and headers["etag"] == f'"{hashlib.md5(body).hexdigest()}"'
        sock.sendall(_head(fds_target, "GET", f"/{raw_bucket}/expect"))  # the same connection goes on
        status, _, got = reader.response()
        assert status == 200 and got == body


def test_refused_expect_continue(fds_target: S3Target, raw_bucket: str) -> None:
    body = b"x" * 5000
    with _connect(fds_target) as sock:
        reader = _Reader(sock)
        sock.sendall(_head(fds_target, "PUT", f"/{raw_bucket}/unsigned", body, {"expect": "100-continue"},
                           sign=False))
        status, headers, answer = reader.response()
        if status == 100:  # the server reads a small refused body to keep the connection (uvicorn asks for it)
            sock.sendall(body)
            status, headers, answer = reader.response()
        assert status == 403 and _code(answer) == "AccessDenied"
        if headers.get("connection") != "close":  # kept open: the next request is answered
            sock.sendall(_head(fds_target, "GET", f"/{raw_bucket}/unsigned"))
            assert reader.response()[0] == 404
    assert "Contents" not in fds_target.client().list_objects_v2(Bucket=raw_bucket, Prefix="unsigned")


def test_pipelined_requests_answer_in_order(fds_target: S3Target, raw_bucket: str) -> None:
    s3 = fds_target.client()
    for key in ("p1", "p2"):
        s3.put_object(Bucket=raw_bucket, Key=key, Body=key.encode() * 1000)
    with _connect(fds_target) as sock:
        reader = _Reader(sock)
        sock.sendall(_head(fds_target, "GET", f"/{raw_bucket}/p1") + _head(fds_target, "GET", f"/{raw_bucket}/nope")
                     + _head(fds_target, "GET", f"/{raw_bucket}/p2"))
        first, second, third = reader.response(), reader.response(), reader.response()
        assert (first[0], first[2]) == (200, b"p1" * 1000)
        assert second[0] == 404 and _code(second[2]) == "NoSuchKey"
        assert (third[0], third[2]) == (200, b"p2" * 1000)


def test_chunked_transfer_encoding(fds_target: S3Target, raw_bucket: str) -> None:
    xml = (b"<Delete><Object><Key>c1</Key></Object></Delete>")
    fds_target.client().put_object(Bucket=raw_bucket, Key="c1", Body=b"gone soon")
    framed = b"".join(b"%x\r\n%s\r\n" % (len(xml[i:i + 10]), xml[i:i + 10]) for i in range(0, len(xml), 10))
    framed += b"0\r\n\r\n"
    md5 = __import__("base64").b64encode(hashlib.md5(xml).digest()).decode()
    with _connect(fds_target) as sock:
        reader = _Reader(sock)
        head = _head(fds_target, "POST", f"/{raw_bucket}?delete=", xml,
                     {"transfer-encoding": "chunked", "content-md5": md5})
        sock.sendall(head + framed)
        status, _, body = reader.response()
        assert status == 200 and b"<Deleted><Key>c1</Key></Deleted>" in body, body
        sock.sendall(_head(fds_target, "GET", f"/{raw_bucket}/c1"))  # the same connection goes on
        assert reader.response()[0] == 404
        # a PUT without a length is S3's 411
        sock.sendall(_head(fds_target, "PUT", f"/{raw_bucket}/nolength", b"abc", {"transfer-encoding": "chunked"})
                     + b"3\r\nabc\r\n0\r\n\r\n")
        status, headers, body = reader.response()
        assert status == 411 and _code(body) == "MissingContentLength"
        if headers.get("connection") != "close":
            sock.sendall(_head(fds_target, "GET", f"/{raw_bucket}/nolength"))
            assert reader.response()[0] == 404


def test_client_leaving_mid_body_leaves_nothing(fds_target: S3Target, raw_bucket: str) -> None:
    body = os.urandom(3 << 20)
    with _connect(fds_target) as sock:
        sock.sendall(_head(fds_target, "PUT", f"/{raw_bucket}/half", body) + body[:len(body) // 2])
        time.sleep(0.2)
    s3 = fds_target.client()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the server answers others meanwhile, and never stores the half
        assert "Contents" not in s3.list_objects_v2(Bucket=raw_bucket, Prefix="half")
        time.sleep(0.5)
    s3.put_object(Bucket=raw_bucket, Key="half", Body=body)
    assert s3.get_object(Bucket=raw_bucket, Key="half")["Body"].read() == body


def test_workers_share_one_port(fds_s3: tuple[S3Target, LocalCluster], tmp_path: Path) -> None:
    target, cluster = fds_s3
    ready = tmp_path / "s3.ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fds", "s3", "--metaserver", cluster.metaserver_url, "--port", "0", "--workers", "2",
         "--secret-file", str(cluster.secret_file or cluster.dir / "secret"), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ready.exists(), proc.stderr.read() if proc.stderr else ""
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
        other = S3Target("fds", ready.read_text().strip(), target.access_key, target.secret_key)
        s3 = other.client()
        name = new_bucket_name("workers")
        s3.create_bucket(Bucket=name)
        data = os.urandom(1 << 20)
        for i in range(8):  # fresh connections each time, whichever worker takes them
            other.client().put_object(Bucket=name, Key=f"k{i}", Body=data)
        assert all(s3.get_object(Bucket=name, Key=f"k{i}")["Body"].read() == data for i in range(8))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            stop_process(proc, 0)  # its workers die with it (PR_SET_PDEATHSIG)
            raise
    assert code == 0, proc.stderr.read()[-3000:] if proc.stderr else code
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_workers_die_with_their_parent(fds_s3: tuple[S3Target, LocalCluster], tmp_path: Path) -> None:
    _, cluster = fds_s3
    ready = tmp_path / "s3.ready"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fds", "s3", "--metaserver", cluster.metaserver_url, "--port", "0", "--workers", "2",
         "--secret-file", str(cluster.secret_file or cluster.dir / "secret"), "--ready-file", str(ready)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert len(children) == 2
    finally:
        proc.kill()  # SIGKILL: the parent cannot pass anything on
        proc.wait()

    def serving(pid: str) -> bool:
        try:
            return "zombie" not in Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return False

    try:
        deadline = time.monotonic() + 15
        while any(serving(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(serving(pid) for pid in children)
    finally:  # workers that outlived their parent (the failure this test finds) are stopped by their PIDs
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
