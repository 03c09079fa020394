"""Prometheus metrics: one registry per server process, served at ``/metrics``.

Every server built by :func:`fds.web.create_app` counts its requests, body
bytes and latency by operation (method and route template) and status. Roles
add gauges of their own (tracts and bytes stored, disk free, checksum
failures, heartbeat ages, ...) with :meth:`Metrics.gauge`, whose values are
read at scrape time, so nothing is updated on the hot path but the request
counters.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

__all__ = ["Metrics", "MetricsMiddleware", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Metrics:
    """The metrics of one server process."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry()
        self.requests = Counter("fds_requests", "Requests handled, by operation and HTTP status.",
                                ["operation", "status"], registry=self.registry)
        self.body_bytes = Counter("fds_body_bytes", "Request and response body bytes, by operation.",
                                  ["operation", "direction"], registry=self.registry)
        self.latency = Histogram("fds_request_seconds", "Time from request to response, by operation.",
                                 ["operation"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self._refreshers: list[Callable[[], None]] = []

    def observe(self, operation: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        self.requests.labels(operation, str(status)).inc()
        self.latency.labels(operation).observe(seconds)
        if bytes_in:
            self.body_bytes.labels(operation, "in").inc(bytes_in)
        if bytes_out:
            self.body_bytes.labels(operation, "out").inc(bytes_out)

    def gauge(self, name: str, documentation: str, read: Callable[[], float]) -> None:
        """A gauge whose value is read when Prometheus scrapes."""
        Gauge(name, documentation, registry=self.registry).set_function(read)

    def labelled_gauge(self, name: str, documentation: str, label: str,
                       read: Callable[[], dict[str, float]]) -> None:
        """A gauge with one label, all of whose values are read when Prometheus scrapes."""
        gauge = Gauge(name, documentation, [label], registry=self.registry)

        def refresh() -> None:
            gauge.clear()
            for key, value in read().items():
                gauge.labels(key).set(value)

        self._refreshers.append(refresh)

    def render(self) -> bytes:
        for refresh in self._refreshers:
            refresh()
        return generate_latest(self.registry)


class MetricsMiddleware:
    """ASGI middleware that records every HTTP request in :class:`Metrics`."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        bytes_in = 0
        bytes_out = 0

        async def counting_receive() -> Message:
            nonlocal bytes_in
            message = await receive()
            bytes_in += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, bytes_out
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                bytes_out += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(f"{scope['method']} {path}", status, time.perf_counter() - start, bytes_in, bytes_out)
