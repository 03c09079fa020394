"""The real ``fds`` command, as a subprocess, against a real cluster: blobs, status, exit codes."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fds.client import SyncClient
from fds.local import LocalCluster
from tests.support.clusters import SMALL_TRACT

GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, LocalCluster]]:
    """A directory whose ``.fds/`` holds a running cluster (as `fds local up` would leave it); always stopped."""
    root = Path(tmp_path_factory.mktemp("project"))
    cluster = LocalCluster(root / ".fds", tractservers=4, replicas=2, tract_size=SMALL_TRACT, port=0, gateway=False,
                           heartbeat_interval=0.2)
    try:
        cluster.start()
        yield root, cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def cluster(project: tuple[Path, LocalCluster]) -> LocalCluster:
    return project[1]


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with no cluster file."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def fds(*args: str, cwd: Path, env: dict[str, str] | None = None,
        stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m fds ARGS`` with no FDS_* settings but those in ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("FDS_")}
    return subprocess.run([sys.executable, "-m", "fds", *args], cwd=cwd, env={**base, **(env or {})},
                          input=stdin, capture_output=True, timeout=120)


def _message(proc: subprocess.CompletedProcess[bytes]) -> str:
    """The single ``fds: ...`` line a failed command prints."""
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fds: "), err
    return lines[0]


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(2 * SMALL_TRACT + 12345)
    path = Path(tmp_path_factory.mktemp("files")) / "in.bin"
    path.write_bytes(data)
    return path, data


def test_put_get_round_trip_with_flag(cluster: LocalCluster, elsewhere: Path, payload: tuple[Path, bytes]) -> None:
    src, data = payload
    token = {"FDS_TOKEN": cluster.token("write")}  # a token, not the secret: what a remote user holds
    put = fds("put", str(src), "--metaserver", cluster.metaserver_url, cwd=elsewhere, env=token)
    assert put.returncode == 0, put.stderr
    guid = put.stdout.decode()
    assert GUID.fullmatch(guid.strip()) and guid.endswith("\n") and guid.count("\n") == 1
    guid = guid.strip()
    out = elsewhere / "out.bin"
    get = fds("get", guid, str(out), "--metaserver", cluster.metaserver_url, cwd=elsewhere, env=token)
    assert get.returncode == 0, get.stderr
    assert out.read_bytes() == data
    assert [p.name for p in elsewhere.iterdir()] == ["out.bin"]  # no temporary file left behind
    to_stdout = fds("get", guid, "-", "--metaserver", cluster.metaserver_url, cwd=elsewhere, env=token)
    assert to_stdout.returncode == 0 and to_stdout.stdout == data


def test_credentials_missing_or_read_only(cluster: LocalCluster, elsewhere: Path,
                                         payload: tuple[Path, bytes]) -> None:
    """No credentials: exit 1 saying how to get some. A read-only token reads but may not write."""
    src, data = payload
    bare = fds("status", "--metaserver", cluster.metaserver_url, cwd=elsewhere)
    assert bare.returncode == 1 and "fds token" in _message(bare) and "FDS_SECRET_FILE" in _message(bare)
    guid = fds("put", str(src), "--metaserver", cluster.metaserver_url, cwd=elsewhere,
               env={"FDS_TOKEN": cluster.token("write")}).stdout.decode().strip()
    read_only = {"FDS_TOKEN": cluster.token("read")}
    got = fds("get", guid, "-", "--metaserver", cluster.metaserver_url, cwd=elsewhere, env=read_only)
    assert got.returncode == 0 and got.stdout == data
    put = fds("put", str(src), "--metaserver", cluster.metaserver_url, cwd=elsewhere, env=read_only)
    assert put.returncode == 1 and "'read' token may not" in _message(put)
    forged = cluster.token("write")[:-4] + "AAAA"
    bad = fds("get", guid, "-", "--metaserver", cluster.metaserver_url, cwd=elsewhere, env={"FDS_TOKEN": forged})
    assert bad.returncode == 1 and "not signed with this cluster's secret" in _message(bad)


def test_put_get_via_environment(cluster: LocalCluster, elsewhere: Path, payload: tuple[Path, bytes]) -> None:
    src, data = payload
    env = {"FDS_METASERVER": cluster.metaserver_url, "FDS_SECRET_FILE": str(cluster.secret_file)}
    put = fds("put", str(src), cwd=elsewhere, env=env)
    assert put.returncode == 0, put.stderr
    get = fds("get", put.stdout.decode().strip(), "-", cwd=elsewhere, env=env)
    assert get.returncode == 0 and get.stdout == data


def test_discovery_from_cluster_file(project: tuple[Path, LocalCluster], payload: tuple[Path, bytes]) -> None:
    root, _ = project
    src, data = payload
    put = fds("put", str(src), cwd=root)
    assert put.returncode == 0, put.stderr
    guid = put.stdout.decode().strip()
    stat = fds("stat", guid, "--json", cwd=root)
    assert stat.returncode == 0, stat.stderr
    info = json.loads(stat.stdout)
    assert info["guid"] == guid and info["length"] == len(data) and info["tracts"] == 3
    assert fds("get", guid, "-", cwd=root).stdout == data


def test_stat_human(cluster: LocalCluster, elsewhere: Path, payload: tuple[Path, bytes]) -> None:
    src, data = payload
    env = {"FDS_METASERVER": cluster.metaserver_url, "FDS_SECRET_FILE": str(cluster.secret_file)}
    guid = fds("put", str(src), cwd=elsewhere, env=env).stdout.decode().strip()
    stat = fds("stat", guid, cwd=elsewhere, env=env)
    assert stat.returncode == 0, stat.stderr
    text = stat.stdout.decode()
    assert guid in text and re.search(r"tracts\s+3\b", text) and f"{len(data)} bytes" in text
    assert "created" in text


def test_put_from_stdin_and_overwrite(cluster: LocalCluster, elsewhere: Path) -> None:
    env = {"FDS_METASERVER": cluster.metaserver_url, "FDS_SECRET_FILE": str(cluster.secret_file)}
    first = os.urandom(3 * SMALL_TRACT)
    put = fds("put", "-", cwd=elsewhere, env=env, stdin=first)
    assert put.returncode == 0, put.stderr
    guid = put.stdout.decode().strip()
    assert fds("get", guid, "-", cwd=elsewhere, env=env).stdout == first
    # --blob with a GUID that exists replaces the blob.
    second = b"smaller now"
    src = elsewhere / "second.bin"
    src.write_bytes(second)
    again = fds("put", str(src), "--blob", guid, cwd=elsewhere, env=env)
    assert again.returncode == 0 and again.stdout.decode().strip() == guid
    assert fds("get", guid, "-", cwd=elsewhere, env=env).stdout == second


def test_rm_then_get_fails(cluster: LocalCluster, elsewhere: Path) -> None:
    env = {"FDS_METASERVER": cluster.metaserver_url, "FDS_SECRET_FILE": str(cluster.secret_file)}
    src = elsewhere / "small.bin"
    src.write_bytes(b"hello")
    guid = fds("put", str(src), cwd=elsewhere, env=env).stdout.decode().strip()
    rm = fds("rm", guid, cwd=elsewhere, env=env)
    assert rm.returncode == 0, rm.stderr
    out = elsewhere / "gone.bin"
    get = fds("get", guid, str(out), cwd=elsewhere, env=env)
    assert get.returncode == 1
    assert "no blob" in _message(get)
    assert not out.exists()
    assert fds("rm", guid, cwd=elsewhere, env=env).returncode == 1


def test_status(cluster: LocalCluster, elsewhere: Path) -> None:
    truth = httpx.get(f"{cluster.metaserver_url}/v1/cluster", headers=cluster.headers()).json()
    table = httpx.get(f"{cluster.metaserver_url}/v1/table", headers=cluster.headers()).json()
    env = {"FDS_METASERVER": cluster.metaserver_url, "FDS_SECRET_FILE": str(cluster.secret_file)}
    human = fds("status", cwd=elsewhere, env=env)
    assert human.returncode == 0, human.stderr
    text = human.stdout.decode()
    for server in truth["servers"]:
        assert server["id"] in text and server["url"] in text
    assert "ready" in text and f"table version {table['version']}" in text
    as_json = fds("status", "--json", cwd=elsewhere, env=env)
    assert as_json.returncode == 0, as_json.stderr
    status = json.loads(as_json.stdout)  # exactly one JSON object, nothing else on stdout
    assert status["state"] == "ready" and status["table_version"] == table["version"]
    assert status["metaserver"] == cluster.metaserver_url and status["replicas"] == 2
    assert sorted(s["id"] for s in status["servers"]) == sorted(s["id"] for s in truth["servers"])
    assert all(s["alive"] for s in status["servers"]) and status["alive_servers"] == 4
    assert status["healthy"] is True and "healthy" in text
    assert status["recovery"]["rows_filling"] == 0 and status["recovery"]["rows_under_replicated"] == 0
    assert all(s["state"] == "active" and s["rows"] > 0 for s in status["servers"])


def test_decommission_unknown_server_says_so(cluster: LocalCluster, elsewhere: Path) -> None:
    proc = fds("decommission", "ts-nosuchserver", "--metaserver", cluster.metaserver_url, cwd=elsewhere,
               env={"FDS_SECRET_FILE": str(cluster.secret_file)})
    assert proc.returncode == 1
    assert "ts-nosuchserver" in _message(proc) and "not in the table" in _message(proc)


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["stat", "0" * 32], ["rm", "0" * 32],
                                     ["get", "0" * 32, "-"], ["put", "FILE"]])
def test_unreachable_cluster_is_exit_3(elsewhere: Path, command: list[str]) -> None:
    src = elsewhere / "f.bin"
    src.write_bytes(b"x")
    args = [str(src) if a == "FILE" else a for a in command]
    proc = fds(*args, "--metaserver", _dead_url(), cwd=elsewhere)
    assert proc.returncode == 3
    assert "cannot reach the metaserver" in _message(proc)
    assert proc.stdout == b""


def test_no_cluster_found_is_exit_3(elsewhere: Path) -> None:
    proc = fds("status", cwd=elsewhere)
    assert proc.returncode == 3
    message = _message(proc)
    assert "fds local up" in message and "--metaserver" in message


@pytest.mark.parametrize("command", [["stat", "not-a-guid"], ["get", "xyz", "-"], ["rm", "1234"],
                                     ["put", "FILE", "--blob", "nope"]])
def test_malformed_guid_is_exit_1(cluster: LocalCluster, elsewhere: Path, command: list[str]) -> None:
    src = elsewhere / "f.bin"
    src.write_bytes(b"x")
    args = [str(src) if a == "FILE" else a for a in command]
    proc = fds(*args, "--metaserver", cluster.metaserver_url, cwd=elsewhere)
    assert proc.returncode == 1
    assert "malformed GUID" in _message(proc)


def test_missing_input_file_is_exit_1(cluster: LocalCluster, elsewhere: Path) -> None:
    proc = fds("put", str(elsewhere / "absent.bin"), "--metaserver", cluster.metaserver_url, cwd=elsewhere)
    assert proc.returncode == 1
    message = _message(proc)
    assert "absent.bin" in message and "No such file" in message


def test_usage_errors_are_exit_2(elsewhere: Path) -> None:
    assert fds("put", cwd=elsewhere).returncode == 2
    assert fds("get", "0" * 32, cwd=elsewhere).returncode == 2


# -- where `fds get` writes: regular files replaced atomically, everything else written straight into ----------
def _env(cluster: LocalCluster) -> dict[str, str]:
    return {"FDS_METASERVER": cluster.metaserver_url, "FDS_SECRET_FILE": str(cluster.secret_file)}


@pytest.fixture(scope="module")
def stored(cluster: LocalCluster, payload: tuple[Path, bytes],
           tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """The payload (two whole tracts and a short one), put once for every test below."""
    put = fds("put", str(payload[0]), cwd=tmp_path_factory.mktemp("put"), env=_env(cluster))
    assert put.returncode == 0, put.stderr
    return put.stdout.decode().strip(), payload[1]


def _null_device(path: Path) -> None:
    """A character device with /dev/null's numbers, made at ``path`` (the real /dev/null is never touched)."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.stat("/dev/null").st_rdev)
    except PermissionError:
        pytest.skip("mknod is not allowed here (not root, or no CAP_MKNOD)")


