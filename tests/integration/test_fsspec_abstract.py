"""fsspec's own abstract test suite (copy, get, put, pipe, open) against ``fds://`` on a real
cluster, derived as s3fs and gcsfs derive it."""

from __future__ import annotations

from collections.abc import Iterator

import fsspec.tests.abstract as abstract
import pytest

from fds.fs import FdsFileSystem
from fds.local import LocalCluster
from tests.support.clusters import shared_cluster
from tests.support.credentials import SECRET_FILE

BUCKET = "abstract"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from shared_cluster(tmp_path_factory, "fsspec-abstract", tractservers=2)


class FdsFixtures(abstract.AbstractFixtures):  # type: ignore[misc]
    @pytest.fixture
    def fs(self, cluster: LocalCluster) -> FdsFileSystem:
        FdsFileSystem.clear_instance_cache()
        fs = FdsFileSystem(cluster.metaserver_url, secret_file=str(SECRET_FILE))
        fs.makedirs(BUCKET, exist_ok=True)
        return fs

    @pytest.fixture
    def fs_path(self) -> str:
        return BUCKET

    @pytest.fixture
    def supports_empty_directories(self) -> bool:
        return False  # directories are key prefixes, as in S3


class TestFdsCopy(abstract.AbstractCopyTests, FdsFixtures):  # type: ignore[misc]
    pass


class TestFdsGet(abstract.AbstractGetTests, FdsFixtures):  # type: ignore[misc]
    pass


class TestFdsPut(abstract.AbstractPutTests, FdsFixtures):  # type: ignore[misc]
    pass


class TestFdsPipe(abstract.AbstractPipeTests, FdsFixtures):  # type: ignore[misc]
    pass


class TestFdsOpen(abstract.AbstractOpenTests, FdsFixtures):  # type: ignore[misc]
    pass
