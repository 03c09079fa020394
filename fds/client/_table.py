"""The client's cached copy of the tract locator table."""

from __future__ import annotations

import asyncio

import httpx

from fds import tls
from fds.auth import Credentials, HttpxAuth
from fds.errors import Unavailable, error_from_response
from fds.models import ClusterStatus, TableModel
from fds.tlt import Table

__all__ = ["TableCache"]


class TableCache:
    """Fetches the table from the metaserver once, and again only when told it is stale.

    Concurrent callers that all find the table stale share one fetch.
    """

    def __init__(self, metaserver: str, *, timeout: float = 30.0, credentials: Credentials | None = None,
                 tls_ca: str | None = None) -> None:
        self.metaserver = metaserver.rstrip("/")
        self._http = httpx.AsyncClient(timeout=timeout, auth=HttpxAuth(credentials),
                                       verify=tls.client_context(tls_ca))
        self._table: Table | None = None
        self._fetch: asyncio.Task[Table] | None = None
        self._fetched = 0.0

    async def get(self) -> Table:
        if self._table is not None:
            return self._table
        return await self.refresh(0)

    async def refresh(self, stale_version: int) -> Table:
        """Refetch unless the cached table is already newer than ``stale_version``."""
        if self._table is not None and self._table.version > stale_version:
            return self._table
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.create_task(self._load())
        return await asyncio.shield(self._fetch)

    async def recheck(self, interval: float) -> Table:
        """The newest table, fetched again if the last fetch is more than ``interval`` seconds old (for
        callers waiting on a silent server, many at once: one fetch serves them all)."""
        if self._table is not None and asyncio.get_running_loop().time() - self._fetched < interval:
            return self._table
        return await self.refresh(self._table.version if self._table else 0)

    async def _load(self) -> Table:
        self._fetched = asyncio.get_running_loop().time()
        resp = await self._get("/v1/table")
        table = Table(TableModel.model_validate_json(resp.content))
        if self._table is None or table.version >= self._table.version:
            self._table = table
        return self._table

    async def cluster(self) -> ClusterStatus:
        return ClusterStatus.model_validate_json((await self._get("/v1/cluster")).content)

    async def _get(self, path: str) -> httpx.Response:
        try:
            resp = await self._http.get(self.metaserver + path)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the metaserver at {self.metaserver} ({exc or type(exc).__name__}); "
                              "is the cluster running? (`fds local up` starts one)") from None
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, where=f"metaserver {self.metaserver}")
        return resp

    async def aclose(self) -> None:
        await self._http.aclose()
