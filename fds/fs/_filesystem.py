"""``FdsFileSystem``: fsspec's async filesystem over :mod:`fds.client` (protocol ``fds``)."""

from __future__ import annotations

import asyncio
import errno
import os
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fsspec.asyn import AsyncFileSystem, get_loop
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import make_instance

from fds.client import (
    Bucket,
    BucketExists,
    BucketNotFound,
    Client,
    KeyNotFound,
    ObjectInfo,
    ObjectReader,
    ObjectWriter,
    PastEnd,
    PreconditionFailed,
)
from fds.fs._file import FdsFile
from fds.fs._options import ClusterOptions, resolve

__all__ = ["FdsFileSystem"]

T = TypeVar("T")

WRITE_WINDOW = 8
"""Tract writes in flight per open file: enough to keep every disk of a small cluster busy, while an
open file holds at most this many tracts (plus one block) in memory."""

_LIST_PAGE = 10_000


def _missing(path: str, exc: Exception | None = None) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, str(exc) if exc else "no such object or directory", path)


def _exists(path: str, exc: Exception | None = None) -> FileExistsError:
    return FileExistsError(errno.EEXIST, str(exc) if exc else "the object exists", path)


def _file_info(bucket: str, obj: ObjectInfo) -> dict[str, Any]:
    return {"name": f"{bucket}/{obj.key}", "size": obj.size, "type": "file", "mtime": obj.mtime, "ETag": obj.etag,
            "ContentType": obj.content_type, "metadata": dict(obj.meta), "blob": obj.blob,
            "incarnation": obj.incarnation}


