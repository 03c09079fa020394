"""What the metaserver adds to its Prometheus metrics: the cluster as its status shows it.

One :class:`_ClusterCollector` takes one :meth:`MetaState.status` per scrape
and turns it into gauges: membership and health, recovery progress, and per
tract server (label ``server``) its heartbeat age, liveness and disk figures
as its heartbeats last said. A dashboard that scrapes only the metaserver
still sees every disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fds.metaserver._state import MetaState
from fds.models import ServerStatus
from fds.web import Metrics

__all__ = ["register_metaserver_metrics"]

_PER_SERVER: tuple[tuple[str, str, str], ...] = (
    ("fds_server_alive", "1 if the tract server's last heartbeat is recent.", "alive"),
    ("fds_server_tracts_stored", "Tracts on the tract server's disk, as of its last heartbeat.", "tracts"),
    ("fds_server_bytes_stored", "Tract bytes on the tract server's disk, as of its last heartbeat.", "bytes_used"),
    ("fds_server_disk_free_bytes", "Bytes the tract server can still store, as of its last heartbeat.",
     "disk_free"),
    ("fds_server_capacity_bytes", "Bytes the tract server may store.", "capacity_bytes"),
    ("fds_server_rows", "Rows of the table the tract server holds (filling ones included).", "rows"),
    ("fds_server_filling_rows", "Rows the tract server is still copying.", "filling_rows"),
)


class _ClusterCollector(Collector):
    def __init__(self, state: MetaState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        status = self.state.status()

        def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, value=value)

        yield gauge("fds_table_version", "Current tract locator table version (0: not built yet).",
                    status.table_version)
        yield gauge("fds_table_rows", "Rows in the tract locator table.", status.rows)
        yield gauge("fds_replicas", "Replication level k.", status.replicas)
        yield gauge("fds_servers_registered", "Tract servers that have registered.", len(status.servers))
        yield gauge("fds_servers_alive", "Tract servers whose last heartbeat is recent.",
                    sum(s.alive for s in status.servers))
        yield gauge("fds_cluster_healthy", "1 when every row has k live holders with every tract.", int(status.healthy))
        yield gauge("fds_outage_silent_servers", "Silent tract servers while repair is held for an outage (more "
                    "silent than k-1); 0 otherwise.", len(status.outage.silent) if status.outage else 0)
        yield gauge("fds_table_pending_seconds", "Seconds a table change has waited to be published (for servers it "
                    "takes out of rows to have it, or their leases to run out); 0 if none waits.",
                    status.publishing.since if status.publishing else 0.0)
        recovery = status.recovery
        if recovery is not None:
            yield gauge("fds_rows_filling", "Rows whose new holders are still copying.", recovery.rows_filling)
            yield gauge("fds_rows_under_replicated", "Rows with fewer than k live holders holding every tract.",
                        recovery.rows_under_replicated)
            yield gauge("fds_recovery_bytes_done", "Bytes copied by the repair under way.", recovery.bytes_done)
            yield gauge("fds_recovery_bytes_total", "Bytes the repair under way has to copy, as listed so far.",
                        recovery.bytes_total)
            yield gauge("fds_recovery_tracts_done", "Tracts copied by the repair under way.", recovery.tracts_done)
            yield gauge("fds_recovery_tracts_total", "Tracts the repair under way has to copy, as listed so far.",
                        recovery.tracts_total)
            yield gauge("fds_recovery_elapsed_seconds", "Seconds since the cluster became unhealthy; 0 when healthy.",
                        time.time() - recovery.started if recovery.started is not None else 0.0)
            if recovery.last_seconds is not None:
                yield gauge("fds_recovery_last_seconds", "How long the last completed repair took.",
                            recovery.last_seconds)
        yield from _per_server(status.servers)


def _per_server(servers: list[ServerStatus]) -> Iterator[Metric]:
    ages = GaugeMetricFamily("fds_heartbeat_age_seconds", "Seconds since each tract server's last heartbeat.",
                             labels=["server"])
    for server in servers:
        if server.heartbeat_age is not None:
            ages.add_metric([server.id], server.heartbeat_age)
    yield ages
    states = GaugeMetricFamily("fds_server_state", "1 for the state each tract server is in (active, dead, "
                               "decommissioning, decommissioned).", labels=["server", "state"])
    for server in servers:
        states.add_metric([server.id, server.state], 1)
    yield states
    for name, documentation, field in _PER_SERVER:
        family = GaugeMetricFamily(name, documentation, labels=["server"])
        for server in servers:
            family.add_metric([server.id], float(getattr(server, field)))
        yield family


def register_metaserver_metrics(metrics: Metrics, state: MetaState) -> None:
    """Add the cluster's figures, read from ``state`` at each scrape, to ``metrics``."""
    metrics.registry.register(_ClusterCollector(state))
