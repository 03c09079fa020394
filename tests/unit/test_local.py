"""fds.local without servers: the cluster file, settings, attaching, and the health rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fds.cli.discover import NoCluster, find_metaserver
from fds.config import DEFAULT_TRACT_SIZE
from fds.local import ChildRecord, ClusterFile, LocalCluster, cluster_healthy

WRITTEN_BY_FDS_LOCAL_UP: dict[str, Any] = {
    "metaserver": "http://127.0.0.1:7000", "gateway": "http://127.0.0.1:7001", "s3": "http://127.0.0.1:7002",
    "settings": {"tractservers": 2, "replicas": 1, "tract_size": 1048576},
    "secret_file": "/somewhere/secret",
    "children": [
        {"role": "metaserver", "name": "metaserver", "url": "http://127.0.0.1:7000", "dir": "/d/metaserver",
         "pid": 11, "log": "/d/logs/metaserver.log"},
        {"role": "tractserver", "name": "ts0", "url": "http://127.0.0.1:7100", "dir": "/d/ts0", "pid": 12,
         "log": "/d/logs/ts0.log"},
        {"role": "tractserver", "name": "ts1", "url": "http://127.0.0.1:7102", "dir": "/d/ts1", "pid": 13,
         "log": "/d/logs/ts1.log"},
        {"role": "gateway", "name": "gateway", "url": "http://127.0.0.1:7001", "dir": "", "pid": 14,
         "log": "/d/logs/gateway.log"},
        {"role": "s3", "name": "s3", "url": "http://127.0.0.1:7002", "dir": "", "pid": 15, "log": "/d/logs/s3.log"},
    ],
}
"""A cluster file in the format ``fds local up`` writes (``s3`` since issue 13; older files lack it)."""


def _write(directory: Path, payload: Any) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cluster.json"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return path


def test_reads_the_format_fds_local_up_writes_and_writes_it_back(tmp_path: Path) -> None:
    _write(tmp_path / "a", WRITTEN_BY_FDS_LOCAL_UP)
    stored = ClusterFile.read(tmp_path / "a")
    assert stored.metaserver == "http://127.0.0.1:7000" and stored.gateway == "http://127.0.0.1:7001"
    assert stored.secret_file == "/somewhere/secret"
    assert stored.settings() == {"tractservers": 2, "replicas": 1, "tract_size": 1048576}
    assert stored.children[1] == ChildRecord("tractserver", "ts0", "http://127.0.0.1:7100", "/d/ts0", 12,
                                             "/d/logs/ts0.log")
    stored.write(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "cluster.json").read_text()) == WRITTEN_BY_FDS_LOCAL_UP
    assert ClusterFile.read(tmp_path / "b") == stored


def test_missing_fields_read_as_empty(tmp_path: Path) -> None:
    _write(tmp_path, {"secret_file": "/s"})
    stored = ClusterFile.read(tmp_path)
    assert (stored.metaserver, stored.gateway, stored.children, stored.secret_file) == ("", "", (), "/s")
    assert stored.settings() is None


@pytest.mark.parametrize(("payload", "says"), [
    ("{not json", "is not JSON"),
    ("[1, 2]", "holds list, not an object"),
    ({"metaserver": 7000}, "'metaserver' must be a string, not 7000"),
    ({"settings": {"replicas": "3"}}, "'replicas' must be an integer, not '3'"),
    ({"settings": {"replicas": True}}, "'replicas' must be an integer"),
    ({"settings": []}, "'settings' must be an object"),
    (b"\xff\xfe{}", "is not JSON"),
    ({"children": [{"name": "ts0", "pid": "12"}]}, "'pid' must be an integer"),
    ({"children": {"ts0": {}}}, "'children' must be a list of objects"),
])
def test_malformed_files_are_refused_saying_what_is_wrong(tmp_path: Path, payload: Any, says: str) -> None:
    path = _write(tmp_path, payload)
    with pytest.raises(ValueError, match=str(path)) as caught:
        ClusterFile.read(tmp_path)
    assert says in str(caught.value)


def test_no_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        ClusterFile.read(tmp_path)


def test_discovery_reads_the_cluster_file(tmp_path: Path) -> None:
    """``fds`` commands find the metaserver in ./.fds/cluster.json, and say what is wrong when they cannot."""
    _write(tmp_path / ".fds", WRITTEN_BY_FDS_LOCAL_UP)
    assert find_metaserver(None, environ={}, cwd=tmp_path) == "http://127.0.0.1:7000"
    assert find_metaserver(None, environ={"FDS_METASERVER": "http://m:1"}, cwd=tmp_path) == "http://m:1"
    _write(tmp_path / ".fds", {"settings": {}})
    with pytest.raises(NoCluster, match="names no metaserver"):
        find_metaserver(None, environ={}, cwd=tmp_path)
    _write(tmp_path / ".fds", "{")
    with pytest.raises(NoCluster, match="cannot read the cluster file .* is not JSON"):
        find_metaserver(None, environ={}, cwd=tmp_path)
    with pytest.raises(NoCluster, match="no cluster found"):
        find_metaserver(None, environ={}, cwd=tmp_path / "elsewhere")


def test_default_settings(tmp_path: Path) -> None:
    assert LocalCluster(tmp_path / "a").settings() == {"tractservers": 4, "replicas": 3,
                                                       "tract_size": DEFAULT_TRACT_SIZE}
    assert LocalCluster(tmp_path / "b", tractservers=2).settings()["replicas"] == 1  # k=3 needs 3 servers
    assert LocalCluster(tmp_path / "c", tractservers=1, tract_size=4096).settings() == {
        "tractservers": 1, "replicas": 1, "tract_size": 4096}


@pytest.mark.parametrize(("options", "says"), [
    ({"tractservers": 0}, "--tractservers must be at least 1, not 0"),
    ({"tractservers": 2, "replicas": 3}, "3 replicas need at least 3 tract servers, not 2"),
])
def test_settings_that_cannot_work_are_value_errors(tmp_path: Path, options: dict[str, Any], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        LocalCluster(tmp_path, **options)


def test_stored_settings_win_with_a_warning(tmp_path: Path) -> None:
    _write(tmp_path, WRITTEN_BY_FDS_LOCAL_UP)
    cluster = LocalCluster(tmp_path, tractservers=0, replicas=1)  # 0 would be refused on a new cluster
    assert cluster.settings() == {"tractservers": 2, "replicas": 1, "tract_size": 1048576}
    assert cluster.warnings == [f"--tractservers 0 ignored: the cluster in {tmp_path.resolve()} was created with 2, "
                                "and stored settings win"]


def test_open_attaches_without_owning_the_processes(tmp_path: Path) -> None:
    reaped = subprocess.Popen([sys.executable, "-c", "pass"])
    reaped.wait()
    children = [dict(c, pid=os.getpid() if c["name"] == "ts0" else reaped.pid)
                for c in WRITTEN_BY_FDS_LOCAL_UP["children"]]
    _write(tmp_path, {**WRITTEN_BY_FDS_LOCAL_UP, "secret_file": "", "children": children})
    cluster = LocalCluster.open(tmp_path)
    assert cluster.attached and cluster.insecure and cluster.headers() == {}
    assert cluster.metaserver_url == "http://127.0.0.1:7000" and cluster.gateway_url == "http://127.0.0.1:7001"
    assert [c.name for c in cluster.tract_children] == ["ts0", "ts1"]
    assert cluster.child("ts0").pid == os.getpid() and cluster.child("ts0").alive()
    assert not cluster.child("ts1").alive()
    for refused in (cluster.start, cluster.stop, lambda: cluster.kill("ts0"), lambda: cluster.restart("ts0"),
                    cluster.add_tractserver):
        with pytest.raises(RuntimeError, match="belong to the process that started them"):
            refused()


def test_open_refuses_a_cluster_that_never_started(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        LocalCluster.open(tmp_path)
    _write(tmp_path, {"settings": {"tractservers": 1, "replicas": 1, "tract_size": 4096}})
    with pytest.raises(ValueError, match="names no metaserver"):
        LocalCluster.open(tmp_path)


def _status(**changes: Any) -> dict[str, Any]:
    servers = [{"state": "active", "alive": True, "table_version": 5} for _ in range(3)]
    return {"state": "ready", "healthy": True, "table_version": 5, "servers": servers, **changes}


def test_cluster_healthy() -> None:
    assert cluster_healthy(_status(), 3)
    assert not cluster_healthy(_status(), 4)  # not every tract server has registered
    assert not cluster_healthy(_status(healthy=False))
    assert not cluster_healthy(_status(state="waiting"))
    behind = _status()
    behind["servers"][1]["table_version"] = 4
    assert not cluster_healthy(behind)
    gone = _status()
    gone["servers"][0].update(state="dead", alive=False, table_version=1)
    gone["servers"][1].update(state="decommissioned", alive=False, table_version=2)
    assert cluster_healthy(gone, 3)  # dead and decommissioned members need not keep up
    gone["servers"][2]["alive"] = False
    assert not cluster_healthy(gone)

