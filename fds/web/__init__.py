"""The HTTP plumbing every fds server shares; it imports none of the roles.

- :func:`create_app`: a FastAPI app wired the fds way: request ids and a
  log line per request (:class:`RequestIdMiddleware`), metrics
  (:class:`Metrics`, :class:`MetricsMiddleware`), authentication before
  routing (:class:`AuthMiddleware`), ``/healthz``, ``/metrics``, and every
  error answered with the body of :meth:`fds.errors.FDSError.to_body`.
- :func:`serve`, :func:`bind_socket`, :func:`url_of`, :func:`secure`:
  running a server process: uvicorn (uvloop + httptools) on a socket bound
  first, so port 0 works and the caller learns the real URL; credentials and
  TLS from the config.
- :func:`json_response`, :func:`error_response`, :func:`log_request`: for
  handlers, and for the tract servers' data port, which answers without the
  framework but the same way.

The middleware is written against the ASGI types named once in
``fds/web/_types.py`` (its ``Scope`` is an ASGI connection scope, not a
token's :data:`fds.auth.Scope`).

What a *client* needs (tokens, request ids, TLS) lives in :mod:`fds.auth`,
:mod:`fds.logs` and :mod:`fds.tls`, none of which imports this package: a
client process never loads FastAPI, Starlette, uvicorn or prometheus-client.
"""

from fds.web._app import MethodNotAllowed, create_app, error_response, json_response
from fds.web._auth import AuthMiddleware
from fds.web._metrics import CONTENT_TYPE_LATEST, Metrics, MetricsMiddleware
from fds.web._requests import RequestIdMiddleware, log_request
from fds.web._serve import bind_socket, secure, serve, url_of

__all__ = [
    "create_app",
    "json_response",
    "error_response",
    "MethodNotAllowed",
    "AuthMiddleware",
    "RequestIdMiddleware",
    "log_request",
    "Metrics",
    "MetricsMiddleware",
    "CONTENT_TYPE_LATEST",
    "secure",
    "serve",
    "bind_socket",
    "url_of",
]
