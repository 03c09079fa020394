"""Progress bars for fds commands: one over bytes (with a rate), one over counts.

    from fds.progress import byte_bar, count_bar

    with byte_bar("get", total=size) as bar:
        await blob.read_into(sink, progress=bar)   # a Bar is a Callable[[int], None]

    with count_bar("read + shuffle", total=tracts, unit="tracts") as bar:
        bar.update(done)                            # or bar.advance(n), bar(n)

A bar draws on stderr (or ``file``) only when that stream is a terminal and
``quiet`` is false. Otherwise the same calls do nothing, so callers never
branch on it, and output piped to a file or a log gets no control
characters. Bars are transient: each vanishes when its ``with`` block ends,
leaving the terminal to the command's own output. Calls are thread-safe.

This module imports nothing of fds; rich is imported only when a bar is shown.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import IO, Any

__all__ = ["Bar", "byte_bar", "count_bar"]


class Bar:
    """One live bar, or a silent stand-in when nothing is drawn (:attr:`shown` says which).

    Calling a bar advances it, so a bar is a valid ``progress=`` callback
    for :mod:`fds.client` (called with the bytes each tract moved).
    """

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task

    @property
    def shown(self) -> bool:
        """Whether this bar is drawn (False when quiet or not on a terminal)."""
        return self._progress is not None

    def __call__(self, n: int = 1) -> None:
        self.advance(n)

    def advance(self, n: int = 1) -> None:
        """Add ``n`` to the amount done."""
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def update(self, done: int | None = None, *, total: int | None = None, description: str | None = None) -> None:
        """Set the amount done (absolute), and optionally a new total or description."""
        if self._progress is not None:
            self._progress.update(self._task, completed=done, total=total, description=description)


@contextlib.contextmanager
def byte_bar(description: str, total: int | None, *, quiet: bool = False,
             file: IO[str] | None = None) -> Iterator[Bar]:
    """A bar over ``total`` bytes (None: unknown) showing bytes done, rate and time left."""
    with _bar(description, total, quiet, file, _byte_columns) as bar:
        yield bar


@contextlib.contextmanager
def count_bar(description: str, total: int | None, *, unit: str = "", quiet: bool = False,
              file: IO[str] | None = None) -> Iterator[Bar]:
    """A bar over ``total`` things (None: unknown) showing ``done/total unit``, elapsed and time left."""
    with _bar(description, total, quiet, file, lambda: _count_columns(unit)) as bar:
        yield bar


def _byte_columns() -> list[Any]:
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
            TimeRemainingColumn()]


def _count_columns(unit: str) -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit:
        columns.append(TextColumn(unit))
    return [*columns, TimeElapsedColumn(), TimeRemainingColumn()]


@contextlib.contextmanager
def _bar(description: str, total: int | None, quiet: bool, file: IO[str] | None,
         columns: Any) -> Iterator[Bar]:
    stream = sys.stderr if file is None else file
    if quiet or not _is_terminal(stream):
        yield Bar()
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(*columns(), console=Console(file=stream), transient=True) as progress:
        yield Bar(progress, progress.add_task(description, total=total))


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False
