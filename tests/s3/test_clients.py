"""Real S3 clients against fds's S3 endpoint.

Each client, run as its users run it, makes a bucket, puts a small, a 5 MiB and a 20 MiB object
(the last in parts: 8 MiB, or the client's own part size), lists them, reads a range, copies one
inside the store, deletes, and reads every object back byte for byte: boto3, the aws cli and s3cmd
(PyPI, as subprocesses), rclone (Debian, configured by ``RCLONE_CONFIG_FDS_*``), s3fs and the minio
client. Where a client cannot do one of these (s3cmd reads no ranges), the test says so and the
step is checked with boto3 instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3.s3.transfer
import pytest

from tests.s3._targets import REGION, S3Target, new_bucket_name
from tests.s3.conftest import empty_and_delete

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
SIZES = {"small.txt": 1000, "five.bin": 5 * MiB, "twenty.bin": 20 * MiB}
RANGE = (5 * MiB - 10, 5 * MiB + 9)
"""A range of the 20 MiB object that crosses a tract boundary (1 MiB tracts) and a part boundary (5 MiB parts)."""


@dataclass(frozen=True)
class Files:
    """The local files each client uploads, and their bytes."""

    dir: Path
    data: dict[str, bytes]

    def path(self, name: str) -> Path:
        return self.dir / name


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("s3-files")
    data = {name: os.urandom(size) for name, size in SIZES.items()}
    for name, content in data.items():
        (root / name).write_bytes(content)
    return Files(root, data)


@pytest.fixture
def target(fds_target: S3Target) -> S3Target:
    """fds's endpoint. (Against moto, s3cmd trips on a 500 for GET ?acl, rclone 1.60's multipart on a 400 and
    s3fs on moto refusing LocationConstraint us-east-1: moto is the model for the boto3 suite, not here.)"""
    return fds_target


@pytest.fixture
def fresh(target: S3Target) -> Iterator[str]:
    """A bucket name no one has made yet; whatever the client left in it is removed afterwards."""
    name = new_bucket_name("c")
    yield name
    empty_and_delete(target.client(), name)


def _stored(target: S3Target, bucket: str) -> dict[str, bytes]:
    """Every object in ``bucket``, read back with boto3."""
    s3 = target.client()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def _assert_stored(target: S3Target, bucket: str, expected: dict[str, bytes]) -> None:
    got = _stored(target, bucket)
    assert sorted(got) == sorted(expected)
    for key, data in expected.items():
        assert hashlib.sha256(got[key]).hexdigest() == hashlib.sha256(data).hexdigest(), key


def _after(files: Files, copied: str = "twenty.bin") -> dict[str, bytes]:
    """What every client's bucket holds at the end: small and twenty under up/, two copies, five.bin deleted."""
    data = files.data
    return {"up/small.txt": data["small.txt"], "up/twenty.bin": data["twenty.bin"],
            f"copy/{copied}": data[copied], "copy/small.txt": data["small.txt"]}


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def _tool(name: str) -> str:
    """The path of a client command from the s3test extra (this interpreter's venv first), or a skip saying how
    to get it."""
    beside = Path(sys.executable).parent / name
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: it comes with the s3test extra (pip install -e '.[s3test]')")
    return path


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a client subprocess: no AWS or rclone settings of the user's, HOME in a temp dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RCLONE_"))}
    env["HOME"] = str(tmp_path)
    return env


# -- boto3 -------------------------------------------------------------------------------------------------------

def test_boto3(target: S3Target, files: Files, fresh: str, tmp_path: Path) -> None:
    s3 = target.client()
    s3.create_bucket(Bucket=fresh)
    config = boto3.s3.transfer.TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB)
    for name in SIZES:
        s3.upload_file(str(files.path(name)), fresh, f"up/{name}", Config=config)
    assert s3.head_object(Bucket=fresh, Key="up/twenty.bin")["ETag"].endswith('-3"')  # 8 + 8 + 4 MiB parts
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=fresh, Prefix="up/")["Contents"]}
    assert listed == {f"up/{n}": size for n, size in SIZES.items()}
    part = s3.get_object(Bucket=fresh, Key="up/twenty.bin", Range=f"bytes={RANGE[0]}-{RANGE[1]}")["Body"].read()
    assert part == files.data["twenty.bin"][RANGE[0]:RANGE[1] + 1]
    s3.copy({"Bucket": fresh, "Key": "up/twenty.bin"}, fresh, "copy/twenty.bin", Config=config)
    s3.copy_object(Bucket=fresh, Key="copy/small.txt", CopySource={"Bucket": fresh, "Key": "up/small.txt"})
    s3.delete_object(Bucket=fresh, Key="up/five.bin")
    down = tmp_path / "down.bin"
    s3.download_file(fresh, "copy/twenty.bin", str(down), Config=config)
    assert down.read_bytes() == files.data["twenty.bin"]
    _assert_stored(target, fresh, _after(files))


