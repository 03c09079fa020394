"""fds: Flat Datacenter Storage.

The shared pieces live here, importing none of the roles:

- :mod:`fds.guid`: blob GUIDs.
- :mod:`fds.placement`: the one placement function, ``row = (xxh3_64(GUID) + tract) mod len(TLT)``.
- :mod:`fds.tlt`: building the tract locator table, and the table clients and servers use.
- :mod:`fds.models`: the wire models every role speaks.
- :mod:`fds.versions`: tract versions and the writers' hybrid logical clock (last writer wins).
- :mod:`fds.errors`: the exception tree and its one mapping to HTTP statuses.
- :mod:`fds.config`: typed configuration (TOML file plus environment).
- :mod:`fds.auth`: the one request-authentication dependency.
- :mod:`fds.durable`: the one helper for writing a file that survives a crash.
- :mod:`fds.web`: the FastAPI/uvicorn plumbing every server shares.

The roles are :mod:`fds.metaserver`, :mod:`fds.tractserver`, :mod:`fds.gateway`
and the client library :mod:`fds.client`.
"""

__version__ = "0.1.0"
