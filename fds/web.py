"""The HTTP plumbing every fds server shares: app factory, errors, serving.

- :func:`create_app` gives a FastAPI app whose every request passes
  :class:`fds.auth.AuthMiddleware` (docs and unknown routes included),
  ``/healthz``, and error handlers that turn every failure into the
  ``{"error": {"code", "message"}}`` body of :mod:`fds.errors`: bad input is
  a 4xx that says what to fix, and nothing ever answers with a traceback.
- :func:`serve` runs an app under uvicorn (uvloop + httptools) on a socket it
  binds itself, so port 0 works and the caller learns the real URL first.
- :func:`tune_allocator` fixes glibc's malloc thresholds so 8 MiB bodies do
  not pay for page faults on every request (see docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import socket
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fds import __version__, logs, tls
from fds.auth import AuthError, AuthMiddleware, configure, load_secret
from fds.config import SecurityConfig
from fds.errors import BadRequest, FDSError
from fds.logs import RequestIdMiddleware
from fds.metrics import CONTENT_TYPE_LATEST, Metrics, MetricsMiddleware

__all__ = ["create_app", "secure", "serve", "bind_socket", "url_of", "json_response", "tune_allocator",
           "error_response"]

log = logging.getLogger("fds")


def tune_allocator() -> None:
    """Keep glibc from returning and re-faulting memory for every large body.

    Until a large mmapped block has been freed once, glibc's mmap and trim
    thresholds stay low, and each 8 MiB body costs thousands of page faults.
    Fixing the thresholds (mmap at 32 MiB, trim at 256 MiB) doubled a bare
    server's PUT rate and a client's GET rate here. A no-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 256 * 1024 * 1024)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 32 * 1024 * 1024)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response serialised by orjson (pydantic models included)."""
    if hasattr(payload, "model_dump"):
        payload = payload.model_dump(mode="json")
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def error_response(exc: FDSError) -> Response:
    return Response(exc.to_body(), status_code=exc.status, media_type="application/json")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(title: str, description: str, *, role: str = "fds") -> FastAPI:
    """A FastAPI app wired the fds way: auth on every request, errors as JSON, /healthz, /metrics.

    ``app.state.metrics`` is the process's :class:`fds.metrics.Metrics`; roles add gauges to it.
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
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "no_such_route", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        body = orjson.dumps({"error": {"code": code, "message": message}})
        return Response(body, status_code=exc.status_code, media_type="application/json",
                        headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        body = orjson.dumps({"error": {"code": "internal", "message": f"internal error: {type(exc).__name__}"}})
        return Response(body, status_code=500, media_type="application/json")

    @app.get("/healthz", tags=["ops"], summary="Liveness: 200 when the server is up.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics of this server.",
             responses={200: {"content": {"text/plain": {}}}})
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return app


def secure(config: SecurityConfig, role: str) -> None:
    """Set this server process's credentials and TLS from its config, or exit saying what is missing.

    Secure by default: a server without ``secret_file`` refuses to start
    unless its config says ``insecure = 1``. TLS is on when ``tls_cert`` and
    ``tls_key`` are set (:mod:`fds.tls`).
    """
    try:
        tls.configure(cert=config.tls_cert, key=config.tls_key, ca=config.tls_ca)
    except tls.TLSError as exc:
        raise SystemExit(f"fds {role}: {exc}") from None
    if config.secret_file:
        try:
            configure(secret=load_secret(config.secret_file), scope="cluster")
        except AuthError as exc:
            raise SystemExit(f"fds {role}: {exc}") from None
    elif config.insecure:
        log.warning("fds %s: insecure = 1: every request is admitted without credentials", role)
        configure(insecure=True)
    else:
        raise SystemExit(f"fds {role}: no cluster secret: set secret_file in the config (or --secret-file); "
                         "make one with `fds secret new FILE`, or set insecure = 1 to run without "
                         "authentication on a trusted network")


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind a listening TCP socket; ``port`` 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"fds: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket, host: str) -> str:
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    return f"{tls.scheme()}://{shown}:{port}"


def serve(app: FastAPI, sock: socket.socket, *, ready_file: str | None = None) -> None:
    """Serve ``app`` on ``sock`` until SIGINT/SIGTERM.

    ``ready_file``, if given, is written (atomically) with the server's URL
    once it accepts connections: launchers and tests wait for it.
    """
    import uvicorn

    tune_allocator()
    logs.setup(getattr(app.state, "role", "fds"))
    files = tls.server_files()
    config = uvicorn.Config(app, loop="uvloop", http="httptools", lifespan="on", access_log=False,
                            log_level="warning", log_config=None, timeout_keep_alive=75, timeout_graceful_shutdown=5,
                            ssl_certfile=files[0] if files else None, ssl_keyfile=files[1] if files else None)
    server = uvicorn.Server(config)

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                await task
                return
            await asyncio.sleep(0.01)
        if ready_file:
            from fds.durable import write_durably

            write_durably(ready_file, url_of(sock, sock.getsockname()[0]).encode())
        await task

    import uvloop

    uvloop.run(main())
