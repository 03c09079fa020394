"""The asynchronous fds client: placement, replication, retries."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import orjson

from fds import tls
from fds.auth import Credentials
from fds.client._blob import Blob, Progress, _bounded
from fds.client._names import Bucket, create_bucket, delete_bucket, list_buckets
from fds.client._table import TableCache
from fds.errors import (
    BadRequest,
    ChecksumMismatch,
    FDSError,
    NotFound,
    PastEnd,
    StaleVersion,
    Superseded,
    TableNotReady,
    TractNotFound,
    TractTooLarge,
    Unavailable,
    error_from_response,
)
from fds.guid import format_guid, new_guid, parse_guid
from fds.httpclient import ConnectError, HTTPPool, HTTPResponse
from fds.logs import HEADER, new_request_id, request_id
from fds.models import BlobInfo, BucketInfo, ClusterStatus
from fds.placement import MAX_TRACT, METADATA_TRACT
from fds.tlt import Table
from fds.versions import HybridClock, TractVersion

__all__ = ["Client"]

T = TypeVar("T")

CopySource = tuple[bytes, int, int]
"""A tract to copy from: ``(blob GUID, incarnation, tract)``."""

DEFAULT_IN_FLIGHT = 50
"""Tract requests in flight per client; FDS used about 50."""

HEDGE_AFTER = 1.0
"""Seconds a tract read waits for one replica before asking the next one too.

