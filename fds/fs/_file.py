"""A file of an :class:`~fds.fs.FdsFileSystem`, opened by ``fs.open``: buffered reads of one
object as it was when opened, and writes streamed into a fresh blob tract by tract."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync
from fsspec.spec import AbstractBufferedFile

from fds.client import ObjectInfo, ObjectReader, ObjectWriter
from fds.fs._readahead import ReadAhead

if TYPE_CHECKING:
    from fds.fs._filesystem import FdsFileSystem

__all__ = ["FdsFile"]


class FdsFile(AbstractBufferedFile):  # type: ignore[misc]  # fsspec is untyped
    """Reads fetch only the tracts a range needs, many in flight, from the object looked up at open (a
    later write to the key does not change what an open file reads); a reader that reads on has the
    next tracts fetched ahead (:mod:`fds.fs._readahead`), so pyarrow's one-read-at-a-time scans of
    a big file keep many tracts in flight. Writes go to a fresh blob as
    each tract fills, a few tracts in flight; the key switches to the new object on ``close``, and
    leaving a ``with`` block by an exception drops it: the key keeps its old object."""

    DEFAULT_BLOCK_SIZE = 8 << 20

    fs: FdsFileSystem
    buffer: Any

    def __init__(self, fs: FdsFileSystem, path: str, mode: str = "rb", *, info: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        if info is not None:
            self._details = info
        self._writer: ObjectWriter | None = None
        self._reader: ReadAhead | None = None
        self._inline: ObjectReader | None = None
        self._reader_pid = 0
        if mode == "rb" and kwargs.get("cache_type") is None:
            kwargs["cache_type"] = "none"  # the read-ahead below is the cache: tracts, fetched ahead, concurrently
        self._content_type = kwargs.pop("content_type", "")
        self._meta: dict[str, str] = kwargs.pop("metadata", None) or {}
        super().__init__(fs, path, mode, **kwargs)
        self._object = _object_of(self._details) if mode == "rb" else None

    # -- reading ----------------------------------------------------------------------------------
    def _fetch_range(self, start: int, end: int) -> bytes | bytearray:
        return sync(self.fs.loop, self._read, start, end)  # type: ignore[no-any-return]

    async def _read(self, start: int, end: int) -> bytes | bytearray:
        assert self._object is not None
        end = min(end, self._object.size)
        if not self._object.blob:  # a small object kept inline in its name record: its bytes, once
            if self._inline is None:
                self._inline = ObjectReader(await self.fs._get_client(), self._object,
                                            bucket=self.path.partition("/")[0])
            return await self._inline.read_range(start, end)
        if self._reader is None or self._reader_pid != os.getpid():  # forked: the parent's reads are not ours
            client = await self.fs._get_client()
            self._reader = ReadAhead(client, self._object, (await client.table()).tract_size)
            self._reader_pid = os.getpid()
        return await self._reader.read(start, end)

    def close(self) -> None:
        reader, self._reader = self._reader, None
        loop = self.fs.loop
        if reader is not None and self._reader_pid == os.getpid() and loop is not None:
            # Never wait here: close may run from __del__ at interpreter exit, when the loop's thread is gone.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing left to cancel
                loop.call_soon_threadsafe(lambda: asyncio.ensure_future(reader.close()))
        super().close()

    # -- writing ----------------------------------------------------------------------------------
    def _initiate_upload(self) -> None:
        """Nothing yet: a file that fits in one block is stored in one step at close."""

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        create_only = self.mode == "xb"
        if final and self._writer is None:  # the whole file is in the buffer
            sync(self.fs.loop, self.fs._put_bytes, self.path, data, create_only, self._content_type, self._meta)
            return True
        if self._writer is None:
            self._writer = sync(self.fs.loop, self.fs._writer, self.path, create_only, self._content_type,
                                self._meta)
        assert self._writer is not None
        sync(self.fs.loop, self._writer.write, data)
        if final:
            sync(self.fs.loop, self.fs._close_writer, self._writer)
        return True

    def discard(self) -> None:
        """Drop what was written: the key keeps its old object."""
        if self._writer is not None and not self._writer.closed:
            sync(self.fs.loop, self._writer.abort)
        self._writer = None
        if self.mode != "rb":
            self.buffer = None
        self.closed = True

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None and self.mode != "rb" and not self.closed:
            self.discard()
        else:
            self.close()


def _object_of(info: dict[str, Any]) -> ObjectInfo:
    """The object an info dict describes (the blob and incarnation to read, as looked up)."""
    return ObjectInfo(key=info["name"].partition("/")[2], size=info["size"], etag=info["ETag"], mtime=info["mtime"],
                      content_type=info.get("ContentType", ""), meta=info.get("metadata", {}), blob=info["blob"],
                      incarnation=info["incarnation"])
