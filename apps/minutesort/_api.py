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
from pathlib import Path
from typing import Any

from apps.minutesort._blobio import generate_blob
from apps.minutesort._check import blob_checksum, validate_blobs
from apps.minutesort._head import run_sort
from apps.minutesort._types import RunResult, SortOptions, SortResult
from apps.minutesort._valsort import Summary
from fds.client import Client

__all__ = ["sort", "run", "input_checksum", "write_manifest", "read_manifest", "PhaseProgress", "ByteProgress"]

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


async def run(metaserver: str, *, records: int, options: SortOptions | None = None, skew: bool = False,
              keep: bool = False, manifest: str | Path | None = None, gen_progress: ByteProgress | None = None,
              progress: PhaseProgress | None = None) -> RunResult:
    """Generate ``records`` records, sort them, validate the output against the input; delete both unless ``keep``."""
    options = options or SortOptions()
    phases: dict[str, float] = {}
    checksums: list[int] = []
    started = time.perf_counter()
    async with Client(metaserver) as fds:
        blob = await generate_blob(fds, records, skew=skew, workers=2, checksums=checksums, progress=gen_progress)
    phases["gen"] = time.perf_counter() - started
    input_checksum = sum(checksums) & _MASK128
    result = await sort(metaserver, blob.guid, options, progress=progress)
    phases.update({f"sort: {k}": v for k, v in result.phases.items()})
    validated = time.perf_counter()
    summary = await validate_blobs(metaserver, result.output_blobs)
    phases["validate"] = time.perf_counter() - validated
    if manifest is not None:
        write_manifest(manifest, result, summary)
    if not keep:
        async with Client(metaserver) as fds:
            for guid in [blob.guid, *result.output_blobs]:
                await fds.delete_blob(guid)
    return RunResult(sort=result, checksum=summary.checksum_hex, input_checksum=f"{input_checksum:x}",
                     duplicates=summary.duplicates,
                     valid=summary.valid and summary.checksum == input_checksum and summary.records == records,
                     phases=phases, workers=len(result.workers) or options.workers, kept=keep)


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

