"""fds: Flat Datacenter Storage.

The shared pieces live here, importing none of the roles:

- :mod:`fds.guid`: blob GUIDs.
- :mod:`fds.placement`: the one placement function, ``row = (xxh3_64(GUID) + tract) mod len(TLT)``.
- :mod:`fds.tlt`: building the tract locator table, and the table clients and servers use.
- :mod:`fds.models`: the wire models every role speaks.
- :mod:`fds.versions`: tract versions and the writers' hybrid logical clock (last writer wins).
- :mod:`fds.errors`: the exception tree and its one mapping to HTTP statuses.
- :mod:`fds.config`: typed configuration (TOML file plus environment).
- :mod:`fds.auth`: tokens, secrets and credentials, and the one check every request passes.
- :mod:`fds.logs`: request ids and JSON log lines.
- :mod:`fds.tls`: the process's TLS contexts.
- :mod:`fds.durable`: the one helper for writing a file that survives a crash.
- :mod:`fds.buffers`: large and O_DIRECT-aligned buffers, and :func:`tune_allocator`.
- :mod:`fds.http1`: the one HTTP/1.1 head parser, for the data-path client and the data port.
- :mod:`fds.httpclient`: the data-path HTTP client.
- :mod:`fds.progress`: progress bars for commands (bytes with a rate, counts).
- :mod:`fds.local`: local clusters of real processes (``fds local up``, tests, benchmarks).
- :mod:`fds.web`: the FastAPI/uvicorn plumbing every server shares (app factory, middleware for
  auth, request ids and metrics, error handlers, serving). Only servers import it.

The roles are :mod:`fds.metaserver`, :mod:`fds.tractserver`, :mod:`fds.gateway`
and the client library :mod:`fds.client`. :mod:`fds.local` runs a whole cluster on one
machine as child processes (``fds local up``, the tests and the benchmarks use it), and
:mod:`fds.cli` is the ``fds`` command.
"""

__version__ = "0.1.0"

from fds.buffers import tune_allocator  # noqa: E402  (after __version__, which modules import from here)

__all__ = ["__version__", "tune_allocator"]
