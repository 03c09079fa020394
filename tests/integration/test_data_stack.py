"""The Python data stack on ``fds://`` against a real cluster: pandas, pyarrow datasets, dask on a
``distributed`` cluster of worker processes, and ray. Small frames: these check that each tool
reads and writes through fds correctly, not how fast (benchmarks/names.py does that)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fds.fs import FdsFileSystem
from fds.local import LocalCluster
from tests.support.clusters import shared_cluster
from tests.support.credentials import SECRET_FILE

pd = pytest.importorskip("pandas", reason="the data extra is not installed: pip install -e '.[data]'")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
ds = pytest.importorskip("pyarrow.dataset")

BUCKET = "stack"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from shared_cluster(tmp_path_factory, "data-stack", replicas=2)


@pytest.fixture(scope="module")
def options(cluster: LocalCluster) -> dict[str, Any]:
    """storage_options, as a user passes them to pandas or dask."""
    return {"metaserver": cluster.metaserver_url, "secret_file": str(SECRET_FILE)}


@pytest.fixture(scope="module")
def fs(options: dict[str, Any]) -> FdsFileSystem:
    fs = FdsFileSystem(**options)
    fs.makedirs(BUCKET, exist_ok=True)
    return fs


@pytest.fixture(scope="module")
def frame() -> Any:
    n = 20_000
    return pd.DataFrame({"day": [f"2024-05-0{i % 3 + 1}" for i in range(n)], "shop": [i % 7 for i in range(n)],
                         "amount": [float(i % 101) for i in range(n)]})


@pytest.fixture(scope="module")
def parquet(fs: FdsFileSystem, frame: Any, options: dict[str, Any]) -> str:
    url = f"fds://{BUCKET}/sales.parquet"
    frame.to_parquet(url, storage_options=options, row_group_size=5_000)
    return url


def test_pandas_parquet_and_csv(parquet: str, frame: Any, fs: FdsFileSystem, options: dict[str, Any]) -> None:
    assert fs.info(parquet)["size"] > 0
    pd.testing.assert_frame_equal(pd.read_parquet(parquet, storage_options=options), frame)
    some = pd.read_parquet(parquet, columns=["amount"], storage_options=options)
    assert list(some.columns) == ["amount"] and some["amount"].sum() == frame["amount"].sum()
    frame.to_csv(f"fds://{BUCKET}/sales.csv", index=False, storage_options=options)
    pd.testing.assert_frame_equal(pd.read_csv(f"fds://{BUCKET}/sales.csv", storage_options=options), frame)


def test_pyarrow_partitioned_dataset(fs: FdsFileSystem, frame: Any) -> None:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_to_dataset(table, f"{BUCKET}/by_day", partition_cols=["day"], filesystem=fs)
    assert sorted(fs.ls(f"{BUCKET}/by_day", detail=False)) == [f"{BUCKET}/by_day/day=2024-05-0{d}" for d in (1, 2, 3)]
    data = ds.dataset(f"{BUCKET}/by_day", filesystem=fs, format="parquet", partitioning="hive")
    got = data.to_table().to_pandas()
    assert len(got) == len(frame)
    assert got.groupby("day")["amount"].sum().to_dict() == frame.groupby("day")["amount"].sum().to_dict()
    one = data.to_table(filter=ds.field("day") == "2024-05-02", columns=["shop", "amount"])
    assert one.num_rows == (frame["day"] == "2024-05-02").sum()


@pytest.mark.slow
def test_dask_on_distributed_worker_processes(parquet: str, frame: Any, options: dict[str, Any]) -> None:
    dd = pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as workers, distributed.Client(workers) as client:
        df = dd.read_parquet(parquet, storage_options=options)
        assert df.npartitions >= 1
        sums = df.groupby("shop")["amount"].sum().compute()
        pids = set(client.run(lambda: __import__("os").getpid()).values())
        assert len(pids) == 2  # the work ran in worker processes, each rebuilding the filesystem from its pickle
        out = f"fds://{BUCKET}/dask-out"
        df[df["shop"] == 3].to_parquet(out, storage_options=options)
    assert sums.sort_index().to_dict() == frame.groupby("shop")["amount"].sum().to_dict()
    back = pd.read_parquet(out, storage_options=options)
    assert len(back) == (frame["shop"] == 3).sum()


@pytest.mark.slow
def test_ray_data_read_parquet(request: pytest.FixtureRequest, fs: FdsFileSystem, parquet: str, frame: Any) -> None:
    if not request.config.getoption("--ray"):
        pytest.skip("ray starts a cluster of its own (tens of seconds, GBs of shared memory): run with --ray")
    ray = pytest.importorskip("ray", reason="install the ray extra: pip install -e '.[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 << 20)
    try:
        dataset = ray.data.read_parquet(parquet.removeprefix("fds://"), filesystem=fs)
        got = dataset.to_pandas()
    finally:
        ray.shutdown()
    assert len(got) == len(frame) and got["amount"].sum() == frame["amount"].sum()
