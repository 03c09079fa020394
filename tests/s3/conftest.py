"""Fixtures of the S3 tests: moto's model of S3 and fds's S3 endpoint, each started once per run.

``target`` parametrises a test over both, so one test body checks fds against what moto, a
model of S3, answers; ``fds_target`` is fds alone (authentication, what moto does not check).
The fds cluster is k=3 with 1 MiB tracts, so 5 and 20 MiB objects span several tracts and rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError

from fds.local import LocalCluster
from tests.s3._targets import S3Target, new_bucket_name, start_fds, start_moto

TARGETS = ("moto", "fds")


@pytest.fixture(scope="session")
def moto_target() -> Iterator[S3Target]:
    """moto's S3 in server mode, in a child process on an ephemeral port."""
    pytest.importorskip("moto.server", reason="moto comes with the s3test extra: pip install -e '.[s3test]'")
    yield from start_moto()


@pytest.fixture(scope="session")
def fds_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[S3Target, LocalCluster]]:
    """A k=3 local cluster of 4 tract servers with its S3 server, and a target for that server."""
    yield from start_fds(tmp_path_factory, "s3", replicas=3)


@pytest.fixture(scope="session")
def fds_target(fds_s3: tuple[S3Target, LocalCluster]) -> S3Target:
    return fds_s3[0]


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> S3Target:
    """Each S3 endpoint in turn: moto's, then fds's (module-scoped, so pytest runs a module's tests per target)."""
    return request.getfixturevalue(f"{request.param}_target")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def s3(target: S3Target) -> Any:
    """A boto3 client of ``target``."""
    return target.client()


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A fresh, empty bucket on ``target``, emptied and deleted after the test."""
    name = new_bucket_name()
    s3.create_bucket(Bucket=name)
    yield name
    empty_and_delete(s3, name)


def empty_and_delete(s3: Any, name: str) -> None:
    """Abort the uploads and delete the objects of bucket ``name``, then the bucket (gone already is fine)."""
    try:
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
        s3.delete_bucket(Bucket=name)
    except ClientError as error:
        if error.response["Error"]["Code"] != "NoSuchBucket":
            raise
