"""The sort as a library: :func:`sort` and :func:`run`, which the ``fds-minutesort`` command and the benchmarks call.

::

    from apps.minutesort import SortOptions, run_async, sort

    result = run_async(sort("http://127.0.0.1:7000", guid, SortOptions(workers=2)))
    print(result.output_blobs, result.seconds)

Credentials are found as every fds client finds them (``$FDS_TOKEN``,
``$FDS_SECRET_FILE``, ``./.fds``); worker processes started here inherit them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from apps.minutesort._auth import auth_headers, bins_pool
from apps.minutesort._blobio import generate_blob
from apps.minutesort._check import blob_checksum, validate_blobs
from apps.minutesort._gensort import RECORD_SIZE
from apps.minutesort._head import run_sort
from apps.minutesort._protocol import SoloRequest, SoloResult
from apps.minutesort._types import RunResult, SortOptions, SortResult, WorkerReport
from apps.minutesort._valsort import Summary
from fds.client import Client
from fds.errors import error_from_response

__all__ = ["sort", "run", "Sorter", "input_checksum", "write_manifest", "read_manifest", "PhaseProgress",
           "ByteProgress"]

PhaseProgress = Callable[[str, int, int], None]
"""Called as ``(phase, done, total)`` while a sort runs."""
ByteProgress = Callable[[int], None]
"""Called with the bytes each finished tract moved (generation)."""

_MASK128 = (1 << 128) - 1


async def sort(metaserver: str, input_blob: str, options: SortOptions | None = None, *,
               progress: PhaseProgress | None = None) -> SortResult:
    """Sort the records of ``input_blob`` into output blobs, one per key range, returned in key order.

    Raises :class:`apps.minutesort.SortFailed` (with the reason) when the
    sort cannot finish, and :class:`fds.errors.FDSError` for a blob that
    does not exist or is not records.
    """
    return await run_sort(metaserver, input_blob, options or SortOptions(), progress=progress)


async def run(metaserver: str, *, records: int = 0, input_blob: str | None = None, options: SortOptions | None = None,
              skew: bool = False, keep: bool = False, manifest: str | Path | None = None,
              gen_progress: ByteProgress | None = None, progress: PhaseProgress | None = None) -> RunResult:
    """Generate ``records`` records (or take ``input_blob``), sort them, validate the output against the input.

    Deletes what it made (the generated input, the output) unless ``keep``;
    a given ``input_blob`` is never deleted.
    """
    options = options or SortOptions()
    phases: dict[str, float] = {}
    started = time.perf_counter()
    if input_blob is None:
        checksums: list[int] = []
        async with Client(metaserver) as fds:
            blob = await generate_blob(fds, records, skew=skew, workers=2, checksums=checksums,
                                       progress=gen_progress)
        source = blob.guid
        phases["gen"] = time.perf_counter() - started
        expected = sum(checksums) & _MASK128
    else:
        source = input_blob
        expected = await blob_checksum(metaserver, input_blob)
        phases["input checksum"] = time.perf_counter() - started
    result = await sort(metaserver, source, options, progress=progress)
    records = result.records if input_blob is not None else records
    phases.update({f"sort: {k}": v for k, v in result.phases.items()})
    validated = time.perf_counter()
    summary = await validate_blobs(metaserver, result.output_blobs)
    phases["validate"] = time.perf_counter() - validated
    if manifest is not None:
        write_manifest(manifest, result, summary)
    if not keep:
        async with Client(metaserver) as fds:
            for guid in [*([source] if input_blob is None else []), *result.output_blobs]:
                await fds.delete_blob(guid)
    return RunResult(sort=result, checksum=summary.checksum_hex, input_checksum=f"{expected:x}",
                     duplicates=summary.duplicates,
                     valid=summary.valid and summary.checksum == expected and summary.records == records,
                     phases=phases, workers=len(result.workers) or options.workers, kept=keep)


class Sorter:
    """Sorts for a long-lived program, over standing workers (``fds-minutesort worker --serve``)::

        async with Sorter("http://127.0.0.1:7000", ["http://10.0.0.5:7300", "http://10.0.0.6:7300"]) as sorter:
            result = await sorter.sort(guid)      # durable output in result.output_blobs

    A blob of up to the workers' ``solo_bytes`` (256 MB by default) is
    sorted by one standing worker in its own warm process (``POST
    /v1/solo``): no process starts, no head, no shuffle, one round trip from
    this program, and the answer comes once the output is durable; the
    least busy worker takes each. A larger blob gets a full sort on all of
    them (:func:`sort` with ``worker_urls``). Many sorts may run at once.
    """

    def __init__(self, metaserver: str, worker_urls: list[str], *, solo: bool = True,
                 options: SortOptions | None = None, timeout: float = 300.0) -> None:
        if not worker_urls:
            raise ValueError("a Sorter needs at least one standing worker URL")
        self.metaserver = metaserver
        self.urls = [url.rstrip("/") for url in worker_urls]
        self.solo = solo
        self.options = replace(options or SortOptions(), worker_urls=self.urls, spawn=False)
        self._pool = bins_pool(timeout)
        self._busy = dict.fromkeys(self.urls, 0)

    async def __aenter__(self) -> Sorter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def sort(self, input_blob: str, *, output_blob: str | None = None) -> SortResult:
        """Sort ``input_blob``; returns once the output is durable in fds."""
        started = time.perf_counter()
        if self.solo:
            url = min(self.urls, key=lambda u: self._busy[u])
            self._busy[url] += 1
            try:
                resp = await self._pool.request(
                    "POST", f"{url}/v1/solo", headers={**auth_headers(), "content-type": "application/json"},
                    body=SoloRequest(input_blob=input_blob, output_blob=output_blob).model_dump_json().encode())
            finally:
                self._busy[url] -= 1
            if resp.status == 200:
                done = SoloResult.model_validate_json(bytes(resp.body))
                seconds = time.perf_counter() - started
                return SortResult(input_blob=done.input_blob, output_blobs=[done.output_blob], records=done.records,
                                  bytes=done.records * RECORD_SIZE, seconds=seconds, phases=done.seconds,
                                  workers=[WorkerReport(worker=self.urls.index(url), alive=True, tracts_read=0,
                                                        bytes_received=0, peak_rss_bytes=0, seconds=done.seconds,
                                                        buckets_sorted=1)],
                                  bucket_records=[done.records], mode="solo")
            if resp.status != 413:  # 413: too large to sort alone: a full sort below
                raise error_from_response(resp.status, bytes(resp.body))
        return await sort(self.metaserver, input_blob, self.options)


async def input_checksum(metaserver: str, input_blob: str) -> int:
    """valsort's checksum of a blob's records (order does not matter): what a sort's output must match."""
    return await blob_checksum(metaserver, input_blob)


def write_manifest(path: str | Path, result: SortResult, summary: Summary | None = None) -> None:
    """The manifest ``sort`` writes: the output blobs in key order, and what the sort did."""
    manifest: dict[str, Any] = {
        "input_blob": result.input_blob, "output_blobs": result.output_blobs, "records": result.records,
        "bytes": result.bytes, "bucket_records": result.bucket_records, "mode": result.mode,
        "sort_seconds": round(result.seconds, 3),
    }
    if summary is not None:
        manifest["checksum"] = summary.checksum_hex
    Path(path).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(path: str | Path) -> tuple[list[str], str | None]:
    """(output blobs in key order, input blob) of a manifest; :class:`ValueError` saying what is wrong."""
    try:
        manifest = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the manifest {path}: {exc.strerror}") from None
    except ValueError:
        manifest = None
    blobs = manifest.get("output_blobs") if isinstance(manifest, dict) else None
    if not isinstance(blobs, list) or not all(isinstance(g, str) for g in blobs):
        raise ValueError(f"{path} is not a manifest written by `fds-minutesort sort` (JSON with \"output_blobs\")")
    assert isinstance(manifest, dict)
    source = manifest.get("input_blob")
    return [str(g) for g in blobs], str(source) if isinstance(source, str) else None

