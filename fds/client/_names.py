"""Buckets and keys on the client: objects are blobs with names.

An object's bytes go to a fresh blob, written tract by tract straight to the tract servers; then
the name switches to it on the bucket's namespace primary in one committed step (optionally only
if the key is free, or only if its ETag is still the one the caller read). A reader looks the name
up once and reads the blob's tracts directly, so reads keep FDS's speed: a range fetches only its
tracts, with many in flight.

Objects of at most :data:`fds.names.INLINE_MAX` bytes skip the blob: their bytes travel in the
switch itself and stay in the name record (one request to put, one to look up and read). Such an
object's :class:`ObjectInfo` has an empty ``blob`` and incarnation 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

from pydantic import ValidationError

from fds.client._blob import Blob, Progress
from fds.errors import BadRequest, BucketExists, BucketNotFound, FDSError, KeyNotFound, PastEnd, PreconditionFailed
from fds.guid import new_guid, parse_guid
from fds.models import BlobInfo, BucketInfo, ObjectInfo, ObjectPut, RenameRequest
from fds.names import (
    CATALOGUE,
    INLINE_MAX,
    bucket_guid,
    check_bucket,
    check_key,
    check_prefix,
    decode_token,
    encode_token,
)

if TYPE_CHECKING:
    from fds.client._client import Client

__all__ = ["Bucket", "ObjectInfo", "BucketInfo", "ListPage", "ObjectWriter", "list_buckets", "create_bucket",
           "delete_bucket"]

Source = bytes | bytearray | memoryview | str | os.PathLike[str] | BinaryIO | AsyncIterable[bytes]
"""What :meth:`Bucket.put` takes: bytes, a file (path or binary file object), or an async stream of chunks."""


@dataclass
class ListPage:
    """One page of a bucket's keys: ``objects`` in key order, ``prefixes`` (with a delimiter), and
    ``next_token`` for the next page (None on the last)."""

    objects: list[ObjectInfo]
    prefixes: list[str] = field(default_factory=list)
    next_token: str | None = None


def _q(text: str) -> str:
    return quote(text, safe="")


async def create_bucket(client: Client, name: str) -> Bucket:
    """Create bucket ``name`` and list it in the catalogue (BucketExists if it exists; it is listed anyway)."""
    check_bucket(name)
    bucket = Bucket(client, name)
    try:
        info = BucketInfo.model_validate(await client._primary("POST", bucket.ns, f"/v1/buckets/{name}", "", None,
                                                               f"create bucket {name}"))
    except BucketExists:  # make sure a bucket left unlisted by a crash between the two steps is listed
        with contextlib.suppress(FDSError):
            await _catalogue_put(client, name, (await bucket.info()).created)
        raise
    await _catalogue_put(client, name, info.created)
    return bucket


async def _catalogue_put(client: Client, name: str, created: float) -> None:
    await client._primary("PUT", CATALOGUE, f"/v1/catalogue/{name}", f"created={created!r}", None,
                          f"list bucket {name}")


async def delete_bucket(client: Client, name: str) -> None:
    """Delete the empty bucket ``name`` (BucketNotEmpty if it holds objects) and unlist it."""
    check_bucket(name)
    try:
        await client._primary("DELETE", bucket_guid(name), f"/v1/buckets/{name}", "", None, f"delete bucket {name}")
    except FDSError as exc:
        if exc.code != "no_such_bucket":
            raise
        with contextlib.suppress(FDSError):  # a crash between the two steps left it listed: unlist it
            await client._primary("DELETE", CATALOGUE, f"/v1/catalogue/{name}", "", None, f"unlist bucket {name}")
        raise
    await client._primary("DELETE", CATALOGUE, f"/v1/catalogue/{name}", "", None, f"unlist bucket {name}")


async def list_buckets(client: Client) -> list[BucketInfo]:
    """Every bucket, in name order."""
    out: list[BucketInfo] = []
    after = ""
    while True:
        page = await client._primary("GET", CATALOGUE, "/v1/catalogue", f"start_after={_q(after)}&limit=10000",
                                     None, "list buckets")
        out.extend(BucketInfo.model_validate(b) for b in page)
        if len(page) < 10000:
            return out
        after = out[-1].name


class Bucket:
    """A bucket of a cluster, by name. Cheap to create (no request is made): :meth:`info` checks it exists.

    Keys are any UTF-8 up to 1024 bytes, listed in UTF-8 byte order. Every write is atomic: readers
    see the old object or the new one. ``if_none_match=True`` writes only a new key; ``if_match=ETAG``
    only over the object of that ETag (PreconditionFailed otherwise).
    """

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self.name = check_bucket(name)
        self.ns = bucket_guid(name)

    def __repr__(self) -> str:
        return f"Bucket({self.name!r})"

    async def _call(self, method: str, path: str, query: str = "", payload: Any = None, what: str = "") -> Any:
        return await self._client._primary(method, self.ns, f"/v1/buckets/{self.name}{path}", query, payload,
                                           what or f"{method} bucket {self.name}")

    # -- the bucket ---------------------------------------------------------------------
    async def info(self) -> BucketInfo:
        """The bucket's name and creation time; BucketNotFound if there is no such bucket."""
        return BucketInfo.model_validate(await self._call("GET", ""))

    async def exists(self, key: str | None = None) -> bool:
        """Whether ``key`` names an object; without a key, whether the bucket exists."""
        try:
            if key is None:
                await self.info()
            else:
                await self.head(key)
        except (KeyNotFound, BucketNotFound):
            return False
        return True

    # -- reading -------------------------------------------------------------------------
    async def head(self, key: str) -> ObjectInfo:
        """The object's size, ETag, time, content type and metadata; KeyNotFound if there is none."""
        return (await self._lookup(key, data=False))[0]

    async def _lookup(self, key: str, *, data: bool) -> tuple[ObjectInfo, bytes | None]:
        """The object, and with ``data`` an inline object's bytes (one request either way)."""
        check_key(key)
        found = await self._call("GET", "/object", f"key={_q(key)}" + ("&data=true" if data else ""),
                                 what=f"head fds://{self.name}/{key}")
        inline = found.pop("data", None)
        return ObjectInfo.model_validate(found), None if inline is None else base64.b64decode(inline)

    async def get(self, key: str, start: int = 0, end: int | None = None) -> bytes | bytearray:
        """The object's bytes ``start..end-1`` (the whole object by default), tracts fetched concurrently."""
        return await (await self.reader(key)).read_range(start, end)

    async def reader(self, key: str) -> ObjectReader:
        """A reader of the object as it is now (later writes to the key do not change what it reads, for as
        long as the replaced blob's grace period lasts). An inline object's bytes come with the lookup."""
        info, data = await self._lookup(key, data=True)
        return ObjectReader(self._client, info, bucket=self.name, data=data)

    async def download(self, key: str, sink: str | os.PathLike[str] | BinaryIO, *,
                       progress: Progress | None = None) -> ObjectInfo:
        """Stream the object into a file (path or binary file object), tracts in flight; returns its info."""
        reader = await self.reader(key)
        if isinstance(sink, (str, os.PathLike)):
            with open(sink, "wb") as fh:
                await reader.read_into(fh, progress=progress)
        else:
            await reader.read_into(sink, progress=progress)
        return reader.info

    # -- writing ---------------------------------------------------------------------------
    async def put(self, key: str, source: Source, *, content_type: str = "", meta: dict[str, str] | None = None,
                  if_match: str | None = None, if_none_match: bool = False, etag: str = "",
                  progress: Progress | None = None) -> ObjectInfo:
        """Write an object from bytes, a file (path or binary file object) or an async stream of chunks.

        The bytes go to a fresh blob first; the key switches to it only once every tract is durable on
        every replica. Memory stays at about the client's ``max_in_flight`` tracts. An object of at most
        :data:`fds.names.INLINE_MAX` bytes goes inline, in the switch itself (one request).
        """
        check_key(key)
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as fh:
                return await self.put(key, fh, content_type=content_type, meta=meta, if_match=if_match,
                                      if_none_match=if_none_match, etag=etag, progress=progress)
        options = _options(content_type, meta, if_match, if_none_match, etag)
        if isinstance(source, (bytes, bytearray, memoryview)):
            view = memoryview(source).cast("B")
            if len(view) <= INLINE_MAX:
                return await self._put_inline(key, bytes(view), options, progress)
            return await self._put_bytes(key, view, options, progress)
        if isinstance(source, AsyncIterable):
            writer = await self.writer(key, **options)
            return await writer.write_all(source, progress)
        try:
            size = os.fstat(source.fileno()).st_size - source.tell()
        except (OSError, AttributeError, ValueError):
            writer = await self.writer(key, **options)
            return await writer.write_all(_chunks(source), progress)
        if size <= INLINE_MAX:
            data = await asyncio.to_thread(source.read, size + 1)
            if len(data) != size:
                raise FDSError(f"file changed size while being read ({len(data)} bytes, not {size})",
                               code="file_changed")
            return await self._put_inline(key, data, options, progress)
        return await self._put_file(key, source, size, options, progress)

    async def _put_inline(self, key: str, data: bytes, options: dict[str, Any],
                          progress: Progress | None) -> ObjectInfo:
        info = await self._switch(key, None, len(data), options, data)
        if progress is not None:
            progress(len(data))
        return info

    async def _sized_blob(self, size: int) -> tuple[Blob, int]:
        client = self._client
        tract_size = (await client.table()).tract_size
        tracts = -(-size // tract_size)
        guid = new_guid()
        info = BlobInfo.model_validate(await client._meta("POST", guid, "", None,
                                                          query=f"tracts={tracts}&length={size}"))
        return Blob(client, guid, info.incarnation), tract_size

    async def _put_bytes(self, key: str, data: memoryview, options: dict[str, Any],
                         progress: Progress | None) -> ObjectInfo:
        blob, tract_size = await self._sized_blob(len(data))
        try:
            items = ((i, data[i * tract_size:(i + 1) * tract_size]) for i in range(-(-len(data) // tract_size)))
            await blob.write_tracts(items, progress=progress)
            return await self._switch(key, blob, len(data), options)
        except BaseException:
            await _discard(self._client, blob)
            raise

    async def _put_file(self, key: str, source: BinaryIO, size: int, options: dict[str, Any],
                        progress: Progress | None) -> ObjectInfo:
        blob, tract_size = await self._sized_blob(size)
        try:
            async def items() -> AsyncIterator[tuple[int, bytes]]:
                for index in range(-(-size // tract_size)):
                    chunk = await asyncio.to_thread(source.read, tract_size)
                    if len(chunk) != min(tract_size, size - index * tract_size):
                        raise FDSError(f"file changed size while being read (tract {index})", code="file_changed")
                    yield index, chunk

            await blob.write_tracts(items(), progress=progress)
            return await self._switch(key, blob, size, options)
        except BaseException:
            await _discard(self._client, blob)
            raise

    async def _switch(self, key: str, blob: Blob | None, size: int, options: dict[str, Any],
                      data: bytes | None = None) -> ObjectInfo:
        """Point ``key`` at ``blob`` (written whole), or at ``data`` kept inline, in one committed step."""
        body = ObjectPut(blob=blob.guid if blob is not None else "", incarnation=blob.incarnation if blob else 0,
                         size=size, etag=options["etag"], content_type=options["content_type"], meta=options["meta"],
                         data=data)
        query = f"key={_q(key)}"
        if options["if_match"] is not None:
            query += f"&if_match={_q(options['if_match'])}"
        if options["if_none_match"]:
            query += "&if_none_match=true"
        return ObjectInfo.model_validate(await self._call("PUT", "/object", query, body.model_dump_json().encode(),
                                                          what=f"put fds://{self.name}/{key}"))

    async def link(self, key: str, blob: Blob, size: int, *, content_type: str = "", meta: dict[str, str] | None = None,
                   etag: str = "", if_match: str | None = None, if_none_match: bool = False) -> ObjectInfo:
        """Point ``key`` at ``blob``, already written whole (its first ``size`` bytes are the object), in one
        committed step, as :meth:`put` does after writing. For writers that place tracts themselves (the S3
        endpoint's multipart uploads, whose parts land as tracts of one blob); the blob is the object's from
        then on, deleted once no name refers to it."""
        check_key(key)
        return await self._switch(key, blob, size, _options(content_type, meta, if_match, if_none_match, etag))

    async def writer(self, key: str, *, size: int | None = None, content_type: str = "",
                     meta: dict[str, str] | None = None, if_match: str | None = None, if_none_match: bool = False,
                     etag: str = "", window: int | None = None) -> ObjectWriter:
        """A writer that streams an object into a fresh blob: :meth:`ObjectWriter.write` cuts tracts and sends
        each as it fills, with at most ``window`` (default: the client's ``max_in_flight``) in flight;
        :meth:`ObjectWriter.close` switches the key to it, :meth:`ObjectWriter.abort` drops it. With ``size``
        known up front the blob is created at that size (no extend per tract) and close checks it. An object
        that turns out to be at most :data:`fds.names.INLINE_MAX` bytes goes inline at close (no blob is made
        until more than that has been written)."""
        check_key(key)
        options = _options(content_type, meta, if_match, if_none_match, etag)
        blob: Blob | None = None
        if size is not None and size > INLINE_MAX:
            blob, tract_size = await self._sized_blob(size)
        else:
            tract_size = (await self._client.table()).tract_size
        return ObjectWriter(self, key, blob, tract_size, options, size=size, window=window)

    async def delete(self, key: str, *, if_match: str | None = None) -> None:
        """Delete the object (KeyNotFound if there is none); its blob is deleted after the grace period."""
        check_key(key)
        query = f"key={_q(key)}" + (f"&if_match={_q(if_match)}" if if_match is not None else "")
        await self._call("DELETE", "/object", query, what=f"delete fds://{self.name}/{key}")

    async def rename(self, source: str, target: str, *, if_match: str | None = None,
                     if_none_match: bool = False) -> ObjectInfo:
        """Move an object to another key of this bucket in one step: the target names its blob and the source
        is gone, together. ``if_match`` is checked against the source, ``if_none_match`` against the target."""
        req = RenameRequest(source=check_key(source), target=check_key(target), if_match=if_match,
                            if_none_match=if_none_match)
        return ObjectInfo.model_validate(await self._call("POST", "/rename", "", req.model_dump_json().encode(),
                                                          what=f"rename fds://{self.name}/{source}"))

    async def copy(self, source: str, target: str, *, source_bucket: str | None = None,
                   if_none_match: bool = False, progress: Progress | None = None,
                   content_type: str | None = None, meta: dict[str, str] | None = None,
                   source_info: ObjectInfo | None = None) -> ObjectInfo:
        """Copy an object (from this bucket, or ``source_bucket``) to ``target`` in this bucket.

        The bytes go tract to tract between tract servers: each server of a new tract's row copies it from
        a holder of the source tract, never through this client. Content type, metadata and ETag come along,
        unless ``content_type`` or ``meta`` replace them. ``source_info`` (from :meth:`head`) saves a lookup.
        """
        src = Bucket(self._client, source_bucket) if source_bucket else self
        data = None
        if source_info is None:
            source_info, data = await src._lookup(source, data=True)
        info = source_info
        check_key(target)
        if content_type is not None or meta is not None:
            _options(content_type or "", meta, None, False, info.etag)
        options = {"content_type": info.content_type if content_type is None else content_type,
                   "meta": info.meta if meta is None else meta, "if_match": None, "if_none_match": if_none_match,
                   "etag": info.etag}
        if not info.blob:  # inline: the bytes go along in the target's switch
            data = await ObjectReader(self._client, info, bucket=src.name, data=data)._inline()
            return await self._put_inline(target, data, options, progress)
        blob, _ = await self._sized_blob(info.size)
        try:
            await self._client._copy_tracts(Blob(self._client, parse_guid(info.blob), info.incarnation), blob,
                                            info.size, progress)
            return await self._switch(target, blob, info.size, options)
        except BaseException:
            await _discard(self._client, blob)
            raise

    # -- listing -------------------------------------------------------------------------------
    async def list(self, prefix: str = "", *, delimiter: str = "", start_after: str = "",
                   page_token: str | None = None, limit: int = 1000) -> ListPage:
        """One page of keys in order: those starting with ``prefix``, after ``start_after`` (or where
        ``page_token`` from the previous page says). With a ``delimiter``, keys that hold it after the
        prefix roll up into ``prefixes`` (S3's common prefixes, "directories")."""
        check_prefix(prefix)
        after = decode_token(page_token) if page_token else start_after
        if page_token and start_after and start_after > after:
            after = start_after
        query = (f"prefix={_q(prefix)}&start_after={_q(after)}&delimiter={_q(delimiter)}&limit={limit}")
        page = await self._call("GET", "/objects", query, what=f"list fds://{self.name}/{prefix}")
        return ListPage(objects=[_listed(o) for o in page["objects"]],
                        prefixes=page["prefixes"], next_token=encode_token(page["next"]) if page["next"] else None)

    async def iter(self, prefix: str = "", *, delimiter: str = "", start_after: str = "",
                   page_size: int = 10_000) -> AsyncIterator[ObjectInfo | str]:
        """Every key (as ObjectInfo) and common prefix (as str) in order, page after page (the next page is
        asked for while this one is handed out)."""
        page = await self.list(prefix, delimiter=delimiter, start_after=start_after, limit=page_size)
        while True:
            ahead = (asyncio.ensure_future(self.list(prefix, delimiter=delimiter, start_after=start_after,
                                                     page_token=page.next_token, limit=page_size))
                     if page.next_token is not None else None)
            if ahead is not None:
                # Let the request go out now: a caller that consumes the page without awaiting anything would
                # otherwise start it only after the page, and the primary's work would not overlap ours.
                await asyncio.sleep(0)
            try:
                items: list[ObjectInfo | str] = [*page.objects, *page.prefixes]
                if page.prefixes and page.objects:
                    items.sort(key=lambda item: item if isinstance(item, str) else item.key)
                for item in items:
                    yield item
            except BaseException:
                if ahead is not None:
                    ahead.cancel()
                    await asyncio.gather(ahead, return_exceptions=True)
                raise
            if ahead is None:
                return
            page = await ahead


class ObjectReader:
    """Reads one object as it was when looked up: ranges fetch only their tracts, many in flight.

    An inline object (``info.blob`` empty) is read from ``data`` (its bytes, as :meth:`Bucket.reader` looked
    them up with the name), or else looked up again in ``bucket`` when first read: if the key has changed
    since ``info`` was taken, that raises PreconditionFailed (an inline object has no blob to outlive it).
    """

    def __init__(self, client: Client, info: ObjectInfo, *, bucket: str | None = None,
                 data: bytes | None = None) -> None:
        self._client = client
        self.info = info
        self.blob = Blob(client, parse_guid(info.blob), info.incarnation) if info.blob else None
        """The blob holding the object's bytes; None for an inline object."""
        self._bucket = bucket
        self._data = data

    async def _inline(self) -> bytes:
        """An inline object's bytes: as looked up, or looked up now if the key still names the same object."""
        if self._data is None:
            if self._bucket is None:
                raise BadRequest(f"object {self.info.key!r} is kept inline in its name record: read it through "
                                 "Bucket.reader, or give ObjectReader its bucket", code="inline_needs_bucket")
            info, data = await Bucket(self._client, self._bucket)._lookup(self.info.key, data=True)
            if data is None or info.etag != self.info.etag:
                raise PreconditionFailed(f"object {self.info.key!r} in bucket {self._bucket!r} changed since it was "
                                         f"looked up (ETag {self.info.etag!r}, now {info.etag!r}); look it up again",
                                         etag=info.etag)
            self._data = data
        if len(self._data) != self.info.size:
            raise FDSError(f"object {self.info.key!r}: its inline bytes are {len(self._data)} long, not "
                           f"{self.info.size}", code="length_mismatch")
        return self._data

    async def read_range(self, start: int = 0, end: int | None = None) -> bytes | bytearray:
        """Bytes ``start..end-1`` (clipped to the object); ``b""`` past the end."""
        size = self.info.size
        end = size if end is None else min(end, size)
        if start < 0 or start >= end:
            if start < 0:
                raise PastEnd(f"byte {start} is before the start of the object")
            return b""
        out = bytearray(end - start)
        async for pos, piece in self.iter_ranges(start, end):
            out[pos - start:pos - start + len(piece)] = piece
        return bytes(out) if len(out) < 1 << 20 else out  # a big range is not copied again

    async def iter_ranges(self, start: int, end: int,
                          window: int | None = None) -> AsyncIterator[tuple[int, memoryview | bytes | bytearray]]:
        """``(offset, bytes)`` pieces of ``start..end-1`` in order, one per tract, ``window`` tracts in flight."""
        if self.blob is None:
            inline = await self._inline()
            end = min(end, len(inline))
            if start < end:
                yield start, (inline if (start, end) == (0, len(inline)) else memoryview(inline)[start:end])
            return
        tract_size = (await self._client.table()).tract_size
        first, last = start // tract_size, (end - 1) // tract_size
        async for index, data in self.blob.read_tracts(range(first, last + 1), window=window):
            base = index * tract_size
            expected = min(tract_size, self.info.size - base)
            if len(data) != expected:
                raise FDSError(f"object {self.info.key!r}: tract {index} holds {len(data)} bytes, not {expected}; "
                               "its blob was changed through the tract API", code="length_mismatch")
            lo, hi = max(start - base, 0), min(end - base, len(data))
            yield base + lo, (memoryview(data)[lo:hi] if (lo, hi) != (0, len(data)) else data)

    async def read_into(self, sink: BinaryIO, *, progress: Progress | None = None) -> int:
        if self.info.size == 0:
            return 0
        written = 0
        async for _, piece in self.iter_ranges(0, self.info.size):
            await asyncio.to_thread(sink.write, piece)
            written += len(piece)
            if progress is not None:
                progress(len(piece))
        return written


class ObjectWriter:
    """Streams an object of unknown size into a fresh blob, tract by tract, with up to the client's
    ``max_in_flight`` tract writes outstanding; nothing holds more than that. :meth:`close` switches the key.
    The blob is made once more than :data:`fds.names.INLINE_MAX` bytes have come (or up front, for a larger
    promised size); a smaller object is stored inline at close."""

    def __init__(self, bucket: Bucket, key: str, blob: Blob | None, tract_size: int, options: dict[str, Any], *,
                 size: int | None = None, window: int | None = None) -> None:
        self.bucket = bucket
        self.key = key
        self.blob = blob
        """The fresh blob, once there is one (None while the object is small enough to go inline)."""
        self.size = size
        """The size promised up front (the blob was created at it), or None."""
        self.written = 0
        """Bytes taken so far."""
        self._tract_size = tract_size
        self._options = options
        self._buf = bytearray()
        self._next = 0
        self._running: set[asyncio.Task[None]] = set()
        self._limit = window or bucket._client.max_in_flight
        self.closed = False

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Add bytes; every full tract is sent (waiting for a slot when ``window`` writes are in flight)."""
        if self.closed:
            raise BadRequest(f"writer for fds://{self.bucket.name}/{self.key} is closed")
        if self.size is not None and self.written + len(data) > self.size:
            raise BadRequest(f"fds://{self.bucket.name}/{self.key}: more than the {self.size} bytes promised",
                             code="body_length_mismatch")
        self._buf += data
        self.written += len(data)
        if self.blob is None and self.written > INLINE_MAX:
            self.blob = await self.bucket._client.create_blob()  # (a promised size over INLINE_MAX made it sized)
        while len(self._buf) >= self._tract_size:
            piece = bytes(self._buf[:self._tract_size])
            del self._buf[:self._tract_size]
            await self._send(piece)
        return len(data)

    async def _send(self, piece: bytes) -> None:
        done = {t for t in self._running if t.done()}
        self._running -= done
        for task in done:
            task.result()
        while len(self._running) >= self._limit:
            finished, self._running = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                task.result()
        assert self.blob is not None
        if self.size is None:
            index = await self.blob.extend(1)
        else:
            index = self._next
        self._next = index + 1
        self._running.add(asyncio.ensure_future(self.blob.write_tract(index, piece)))

    async def _drain(self) -> None:
        while self._running:
            finished, self._running = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                task.result()

    async def close(self) -> ObjectInfo:
        """Send the rest, record the length, and switch the key to the new blob; returns the object."""
        if self.closed:
            raise BadRequest(f"writer for fds://{self.bucket.name}/{self.key} is already closed")
        try:
            if self.size is not None and self.written != self.size:
                raise BadRequest(f"fds://{self.bucket.name}/{self.key}: {self.written} bytes written of the "
                                 f"{self.size} promised; nothing was stored", code="body_length_mismatch")
            if self.blob is None:  # small: inline, in the switch itself
                data, self._buf = bytes(self._buf), bytearray()
                info = await self.bucket._switch(self.key, None, self.written, self._options, data)
                self.closed = True
                return info
            if self._buf:
                piece, self._buf = bytes(self._buf), bytearray()
                await self._send(piece)
            await self._drain()
            if self.size is None:
                await self.blob.set_length(self.written)
            info = await self.bucket._switch(self.key, self.blob, self.written, self._options)
        except BaseException:
            await self.abort()
            raise
        self.closed = True
        return info

    async def abort(self) -> None:
        """Drop what was written: the key keeps its old object."""
        self.closed = True
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()
        if self.blob is not None:
            await _discard(self.bucket._client, self.blob)

    async def write_all(self, chunks: AsyncIterable[bytes], progress: Progress | None = None) -> ObjectInfo:
        try:
            async for chunk in chunks:
                await self.write(chunk)
                if progress is not None:
                    progress(len(chunk))
        except BaseException:
            await self.abort()
            raise
        return await self.close()


_LISTED_FIELDS = frozenset(ObjectInfo.model_fields)


def _listed(fields: dict[str, Any]) -> ObjectInfo:
    """An ObjectInfo from a listing's entry, built without validation (the primary made it from a validated record):
    a page holds up to ten thousand, and ``model_construct`` would cost more than the rest of the listing."""
    if fields.keys() != _LISTED_FIELDS:  # a server of another version: take the slow, careful way
        return ObjectInfo.model_construct(**fields)
    obj = ObjectInfo.__new__(ObjectInfo)
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_fields_set__", set(_LISTED_FIELDS))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


def _options(content_type: str, meta: dict[str, str] | None, if_match: str | None, if_none_match: bool,
             etag: str) -> dict[str, Any]:
    """The write options, checked before any byte is sent (the namespace primary checks them again)."""
    try:
        ObjectPut(blob="0" * 32, incarnation=0, size=0, etag=etag, content_type=content_type, meta=meta or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise BadRequest(f"bad object attributes: {problems}", code="bad_object") from None
    return {"content_type": content_type, "meta": meta or {}, "if_match": if_match, "if_none_match": if_none_match,
            "etag": etag}


async def _discard(client: Client, blob: Blob) -> None:
    """Delete a blob that no name refers to (an upload that failed or lost its condition)."""
    with contextlib.suppress(FDSError):
        await client.delete_blob(blob.raw)


async def _chunks(source: BinaryIO, size: int = 8 << 20) -> AsyncIterator[bytes]:
    while True:
        chunk = await asyncio.to_thread(source.read, size)
        if not chunk:
            return
        yield chunk

