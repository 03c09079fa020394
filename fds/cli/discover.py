"""Finding the cluster: the one rule every fds command (and fds-minutesort) follows.

The metaserver URL comes from ``--metaserver``, else ``$FDS_METASERVER``, else
``./.fds/cluster.json`` as written by ``fds local up``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from fds.cli._local import CLUSTER_FILE as _FILE_NAME

__all__ = ["NoCluster", "find_metaserver", "CLUSTER_FILE"]

CLUSTER_FILE = Path(".fds") / _FILE_NAME
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
    path = (cwd or Path.cwd()) / CLUSTER_FILE
    hint = "start one here with `fds local up`, or pass --metaserver URL (or set FDS_METASERVER)"
    try:
        url = json.loads(path.read_text()).get("metaserver")
    except FileNotFoundError:
        raise NoCluster(f"no cluster found (no --metaserver, no FDS_METASERVER, no {CLUSTER_FILE}); {hint}") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise NoCluster(f"cannot read the cluster file {path}: {exc}; {hint}") from None
    if not isinstance(url, str) or not url:
        raise NoCluster(f"the cluster file {path} names no metaserver; {hint}")
    return url


