"""Leases: when the metaserver may be sure a tract server has stopped serving.

Each heartbeat the metaserver acknowledges grants its sender a lease: the
server may serve reads and take writes until ``lease_seconds`` after it
*sent* that heartbeat (the server's own clock; it stops on its own after
that, 503 ``lease_expired``). The metaserver only knows when it *received*
the heartbeat, which is later than the send, so ``received + lease`` is
past the server's own end of the lease, up to the rate at which the two
clocks drift apart: :data:`DRIFT` of the lease, plus :data:`MARGIN`.

The publish barrier (``MetaState``) uses :meth:`Leases.over`: a table that
takes a server out of a row's write set is published only once that server
has acknowledged the table (it was pushed to it) or its lease is surely
over. After a metaserver restart no grants are known, but none can be
later than the restart, so every lease is surely over a lease after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Leases", "DRIFT", "MARGIN"]

DRIFT = 0.01
"""How much faster one host's monotonic clock may run than another's, as a fraction (real ones: ~1e-5)."""

MARGIN = 0.25
"""Seconds added to every lease's end as the metaserver reckons it (scheduling delays on the server's side)."""


@dataclass
class Leases:
    seconds: float
    """The lease granted; 0 or less: none (servers serve regardless, and nothing waits for a lease)."""
    started: float
    """The metaserver's clock when it started: no lease it knows nothing of was granted later."""
    granted: dict[str, float] = field(default_factory=dict)
    """Per server: when the metaserver acknowledged its last heartbeat (its clock)."""

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def grant(self, server_id: str, now: float) -> float | None:
        """Acknowledge a heartbeat received at ``now``; returns the lease to send back (None: leases are off)."""
        if not self.enabled:
            return None
        self.granted[server_id] = now
        return self.seconds

    def end(self, server_id: str) -> float:
        """When ``server_id``'s lease is surely over, on the metaserver's clock."""
        granted = self.granted.get(server_id, self.started)
        return granted + self.seconds * (1 + DRIFT) + MARGIN

    def over(self, server_id: str, now: float) -> bool:
        """Whether ``server_id`` has surely stopped serving on its own (always, without leases)."""
        return not self.enabled or now >= self.end(server_id)
