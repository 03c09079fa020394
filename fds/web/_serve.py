"""Running a server process: its credentials and TLS, its socket, uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from fastapi import FastAPI

from fds import logs, tls
from fds.auth import AuthError, configure, load_secret
from fds.buffers import tune_allocator
from fds.config import SecurityConfig

__all__ = ["secure", "serve", "bind_socket", "url_of"]

log = logging.getLogger("fds")


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
    """The URL clients reach ``sock`` at (the host name when it listens on every address)."""
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    return f"{tls.scheme()}://{shown}:{port}"


def serve(app: FastAPI, sock: socket.socket, *, ready_file: str | None = None,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve ``app`` (from :func:`fds.web.create_app`) on ``sock`` until SIGINT/SIGTERM.

    Servers move large bodies, so this tunes the allocator first
    (:func:`fds.tune_allocator`). ``ready_file``, if given, is written
    (atomically) with the server's URL once it accepts connections:
    launchers and tests wait for it; ``on_ready`` is called then too.
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
        if on_ready is not None:
            on_ready()
        await task

    import uvloop

    uvloop.run(main())
