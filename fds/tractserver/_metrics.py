"""What a tract server adds to its Prometheus metrics: its disk, its checksums, its copying, its heartbeat.

Everything is read from the node when Prometheus scrapes (one
:class:`_TractServerCollector`), so the data path pays nothing for it.
Per-disk figures carry ``server`` (the server id) and ``disk`` (its data
directory) labels: one tract server is one disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fds.tractserver._node import Node
from fds.web import Metrics

__all__ = ["register_tractserver_metrics"]


class _TractServerCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        store = node.store
        labels = ["server", "disk"]
        which = [node.id, str(node.dir)]

        def per_disk(name: str, documentation: str, value: float) -> GaugeMetricFamily:
            family = GaugeMetricFamily(name, documentation, labels=labels)
            family.add_metric(which, value)
            return family

        yield per_disk("fds_tracts_stored", "Tracts stored on this server's disk.", store.tracts)
        yield per_disk("fds_bytes_stored", "Tract bytes stored on this server's disk.", store.bytes_used)
        yield per_disk("fds_capacity_bytes", "Bytes this server may store.", store.capacity_bytes)
        yield per_disk("fds_disk_free_bytes", "Bytes this server can still store (the smaller of its capacity "
                       "left and the file system's free space).", store.disk_free())
        failures = CounterMetricFamily("fds_checksum_failures", "Tract copies found failing their checksum, by reads "
                                       "(which refuse them) and by the scrubber.", labels=labels)
        failures.add_metric(which, store.checksum_failures)
        yield failures
        info = GaugeMetricFamily("fds_server_info", "Always 1; the labels name this tract server.",
                                 labels=["server", "disk", "domain", "url"])
        info.add_metric([node.id, str(node.dir), node.domain, node.url], 1)
        yield info
        yield GaugeMetricFamily("fds_table_version", "The table version this server uses.",
                                value=node.table.version if node.table else 0)
        fill = node.fill_progress
        yield GaugeMetricFamily("fds_fill_rows", "Rows this server is still copying from row-mates "
                                "(recovery or a hand-over).", value=fill.rows)
        yield GaugeMetricFamily("fds_fill_bytes_done", "Bytes copied by this server's current or last fill.",
                                value=fill.bytes_done)
        yield GaugeMetricFamily("fds_fill_bytes_total", "Bytes its current or last fill has to copy, as listed "
                                "so far.", value=fill.bytes_total)
        yield GaugeMetricFamily("fds_fill_tracts_done", "Tracts copied by this server's current or last fill.",
                                value=fill.tracts_done)
        yield GaugeMetricFamily("fds_fill_tracts_total", "Tracts its current or last fill has to copy.",
                                value=fill.tracts_total)
        copied = CounterMetricFamily("fds_copied_tracts", "Tracts copied here from row-mates since start "
                                     "(filling rows, scrub repairs).", labels=labels)
        copied.add_metric(which, node.copied_tracts)
        yield copied
        copied = CounterMetricFamily("fds_copied_bytes", "Bytes copied here from row-mates since start.",
                                     labels=labels)
        copied.add_metric(which, node.copied_bytes)
        yield copied
        if node.heartbeat_acked is not None:
            yield GaugeMetricFamily("fds_heartbeat_sent_age_seconds", "Seconds since the metaserver last "
                                    "accepted this server's heartbeat (absent before the first).",
                                    value=time.monotonic() - node.heartbeat_acked)


def register_tractserver_metrics(metrics: Metrics, node: Node) -> None:
    """Add the tract server's figures to ``metrics``, and have heartbeats carry its request counts."""
    metrics.registry.register(_TractServerCollector(node))
    node.traffic = metrics.traffic