# -- the aws cli -------------------------------------------------------------------------------------------------

def test_aws_cli(target: S3Target, files: Files, fresh: str, tmp_path: Path) -> None:
    """The aws cli as the issue promises it: ``AWS_SHARED_CREDENTIALS_FILE=... aws --profile fds --endpoint-url``."""
    env = _clean_env(tmp_path)
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(target.credentials_path or target.credentials_file(tmp_path / "creds"))
    env["AWS_CONFIG_FILE"] = str(tmp_path / "no-config")
    env["AWS_DEFAULT_REGION"] = REGION
    aws = [_tool("aws"), "--profile", "fds", "--endpoint-url", target.endpoint]
    url = f"s3://{fresh}"
    _run([*aws, "s3", "mb", url], env)
    for name in SIZES:  # the aws cli's defaults: parts of 8 MiB from 8 MiB up
        _run([*aws, "s3", "cp", str(files.path(name)), f"{url}/up/{name}"], env)
    head = json.loads(_run([*aws, "s3api", "head-object", "--bucket", fresh, "--key", "up/twenty.bin"], env))
    assert head["ContentLength"] == 20 * MiB and head["ETag"].endswith('-3"')
    listing = _run([*aws, "s3", "ls", "--recursive", url], env)
    assert sorted(line.split()[-1] for line in listing.splitlines()) == sorted(f"up/{n}" for n in SIZES)
    part = tmp_path / "part"
    _run([*aws, "s3api", "get-object", "--bucket", fresh, "--key", "up/twenty.bin", "--range",
          f"bytes={RANGE[0]}-{RANGE[1]}", str(part)], env)
    assert part.read_bytes() == files.data["twenty.bin"][RANGE[0]:RANGE[1] + 1]
    _run([*aws, "s3", "cp", f"{url}/up/twenty.bin", f"{url}/copy/twenty.bin"], env)  # UploadPartCopy over 8 MiB
    _run([*aws, "s3", "cp", f"{url}/up/small.txt", f"{url}/copy/small.txt"], env)
    _run([*aws, "s3", "rm", f"{url}/up/five.bin"], env)
    down = tmp_path / "down"
    _run([*aws, "s3", "cp", "--recursive", url, str(down)], env)
    assert (down / "copy/twenty.bin").read_bytes() == files.data["twenty.bin"]
    assert sorted(str(p.relative_to(down)) for p in down.rglob("*") if p.is_file()) == [
        "copy/small.txt", "copy/twenty.bin", "up/small.txt", "up/twenty.bin"]
    _assert_stored(target, fresh, _after(files))
    _run([*aws, "s3", "rm", "--recursive", url], env)
    _run([*aws, "s3", "rb", url], env)
    assert fresh not in _run([*aws, "s3", "ls"], env)


# -- s3cmd -------------------------------------------------------------------------------------------------------