def test_get_into_a_character_device_writes_into_it(cluster: LocalCluster, stored: tuple[str, bytes],
                                                    elsewhere: Path) -> None:
    """Issue 10: `fds get GUID /dev/null` as root replaced /dev/null with a regular file."""
    device = elsewhere / "null"
    _null_device(device)
    before = os.stat(device)
    link = elsewhere / "via-link"
    link.symlink_to(device)
    for out in (device, link):
        got = fds("get", stored[0], str(out), cwd=elsewhere, env=_env(cluster))
        assert got.returncode == 0, got.stderr
        after = os.stat(device)
        assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)
    assert link.is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["null", "via-link"]  # no temporary left beside it


def test_get_into_a_fifo_streams_every_byte(cluster: LocalCluster, stored: tuple[str, bytes], elsewhere: Path) -> None:
    fifo = elsewhere / "fifo"
    os.mkfifo(fifo)
    received = bytearray()

    def read() -> None:
        with open(fifo, "rb") as fh:  # opening waits for the writer, as the writer's waits for us
            while chunk := fh.read(1 << 16):
                received.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    got = fds("get", stored[0], str(fifo), cwd=elsewhere, env=_env(cluster))
    reader.join(timeout=60)
    assert got.returncode == 0, got.stderr
    assert bytes(received) == stored[1]
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_get_into_a_unix_socket_sends_every_byte(cluster: LocalCluster, stored: tuple[str, bytes]) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # socket paths are limited to ~108 bytes
        path = Path(short) / "sock"
        received = bytearray()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(str(path))
            server.listen(1)

            def serve() -> None:
                conn, _ = server.accept()
                with conn:
                    while chunk := conn.recv(1 << 16):
                        received.extend(chunk)

            receiver = threading.Thread(target=serve)
            receiver.start()
            got = fds("get", stored[0], str(path), cwd=Path(short), env=_env(cluster))
            receiver.join(timeout=60)
        assert got.returncode == 0, got.stderr
        assert bytes(received) == stored[1]
        assert stat.S_ISSOCK(os.stat(path).st_mode)


