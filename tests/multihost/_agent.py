"""The test's client, run inside the client host's namespace: ``python _agent.py METASERVER GATEWAY SECRET_FILE``.

The test process lives in the root namespace, which has no address on the private network, so
everything that talks to the cluster runs here. It reads one JSON command a line on stdin and
answers one JSON line on stdout (``{"ok": ...}`` or ``{"error": "..."}``):

- ``put_client {path}`` / ``get_client {guid, path}``: a whole file through :class:`fds.client.Client`.
- ``put_gateway {path}`` / ``get_gateway {guid, path, range?}``: the same through the gateway's REST API.
- ``http {method, url, auth?}``: status and JSON body of a control-plane call (``/v1/cluster``,
  ``/v1/table``); with ``auth: false``, sent without credentials.
- ``load_start {paths}`` / ``load_stop``: keep writing those files as new blobs through the client in the
  background; ``load_count`` says how many were acknowledged so far; ``load_stop`` returns every write
  acknowledged (``[guid, path]``) and every failure.

Every call carries credentials minted from the cluster secret (``SECRET_FILE``). Bytes are never
compared here: the test compares the files it wrote with the files read back.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from typing import Any

import httpx

from fds.auth import Credentials, HttpxAuth
from fds.client import Client


class Agent:
    def __init__(self, metaserver: str, gateway: str, secret_file: str) -> None:
        self.client = Client(metaserver, secret_file=secret_file)
        self.http = httpx.AsyncClient(timeout=60.0, auth=HttpxAuth(Credentials.discover(secret_file=secret_file)))
        self.anonymous = httpx.AsyncClient(timeout=60.0)
        self.gateway = gateway
        self.load: asyncio.Task[None] | None = None
        self.stop = asyncio.Event()
        self.acked: list[list[str]] = []
        self.failures: list[str] = []

    async def put_client(self, path: str) -> str:
        blob = await self.client.create_blob()
        await blob.write_from(path)
        return blob.guid

    async def get_client(self, guid: str, path: str) -> int:
        blob = await self.client.open_blob(guid)
        return await blob.read_into(path)

    async def put_gateway(self, path: str) -> str:
        created = await self.http.post(f"{self.gateway}/v1/blobs")
        created.raise_for_status()
        guid = str(created.json()["guid"])
        with open(path, "rb") as fh:
            body = fh.read()
        stored = await self.http.put(f"{self.gateway}/v1/blobs/{guid}", content=body)
        stored.raise_for_status()
        if stored.json()["length"] != len(body):
            raise AssertionError(f"gateway recorded length {stored.json()['length']}, sent {len(body)}")
        return guid

    async def get_gateway(self, guid: str, path: str, range: str | None = None) -> dict[str, Any]:
        headers = {"range": range} if range else {}
        got = await self.http.get(f"{self.gateway}/v1/blobs/{guid}", headers=headers)
        if got.status_code not in (200, 206):
            raise RuntimeError(f"GET {guid} via gateway: {got.status_code} {got.text[:200]}")
        with open(path, "wb") as fh:
            fh.write(got.content)
        return {"status": got.status_code, "content_range": got.headers.get("content-range")}

    async def http_call(self, method: str, url: str, auth: bool = True) -> dict[str, Any]:
        resp = await (self.http if auth else self.anonymous).request(method, url)
        return {"status": resp.status_code, "body": resp.json()}

    async def _write_forever(self, paths: list[str]) -> None:
        for path in itertools.cycle(paths):
            if self.stop.is_set():
                return
            try:
                guid = await self.put_client(path)
            except Exception as exc:  # recorded for the test to assert on
                self.failures.append(f"{path}: {type(exc).__name__}: {exc}")
            else:
                self.acked.append([guid, path])

    async def load_start(self, paths: list[str]) -> None:
        self.stop.clear()
        self.load = asyncio.create_task(self._write_forever(paths))

    async def load_count(self) -> int:
        return len(self.acked)

    async def load_stop(self) -> dict[str, Any]:
        self.stop.set()
        if self.load is not None:
            await self.load
        return {"acked": self.acked, "failures": self.failures}

    async def handle(self, command: dict[str, Any]) -> Any:
        op = command.pop("op")
        if op == "http":
            return await self.http_call(**command)
        return await getattr(self, op)(**command)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.http.aclose()
        await self.anonymous.aclose()


async def main(metaserver: str, gateway: str, secret_file: str) -> None:
    agent = Agent(metaserver, gateway, secret_file)
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            try:
                answer: dict[str, Any] = {"ok": await agent.handle(json.loads(line))}
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        await agent.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