def test_s3cmd(target: S3Target, files: Files, fresh: str, tmp_path: Path) -> None:
    """s3cmd (SigV4, path style: host_bucket is the endpoint itself); it reads no ranges, so boto3 does that."""
    config = tmp_path / "s3cfg"
    config.write_text(f"[default]\naccess_key = {target.access_key}\nsecret_key = {target.secret_key}\n"
                      f"host_base = {target.hostport}\nhost_bucket = {target.hostport}\nuse_https = False\n"
                      f"bucket_location = {REGION}\nsignature_v2 = False\nmultipart_chunk_size_mb = 8\n")
    s3cmd = [_tool("s3cmd"), "-c", str(config)]
    env = _clean_env(tmp_path)
    url = f"s3://{fresh}"
    _run([*s3cmd, "mb", url], env)
    for name in SIZES:
        _run([*s3cmd, "put", str(files.path(name)), f"{url}/up/{name}"], env)
    listing = _run([*s3cmd, "ls", "--recursive", url], env)
    assert sorted(line.split()[-1] for line in listing.splitlines()) == sorted(f"{url}/up/{n}" for n in SIZES)
    s3 = target.client()
    assert s3.head_object(Bucket=fresh, Key="up/twenty.bin")["ETag"].endswith('-3"')  # 8 + 8 + 4 MiB parts
    part = s3.get_object(Bucket=fresh, Key="up/twenty.bin", Range=f"bytes={RANGE[0]}-{RANGE[1]}")["Body"].read()
    assert part == files.data["twenty.bin"][RANGE[0]:RANGE[1] + 1]
    _run([*s3cmd, "cp", f"{url}/up/twenty.bin", f"{url}/copy/twenty.bin"], env)
    _run([*s3cmd, "cp", f"{url}/up/small.txt", f"{url}/copy/small.txt"], env)
    _run([*s3cmd, "del", f"{url}/up/five.bin"], env)
    down = tmp_path / "down.bin"
    _run([*s3cmd, "get", f"{url}/copy/twenty.bin", str(down)], env)
    assert down.read_bytes() == files.data["twenty.bin"]
    _assert_stored(target, fresh, _after(files))
    _run([*s3cmd, "del", "--recursive", "--force", url], env)
    _run([*s3cmd, "rb", url], env)


# -- rclone ------------------------------------------------------------------------------------------------------

def test_rclone(target: S3Target, files: Files, fresh: str, tmp_path: Path) -> None:
    """Debian's rclone, configured by environment only (``RCLONE_CONFIG_FDS_*``), 8 MiB parts from 8 MiB up."""
    rclone = shutil.which("rclone")
    if rclone is None:
        pytest.skip("rclone is not installed (.ci/run installs Debian's; apt was not available)")
    env = _clean_env(tmp_path)
    env.update({"RCLONE_CONFIG": str(tmp_path / "no-rclone.conf"), "RCLONE_CONFIG_FDS_TYPE": "s3",
                "RCLONE_CONFIG_FDS_PROVIDER": "Other", "RCLONE_CONFIG_FDS_ACCESS_KEY_ID": target.access_key,
                "RCLONE_CONFIG_FDS_SECRET_ACCESS_KEY": target.secret_key,
                "RCLONE_CONFIG_FDS_ENDPOINT": target.endpoint, "RCLONE_CONFIG_FDS_REGION": REGION,
                "RCLONE_CONFIG_FDS_FORCE_PATH_STYLE": "true", "RCLONE_S3_UPLOAD_CUTOFF": "8M",
                "RCLONE_S3_CHUNK_SIZE": "8M"})
    rc = [rclone, "--retries", "1", "--low-level-retries", "1"]
    remote = f"fds:{fresh}"
    _run([*rc, "mkdir", remote], env)
    for name in SIZES:
        _run([*rc, "copyto", str(files.path(name)), f"{remote}/up/{name}"], env)
    listed = json.loads(_run([*rc, "lsjson", "--recursive", "--files-only", remote], env))
    assert {e["Path"]: e["Size"] for e in listed} == {f"up/{n}": size for n, size in SIZES.items()}
    part = _run_bytes([*rc, "cat", "--offset", str(RANGE[0]), "--count", str(RANGE[1] - RANGE[0] + 1),
                       f"{remote}/up/twenty.bin"], env)
    assert part == files.data["twenty.bin"][RANGE[0]:RANGE[1] + 1]
    _run([*rc, "copyto", f"{remote}/up/twenty.bin", f"{remote}/copy/twenty.bin"], env)  # server-side copy
    _run([*rc, "copyto", f"{remote}/up/small.txt", f"{remote}/copy/small.txt"], env)
    _run([*rc, "deletefile", f"{remote}/up/five.bin"], env)
    down = tmp_path / "down"
    _run([*rc, "copy", remote, str(down)], env)
    assert (down / "copy/twenty.bin").read_bytes() == files.data["twenty.bin"]
    _run([*rc, "check", str(down), remote], env)
    _assert_stored(target, fresh, _after(files))
    _run([*rc, "purge", remote], env)
    assert fresh not in _run([*rc, "lsd", "fds:"], env)


