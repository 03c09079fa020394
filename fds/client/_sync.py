"""A thin synchronous face over the async client, for scripts.

``SyncClient`` runs a private event loop on a background thread and blocks
on each call. Every method mirrors the async one of the same name.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterable
from typing import Any, BinaryIO, TypeVar

from fds.client._blob import Blob, Progress, TractData
from fds.client._client import DEFAULT_IN_FLIGHT, Client
from fds.models import BlobInfo, ClusterStatus

__all__ = ["SyncClient", "SyncBlob"]

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop
        try:
            import uvloop

            self.loop = uvloop.new_event_loop()
        except ImportError:  # pragma: no cover
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fds-client", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class SyncClient:
    """Blocking client: ``with SyncClient(url) as fds: fds.create_blob().write_from("f")``."""

    def __init__(self, metaserver: str, *, max_in_flight: int = DEFAULT_IN_FLIGHT, timeout: float = 60.0,
                 token: str | None = None, secret_file: str | None = None, tls_ca: str | None = None) -> None:
        self._loop = _LoopThread()

        async def make() -> Client:
            return Client(metaserver, max_in_flight=max_in_flight, timeout=timeout, token=token,
                          secret_file=secret_file, tls_ca=tls_ca)

        self._client = self._loop.run(make())

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run(self._client.aclose())
        self._loop.stop()

    def create_blob(self, guid: str | bytes | None = None) -> SyncBlob:
        return SyncBlob(self._loop, self._loop.run(self._client.create_blob(guid)))

    def open_blob(self, guid: str | bytes) -> SyncBlob:
        return SyncBlob(self._loop, self._loop.run(self._client.open_blob(guid)))

    def delete_blob(self, guid: str | bytes) -> None:
        self._loop.run(self._client.delete_blob(guid))

    def stat(self, guid: str | bytes) -> BlobInfo:
        return self._loop.run(self._client.stat(guid))

    def cluster_status(self) -> ClusterStatus:
        return self._loop.run(self._client.cluster_status())


class SyncBlob:
    """Blocking twin of :class:`fds.client.Blob`."""

    def __init__(self, loop: _LoopThread, blob: Blob) -> None:
        self._loop = loop
        self.blob = blob
        self.guid = blob.guid

    def __repr__(self) -> str:
        return f"SyncBlob({self.guid!r})"

    def stat(self) -> BlobInfo:
        return self._loop.run(self.blob.stat())

    def size(self) -> int:
        return self._loop.run(self.blob.size())

    def extend(self, count: int = 1) -> int:
        return self._loop.run(self.blob.extend(count))

    def write_tract(self, index: int, data: TractData) -> None:
        self._loop.run(self.blob.write_tract(index, data))

    def read_tract(self, index: int) -> bytes | bytearray:
        return self._loop.run(self.blob.read_tract(index))

    def write_tracts(self, items: Iterable[tuple[int, TractData]], *, progress: Progress | None = None) -> int:
        return self._loop.run(self.blob.write_tracts(items, progress=progress))

    def read_tracts(self, indices: Iterable[int]) -> list[tuple[int, bytes | bytearray]]:
        async def collect() -> list[tuple[int, bytes | bytearray]]:
            return [item async for item in self.blob.read_tracts(indices)]

        return self._loop.run(collect())

    def write_from(self, source: str | os.PathLike[str] | BinaryIO, *, progress: Progress | None = None) -> BlobInfo:
        return self._loop.run(self.blob.write_from(source, progress=progress))

    def read_into(self, sink: str | os.PathLike[str] | BinaryIO, *, progress: Progress | None = None) -> int:
        return self._loop.run(self.blob.read_into(sink, progress=progress))
