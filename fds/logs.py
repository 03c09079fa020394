"""Structured logs: one JSON object per line per event, with the request id that caused it.

A **request id** travels from the client to every server the request
touches: the client sends ``X-Request-Id`` (one id per client operation,
kept across its retries and replicas), each server takes it (or makes one),
echoes it in its answer, logs it with every event the request causes, and
passes it on in its own calls (metadata prepares, recovery copies). So
``grep <id>`` over every server's log shows one operation's whole story.

Each server logs one line per refused or failed request (4xx at INFO, 5xx
at ERROR; :mod:`fds.web` does that) and per event of its own (declared dead,
repair finished, ...); every request with ``FDS_LOG_LEVEL=DEBUG``. ``FDS_LOG_FORMAT=text`` gives
the old human format.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import uuid
from contextvars import ContextVar
from typing import Any

import orjson

__all__ = ["request_id", "new_request_id", "valid_request_id", "JsonFormatter", "setup", "HEADER"]

HEADER = "x-request-id"
request_id: ContextVar[str] = ContextVar("fds_request_id", default="")
"""The id of the request this task is serving (or the client operation it is performing)."""

_VALID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


def valid_request_id(value: str | None) -> str:
    """``value`` if it is a sane id (64 safe characters at most), else a new one: ids end up in logs."""
    return value if value and _VALID.fullmatch(value) else new_request_id()


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "request_id"?, "role", ...extra}`` on one line."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "role": self.role, "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            event["request_id"] = rid
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            event.update(fields)
        if record.exc_info:
            event["error"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


def setup(role: str) -> None:
    """Log to stderr: JSON lines (``FDS_LOG_FORMAT=text`` for plain), at ``FDS_LOG_LEVEL`` (default INFO)."""
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("FDS_LOG_FORMAT", "json").lower() == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("FDS_LOG_LEVEL", "INFO").upper())
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # its start-up chatter; warnings still show
    # httpx logs every request it makes at INFO: a tract server's heartbeats alone would be a line each
    # fraction of a second. fds's own loggers say what matters about those calls.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