def _run_bytes(args: list[str], env: dict[str, str]) -> bytes:
    out = subprocess.run(args, env=env, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    return out.stdout


# -- s3fs --------------------------------------------------------------------------------------------------------

def test_s3fs(target: S3Target, files: Files, fresh: str, tmp_path: Path) -> None:
    s3fs = pytest.importorskip("s3fs", reason="s3fs comes with the s3test extra: pip install -e '.[s3test]'")
    fs = s3fs.S3FileSystem(key=target.access_key, secret=target.secret_key, use_listings_cache=False,
                           client_kwargs={"endpoint_url": target.endpoint, "region_name": REGION},
                           config_kwargs={"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}})
    fs.mkdir(fresh)
    for name in SIZES:
        fs.put_file(str(files.path(name)), f"{fresh}/up/{name}", chunksize=8 * MiB)
    assert fs.info(f"{fresh}/up/twenty.bin")["ETag"].endswith('-3"')
    listed = {p["name"]: p["size"] for p in fs.find(fresh, detail=True).values()}
    assert listed == {f"{fresh}/up/{n}": size for n, size in SIZES.items()}
    assert fs.cat_file(f"{fresh}/up/twenty.bin", start=RANGE[0], end=RANGE[1] + 1) == (
        files.data["twenty.bin"][RANGE[0]:RANGE[1] + 1])
    with fs.open(f"{fresh}/up/twenty.bin", "rb", block_size=MiB) as handle:
        handle.seek(RANGE[0])
        assert handle.read(RANGE[1] - RANGE[0] + 1) == files.data["twenty.bin"][RANGE[0]:RANGE[1] + 1]
    fs.copy(f"{fresh}/up/twenty.bin", f"{fresh}/copy/twenty.bin")
    fs.copy(f"{fresh}/up/small.txt", f"{fresh}/copy/small.txt")
    fs.rm(f"{fresh}/up/five.bin")
    fs.get_file(f"{fresh}/copy/twenty.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == files.data["twenty.bin"]
    with fs.open(f"{fresh}/written.bin", "wb", block_size=5 * MiB) as handle:  # a streamed multipart write
        for _ in range(3):
            handle.write(files.data["five.bin"][: 4 * MiB])
    _assert_stored(target, fresh, {**_after(files), "written.bin": files.data["five.bin"][: 4 * MiB] * 3})
    fs.rm(fresh, recursive=True)
    assert not fs.exists(fresh)


# -- the minio client --------------------------------------------------------------------------------------------

def test_minio(target: S3Target, files: Files, fresh: str, tmp_path: Path) -> None:
    pytest.importorskip("minio", reason="the minio client comes with the s3test extra: pip install -e '.[s3test]'")
    from minio import Minio
    from minio.commonconfig import CopySource

    client = Minio(target.hostport, access_key=target.access_key, secret_key=target.secret_key, secure=False,
                   region=REGION)
    client.make_bucket(fresh)
    assert client.bucket_exists(fresh)
    for name in SIZES:
        client.fput_object(fresh, f"up/{name}", str(files.path(name)), part_size=8 * MiB)
    assert client.stat_object(fresh, "up/twenty.bin").etag.endswith("-3")
    listed = {o.object_name: o.size for o in client.list_objects(fresh, prefix="up/", recursive=True)}
    assert listed == {f"up/{n}": size for n, size in SIZES.items()}
    response: Any = client.get_object(fresh, "up/twenty.bin", offset=RANGE[0], length=RANGE[1] - RANGE[0] + 1)
    try:
        assert response.read() == files.data["twenty.bin"][RANGE[0]:RANGE[1] + 1]
    finally:
        response.close()
        response.release_conn()
    client.copy_object(fresh, "copy/small.txt", CopySource(fresh, "up/small.txt"))
    client.copy_object(fresh, "copy/five.bin", CopySource(fresh, "up/five.bin"))
    client.remove_object(fresh, "up/five.bin")
    client.fget_object(fresh, "up/twenty.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == files.data["twenty.bin"]
    _assert_stored(target, fresh, {**_after(files, copied="five.bin")})
    for obj in client.list_objects(fresh, recursive=True):
        client.remove_object(fresh, obj.object_name)
    client.remove_bucket(fresh)
    assert not client.bucket_exists(fresh)
