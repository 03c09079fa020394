"""Starting a metaserver process."""

from __future__ import annotations

from fds.config import MetaserverConfig
from fds.metaserver._app import create_app
from fds.metaserver._state import MetaState
from fds.web import bind_socket, secure, serve

__all__ = ["run"]


def run(config: MetaserverConfig, *, ready_file: str | None = None) -> None:
    """Open the state, bind, and serve until SIGTERM."""
    secure(config, "metaserver")
    state = MetaState(config)
    sock = bind_socket(config.host, config.port)
    serve(create_app(state), sock, ready_file=ready_file)