def test_get_into_a_block_device_that_cannot_open_says_so_and_keeps_it(cluster: LocalCluster,
                                                                       stored: tuple[str, bytes],
                                                                       elsewhere: Path) -> None:
    """A block device node is opened and written, never replaced. Major 240 is reserved for local use, so
    no driver answers and the open fails: no real disk is written by this test."""
    if re.search(r"^\s*240 ", Path("/proc/devices").read_text().split("Block devices:")[-1], re.M):
        pytest.skip("block major 240 is in use on this machine")
    node = elsewhere / "blk"
    try:
        os.mknod(node, 0o600 | stat.S_IFBLK, os.makedev(240, 0))
    except PermissionError:
        pytest.skip("mknod is not allowed here (not root, or no CAP_MKNOD)")
    got = fds("get", stored[0], str(node), cwd=elsewhere, env=_env(cluster))
    assert got.returncode == 1
    assert _message(got) == f"fds: cannot write {node}: No such device or address"
    assert stat.S_ISBLK(os.stat(node).st_mode)


def test_get_into_a_directory_says_to_name_the_file(cluster: LocalCluster, stored: tuple[str, bytes],
                                                   elsewhere: Path) -> None:
    got = fds("get", stored[0], str(elsewhere), cwd=elsewhere, env=_env(cluster))
    assert got.returncode == 1 and "it is a directory; name the output file" in _message(got)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_new_file_gets_the_umask_mode(cluster: LocalCluster, stored: tuple[str, bytes], elsewhere: Path,
                                      umask: int) -> None:
    out = elsewhere / "new.bin"
    got = subprocess.run([sys.executable, "-m", "fds", "get", stored[0], str(out)], cwd=elsewhere,
                         env={**os.environ, **_env(cluster)}, capture_output=True, timeout=120, umask=umask)
    assert got.returncode == 0, got.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert out.read_bytes() == stored[1]


