"""Which cluster an :class:`~fds.fs.FdsFileSystem` talks to, resolved once, so a pickled instance
rebuilds on a worker (another process, another working directory) talking to the same cluster."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ClusterOptions", "resolve"]


@dataclass(frozen=True)
class ClusterOptions:
    """What a worker needs to build its own client: the metaserver URL and credentials."""

    metaserver: str
    token: str | None = None
    secret_file: str | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def resolve(metaserver: str | None = None, *, token: str | None = None, secret_file: str | None = None,
            cluster: str | os.PathLike[str] | None = None,
            environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> ClusterOptions:
    """The cluster, first found: the arguments; ``$FDS_METASERVER``, ``$FDS_TOKEN``,
    ``$FDS_SECRET_FILE``; the cluster file in ``cluster`` (a directory, as ``fds local up`` makes),
    ``$FDS_CLUSTER``, or ``./.fds``. Relative paths are made absolute here, where they were meant."""
    from fds.local import DEFAULT_DIR, ClusterFile

    env = os.environ if environ is None else environ
    here = cwd or Path.cwd()
    directory = Path(cluster or env.get("FDS_CLUSTER", "").strip() or DEFAULT_DIR)
    directory = directory if directory.is_absolute() else here / directory
    stored: ClusterFile | None = None

    def from_file() -> ClusterFile:
        nonlocal stored
        if stored is None:
            stored = ClusterFile.read(directory)
        return stored

    url = metaserver or env.get("FDS_METASERVER", "").strip()
    if not url:
        try:
            url = from_file().metaserver
        except FileNotFoundError:
            raise ValueError(f"fds: no cluster found (no metaserver= option, no FDS_METASERVER, no "
                             f"{ClusterFile.path(directory)}); pass storage_options={{'metaserver': URL}} or "
                             "start a cluster with `fds local up`") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"fds: cannot read the cluster file {ClusterFile.path(directory)}: {exc}") from None
    token = token or env.get("FDS_TOKEN", "").strip() or None
    if token:
        return ClusterOptions(url, token=token)
    secret = secret_file or env.get("FDS_SECRET_FILE", "").strip() or None
    if not secret:
        try:
            secret = from_file().secret_file or None
        except (OSError, ValueError):
            secret = None
    if secret:
        path = Path(secret)
        secret = str(path if path.is_absolute() else here / path)
    return ClusterOptions(url, secret_file=secret)
