"""Tract reads and writes, shared by both of the tract server's HTTP front ends.

The FastAPI app (``/v1/tracts`` on the API port, documented at ``/docs``) and
the fast data port (:mod:`fds.tractserver._fastpath`) parse requests their own
way and then call the same :class:`TractService`, so the checks, the locking
and the error messages are one piece of code.
"""

from __future__ import annotations

import random

import xxhash

from fds import tls
from fds.errors import (
    BadRequest,
    ChecksumMismatch,
    TableNotReady,
    TractNotFound,
    TractTooLarge,
    Unavailable,
    error_from_response,
)
from fds.guid import format_guid, parse_guid
from fds.httpclient import ConnectError, HTTPPool
from fds.tlt import Table
from fds.tractserver._node import Node
from fds.tractserver._store import TractEntry
from fds.versions import TractVersion

__all__ = ["TractService", "tract_number", "tract_version"]


def tract_number(text: str) -> int:
    """Parse a data tract number from a URL: 0 and up."""
    try:
        number = int(text)
    except ValueError:
        raise BadRequest(f"tract number {text[:40]!r} is not an integer", code="bad_tract") from None
    if number < 0:
        raise BadRequest(f"tract number {number} is negative; data tracts are 0 and up", code="bad_tract")
    return number


def tract_version(stamp: int | None, writer: int | None) -> TractVersion | None:
    """The version a write carries (``stamp`` and ``writer`` query parameters: both, or neither)."""
    if stamp is None and writer is None:
        return None
    if stamp is None or writer is None:
        raise BadRequest("send a tract write's version as both stamp and writer, or neither "
                         "(then the server assigns one)", code="bad_version")
    return TractVersion(stamp, writer)


class TractService:
    """The checks and disk work behind ``PUT``/``GET``/``HEAD /v1/tracts/{guid}/{tract}``."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._pool: HTTPPool | None = None

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def tract_size(self) -> int:
        table = self.node.table
        if table is None:
            raise TableNotReady("this tract server has no table yet; retry shortly")
        return table.tract_size

    def check_length(self, length: int) -> None:
        """Refuse a body longer than the tract size before reading it."""
        limit = self.tract_size()
        if length > limit:
            raise TractTooLarge(f"tract body of {length} bytes is over the cluster's tract size of {limit} bytes")

    async def locate(self, guid: str, tract: str, version: int) -> tuple[bytes, int, Table]:
        raw, number = parse_guid(guid), tract_number(tract)
        return raw, number, await self.node.check(raw, number, version)

    async def write(self, guid: str, tract: str, version: int, incarnation: int, body: memoryview,
                    tract_version: TractVersion | None = None) -> TractEntry:
        """Store a tract durably after every check, if ``tract_version`` is newer than the stored one (else
        Superseded); returns its index entry."""
        raw, number, table = await self.locate(guid, tract, version)
        if len(body) > table.tract_size:
            raise TractTooLarge(f"tract body of {len(body)} bytes is over the cluster's tract size of "
                                f"{table.tract_size} bytes")
        row = table.row_of(raw, number)
        async with self.node.writing(row, version):
            await self.node.check_extent(raw, incarnation, number, table)
            async with self.node.locks.hold((raw, number)):
                entry = await self.node.run_io(self.node.store.write, raw, number, body, incarnation, tract_version)
                self.node.mark_current(row, raw, incarnation, number)
        assert entry is not None
        return entry

    async def read(self, guid: str, tract: str, version: int, incarnation: int) -> tuple[memoryview, TractEntry]:
        """Read and verify a tract; a missing one says whether it is past the end or never written.

        On a row this server is filling, only tracts known current are served: a server back from
        an absence may hold older copies of the rest."""
        raw, number, table = await self.locate(guid, tract, version)
        row = table.row_of(raw, number)
        if table.is_filling(self.node.id, row) and not self.node.is_current(row, raw, incarnation, number):
            raise Unavailable(f"tract {number} of blob {format_guid(raw)} is not yet copied to or checked on this "
                              "server (it is filling the row); read another replica", code="filling")
        try:
            return await self.node.run_io(self.node.store.read, raw, number, incarnation)
        except TractNotFound:
            await self.node.check_extent(raw, incarnation, number, table)  # past the end, or no such blob?
            raise

    async def entry(self, guid: str, tract: str, version: int, incarnation: int) -> TractEntry | None:
        raw, number, _ = await self.locate(guid, tract, version)
        return await self.node.run_io(self.node.store.entry, raw, number, incarnation)

    async def copy(self, guid: str, tract: str, version: int, incarnation: int, tract_version: TractVersion | None,
                   source: str, source_incarnation: int, source_tract: int) -> TractEntry:
        """Write a tract with the bytes of another blob's tract, fetched from a holder of that tract here, server
        to server (a copy inside the cluster: the client sends no bytes). Checked and stored as a client write."""
        raw, number, table = await self.locate(guid, tract, version)
        src = parse_guid(source)
        path = f"/v1/tracts/{format_guid(src)}/{source_tract}?version={table.version}&incarnation={source_incarnation}"
        if self._pool is None:
            self._pool = HTTPPool(timeout=60.0, ssl_context=tls.client_context())
        failures: list[str] = []
        for server in table.readers(src, source_tract, random.Random()):
            try:
                resp = await self._pool.request("GET", (server.data_url or server.url) + path,
                                                headers=self.node.auth_headers)
            except (ConnectError, TimeoutError) as exc:
                failures.append(f"{server.id}: {exc or 'timed out'}")
                continue
            if resp.status != 200:
                err = error_from_response(resp.status, resp.body, where=f"copy from {server.id}")
                if isinstance(err, (Unavailable, TractNotFound)):
                    failures.append(str(err))
                    continue
                raise err
            if f"{xxhash.xxh3_64_intdigest(resp.body):016x}" != resp.headers.get("x-fds-checksum", ""):
                failures.append(f"{server.id}: tract arrived damaged")
                continue
            return await self.write(guid, str(number), version, incarnation, memoryview(resp.body), tract_version)
        if failures and all("damaged" in f or "checksum" in f for f in failures):
            raise ChecksumMismatch(f"copy tract {source_tract} of {format_guid(src)}: no good copy: "
                                   f"{'; '.join(failures)}")
        raise Unavailable(f"copy tract {source_tract} of {format_guid(src)} to tract {number} of {format_guid(raw)}: "
                          f"no holder could serve it ({'; '.join(failures) or 'none'})")
