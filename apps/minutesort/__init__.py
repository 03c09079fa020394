"""fds-minutesort: the Sort Benchmark's MinuteSort on fds.

The sort, as a library (:mod:`apps.minutesort._api`):

- :func:`sort` sorts a record blob into output blobs in key order and returns a
  :class:`SortResult`; :func:`run` generates, sorts and validates;
- :class:`Sorter` sorts for a long-lived program over standing workers (small
  blobs in milliseconds, in one worker's warm process);
- :class:`SortOptions` says how (workers, memory, bucket boundaries, ...);
- :func:`run_async` runs a coroutine on uvloop, as the command does.

The record kernels live in private modules and are re-exported here:

- generation, byte-identical to gensort 1.5 (``_gensort``);
- valsort's checks and checksum, incremental and chainable (``_valsort``);
- keys, bucket boundaries, partitioning and in-memory sorting (``_records``).
"""

from ._aio import run_async
from ._api import Sorter, input_checksum, read_manifest, run, sort, write_manifest
from ._gensort import KEY_SIZE, RECORD_SIZE, generate, generate_into, iter_generate
from ._records import (
    argsort_records,
    as_records,
    bucket_ids,
    key_parts,
    partition,
    sample_boundaries,
    sort_records,
    uniform_boundaries,
)
from ._types import RunResult, SortFailed, SortOptions, SortResult, WorkerReport
from ._valsort import Summary, Validator, checksum, combine, validate, validate_file

__all__ = [
    "run_async", "sort", "run", "Sorter", "input_checksum", "read_manifest", "write_manifest",
    "SortOptions", "SortResult", "RunResult", "WorkerReport", "SortFailed",
    "KEY_SIZE", "RECORD_SIZE", "generate", "generate_into", "iter_generate",
    "argsort_records", "as_records", "bucket_ids", "key_parts", "partition", "sample_boundaries", "sort_records",
    "uniform_boundaries",
    "Summary", "Validator", "checksum", "combine", "validate", "validate_file",
]
