"""Running a command against a cluster, for every module of :mod:`fds.cli` that has one.

:func:`run` finds the cluster, hands ``work`` a client and turns failures into exit codes
(see :mod:`fds.cli`); :func:`reading` and :func:`writing` do the same around a local file that a
command uploads from or downloads into (``-`` is stdin or stdout), so ``fds put``/``fds cp FILE
fds://...`` and ``fds get``/``fds cp fds://... FILE`` open, close and report them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, BinaryIO, TypeVar

from fds.auth import AuthError
from fds.cli import EXIT_ERROR, EXIT_UNREACHABLE, EXIT_USAGE
from fds.cli._output import Output, OutputError, open_output
from fds.cli.discover import NoCluster, find_metaserver
from fds.client import ChecksumMismatch, Client, FDSError, Unavailable

__all__ = ["fail", "run", "command", "reading", "writing"]

T = TypeVar("T")


def fail(message: object, code: int = EXIT_ERROR) -> int:
    """Say ``fds: MESSAGE`` on one line of stderr; returns ``code``."""
    print("fds: " + " ".join(str(message).split()), file=sys.stderr)
    return code


def _arun(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def run(args: argparse.Namespace, work: Callable[[Client], Awaitable[int]]) -> int:
    """Find the cluster, run ``work`` with a client, and turn failures into exit codes."""
    try:
        metaserver = find_metaserver(args.metaserver)
    except NoCluster as exc:
        return fail(exc, EXIT_UNREACHABLE)

    async def main() -> int:
        async with Client(metaserver) as client:
            return await work(client)

    try:
        return _arun(main())
    except AuthError as exc:  # the secret file named by FDS_SECRET_FILE or ./.fds is unusable
        return fail(exc)
    except ChecksumMismatch as exc:  # an Unavailable, but about the data, not the cluster
        return fail(exc)
    except Unavailable as exc:
        return fail(exc, EXIT_UNREACHABLE)
    except FDSError as exc:
        return fail(exc)
    except BrokenPipeError:  # e.g. `fds get GUID - | head`: stop quietly
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}")


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report an fds error raised before the cluster is contacted (a malformed GUID) as exit 1."""

    def run_command(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except FDSError as exc:
            return fail(exc)

    run_command.__doc__ = fn.__doc__
    return run_command


def reading(args: argparse.Namespace, path: str,
            work: Callable[[Client, BinaryIO, int | None], Awaitable[int]], *,
            if_directory: str | None = None) -> int:
    """:func:`run` ``work(client, source, size)`` with ``path`` open for reading (``-``: stdin, whose size is
    None), and close it after. A path that cannot be opened is exit 1, or with ``if_directory`` a directory
    is exit 2 with that message."""
    try:
        source: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")
    except OSError as exc:
        if if_directory is not None and isinstance(exc, IsADirectoryError):
            return fail(if_directory, EXIT_USAGE)
        return fail(f"cannot read {path}: {exc.strerror}")

    async def with_source(client: Client) -> int:
        size = os.fstat(source.fileno()).st_size if source is not sys.stdin.buffer else None
        return await work(client, source, size)

    try:
        return run(args, with_source)
    finally:
        if source is not sys.stdin.buffer:
            source.close()


def writing(args: argparse.Namespace, out: str, work: Callable[[Client, Output], Awaitable[int]]) -> int:
    """:func:`run` ``work(client, output)`` with ``out`` opened by :func:`fds.cli._output.open_output`
    (``-``: stdout). What ``work`` does not commit is aborted: a failed download leaves the old file."""
    try:
        output = open_output(out)
    except OutputError as exc:
        return fail(exc)
    try:
        return run(args, lambda client: work(client, output))
    finally:
        output.abort()  # after a commit, a no-op
