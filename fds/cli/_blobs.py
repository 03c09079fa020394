"""``fds put | get | stat | rm | status``: blob and cluster commands against a running cluster.

The commands on names (``fds mb | rb | ls | cp | mv | cat | rm fds://...``) are in :mod:`fds.cli._names`.

Which cluster: ``--metaserver URL`` if given, else ``$FDS_METASERVER``, else
the ``"metaserver"`` of ``./.fds/cluster.json`` (written by ``fds local up``).

Exit codes (see :mod:`fds.cli`): 0 success; 1 an fds or file error, shown as
one line ``fds: <message>`` on stderr; 2 bad usage; 3 no cluster found, or
the cluster could not be reached. Data goes to stdout only; progress bars
and messages go to stderr, so ``fds get GUID - | ...`` is safe.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any, BinaryIO

from fds.cli import EXIT_OK
from fds.cli._output import Output, download
from fds.cli._run import command, reading, run, writing
from fds.cli.discover import NoCluster, find_metaserver
from fds.client import Blob, BlobExists, BlobNotFound, Client, FDSError
from fds.guid import parse_guid
from fds.models import BlobInfo, ClusterStatus, MemberState
from fds.progress import byte_bar

__all__ = ["add_parsers", "find_metaserver", "NoCluster"]

_DISCOVERY = ("Which cluster: --metaserver URL, else $FDS_METASERVER, else the \"metaserver\" of ./.fds/cluster.json "
              "(written by `fds local up`).")
_EXIT_CODES = "Exit codes: 0 ok, 1 fds or file error, 2 bad usage, 3 no cluster found or cluster unreachable."


async def _fresh_blob(client: Client, guid: bytes | None) -> Blob:
    """A new empty blob; an existing blob of ``guid`` is deleted and created again (not atomic)."""
    if guid is None:
        return await client.create_blob()
    try:
        return await client.create_blob(guid)
    except BlobExists:
        pass
    with contextlib.suppress(BlobNotFound):
        await client.delete_blob(guid)
    return await client.create_blob(guid)


# -- commands ----------------------------------------------------------------------------
@command
def _put(args: argparse.Namespace) -> int:
    guid = parse_guid(args.blob) if args.blob else None

    async def work(client: Client, source: BinaryIO, size: int | None) -> int:
        tract_size = (await client.table()).tract_size
        blob = await _fresh_blob(client, guid)
        try:
            with byte_bar("put", size, quiet=size is not None and size <= tract_size) as bar:
                await blob.write_from(source, progress=bar)
        except BaseException:
            with contextlib.suppress(FDSError):  # leave no half-written blob behind
                await client.delete_blob(blob.raw)
            raise
        print(blob.guid, flush=True)
        return EXIT_OK

    return reading(args, args.file, work)


@command
def _get(args: argparse.Namespace) -> int:
    guid = parse_guid(args.guid)

    async def work(client: Client, output: Output) -> int:
        info = await client.stat(guid)
        tract_size = (await client.table()).tract_size
        blob = Blob(client, guid, info.incarnation)
        total = info.length if info.length is not None else info.tracts * tract_size
        with byte_bar("get", total, quiet=total <= tract_size) as bar:
            length = await download(blob, info.tracts, output, bar)
        output.commit(length)
        return EXIT_OK

    return writing(args, args.out, work)


@command
def _stat(args: argparse.Namespace) -> int:
    guid = parse_guid(args.guid)

    async def work(client: Client) -> int:
        info = await client.stat(guid)
        if args.json:
            print(info.model_dump_json())
        else:
            _print_info(info)
        return EXIT_OK

    return run(args, work)


def _print_info(info: BlobInfo) -> None:
    from rich.filesize import decimal

    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(info.created))
    length = "not recorded" if info.length is None else f"{info.length} bytes ({decimal(info.length)})"
    print(f"guid     {info.guid}\ntracts   {info.tracts}\nlength   {length}\ncreated  {created}")


@command
def _rm(args: argparse.Namespace) -> int:
    guid = parse_guid(args.guid)

    async def work(client: Client) -> int:
        await client.delete_blob(guid)
        return EXIT_OK

    return run(args, work)


@command
def _status(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        status = await client.cluster_status()
        if args.json:
            alive = sum(s.alive for s in status.servers)
            print(json.dumps({**status.model_dump(mode="json"), "metaserver": client.metaserver,
                              "alive_servers": alive}))
        else:
            _print_status(status, client.metaserver)
        return EXIT_OK

    return run(args, work)


def _print_status(status: ClusterStatus, metaserver: str) -> None:
    from rich.console import Console
    from rich.filesize import decimal
    from rich.table import Table

    alive = sum(s.alive for s in status.servers)
    table = Table(title=f"fds cluster at {metaserver}", title_justify="left")
    for name, justify in [("id", "left"), ("url", "left"), ("domain", "left"), ("health", "left"),
                          ("heartbeat", "right"), ("rows", "right"), ("tracts", "right"), ("used", "right"),
                          ("free", "right")]:
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in status.servers:
        health = "[green]alive[/]" if s.alive else "[red]down[/]"
        if s.state != MemberState.ACTIVE:
            health += f" [yellow]{s.state}[/]"
        if not s.in_table:
            health += " (not in table)"
        elif s.table_version != status.table_version:
            health += f" (table v{s.table_version})"
        if s.filling_rows:
            health += f" filling {s.filling_rows} rows"
        age = "never" if s.heartbeat_age is None else f"{s.heartbeat_age:.1f}s ago"
        table.add_row(s.id, s.url, s.domain, health, age, str(s.rows), str(s.tracts), decimal(s.bytes_used),
                      decimal(s.disk_free))
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    console.print(f"state [bold]{status.state}[/], table version {status.table_version}, {status.rows} rows, "
                  f"k={status.replicas}, tract size {decimal(status.tract_size)}, "
                  f"{alive}/{len(status.servers)} servers alive (expected {status.expected_servers})",
                  highlight=False)
    if status.outage is not None:
        console.print(f"[red bold]{status.outage.message}[/]: silent {', '.join(status.outage.silent)}; "
                      f"nobody is declared dead while more than {status.outage.limit} are silent. "
                      "`fds admin declare-dead ID` releases one.", highlight=False)
    if status.publishing is not None:
        console.print(f"[yellow]table version {status.publishing.table_version} waits to be published[/] "
                      f"({status.publishing.since:.1f}s) until "
                      f"{', '.join(status.publishing.waiting_for) or 'the next pass'} have it or their leases "
                      "run out", highlight=False)
    rec = status.recovery
    if status.healthy:
        last = f" (last repair took {rec.last_seconds:.1f}s)" if rec and rec.last_seconds is not None else ""
        console.print(f"[green]healthy[/]: every row has {status.replicas} live holders with every tract{last}",
                      highlight=False)
    elif rec is not None:
        done = f"{rec.tracts_done}/{rec.tracts_total} tracts, {decimal(rec.bytes_done)}/{decimal(rec.bytes_total)}"
        console.print(f"[red]not healthy[/]: {rec.rows_under_replicated} rows under-replicated, "
                      f"{rec.rows_filling} rows filling; copied {done}", highlight=False)


# -- parsers -----------------------------------------------------------------------------
def add_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--metaserver", metavar="URL",
                        help="metaserver URL (default: $FDS_METASERVER, else ./.fds/cluster.json)")
    epilog = f"{_DISCOVERY} {_EXIT_CODES}"

    p = sub.add_parser("put", parents=[common], help="upload a file as a blob; prints its GUID", epilog=epilog,
                       description="Upload FILE (- for stdin) into a new blob and print the blob's GUID alone on "
                                   "stdout. With --blob GUID an existing blob of that GUID is replaced: deleted, "
                                   "then created again and written (not atomic, like the gateway's PUT). A failed "
                                   "upload deletes the partial blob.")
    p.add_argument("file", metavar="FILE", help="file to upload, or - for stdin")
    p.add_argument("--blob", metavar="GUID", help="use this GUID (replacing any blob that has it)")
    p.set_defaults(run=_put)

    p = sub.add_parser("get", parents=[common], help="download a blob to a file or stdout", epilog=epilog,
                       description="Download blob GUID into OUT (- for stdout). A regular file (a symlink is "
                                   "followed) is written beside OUT, fsynced and renamed into place only once "
                                   "complete: a failed download leaves the old file. A new file gets mode 0666 less "
                                   "the umask; a replaced file keeps its permissions (and, as root, its owner). "
                                   "Devices, FIFOs and Unix sockets are written straight into, never replaced.")
    p.add_argument("guid", metavar="GUID")
    p.add_argument("out", metavar="OUT", help="output file, or - for stdout")
    p.set_defaults(run=_get)

    p = sub.add_parser("stat", parents=[common], help="show a blob's size in tracts, length and creation time",
                       epilog=epilog)
    p.add_argument("guid", metavar="GUID")
    p.add_argument("--json", action="store_true", help="print the blob's info as one JSON object")
    p.set_defaults(run=_stat)

    p = sub.add_parser("status", parents=[common], help="show the cluster's servers, health and table version",
                       epilog=epilog)
    p.add_argument("--json", action="store_true", help="print one JSON object: the cluster status and metaserver URL")
    p.set_defaults(run=_status)

    from fds.cli import _admin, _names

    _names.add_parsers(sub, common, epilog)  # fds rm takes GUIDs (blobs) and fds:// names (objects)
    _admin.add_parsers(sub, common, epilog)
