"""``validate``: valsort over output blobs in key order, in parallel per blob."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor

from apps.minutesort._aio import run_async
from apps.minutesort._valsort import Summary, Validator, combine
from fds.client import Client

__all__ = ["validate_blobs", "blob_checksum"]


async def _summarise(metaserver: str, guid: str) -> Summary:
    validator = Validator()
    async with Client(metaserver, max_in_flight=8) as fds:
        blob = await fds.open_blob(guid)
        async for _, data in blob.read_tracts(range(await blob.size())):
            validator.feed(data)
    return validator.summary()


def _summarise_in_process(metaserver: str, guid: str) -> dict[str, object]:
    return run_async(_summarise(metaserver, guid)).to_json()


async def validate_blobs(metaserver: str, guids: Sequence[str], *, processes: int = 2) -> Summary:
    """The valsort summary of the blobs concatenated in the given order."""
    if not guids:
        return Summary()
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=max(1, min(processes, len(guids)))) as pool:
        parts = await asyncio.gather(*(loop.run_in_executor(pool, _summarise_in_process, metaserver, g)
                                       for g in guids))
    return combine(Summary.from_json(p) for p in parts)


async def blob_checksum(metaserver: str, guid: str, *, processes: int = 2) -> int:
    """valsort's checksum of one blob's records (order does not matter)."""
    return (await validate_blobs(metaserver, [guid], processes=processes)).checksum
