"""Starting a tract server process."""

from __future__ import annotations

from fds.config import TractServerConfig
from fds.tractserver._app import create_app
from fds.tractserver._node import Node
from fds.web import bind_socket, serve, url_of

__all__ = ["run"]


def run(config: TractServerConfig, *, ready_file: str | None = None) -> None:
    """Bind, open the store, and serve until SIGTERM."""
    sock = bind_socket(config.host, config.port)
    url = config.advertise_url or url_of(sock, config.host)
    node = Node(config, url)
    serve(create_app(node), sock, ready_file=ready_file)
