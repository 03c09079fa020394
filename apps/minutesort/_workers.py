"""The sort's worker processes: started here, invited (standing workers), or waited for (remote).

- :class:`Spawned` starts ``fds-minutesort worker --head URL`` children on
  this host and watches them: one that exits before its work is done is
  reported dead at once (no waiting for a silence timeout).
- :class:`StandingWorkers` invites ``fds-minutesort worker --serve``
  services; each starts a worker process for the sort and reports it if it
  dies (``POST /v1/lost``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time

import httpx

from apps.minutesort._auth import http_client
from apps.minutesort._protocol import Invite, SortState

__all__ = ["Spawned", "StandingWorkers", "error_text"]

log = logging.getLogger("fds.minutesort")


class Spawned:
    """Worker processes started by this head, tracked by PID."""

    def __init__(self, count: int, head_url: str, host: str, *, budget: int = 0) -> None:
        command = [sys.executable, "-m", "apps.minutesort.cli", "worker", "--head", head_url, "--host", host]
        if budget:
            command += ["--memory", str(budget)]
        self.children = [subprocess.Popen(command, stdin=subprocess.DEVNULL, start_new_session=True)
                         for _ in range(count)]

    def exited(self) -> list[tuple[int, int]]:
        """(pid, exit status) of every child that has exited."""
        return [(child.pid, code) for child in self.children if (code := child.poll()) is not None]

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the children still running, SIGKILL after ``grace`` seconds; reap them all."""
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    def wait(self, timeout: float) -> None:
        """Give the children ``timeout`` seconds to exit on their own."""
        deadline = time.monotonic() + timeout
        for child in self.children:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return


class StandingWorkers:
    """The standing workers a sort invites (``fds-minutesort worker --serve``), one sort process each."""

    def __init__(self, urls: list[str], head_url: str, job_id: str) -> None:
        self.urls = [url.rstrip("/") for url in urls]
        self.invite_body = Invite(head=head_url, job=job_id)
        self.job_id = job_id
        self.accepted: list[str] = []

    async def invite(self) -> str | None:
        """Invite them all at once; returns why the sort cannot go ahead (one refused, or is unreachable)."""
        async with http_client(10.0) as http:
            answers = await asyncio.gather(*(self._invite(http, url) for url in self.urls))
        refusals = [answer for answer in answers if answer]
        return "; ".join(refusals) if refusals else None

    async def _invite(self, http: httpx.AsyncClient, url: str) -> str | None:
        try:
            resp = await http.post(f"{url}/v1/sorts", content=self.invite_body.model_dump_json(),
                                   headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            return f"cannot reach the standing worker at {url}: {exc or type(exc).__name__}"
        if resp.status_code == 202:
            self.accepted.append(url)
            return None
        return f"the standing worker at {url} refused the sort ({resp.status_code}): {error_text(resp)}"

    async def cancel(self) -> None:
        """Tell the workers that took the sort to drop it (best effort: one may be dead)."""
        async with http_client(5.0) as http:
            await asyncio.gather(*(http.delete(f"{url}/v1/sorts/{self.job_id}") for url in self.accepted),
                                 return_exceptions=True)

    async def wait_idle(self, timeout: float = 15.0) -> None:
        """Wait until each worker's sort process has exited, so a sort started next finds it free."""
        deadline = time.monotonic() + timeout
        async with http_client(5.0) as http:
            for url in self.accepted:
                while time.monotonic() < deadline:
                    try:
                        resp = await http.get(f"{url}/v1/sorts/{self.job_id}")
                        if resp.status_code != 200 or SortState.model_validate_json(resp.content).state != "running":
                            break
                    except httpx.HTTPError:
                        break
                    await asyncio.sleep(0.05)
                else:
                    log.warning("standing worker %s still runs sort %s after %.0f s", url, self.job_id, timeout)


def error_text(resp: httpx.Response) -> str:
    """The message of an fds error body, else the start of the body."""
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]
