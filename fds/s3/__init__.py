"""The S3-compatible endpoint: S3's API (path-style, SigV4) over fds's buckets and keys.

Run it with ``fds s3 --metaserver URL``. Like the gateway it is stateless (one
:class:`fds.client.Client` per process; access keys and multipart uploads are
records in the cluster), so any number can serve one cluster. Object bytes
never pass through a metaserver: PUT streams the body into tracts written
straight to their replicas, GET streams tracts from them. Access keys:
``fds s3 key create`` (:mod:`fds.s3keys`). What is supported: docs/s3.md.
"""

from fds.s3._app import create_app
from fds.s3._main import run

__all__ = ["create_app", "run"]
