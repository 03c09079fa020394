"""``fds://`` for the Python data stack: an fsspec filesystem over buckets and keys.

fsspec finds it by its protocol (the ``fsspec.specs`` entry point), so these work as they are::

    import pandas as pd
    df = pd.read_parquet("fds://sales/2024.parquet")
    df.to_parquet("fds://sales/copy.parquet")

    import fsspec, pyarrow.dataset as ds
    fs = fsspec.filesystem("fds")                     # or FdsFileSystem(metaserver=URL, token=...)
    table = ds.dataset("sales/by_day", filesystem=fs, format="parquet", partitioning="hive").to_table()

Which cluster and credentials: see :class:`FdsFileSystem` (``storage_options``, then ``FDS_*``
variables, then ``./.fds``, as every fds command finds them).
"""

from fds.fs._file import FdsFile
from fds.fs._filesystem import FdsFileSystem
from fds.fs._options import ClusterOptions

__all__ = ["FdsFileSystem", "FdsFile", "ClusterOptions"]
