"""Finding the cluster: the one rule every fds command (and fds-minutesort) follows.

The metaserver URL comes from ``--metaserver``, else ``$FDS_METASERVER``, else
``./.fds/cluster.json`` as written by ``fds local up``.
"""

from __future__ import annotations

import os
from pathlib import Path

from fds.local import DEFAULT_DIR, ClusterFile

__all__ = ["NoCluster", "find_metaserver", "CLUSTER_FILE"]

CLUSTER_FILE = ClusterFile.path(DEFAULT_DIR)
"""Where ``fds local up`` leaves the cluster file, relative to the working directory."""


class NoCluster(Exception):
    """No metaserver URL was given and none could be discovered."""


def find_metaserver(flag: str | None, *, environ: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """The metaserver URL: the flag, else ``$FDS_METASERVER``, else ``./.fds/cluster.json``."""
    if flag:
        return flag
    env = (os.environ if environ is None else environ).get("FDS_METASERVER", "").strip()
    if env:
        return env
    directory = (cwd or Path.cwd()) / DEFAULT_DIR
    path = ClusterFile.path(directory)
    hint = "start one here with `fds local up`, or pass --metaserver URL (or set FDS_METASERVER)"
    try:
        url = ClusterFile.read(directory).metaserver
    except FileNotFoundError:
        raise NoCluster(f"no cluster found (no --metaserver, no FDS_METASERVER, no {CLUSTER_FILE}); {hint}") from None
    except (OSError, ValueError) as exc:
        raise NoCluster(f"cannot read the cluster file {path}: {exc}; {hint}") from None
    if not url:
        raise NoCluster(f"the cluster file {path} names no metaserver; {hint}")
    return url
