"""The REST gateway: whole blobs over plain HTTP, for clients without the fds library.

Run it with ``fds gateway --metaserver URL``. It is stateless (one
:class:`fds.client.Client` per process), so any number can front one
cluster. ``PUT /v1/blobs/{guid}`` uploads a blob, ``GET`` downloads it
(with ``Range``), ``HEAD`` describes it, ``DELETE`` removes it, and
``POST /v1/blobs`` creates an empty one; ``/docs`` has the details.
"""

from fds.gateway._app import create_app
from fds.gateway._main import run

__all__ = ["create_app", "run"]
