"""The FastAPI app every fds server is built on, and how its answers are made.

:func:`create_app` gives an app whose every request passes the middleware
(request id and log line, metrics, authentication: docs and unknown routes
included), with ``/healthz``, ``/metrics``, and error handlers that turn
every failure into the body of :meth:`fds.errors.FDSError.to_body`: bad
input is a 4xx that says what to fix, and nothing ever answers with a
traceback.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fds import __version__
from fds.errors import BadRequest, FDSError, NotFound
from fds.web._auth import AuthMiddleware
from fds.web._metrics import CONTENT_TYPE_LATEST, Metrics, MetricsMiddleware
from fds.web._requests import RequestIdMiddleware

__all__ = ["create_app", "json_response", "error_response", "MethodNotAllowed"]

log = logging.getLogger("fds")


class MethodNotAllowed(FDSError):
    """405: the route exists, but not for this method."""

    status = 405
    default_code = "method_not_allowed"


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response serialised by orjson (pydantic models included)."""
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump(mode="json")
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def error_response(exc: FDSError, *, status: int | None = None, headers: dict[str, str] | None = None) -> Response:
    """The fds error body of ``exc``, with its status (or ``status``, for an HTTP error without a class)."""
    return Response(exc.to_body(), status_code=status or exc.status, media_type="application/json",
                    headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    """The framework's own refusals (no route, wrong method, ...) in the fds error body."""
    headers = getattr(exc, "headers", None)
    if exc.status_code == 404:
        error: FDSError = NotFound(f"no route {request.method} {request.url.path}; see /docs for the API",
                                   code="no_such_route")
    elif exc.status_code == 405:
        error = MethodNotAllowed(str(exc.detail))
    else:
        error = FDSError(str(exc.detail), code="http_error")
    return error_response(error, status=exc.status_code, headers=headers)


def create_app(title: str, description: str, *, role: str = "fds") -> FastAPI:
    """A FastAPI app wired the fds way: auth on every request, errors as JSON, /healthz, /metrics.

    ``app.state.metrics`` is the process's :class:`fds.web.Metrics`; roles add collectors to it.
    """
    app = FastAPI(title=title, description=description, version=__version__)
    metrics = Metrics(role)
    app.state.metrics = metrics
    app.add_middleware(AuthMiddleware)  # inside the metrics, so refused requests are counted too
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: refused requests are logged with their id too
    app.state.role = role

    @app.exception_handler(FDSError)
    async def _fds_error(request: Request, exc: FDSError) -> Response:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return error_response(BadRequest(_validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def _framework_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _http_error(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(FDSError(f"internal error: {type(exc).__name__}"))  # the base class is the 500

    @app.get("/healthz", tags=["ops"], summary="Liveness: 200 when the server is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/favicon.ico", tags=["ops"], include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask every origin for one, before any login: answer "none" rather than a logged 401.
        return Response(status_code=204)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics of this server.",
             responses={200: {"content": {"text/plain": {}}}})
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app