def _dir_info(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


class FdsFileSystem(AsyncFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """Buckets and keys of an fds cluster as an fsspec filesystem: ``fds://bucket/key``.

    Which cluster, first found: the ``metaserver`` option, ``$FDS_METASERVER``, the cluster file
    in the ``cluster`` option's directory (or ``$FDS_CLUSTER``, or ``./.fds``, as ``fds local up``
    writes it); credentials from the ``token`` or ``secret_file`` option, ``$FDS_TOKEN``,
    ``$FDS_SECRET_FILE``, or that cluster file. They are resolved when the instance is made, and
    a pickled instance carries them, so it rebuilds on a dask or ray worker anywhere.

    Directories are key prefixes up to a ``/`` (as in S3): they exist while some key is under
    them, and ``mkdir`` of one makes only its bucket. Buckets are the top-level directories.
    Reads of a range fetch only the tracts it covers, straight from the tract servers with many in
    flight; ``cat_ranges`` runs all its ranges at once. Writes stream into a fresh blob tract by
    tract and switch the key in one step on close. ``info`` carries ``size``, ``type``, ``mtime``
    and the ``ETag`` (``ukey`` and ``checksum`` are the ETag, so caches notice overwrites).
    Extra options go to :class:`fds.client.Client` (``max_in_flight``, ``per_server``, ``timeout``).
    """

    protocol = "fds"
    _pid: int
    _loop: Any
    root_marker = ""
    async_impl = True

    def __init__(self, metaserver: str | None = None, *, token: str | None = None, secret_file: str | None = None,
                 cluster: str | None = None, max_in_flight: int | None = None, per_server: int | None = None,
                 timeout: float | None = None, asynchronous: bool = False, loop: Any = None, **kwargs: Any) -> None:
        super().__init__(asynchronous=asynchronous, loop=loop, **kwargs)
        self.cluster: ClusterOptions = resolve(metaserver, token=token, secret_file=secret_file, cluster=cluster)
        options = {"max_in_flight": max_in_flight, "per_server": per_server, "timeout": timeout}
        self._client_options: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        self._client: Client | None = None
        self._client_key: tuple[int, int] | None = None

    # -- pickling and fork ------------------------------------------------------------------------
    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuild from the resolved cluster, not the working directory or environment of the maker."""
        return make_instance, (type(self), (), {**self.cluster.as_kwargs(), **self._client_options})

    @property
    def loop(self) -> Any:
        if self._pid != os.getpid():  # forked: the parent's loop thread and sockets are not ours
            self._pid = os.getpid()
            self._loop = None if self.asynchronous else get_loop()
            self._client = None
        return self._loop

    async def _get_client(self) -> Client:
        """This process's and this event loop's client (made on first use: it binds to the loop)."""
        key = (os.getpid(), id(asyncio.get_running_loop()))
        if self._client is None or self._client_key != key:
            self._client = Client(self.cluster.metaserver, token=self.cluster.token,
                                  secret_file=self.cluster.secret_file, **self._client_options)
            self._client_key = key
        return self._client

    async def _bucket(self, path: str) -> tuple[Bucket, str]:
        bucket, key = self.split_path(path)
        if not bucket:
            raise IsADirectoryError(errno.EISDIR, "the root holds buckets, not objects", path)
        return (await self._get_client()).bucket(bucket), key

    # -- paths --------------------------------------------------------------------------------------
    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("fds://"):
            path = path[len("fds://"):]
        elif path.startswith("fds::"):
            path = path[len("fds::"):]
        return path.lstrip("/").rstrip("/")

    def split_path(self, path: str) -> tuple[str, str]:
        """``(bucket, key)`` of a path; the key is ``""`` for a bucket."""
        bucket, _, key = self._strip_protocol(path).partition("/")
        return bucket, key

    def unstrip_protocol(self, name: str) -> str:
        return "fds://" + str(self._strip_protocol(name))

    # -- info and listing ---------------------------------------------------------------------------
    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        bucket_name, key = self.split_path(path)
        if not bucket_name:
            return _dir_info("")
        bucket = (await self._get_client()).bucket(bucket_name)
        try:
            if not key:
                await bucket.info()
                return _dir_info(bucket_name)
            try:
                return _file_info(bucket_name, await bucket.head(key))
            except KeyNotFound:
                page = await bucket.list(key + "/", limit=1)
                if page.objects or page.prefixes:
                    return _dir_info(f"{bucket_name}/{key}")
                raise
        except (KeyNotFound, BucketNotFound) as exc:
            raise _missing(path, exc) from None

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        bucket_name, key = self.split_path(path)
        client = await self._get_client()
        if not bucket_name:
            out = [_dir_info(b.name) for b in await client.list_buckets()]
        else:
            bucket = client.bucket(bucket_name)
            prefix = key + "/" if key else ""
            out = []
            try:
                async for item in bucket.iter(prefix, delimiter="/", page_size=_LIST_PAGE):
                    if isinstance(item, str):
                        out.append(_dir_info(f"{bucket_name}/{item.rstrip('/')}"))
                    else:
                        out.append(_file_info(bucket_name, item))
            except BucketNotFound as exc:
                raise _missing(path, exc) from None
            if not out and key:
                info = await self._info(path)  # a file lists as itself; a missing path raises
                out = [info] if info["type"] == "file" else []
        return out if detail else [o["name"] for o in out]

    async def _find(self, path: str, maxdepth: int | None = None, withdirs: bool = False,
                    **kwargs: Any) -> Any:
        """Every key under ``path`` from one flat, ordered listing (no walk directory by directory)."""
        if maxdepth is not None:
            return await super()._find(path, maxdepth=maxdepth, withdirs=withdirs, **kwargs)
        detail = kwargs.pop("detail", False)
        path = self._strip_protocol(path)
        bucket_name, key = self.split_path(path)
        if not bucket_name:
            return await super()._find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        out: dict[str, dict[str, Any]] = {}
        async for obj in self._objects(bucket_name, key + "/" if key else ""):
            info = _file_info(bucket_name, obj)
            out[info["name"]] = info
            if withdirs:
                parent = posixpath.dirname(info["name"])
                while len(parent) > len(path) and parent not in out:
                    out[parent] = _dir_info(parent)
                    parent = posixpath.dirname(parent)
        if withdirs and out and key:
            out[path] = _dir_info(path)
        if not out and key:
            try:
                info = await self._info(path)
            except FileNotFoundError:
                info = {}
            if info.get("type") == "file":
                out[path] = info
        names = sorted(out)
        return {n: out[n] for n in names} if detail else names

    async def _objects(self, bucket_name: str, prefix: str) -> AsyncIterator[ObjectInfo]:
        bucket = (await self._get_client()).bucket(bucket_name)
        try:
            async for item in bucket.iter(prefix, page_size=_LIST_PAGE):
                if isinstance(item, ObjectInfo):
                    yield item
        except BucketNotFound:
            return

    def ukey(self, path: str) -> str:
        """The object's ETag: it changes with every write."""
        return str(self.info(path).get("ETag") or self.info(path)["name"])

    def checksum(self, path: str) -> int:
        return int(self.ukey(path)[:16], 16) if len(self.ukey(path)) >= 16 else hash(self.ukey(path))

    def created(self, path: str) -> Any:
        return self.modified(path)

    def modified(self, path: str) -> Any:
        import datetime

        info = self.info(path)
        if "mtime" not in info:
            raise IsADirectoryError(errno.EISDIR, "directories have no time", path)
        return datetime.datetime.fromtimestamp(info["mtime"], tz=datetime.UTC)

    # -- directories and buckets --------------------------------------------------------------------
    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        bucket_name, key = self.split_path(path)
        client = await self._get_client()
        if not key:
            try:
                await client.create_bucket(bucket_name)
            except BucketExists as exc:
                raise _exists(path, exc) from None
        elif create_parents:
            await self._makedirs(bucket_name, exist_ok=True)
        elif not await client.bucket(bucket_name).exists():
            raise _missing(bucket_name)
        # a directory inside a bucket is a prefix: it exists once a key is under it

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        bucket_name, key = self.split_path(path)
        try:
            await (await self._get_client()).create_bucket(bucket_name)
        except BucketExists as exc:
            if not exist_ok and not key:
                raise _exists(path, exc) from None

    async def _rmdir(self, path: str) -> None:
        bucket_name, key = self.split_path(path)
        if not key:
            try:
                await (await self._get_client()).delete_bucket(bucket_name)
            except BucketNotFound as exc:
                raise _missing(path, exc) from None

    # -- reading ------------------------------------------------------------------------------------
    async def _reader(self, path: str) -> ObjectReader:
        """A reader of the object at ``path``: one lookup (an inline object's bytes come with it)."""
        bucket, key = await self._bucket(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "a bucket is a directory", path)
        try:
            return await bucket.reader(key)
        except (KeyNotFound, BucketNotFound) as exc:
            raise _missing(path, exc) from None

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        return await self._read_range(await self._reader(path), start, end)

    async def _read_range(self, reader: ObjectReader, start: int | None, end: int | None) -> bytes:
        size = reader.info.size
        lo = 0 if start is None else (max(size + start, 0) if start < 0 else start)
        hi = size if end is None else (max(size + end, 0) if end < 0 else min(end, size))
        if lo >= hi:
            return b""
        try:
            data = await reader.read_range(lo, hi)
        except PastEnd:
            return b""
        return bytes(data) if not isinstance(data, bytes) else data

    async def _cat_ranges(self, paths: list[str], starts: Any, ends: Any, max_gap: int | None = None,
                          batch_size: int | None = None, on_error: str = "return", **kwargs: Any) -> list[Any]:
        """Every range at once: each object is looked up once, then all the ranges' tracts are fetched
        concurrently (the client bounds the requests in flight)."""
        if not isinstance(paths, list):
            raise TypeError("paths must be a list")
        starts = list(starts) if isinstance(starts, (list, tuple)) else [starts] * len(paths)
        ends = list(ends) if isinstance(ends, (list, tuple)) else [ends] * len(paths)
        if len(starts) != len(paths) or len(ends) != len(paths):
            raise ValueError("paths, starts and ends must be as long as each other")
        unique = list(dict.fromkeys(paths))
        heads = dict(zip(unique, await asyncio.gather(*(self._reader(p) for p in unique), return_exceptions=True),
                         strict=True))

        async def one(path: str, start: int | None, end: int | None) -> bytes:
            head = heads[path]
            if isinstance(head, BaseException):
                raise head
            return await self._read_range(head, start, end)

        out = await asyncio.gather(*(one(p, s, e) for p, s, e in zip(paths, starts, ends, strict=True)),
                                   return_exceptions=True)
        if on_error != "return":
            for item in out:
                if isinstance(item, BaseException):
                    raise item
        return list(out)

    async def _get_file(self, rpath: str, lpath: str, callback: Callback = DEFAULT_CALLBACK, **kwargs: Any) -> None:
        if os.path.isdir(lpath) and await self._isdir(rpath):
            return
        reader = await self._reader(rpath)
        callback.set_size(reader.info.size)
        with open(lpath, "wb") as sink:
            await reader.read_into(sink, progress=callback.relative_update)

    # -- writing ------------------------------------------------------------------------------------
    async def _guarded(self, path: str, create_only: bool, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except PreconditionFailed as exc:
            if create_only:
                raise _exists(path, exc) from None
            raise
        except BucketNotFound as exc:
            raise _missing(path, exc) from None

    async def _put_bytes(self, path: str, data: bytes, create_only: bool = False, content_type: str = "",
                         meta: dict[str, str] | None = None) -> ObjectInfo:
        bucket, key = await self._bucket(path)
        return await self._guarded(path, create_only, lambda: bucket.put(
            key, data, content_type=content_type, meta=meta, if_none_match=create_only))

    async def _writer(self, path: str, create_only: bool = False, content_type: str = "",
                      meta: dict[str, str] | None = None) -> ObjectWriter:
        bucket, key = await self._bucket(path)
        if create_only and await bucket.exists(key):
            raise _exists(path)
        return await self._guarded(path, create_only, lambda: bucket.writer(
            key, content_type=content_type, meta=meta, if_none_match=create_only, window=WRITE_WINDOW))

    async def _close_writer(self, writer: ObjectWriter) -> ObjectInfo:
        path = f"{writer.bucket.name}/{writer.key}"
        return await self._guarded(path, bool(writer._options["if_none_match"]), writer.close)

    async def _pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        await self._put_bytes(path, value, mode == "create", kwargs.get("content_type", ""), kwargs.get("metadata"))

    async def _put_file(self, lpath: str, rpath: str, mode: str = "overwrite", callback: Callback = DEFAULT_CALLBACK,
                        **kwargs: Any) -> None:
        if os.path.isdir(lpath):
            return  # directories are prefixes: they appear with their files
        bucket, key = await self._bucket(rpath)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "name a key to write, not only a bucket", rpath)
        callback.set_size(os.path.getsize(lpath))
        await self._guarded(rpath, mode == "create", lambda: bucket.put(
            key, lpath, content_type=kwargs.get("content_type", ""), if_none_match=mode == "create",
            progress=callback.relative_update))

    async def _cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Inside the cluster, tract to tract: the bytes never pass through this process."""
        src_bucket, src_key = self.split_path(path1)
        bucket, key = await self._bucket(path2)
        if not src_key or not key:
            raise _missing(path1)
        try:
            await bucket.copy(src_key, key, source_bucket=src_bucket)
        except (KeyNotFound, BucketNotFound) as exc:
            raise _missing(path1, exc) from None

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        bucket, key = await self._bucket(path)
        try:
            await bucket.delete(key)
        except (KeyNotFound, BucketNotFound) as exc:
            raise _missing(path, exc) from None

    async def _rm(self, path: str | list[str], recursive: bool = False, maxdepth: int | None = None,
                  **kwargs: Any) -> None:
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        kinds = await asyncio.gather(*(self._isdir(p) for p in paths))
        files = [p for p, is_dir in zip(paths, kinds, strict=True) if not is_dir]
        dirs = [p for p, is_dir in zip(paths, kinds, strict=True) if is_dir]
        limit = asyncio.Semaphore(64)

        async def delete(p: str) -> None:
            async with limit:
                try:
                    await self._rm_file(p)
                except FileNotFoundError:
                    pass  # deleted meanwhile

        await asyncio.gather(*(delete(p) for p in files))
        for d in dirs:  # a bucket named whole goes too (as s3fs removes it), once emptied
            if "/" not in self._strip_protocol(d):
                await self._rmdir(d)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict[str, Any] | None = None, **kwargs: Any) -> FdsFile:
        if "a" in mode or "+" in mode:
            raise NotImplementedError(f"fds objects are written whole: mode {mode!r} is not supported (use 'wb')")
        info = None
        if mode == "rb":
            info = self.info(path)
            if info["type"] != "file":
                raise IsADirectoryError(errno.EISDIR, "not an object", path)
        elif mode == "xb" and self.exists(path):
            raise _exists(path)
        return FdsFile(self, self._strip_protocol(path), mode, info=info, block_size=block_size,
                       autocommit=autocommit, cache_options=cache_options, **kwargs)
