"""Starting a tract server process."""

from __future__ import annotations

from fds.config import TractServerConfig
from fds.tractserver._app import create_app
from fds.tractserver._node import Node
from fds.web import bind_socket, secure, serve, url_of

__all__ = ["run"]


def run(config: TractServerConfig, *, ready_file: str | None = None) -> None:
    """Bind, open the store, and serve until SIGTERM."""
    secure(config, "tractserver")
    sock = bind_socket(config.host, config.port)
    url = config.advertise_url or url_of(sock, config.host)
    data_sock = bind_socket(config.host, config.data_port) if config.data_port >= 0 else None
    data_url = config.advertise_data_url or (url_of(data_sock, config.host) if data_sock else "")
    node = Node(config, url, data_url=data_url)
    serve(create_app(node, data_sock=data_sock), sock, ready_file=ready_file)
