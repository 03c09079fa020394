"""Prometheus metrics: one registry per server process, served at ``/metrics``.

Every server built by :func:`fds.web.create_app` counts its requests, body
bytes and latency by operation (method and route template) and status, and
says which role and version it is (``fds_build_info``). The tract servers'
data port, which bypasses the framework, records into the same families with
operations prefixed ``data``.

Roles add figures of their own (tracts and bytes stored, disk free, checksum
failures, heartbeat ages, recovery progress, ...) as a collector
(``prometheus_client.registry.Collector``) registered on
:attr:`Metrics.registry`, which reads them at scrape time. So the only work
on the hot path is :meth:`Metrics.observe`: a dict lookup and a few
additions.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fds import __version__
from fds.models import Traffic
from fds.web._types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Metrics", "MetricsMiddleware", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _Series:
    """The children of the request families for one (operation, status), looked up once."""

    __slots__ = ("requests", "latency", "bytes_in", "bytes_out")

    def __init__(self, metrics: Metrics, operation: str, status: str) -> None:
        self.requests = metrics.requests.labels(operation, status)
        self.latency = metrics.latency.labels(operation, status)
        self.bytes_in = metrics.body_bytes.labels(operation, status, "in")
        self.bytes_out = metrics.body_bytes.labels(operation, status, "out")


class Metrics:
    """The metrics of one server process."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.registry = CollectorRegistry()
        self.requests = Counter("fds_requests", "Requests handled, by operation and HTTP status.",
                                ["operation", "status"], registry=self.registry)
        self.body_bytes = Counter("fds_body_bytes", "Request (in) and response (out) body bytes, by operation "
                                  "and HTTP status.", ["operation", "status", "direction"], registry=self.registry)
        self.latency = Histogram("fds_request_seconds", "Time from request to response, by operation and HTTP "
                                 "status.", ["operation", "status"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        Gauge("fds_build_info", "Always 1; the labels say which role and version this process is.",
              ["role", "version"], registry=self.registry).labels(role, __version__).set(1)
        self._series: dict[tuple[str, int], _Series] = {}
        self._requests_total = 0
        self._bytes_in_total = 0
        self._bytes_out_total = 0

    def observe(self, operation: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Record one answered request. ``operation`` must come from a small set (route templates)."""
        series = self._series.get((operation, status))
        if series is None:
            series = self._series[(operation, status)] = _Series(self, operation, str(status))
        series.requests.inc()
        series.latency.observe(seconds)
        if bytes_in:
            series.bytes_in.inc(bytes_in)
        if bytes_out:
            series.bytes_out.inc(bytes_out)
        self._requests_total += 1
        self._bytes_in_total += bytes_in
        self._bytes_out_total += bytes_out

    def traffic(self) -> Traffic:
        """Requests and body bytes since start, over every operation: what heartbeats carry."""
        return Traffic(requests=self._requests_total, bytes_in=self._bytes_in_total, bytes_out=self._bytes_out_total)

    def render(self) -> bytes:
        """The text exposition of every metric, collectors read now."""
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
