"""fds-minutesort: the Sort Benchmark's MinuteSort on fds.

The record kernels live in private modules and are re-exported here:

- generation, byte-identical to gensort 1.5 (``_gensort``);
- valsort's checks and checksum, incremental and chainable (``_valsort``);
- keys, bucket boundaries, partitioning and in-memory sorting (``_records``).
"""

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
from ._valsort import Summary, Validator, checksum, combine, validate, validate_file

__all__ = [
    "KEY_SIZE", "RECORD_SIZE", "generate", "generate_into", "iter_generate",
    "argsort_records", "as_records", "bucket_ids", "key_parts", "partition", "sample_boundaries", "sort_records",
    "uniform_boundaries",
    "Summary", "Validator", "checksum", "combine", "validate", "validate_file",
]
