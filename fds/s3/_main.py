"""Starting an S3 server process."""

from __future__ import annotations

from fds.config import S3Config
from fds.s3._app import create_app
from fds.s3._serve import serve_s3
from fds.web import bind_socket, secure

__all__ = ["run"]


def run(config: S3Config, *, ready_file: str | None = None) -> None:
    """Bind and serve until SIGTERM, in ``config.workers`` processes sharing the port. The cluster need not be up
    yet: requests get 503 until it is."""
    if config.max_in_flight < 1:
        raise SystemExit(f"fds s3: max_in_flight must be at least 1, not {config.max_in_flight}")
    if config.min_part_size < 1:
        raise SystemExit(f"fds s3: min_part_size must be at least 1, not {config.min_part_size}")
    if config.workers < 1:
        raise SystemExit(f"fds s3: workers must be at least 1, not {config.workers}")
    secure(config, "s3")
    sock = bind_socket(config.host, config.port)
    serve_s3(create_app(config), sock, ready_file=ready_file, workers=config.workers)
