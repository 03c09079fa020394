"""The metadata server: membership, heartbeats and the tract locator table.

It knows the cluster, never the blobs, and is never on the data path:
clients fetch the table once and again only when a tract server tells them
it is stale. Its state (settings, members, table) lives in RocksDB so a
restart changes nothing. Run it with ``fds metaserver``.
"""

from fds.metaserver._app import create_app
from fds.metaserver._main import run
from fds.metaserver._state import MetaState

__all__ = ["create_app", "run", "MetaState"]
