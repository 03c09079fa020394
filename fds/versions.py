"""Tract versions: how every replica orders writes to one tract the same way.

Every tract write carries a :class:`TractVersion` its writer assigns: a
hybrid logical clock reading (``stamp``: wall-clock nanoseconds, bumped past
every version the writer has seen) and the writer's random id (``writer``) to
break ties. A replica keeps a write only if its version is newer than the one
it holds (the same version with the same bytes is a retry, and succeeds); an
older write is refused with 409 ``superseded``, naming the stored version.

Why this gives last-writer-wins, the same on every replica:

- Replicas compare versions, not arrival order, so two writers racing on one
  tract end with the same value everywhere: the newer version.
- A writer refused as superseded moves its clock past the stored version and
  writes again. So a write that starts after another was acknowledged always
  wins, even if its clock was behind (clocks of different hosts drift); and a
  reader's clock moves past every version it reads, so a client that read a
  value and then writes replaces it.

Copies made by recovery and the scrubber carry the source's version, so a
copy never replaces a newer write.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import NamedTuple

__all__ = ["TractVersion", "HybridClock", "ZERO", "WRITER_BITS"]

WRITER_BITS = 62
"""Writer ids are random integers below 2**62 (0 is a server that assigned the version itself)."""


class TractVersion(NamedTuple):
    """A tract write's version; compares as ``(stamp, writer)``."""

    stamp: int
    writer: int

    def __str__(self) -> str:
        return f"{self.stamp}.{self.writer}"

    @classmethod
    def parse(cls, text: str) -> TractVersion:
        """``STAMP.WRITER`` as :meth:`__str__` writes it; ValueError if malformed."""
        stamp, _, writer = text.partition(".")
        version = cls(int(stamp), int(writer))
        if not (0 <= version.stamp < 2**63 and 0 <= version.writer < 2**63):
            raise ValueError(f"tract version out of range: {text[:60]!r}")
        return version


ZERO = TractVersion(0, 0)
"""Older than every write: tracts stored before versions existed have it."""


class HybridClock:
    """A writer's clock: wall-clock nanoseconds, never going back, and moved past every version seen."""

    def __init__(self, writer: int | None = None) -> None:
        self.writer = writer if writer is not None else 1 + secrets.randbelow(2**WRITER_BITS - 1)
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> TractVersion:
        """A version newer than every one this clock has given out or seen."""
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return TractVersion(self._last, self.writer)

    def observe(self, version: TractVersion) -> None:
        """A version seen (read back, or named by a refusal): every later :meth:`next` is newer."""
        with self._lock:
            self._last = max(self._last, version.stamp)
