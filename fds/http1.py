"""The one piece of HTTP/1.1 framing shared by our client and the tract servers' data port."""

from __future__ import annotations

__all__ = ["HeadBuffer", "HeadTooLarge"]


class HeadTooLarge(ValueError):
    """The message head grew past its limit without ending."""


class HeadBuffer:
    """Collects a message head (start line and headers) from received bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[bytes, bytes] | None:
        """Add received bytes; once the blank line has arrived, return ``(head, rest)`` and start over.

        ``head`` excludes the blank line; ``rest`` is whatever followed it
        (the start of the body). Raises :class:`HeadTooLarge` past ``limit``.
        """
        start = max(0, len(self._buf) - 3)
        self._buf += data
        end = self._buf.find(b"\r\n\r\n", start)
        if end < 0:
            if len(self._buf) > self.limit:
                self._buf = bytearray()
                raise HeadTooLarge(f"message head over {self.limit} bytes")
            return None
        head, rest = bytes(self._buf[:end]), bytes(self._buf[end + 4:])
        self._buf = bytearray()
        return head, rest

    def reset(self) -> None:
        self._buf = bytearray()
