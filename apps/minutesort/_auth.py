"""Credentials (and TLS trust) for the calls a sort's head, its workers and the worker service make.

Every server of the sort (the head, each worker's bins endpoint, the worker
service) is built with :func:`fds.web.create_app`, so it checks every request
the way every fds server does (:mod:`fds.auth`). This module is the one place
fds-minutesort gets credentials: nothing else here builds an
``Authorization`` header or calls :mod:`fds.auth`. The HTTP clients made here
also trust what :mod:`fds.tls` trusts (``$FDS_TLS_CA``), for clusters that
serve HTTPS; the sort's own servers speak plain HTTP.

A head and a one-shot worker use what fds clients find (``$FDS_TOKEN``,
``$FDS_SECRET_FILE``, the ``fds local up`` cluster in ``./.fds``), for their
calls and to check the calls they receive. The worker service is a server:
like the others it needs ``secret_file`` (or ``insecure = 1``), and hands the
same credentials to the sort process it starts per sort.
"""

from __future__ import annotations

import os

import httpx

from fds import tls
from fds.auth import HttpxAuth, client_headers, configure
from fds.config import SecurityConfig
from fds.httpclient import HTTPPool
from fds.web import secure

__all__ = ["auth_headers", "http_client", "bins_pool", "secure_service", "insecure_process"]


def auth_headers() -> dict[str, str]:
    """Headers for one outgoing request (a fresh token when the current one is due for renewal)."""
    return client_headers()


def http_client(timeout: float) -> httpx.AsyncClient:
    """An httpx client for the control plane (head, workers, worker service) that sends this process's
    credentials, renewed as they near expiry."""
    return httpx.AsyncClient(timeout=timeout, auth=HttpxAuth(), verify=tls.client_context())


def bins_pool(timeout: float) -> HTTPPool:
    """The fast client bins travel through (each request takes :func:`auth_headers`)."""
    return HTTPPool(timeout=timeout, ssl_context=tls.client_context())


def secure_service(secret_file: str, insecure: int) -> list[str]:
    """Set the worker service's credentials as every fds server does (exits if there are none).

    Returns the flags that give a sort process the same: the secret goes
    through ``$FDS_SECRET_FILE``, where that process finds it.
    """
    secure(SecurityConfig(secret_file=secret_file, insecure=insecure), "minutesort-worker")
    if secret_file:
        os.environ["FDS_SECRET_FILE"] = secret_file
        return []
    return ["--insecure"]


def insecure_process() -> None:
    """Check no credentials and send none (a sort process of an ``insecure = 1`` worker service)."""
    configure(insecure=True)
