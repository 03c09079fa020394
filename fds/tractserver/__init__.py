"""The tract server: one process per disk, storing checksummed tracts in files.

Run it with ``fds tractserver``. Its HTTP API is the data path: clients PUT
and GET whole tracts directly, with the table version they used. It also
holds the metadata tract (-1) of the blobs whose row it leads.
"""

from fds.tractserver._app import create_app
from fds.tractserver._main import run
from fds.tractserver._node import Node
from fds.tractserver._store import TractStore

__all__ = ["create_app", "run", "Node", "TractStore"]