A replica that is paused, or cut off behind a kernel that still acknowledges TCP, answers nothing
until the request times out (a minute); reads of an 8 MiB tract take tens of milliseconds here, so a
second is long past any normal answer, and the extra request is rare."""

RECHECK_AFTER = 1.0
"""Seconds a tract write waits for its slowest replica before checking whether the table has moved
on (that replica declared dead and out of the row), and every second after that."""

_SUPERSEDED_TRIES = 16
"""Times one write is sent again, newer, after a replica held a newer version (another writer's)."""

DEFAULT_PER_SERVER = 4
"""Tract requests in flight from one client to one tract server: the RTS/CTS idea on one host.

Many 8 MiB transfers converging on one receiver overflow it (incast); a
bound per receiver keeps each server busy without flooding it. Measured
here: one client reading with 32 requests in flight over 4 servers fell to
0.33-0.38 GiB/s; with 4 in flight it made 1.2 GiB/s."""


class Client:
    """A connection to one fds cluster. Use ``async with Client(url) as fds: ...``.

    The client fetches the tract locator table from the metaserver once and
    then talks to tract servers directly: it computes each tract's row
    itself, writes to every replica in the row, reads from a random one and
    fails over to the others. When a server says the table is stale it
    refetches the table and retries. At most ``max_in_flight`` tract requests
    are outstanding at once across the client.

    Credentials: ``token`` (a token from ``fds token``), ``secret_file`` (the
    cluster secret: the client mints and renews its own tokens), or
    ``credentials``; with none given, :meth:`fds.auth.Credentials.discover`
    looks at ``$FDS_TOKEN``, ``$FDS_SECRET_FILE`` and ``./.fds``. ``tls_ca``: the
    CA bundle to trust for this client's HTTPS calls (default: the process's,
    :func:`fds.tls.client_context`).

    A program that moves many tracts should call :func:`fds.tune_allocator`
    once at start-up (the ``fds`` command does): without it glibc
    page-faults through every 8 MiB body, and reads run at about two thirds
    of the speed. The client does not do it for you, since it changes the
    whole process's allocator.
    """

    def __init__(self, metaserver: str, *, max_in_flight: int = DEFAULT_IN_FLIGHT,
                 per_server: int = DEFAULT_PER_SERVER, timeout: float = 60.0,
                 attempts: int = 8, retry_for: float = 120.0, rng: random.Random | None = None,
                 token: str | None = None, secret_file: str | None = None,
                 credentials: Credentials | None = None, hedge_after: float = HEDGE_AFTER,
                 tls_ca: str | None = None) -> None:
        if max_in_flight < 1:
            raise BadRequest("max_in_flight must be at least 1")
        self.credentials = credentials or Credentials.discover(token=token, secret_file=secret_file)
        self.tables = TableCache(metaserver, credentials=self.credentials, tls_ca=tls_ca)
        self.metaserver = self.tables.metaserver
        self.max_in_flight = max_in_flight
        self._pool = HTTPPool(timeout=timeout, ssl_context=tls.client_context(tls_ca))
        self._slots = asyncio.Semaphore(max_in_flight)
        if per_server < 1:
            raise BadRequest("per_server must be at least 1")
        self._per_server = per_server
        self._server_slots: dict[str, asyncio.Semaphore] = {}
        self._attempts = attempts
        self._retry_for = retry_for
        self._rng = rng or random.Random()
        self._hedge_after = hedge_after
        self._clock = HybridClock()
        """Versions this client's tract writes carry (see :mod:`fds.versions`)."""

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()
        await self.tables.aclose()

    # -- blobs ---------------------------------------------------------------
    async def create_blob(self, guid: str | bytes | None = None, *, tracts: int = 0,
                          length: int | None = None) -> Blob:
        """Create a blob, with a random GUID unless one is given: empty, or already ``tracts`` long (no
        :meth:`Blob.extend` needed before writing them) with its byte ``length`` recorded."""
        raw = new_guid() if guid is None else parse_guid(guid)
        query = f"tracts={tracts}" if tracts else ""
        if length is not None:
            query += f"{'&' if query else ''}length={length}"
        info = BlobInfo.model_validate(await self._meta("POST", raw, "", None, query=query))
        return Blob(self, raw, info.incarnation)

    async def open_blob(self, guid: str | bytes) -> Blob:
        """Open an existing blob; raises :class:`BlobNotFound` if there is none."""
        raw = parse_guid(guid)
        info = await self.stat(raw)
        return Blob(self, raw, info.incarnation)

    async def delete_blob(self, guid: str | bytes) -> None:
        """Delete a blob. Its tracts are collected by the tract servers later."""
        await self._meta("DELETE", parse_guid(guid), "", None)

    async def stat(self, guid: str | bytes) -> BlobInfo:
        return BlobInfo.model_validate(await self._meta("GET", parse_guid(guid), "", None))

    # -- buckets and keys -------------------------------------------------------------
    def bucket(self, name: str) -> Bucket:
        """A handle on bucket ``name`` (no request is made; BadRequest if the name breaks S3's rules)."""
        return Bucket(self, name)

    async def create_bucket(self, name: str) -> Bucket:
        """Create a bucket (BucketExists if the name is taken)."""
        return await create_bucket(self, name)

    async def delete_bucket(self, name: str) -> None:
        """Delete an empty bucket (BucketNotEmpty if it holds objects, BucketNotFound if there is none)."""
        await delete_bucket(self, name)

    async def list_buckets(self) -> list[BucketInfo]:
        """Every bucket, in name order."""
        return await list_buckets(self)

    async def table(self) -> Table:
        """The cached tract locator table (fetched on first use)."""
        return await self.tables.get()

    async def cluster_status(self) -> ClusterStatus:
        return await self.tables.cluster()

    # -- the machinery -----------------------------------------------------------
    async def _retrying(self, op: Callable[[Table], Awaitable[T]], what: str) -> T:
        """Run ``op`` against the current table, refetching it on staleness and retrying on failure.

        It gives up after ``attempts`` tries *and* ``retry_for`` seconds,
        whichever is later: a server that died takes a heartbeat timeout to
        be replaced, and no caller should see that as a failure.
        """
        if not request_id.get():  # one id for the whole operation: its retries and replicas
            request_id.set(new_request_id())  # (a task's own context: this does not leak to the caller)
        delay = 0.05
        last: Exception | None = None
        deadline = asyncio.get_running_loop().time() + self._retry_for
        attempt = 0
        while attempt < self._attempts or asyncio.get_running_loop().time() < deadline:
            attempt += 1
            table = await self.tables.get()
            try:
                return await op(table)
            except StaleVersion as exc:
                last = exc
                try:
                    await self.tables.refresh(table.version)
                except Unavailable:
                    pass  # metaserver down: a server will have the new table shortly
                if attempt > 1:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)
            except (ConnectError, TimeoutError, Unavailable, TableNotReady) as exc:
                if isinstance(exc, ChecksumMismatch):
                    raise
                last = exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                try:
                    await self.tables.refresh(table.version)
                except Unavailable:
                    pass  # metaserver down: keep the cached table and retry
        if isinstance(last, FDSError):
            raise type(last)(f"{what}: gave up after {attempt} attempts: {last.message}", code=last.code)
        raise Unavailable(f"{what}: gave up after {attempt} attempts: {last}")

    async def _send(self, method: str, url: str, body: bytes | bytearray | memoryview | None = None,
                    headers: dict[str, str] | None = None) -> HTTPResponse:
        hdrs = self.credentials.headers()
        hdrs[HEADER] = request_id.get() or new_request_id()
        if headers:
            hdrs.update(headers)
        return await self._pool.request(method, url, body=body, headers=hdrs)

    async def _send_tract(self, method: str, base: str, path: str,
                          body: bytes | bytearray | memoryview | None = None) -> HTTPResponse:
        """A tract request, at most ``per_server`` of them in flight to one server."""
        slots = self._server_slots.get(base)
        if slots is None:
            slots = self._server_slots[base] = asyncio.Semaphore(self._per_server)
        async with slots:
            return await self._send(method, base + path, body)

    async def _meta(self, method: str, guid: bytes, suffix: str, payload: dict[str, Any] | None,
                    query: str = "") -> Any:
        """A metadata operation on the primary of the blob's tract -1 row."""
        text = format_guid(guid)
        return await self._primary(method, guid, f"/v1/meta/{text}{suffix}", query, payload, f"{method} blob {text}")

    async def _primary(self, method: str, guid: bytes, path: str, query: str, payload: Any, what: str) -> Any:
        """A request to the primary of the row of ``guid``'s tract -1 (blob metadata, a bucket's names), with
        the table version, and an operation id for changes, shared by its retries. ``query`` is more of the
        query string (``&``-joined, URL-encoded); ``payload`` goes as JSON. Returns the decoded JSON answer."""
        if payload is None:
            body = None
        elif isinstance(payload, (bytes, bytearray)):
            body = bytes(payload)
        else:
            body = orjson.dumps(payload)
        headers = {"content-type": "application/json"} if payload is not None else None
        op_id = f"&op={uuid.uuid4().hex}" if method != "GET" else ""  # retries of this call share it
        extra = f"&{query}" if query else ""

        async def op(table: Table) -> Any:
            primary = table.holders(guid, METADATA_TRACT)[0]
            send = asyncio.ensure_future(self._send(
                method, f"{primary.url}{path}?version={table.version}{op_id}{extra}", body, headers))
            try:
                await self._await_unless_moved([send], table, table.row_of(guid, METADATA_TRACT))
            finally:
                send.cancel()
            resp = send.result()
            if resp.status >= 300:
                raise error_from_response(resp.status, resp.body, where=what)
            return orjson.loads(resp.body) if resp.body else None

        return await self._retrying(op, what.lower())

    async def _write_tract(self, guid: bytes, incarnation: int, tract: int,
                           data: bytes | bytearray | memoryview, copy_from: CopySource | None = None) -> None:
        """Write a tract to every replica; with ``copy_from`` (``data`` empty), each replica copies the bytes of
        that tract from a holder of it, server to server."""
        if not 0 <= tract <= MAX_TRACT:
            raise BadRequest(f"tract number {tract} is out of range: use 0..{MAX_TRACT}", code="bad_tract")
        text = format_guid(guid)

        async def op(table: Table) -> None:
            if len(data) > table.tract_size:
                raise TractTooLarge(f"tract of {len(data)} bytes is over the cluster's tract size of "
                                    f"{table.tract_size} bytes")
            for _ in range(_SUPERSEDED_TRIES):
                version = self._clock.next()
                if await self._write_replicas(table, guid, text, tract, incarnation, data, version, copy_from):
                    return
            raise Superseded(f"write tract {tract} of {text}: other writers kept writing newer versions "
                             f"({_SUPERSEDED_TRIES} tries)")

        async with self._slots:
            await self._retrying(op, f"write tract {tract} of blob {text}")

    def _observe(self, header: str | None) -> None:
        """Move this client's clock past a version it read, so its next write of the tract is newer."""
        if header:
            try:
                self._clock.observe(TractVersion.parse(header))
            except ValueError:
                pass  # a server that sends no valid version: nothing to learn

    async def _write_replicas(self, table: Table, guid: bytes, text: str, tract: int, incarnation: int,
                              data: bytes | bytearray | memoryview, version: TractVersion,
                              copy_from: CopySource | None = None) -> bool:
        """Send one write, at ``version``, to every replica of the tract's row. True once every replica
        acknowledged the same version and checksum; False if some replica holds a newer version (the clock
        has moved past it: write again). Other failures raise."""
        query = (f"?version={table.version}&incarnation={incarnation}"
                 f"&stamp={version.stamp}&writer={version.writer}")
        holders = table.holders(guid, tract)
        if copy_from is None:
            path = f"/v1/tracts/{text}/{tract}{query}"
            sends = [asyncio.ensure_future(self._send_tract("PUT", s.data_url or s.url, path, data)) for s in holders]
        else:
            source, source_incarnation, source_tract = copy_from
            path = (f"/v1/tracts/{text}/{tract}/copy{query}&source={format_guid(source)}"
                    f"&source_incarnation={source_incarnation}&source_tract={source_tract}")
            sends = [asyncio.ensure_future(self._send_tract("POST", s.url, path)) for s in holders]
        try:
            await self._await_unless_moved(sends, table, table.row_of(guid, tract))
        finally:
            for task in sends:
                task.cancel()
        failures: list[BaseException] = []
        acks: set[tuple[str, int, int]] = set()
        superseded = False
        for task in sends:
            if not task.done() or task.cancelled():
                continue  # given up on when another replica failed
            failed = task.exception()
            if failed is not None:
                failures.append(failed)
                continue
            result = task.result()
            if result.status == 200:
                ack = orjson.loads(result.body)
                acks.add((ack["checksum"], ack["stamp"], ack["writer"]))
                continue
            err = error_from_response(result.status, result.body, where=f"write tract {tract} of {text}")
            if isinstance(err, Superseded):
                self._clock.observe(TractVersion(int(err.details.get("stamp", 0)), int(err.details.get("writer", 0))))
                superseded = True
            else:
                failures.append(err)
        if failures:
            raise failures[0]  # the first replica's failure: retried (or raised) by _retrying
        if superseded:
            return False
        if len(acks) != 1 or next(iter(acks))[1:] != version:
            raise Unavailable(f"write tract {tract} of {text}: replicas acknowledged different versions or bytes "
                              f"({sorted(acks)}, sent {version}); writing again", code="replicas_disagree")
        return True

    async def _await_unless_moved(self, sends: Sequence[asyncio.Future[HTTPResponse]], table: Table,
                                  row: int) -> None:
        """Wait for every server's answer (or a first failure), unless the table moves the row on meanwhile.

        A server that went silent (paused, cut off) holds its request until it times out; the
        metaserver meanwhile declares it dead and takes it out of the row. So past
        ``RECHECK_AFTER`` seconds the table is fetched again each second, and a newer version
        of the row ends the wait (StaleVersion): the operation is retried against the row's new holders.
        """
        pending = set(sends)
        while pending:
            done, pending = await asyncio.wait(pending, timeout=RECHECK_AFTER)
            if not pending or any(t.exception() is not None or t.result().status != 200 for t in done):
                return  # all answered, or one failed: the write is retried either way
            try:
                current = await self.tables.recheck(RECHECK_AFTER)
            except Unavailable:
                continue  # metaserver down: keep waiting for the replica
            if current.version > table.version and current.row_versions[row] > table.row_versions[row]:
                raise StaleVersion(f"row {row} changed (table version {current.version}) while a replica "
                                   "did not answer; retrying with its new holders", server_version=current.version)

    async def _read_tract(self, guid: bytes, incarnation: int, tract: int) -> bytes | bytearray:
        if not 0 <= tract <= MAX_TRACT:
            raise BadRequest(f"tract number {tract} is out of range: use 0..{MAX_TRACT}", code="bad_tract")
        text = format_guid(guid)

        async def op(table: Table) -> bytes | bytearray:
            holders = table.readers(guid, tract, self._rng)
            path = f"/v1/tracts/{text}/{tract}?version={table.version}&incarnation={incarnation}"
            failures: list[Exception] = []
            asked: set[asyncio.Future[HTTPResponse]] = set()
            untried = list(holders)

            def ask_next() -> None:
                server = untried.pop(0)
                asked.add(asyncio.ensure_future(self._send_tract("GET", server.data_url or server.url, path)))

            ask_next()
            try:
                while asked:
                    done, _ = await asyncio.wait(asked, timeout=self._hedge_after if untried else None,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        ask_next()  # this replica is slow to answer: ask the next one as well
                        continue
                    for task in done:
                        asked.discard(task)
                        try:
                            resp = task.result()
                        except (ConnectError, TimeoutError) as exc:
                            failures.append(ConnectError(f"read tract {tract} of {text}: {exc or 'timed out'}"))
                            continue
                        if resp.status == 200:
                            self._observe(resp.headers.get("x-fds-version"))
                            return resp.body
                        err = error_from_response(resp.status, resp.body, where=f"read tract {tract} of {text}")
                        if isinstance(err, (StaleVersion, PastEnd, BadRequest)) or (
                                isinstance(err, NotFound) and not isinstance(err, TractNotFound)):
                            raise err
                        failures.append(err)  # a bad or missing copy: try another replica
                    if not asked and untried:
                        ask_next()
            finally:
                for task in asked:
                    task.cancel()
            if all(isinstance(f, TractNotFound) for f in failures):
                raise failures[0]
            if all(isinstance(f, (TractNotFound, ChecksumMismatch)) for f in failures):
                raise ChecksumMismatch(f"read tract {tract} of {text}: no replica has a good copy: "
                                       + "; ".join(str(f) for f in failures))
            raise next(f for f in failures if not isinstance(f, (TractNotFound, ChecksumMismatch)))

        async with self._slots:
            return await self._retrying(op, f"read tract {tract} of blob {text}")

    async def _copy_tracts(self, source: Blob, target: Blob, size: int, progress: Progress | None = None) -> None:
        """Copy the ``size`` bytes of ``source`` into ``target`` (sized already) tract by tract, server to server,
        ``max_in_flight`` tracts at a time."""
        tract_size = (await self.table()).tract_size
        count = -(-size // tract_size)

        async def one(index: int) -> int:
            async with self._slots:
                await self._retrying(lambda table: self._copy_one(table, source, target, index),
                                     f"copy tract {index} of blob {source.guid}")
            if progress is not None:
                progress(min(tract_size, size - index * tract_size))
            return index

        async def jobs() -> AsyncIterator[Awaitable[int]]:
            for index in range(count):
                yield one(index)

        await _bounded(jobs(), self.max_in_flight)

    async def _copy_one(self, table: Table, source: Blob, target: Blob, index: int) -> None:
        for _ in range(_SUPERSEDED_TRIES):
            if await self._write_replicas(table, target.raw, target.guid, index, target.incarnation, b"",
                                          self._clock.next(), (source.raw, source.incarnation, index)):
                return
        raise Superseded(f"copy into tract {index} of {target.guid}: other writers kept writing newer versions")
