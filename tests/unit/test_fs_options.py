"""How ``fds://`` finds its cluster: options, then FDS_* variables, then the cluster file."""

from __future__ import annotations

from pathlib import Path

import pytest

from fds.fs import ClusterOptions
from fds.fs._options import resolve
from fds.local import ClusterFile


def test_options_win_then_environment_then_cluster_file(tmp_path: Path) -> None:
    ClusterFile(metaserver="http://file:1", secret_file="/abs/secret").write(tmp_path / ".fds")
    env = {"FDS_METASERVER": "http://env:2", "FDS_TOKEN": "tok"}
    assert resolve("http://opt:3", token="t", environ=env, cwd=tmp_path) == ClusterOptions("http://opt:3", token="t")
    assert resolve(environ=env, cwd=tmp_path) == ClusterOptions("http://env:2", token="tok")
    assert resolve(environ={}, cwd=tmp_path) == ClusterOptions("http://file:1", secret_file="/abs/secret")
    assert resolve(environ={"FDS_SECRET_FILE": "rel/s"}, cwd=tmp_path) == ClusterOptions(
        "http://file:1", secret_file=str(tmp_path / "rel/s"))  # made absolute where it was meant


def test_cluster_directory_by_option_or_variable(tmp_path: Path) -> None:
    ClusterFile(metaserver="http://elsewhere:4").write(tmp_path / "c")
    assert resolve(cluster=tmp_path / "c", environ={}, cwd=Path("/")).metaserver == "http://elsewhere:4"
    assert resolve(environ={"FDS_CLUSTER": str(tmp_path / "c")}, cwd=Path("/")).metaserver == "http://elsewhere:4"
    assert ClusterOptions("u", secret_file="s").as_kwargs() == {"metaserver": "u", "secret_file": "s"}


def test_no_cluster_says_how_to_name_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="storage_options=.*metaserver.*fds local up"):
        resolve(environ={}, cwd=tmp_path)
    (tmp_path / ".fds").mkdir()
    (tmp_path / ".fds" / "cluster.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the cluster file"):
        resolve(environ={}, cwd=tmp_path)
