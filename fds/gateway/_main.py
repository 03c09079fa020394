"""Starting a gateway process."""

from __future__ import annotations

from fds.config import GatewayConfig
from fds.gateway._app import create_app
from fds.web import bind_socket, secure, serve

__all__ = ["run"]


def run(config: GatewayConfig, *, ready_file: str | None = None) -> None:
    """Bind and serve until SIGTERM. The cluster need not be up yet: requests get 503 until it is."""
    if config.max_in_flight < 1:
        raise SystemExit(f"fds gateway: max_in_flight must be at least 1, not {config.max_in_flight}")
    secure(config, "gateway")
    sock = bind_socket(config.host, config.port)
    serve(create_app(config), sock, ready_file=ready_file)