def test_replaced_file_keeps_its_mode_and_owner(cluster: LocalCluster, stored: tuple[str, bytes],
                                                elsewhere: Path) -> None:
    out = elsewhere / "kept.bin"
    out.write_bytes(b"old")
    out.chmod(0o751)
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        owner = (12345, 23456)  # as root the download must not take the file from its owner
        os.chown(out, *owner)
    link = elsewhere / "link.bin"
    link.symlink_to(out.name)
    for target in (out, link):
        got = fds("get", stored[0], str(target), cwd=elsewhere, env=_env(cluster))
        assert got.returncode == 0, got.stderr
        st = out.stat()
        assert stat.S_IMODE(st.st_mode) == 0o751 and (st.st_uid, st.st_gid) == owner
        assert out.read_bytes() == stored[1]
    assert link.is_symlink() and os.readlink(link) == out.name  # the link is followed, not replaced
    assert sorted(p.name for p in elsewhere.iterdir()) == ["kept.bin", "link.bin"]


def test_failed_get_leaves_the_old_file(cluster: LocalCluster, elsewhere: Path) -> None:
    out = elsewhere / "precious.bin"
    out.write_bytes(b"old content")
    got = fds("get", "0" * 32, str(out), cwd=elsewhere, env=_env(cluster))
    assert got.returncode == 1 and "no blob" in _message(got)
    assert out.read_bytes() == b"old content"
    assert [p.name for p in elsewhere.iterdir()] == ["precious.bin"]


def test_get_blob_with_short_tracts_inside(cluster: LocalCluster, elsewhere: Path) -> None:
    """A blob written tract by tract need not have whole tracts but the last: its bytes are its tracts
    concatenated, so tract 1 lands at an unaligned offset (off the O_DIRECT path)."""
    pieces = [os.urandom(1000), os.urandom(SMALL_TRACT), os.urandom(SMALL_TRACT - 4096), os.urandom(77)]
    with SyncClient(cluster.metaserver_url, secret_file=str(cluster.secret_file)) as client:
        blob = client.create_blob()
        blob.extend(len(pieces))
        blob.write_tracts(enumerate(pieces))
    out = elsewhere / "pieces.bin"
    got = fds("get", blob.guid, str(out), cwd=elsewhere, env=_env(cluster))
    assert got.returncode == 0, got.stderr
    assert out.read_bytes() == b"".join(pieces)
    assert fds("get", blob.guid, "-", cwd=elsewhere, env=_env(cluster)).stdout == b"".join(pieces)
