"""What current clients send over HTTPS: botocore >= 1.36 streams uploads as ``aws-chunked`` bodies with a
CRC32 trailer (``STREAMING-UNSIGNED-PAYLOAD-TRAILER``) when the endpoint is HTTPS. boto3 and the aws cli,
left at their defaults, against fds's S3 endpoint with TLS on (a throwaway CA from trustme)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3.s3.transfer
import pytest
from botocore.config import Config

from tests.s3._model import md5_etag
from tests.s3._targets import REGION, S3Target, start_fds
from tests.support.tls import write_pki

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def ca_bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_pki(Path(tmp_path_factory.mktemp("s3-pki")))


@pytest.fixture(scope="module")
def https_target(tmp_path_factory: pytest.TempPathFactory, ca_bundle: dict[str, Path]) -> Iterator[S3Target]:
    # LocalCluster's own client (it makes the first S3 key) trusts the cluster's tls_ca; no $FDS_TLS_CA needed
    clusters = start_fds(tmp_path_factory, "s3-tls", tractservers=3, replicas=1, tls_cert=ca_bundle["cert"],
                         tls_key=ca_bundle["key"], tls_ca=ca_bundle["ca"])
    target, _cluster = next(clusters)
    assert target.endpoint.startswith("https://")
    yield target
    clusters.close()


def test_boto3_defaults_over_https(https_target: S3Target, ca_bundle: dict[str, Path]) -> None:
    s3 = boto3.session.Session().client(
        "s3", endpoint_url=https_target.endpoint, region_name=REGION, verify=str(ca_bundle["ca"]),
        aws_access_key_id=https_target.access_key, aws_secret_access_key=https_target.secret_key,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    sent: list[dict[str, str]] = []

    def capture(request: Any, **_: Any) -> None:
        sent.append({k.lower(): v.decode() if isinstance(v, bytes) else str(v) for k, v in request.headers.items()})

    s3.meta.events.register("before-send.s3.PutObject", capture)
    s3.meta.events.register("before-send.s3.UploadPart", capture)
    s3.create_bucket(Bucket="tls-defaults")
    small, middle = os.urandom(1000), os.urandom(3 * MiB + 5)
    assert s3.put_object(Bucket="tls-defaults", Key="small", Body=small)["ETag"] == md5_etag(small)
    assert s3.put_object(Bucket="tls-defaults", Key="middle", Body=middle)["ETag"] == md5_etag(middle)
    import io

    big = os.urandom(20 * MiB)
    s3.upload_fileobj(io.BytesIO(big), "tls-defaults", "big", Config=boto3.s3.transfer.TransferConfig(
        multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB))
    # what botocore sent: streamed aws-chunked bodies with a checksum trailer, not signed hex payloads
    assert sent and all(h.get("content-encoding") == "aws-chunked" for h in sent), sent
    assert {h["x-amz-content-sha256"] for h in sent} == {"STREAMING-UNSIGNED-PAYLOAD-TRAILER"}
    assert all(h.get("x-amz-trailer", "").startswith("x-amz-checksum-") for h in sent)
    for key, data in (("small", small), ("middle", middle), ("big", big)):
        assert s3.get_object(Bucket="tls-defaults", Key=key)["Body"].read() == data, key


def test_aws_cli_over_https(https_target: S3Target, ca_bundle: dict[str, Path], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"HOME": str(tmp_path), "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_DEFAULT_REGION": REGION,
                "AWS_CA_BUNDLE": str(ca_bundle["ca"]),
                "AWS_SHARED_CREDENTIALS_FILE": str(https_target.credentials_path)})
    beside = Path(sys.executable).parent / "aws"
    aws_path = str(beside) if beside.exists() else shutil.which("aws")
    if aws_path is None:
        pytest.skip("the aws cli is not installed: it comes with the s3test extra (pip install -e '.[s3test]')")
    aws = [aws_path, "--profile", "fds", "--endpoint-url", https_target.endpoint]
    data = os.urandom(20 * MiB + 3)
    (tmp_path / "up.bin").write_bytes(data)

    def run(*args: str) -> str:
        out = subprocess.run([*aws, *args], env=env, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout

    run("s3", "mb", "s3://tls-cli")
    run("s3", "cp", str(tmp_path / "up.bin"), "s3://tls-cli/up.bin")
    run("s3", "cp", "s3://tls-cli/up.bin", str(tmp_path / "down.bin"))
    assert (tmp_path / "down.bin").read_bytes() == data
    assert "up.bin" in run("s3", "ls", "s3://tls-cli")
