"""``fds mb | rb | ls | cp | mv | cat | rm`` on ``fds://bucket/key`` names.

Paths: ``fds://bucket/key`` names an object, ``fds://bucket/prefix/`` a "directory" (keys sharing a
prefix); anything else is a local path (``-`` is stdin or stdout). Copies between fds names go tract to
tract inside the cluster. Uploads are atomic: the key switches to the new object once every byte is
stored. Downloads into regular files are atomic too (written beside, then renamed), as ``fds get``.
Exit codes as for every fds command (see :mod:`fds.cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from fds.cli import EXIT_ERROR, EXIT_OK, EXIT_USAGE
from fds.cli._output import Output, download, open_output
from fds.cli._run import command, fail, reading, run, writing
from fds.client import Bucket, Client, FDSError, KeyNotFound, ObjectInfo, ObjectReader
from fds.names import check_bucket
from fds.progress import byte_bar, count_bar

__all__ = ["add_parsers", "parse_url"]

_SCHEME = "fds://"


def parse_url(text: str) -> tuple[str, str] | None:
    """``(bucket, key)`` of an ``fds://bucket/key`` name (the key may be empty); None for a local path."""
    if not text.startswith(_SCHEME):
        return None
    bucket, _, key = text[len(_SCHEME):].partition("/")
    if not bucket:
        raise FDSError(f"{text!r} names no bucket: write fds://BUCKET/KEY", code="bad_url")
    check_bucket(bucket)
    return bucket, key


def _need_key(text: str) -> tuple[str, str]:
    parsed = parse_url(text)
    if parsed is None or not parsed[1]:
        raise FDSError(f"{text!r} is not an object: write fds://BUCKET/KEY", code="bad_url")
    return parsed


def _bucket_only(text: str) -> str:
    parsed = parse_url(text)
    if parsed is None or parsed[1]:
        raise FDSError(f"{text!r} is not a bucket: write fds://BUCKET", code="bad_url")
    return parsed[0]


# -- buckets --------------------------------------------------------------------------------
@command
def _mb(args: argparse.Namespace) -> int:
    name = _bucket_only(args.bucket)

    async def work(client: Client) -> int:
        await client.create_bucket(name)
        print(f"made fds://{name}", file=sys.stderr)
        return EXIT_OK

    return run(args, work)


@command
def _rb(args: argparse.Namespace) -> int:
    name = _bucket_only(args.bucket)

    async def work(client: Client) -> int:
        if args.force:
            bucket = client.bucket(name)
            await _remove_all(bucket, "")
        await client.delete_bucket(name)
        print(f"removed fds://{name}", file=sys.stderr)
        return EXIT_OK

    return run(args, work)


# -- listing ----------------------------------------------------------------------------------
def _when(mtime: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))


@command
def _ls(args: argparse.Namespace) -> int:
    parsed = parse_url(args.path) if args.path else None
    if args.path and parsed is None:
        return fail(f"{args.path!r} is not an fds name: write fds://BUCKET/PREFIX (or nothing, for the buckets)",
                     EXIT_USAGE)

    async def work(client: Client) -> int:
        if parsed is None:
            for info in await client.list_buckets():
                print(info.model_dump_json() if args.json else f"{_when(info.created)}  fds://{info.name}")
            return EXIT_OK
        bucket, prefix = parsed
        shown = 0
        async for item in client.bucket(bucket).iter(prefix, delimiter="" if args.recursive else "/"):
            shown += 1
            if isinstance(item, str):
                print(f'{{"prefix": {_json(item)}}}' if args.json else f"{'PRE':>30}  {item}")
            elif args.json:
                print(item.model_dump_json(exclude={"blob", "incarnation"}))
            else:
                print(f"{_when(item.mtime)}  {item.size:>10}  {item.key}")
        if not shown and prefix and not args.json:
            # An empty listing of a prefix is not an error, but a missing key said as a path is worth a word.
            print(f"fds: nothing under fds://{bucket}/{prefix}", file=sys.stderr)
        return EXIT_OK

    return run(args, work)


def _json(text: str) -> str:
    import json

    return json.dumps(text)


# -- copying ------------------------------------------------------------------------------------
@command
def _cp(args: argparse.Namespace) -> int:
    src, dst = parse_url(args.source), parse_url(args.target)
    if src is None and dst is None:
        return fail("one of SOURCE and TARGET must be an fds:// name (use cp for local copies)", EXIT_USAGE)
    if args.recursive:
        return _cp_recursive(args, src, dst)
    if src is None:
        assert dst is not None
        return _upload(args, args.source, dst)
    if not src[1]:
        return fail(f"{args.source!r} names a bucket, not an object; add -r to copy everything in it", EXIT_USAGE)
    if dst is None:
        return _download(args, src, args.target)

    async def work(client: Client) -> int:
        bucket, key = dst
        key = key + src[1].rsplit("/", 1)[-1] if not key or key.endswith("/") else key
        info = await client.bucket(src[0]).head(src[1])
        with byte_bar("copy", info.size, quiet=info.size <= 64 << 20) as bar:
            await client.bucket(bucket).copy(src[1], key, source_bucket=src[0], progress=bar)
        return EXIT_OK

    return run(args, work)


def _upload(args: argparse.Namespace, path: str, dst: tuple[str, str]) -> int:
    bucket, key = dst
    if not key or key.endswith("/"):
        if path == "-":
            return fail("name the key to upload stdin to: fds://BUCKET/KEY", EXIT_USAGE)
        key += os.path.basename(path)

    async def work(client: Client, source: BinaryIO, size: int | None) -> int:
        with byte_bar("put", size, quiet=size is not None and size <= 64 << 20) as bar:
            await client.bucket(bucket).put(key, source, content_type=args.content_type or _guess_type(key),
                                            if_none_match=args.no_clobber, progress=bar)
        return EXIT_OK

    return reading(args, path, work, if_directory=f"{path} is a directory; add -r to copy what is in it")


def _guess_type(key: str) -> str:
    import mimetypes

    return mimetypes.guess_type(key)[0] or ""


def _download(args: argparse.Namespace, src: tuple[str, str], target: str) -> int:
    bucket, key = src
    if target != "-" and (target.endswith("/") or Path(target).is_dir()):
        target = os.path.join(target, key.rsplit("/", 1)[-1])

    async def work(client: Client, output: Output) -> int:
        await _fetch(client, await client.bucket(bucket).reader(key), output)
        return EXIT_OK

    return writing(args, target, work)


async def _fetch(client: Client, reader: ObjectReader, output: Output, *, quiet: bool = False) -> None:
    info = reader.info
    if reader.blob is None:  # a small object kept inline in its name record
        data = await reader.read_range()
        if data:
            await asyncio.to_thread(output.write_at, 0, data, True)
        length = len(data)
    else:
        tract_size = (await client.table()).tract_size
        with byte_bar("get", info.size, quiet=quiet or info.size <= 64 << 20) as bar:
            length = await download(reader.blob, -(-info.size // tract_size), output, bar)
    if length != info.size:
        raise FDSError(f"{info.key}: read {length} bytes, the object has {info.size}", code="length_mismatch")
    output.commit(length)


def _cp_recursive(args: argparse.Namespace, src: tuple[str, str] | None, dst: tuple[str, str] | None) -> int:
    async def work(client: Client) -> int:
        if src is None:  # a local directory up
            assert dst is not None
            root = Path(args.source)
            if not root.is_dir():
                return fail(f"{root} is not a directory")
            files = sorted(p for p in root.rglob("*") if p.is_file())
            prefix = dst[1] if not dst[1] or dst[1].endswith("/") else dst[1] + "/"
            bucket = client.bucket(dst[0])
            with count_bar("put", len(files), unit="files") as bar:
                for path in files:
                    key = prefix + path.relative_to(root).as_posix()
                    await bucket.put(key, path, content_type=args.content_type or _guess_type(key),
                                     if_none_match=args.no_clobber)
                    bar.advance()
            return EXIT_OK
        source = client.bucket(src[0])
        items = [o async for o in source.iter(src[1]) if isinstance(o, ObjectInfo)]
        with count_bar("copy", len(items), unit="objects") as bar:
            for info in items:
                rest = info.key[len(src[1]):].lstrip("/") if src[1] else info.key
                if dst is None:
                    path = Path(args.target) / rest
                    path.parent.mkdir(parents=True, exist_ok=True)
                    output = open_output(str(path))
                    try:
                        await _fetch(client, ObjectReader(client, info, bucket=src[0]), output, quiet=True)
                    finally:
                        output.abort()
                else:
                    prefix = dst[1] if not dst[1] or dst[1].endswith("/") else dst[1] + "/"
                    await client.bucket(dst[0]).copy(info.key, prefix + rest, source_bucket=src[0])
                bar.advance()
        return EXIT_OK

    return run(args, work)


@command
def _mv(args: argparse.Namespace) -> int:
    src, dst = _need_key(args.source), parse_url(args.target)
    if dst is None:
        return fail("fds mv moves between fds:// names; use fds cp to download", EXIT_USAGE)

    async def work(client: Client) -> int:
        key = dst[1] + src[1].rsplit("/", 1)[-1] if not dst[1] or dst[1].endswith("/") else dst[1]
        if dst[0] == src[0]:
            await client.bucket(src[0]).rename(src[1], key, if_none_match=args.no_clobber)
        else:  # across buckets: a copy inside the cluster, then a delete (not one step)
            await client.bucket(dst[0]).copy(src[1], key, source_bucket=src[0], if_none_match=args.no_clobber)
            await client.bucket(src[0]).delete(src[1])
        return EXIT_OK

    return run(args, work)


@command
def _cat(args: argparse.Namespace) -> int:
    names = [_need_key(p) for p in args.paths]

    async def work(client: Client) -> int:
        out = sys.stdout.buffer
        for bucket, key in names:
            reader = await client.bucket(bucket).reader(key)
            if reader.info.size:
                async for _, piece in reader.iter_ranges(0, reader.info.size):
                    out.write(piece)
        out.flush()
        return EXIT_OK

    return run(args, work)


@command
def _rm(args: argparse.Namespace) -> int:
    names = [parse_url(p) for p in args.paths]
    for path, parsed in zip(args.paths, names, strict=True):
        if parsed is None or (not parsed[1] and not args.recursive):
            return fail(f"{path!r} is not an object: write fds://BUCKET/KEY (with -r, fds://BUCKET/PREFIX)",
                         EXIT_USAGE)

    async def work(client: Client) -> int:
        code = EXIT_OK
        for parsed in names:
            assert parsed is not None
            bucket, key = parsed
            if args.recursive:
                removed = await _remove_all(client.bucket(bucket), key)
                print(f"removed {removed} objects under fds://{bucket}/{key}", file=sys.stderr)
                continue
            try:
                await client.bucket(bucket).delete(key)
            except KeyNotFound as exc:
                print(f"fds: {exc}", file=sys.stderr)
                code = EXIT_ERROR
        return code

    return run(args, work)


async def _remove_all(bucket: Bucket, prefix: str) -> int:
    keys = [o.key async for o in bucket.iter(prefix) if isinstance(o, ObjectInfo)]
    with count_bar("rm", len(keys), unit="objects", quiet=len(keys) < 100) as bar:
        for key in keys:
            try:
                await bucket.delete(key)
            except KeyNotFound:
                pass  # deleted meanwhile
            bar.advance()
    return len(keys)


# -- parsers ----------------------------------------------------------------------------------------
def add_parsers(sub: Any, common: argparse.ArgumentParser, epilog: str) -> None:
    p = sub.add_parser("mb", parents=[common], help="make a bucket: fds mb fds://BUCKET", epilog=epilog,
                       description="Create a bucket. Names follow S3's rules: 3-63 lower-case letters, digits, "
                                   "'.' and '-', beginning and ending with a letter or digit.")
    p.add_argument("bucket", metavar="fds://BUCKET")
    p.set_defaults(run=_mb)

    p = sub.add_parser("rb", parents=[common], help="remove an empty bucket", epilog=epilog)
    p.add_argument("bucket", metavar="fds://BUCKET")
    p.add_argument("--force", action="store_true", help="delete every object in it first")
    p.set_defaults(run=_rb)

    p = sub.add_parser("ls", parents=[common], help="list buckets, or keys under fds://BUCKET/PREFIX",
                       epilog=epilog, description="Without a path, every bucket. With fds://BUCKET/PREFIX, the keys "
                                                  "under PREFIX in order, with \"directories\" (common prefixes up to "
                                                  "the next '/') shown as PRE unless -r.")
    p.add_argument("path", metavar="fds://BUCKET/PREFIX", nargs="?")
    p.add_argument("-r", "--recursive", action="store_true", help="every key, not rolled up at '/'")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=_ls)

    p = sub.add_parser("cp", parents=[common], help="copy files to, from and between fds:// names", epilog=epilog,
                       description="fds cp FILE fds://B/KEY uploads (atomically: the key switches once every byte "
                                   "is stored); fds cp fds://B/KEY FILE downloads (a regular file is replaced "
                                   "atomically; - is stdout); fds cp fds://B/K fds://B2/K2 copies inside the "
                                   "cluster, tract to tract. A TARGET ending in / takes the source's name. -r copies "
                                   "directories and prefixes.")
    p.add_argument("source", metavar="SOURCE")
    p.add_argument("target", metavar="TARGET")
    p.add_argument("-r", "--recursive", action="store_true", help="copy a directory or every key under a prefix")
    p.add_argument("--content-type", help="content type to store (default: guessed from the key)")
    p.add_argument("--no-clobber", action="store_true", help="only write keys that do not exist (412 otherwise)")
    p.set_defaults(run=_cp)

    p = sub.add_parser("mv", parents=[common], help="rename an object (atomic within a bucket)", epilog=epilog)
    p.add_argument("source", metavar="fds://BUCKET/KEY")
    p.add_argument("target", metavar="fds://BUCKET/KEY")
    p.add_argument("--no-clobber", action="store_true", help="only if the target does not exist")
    p.set_defaults(run=_mv)

    p = sub.add_parser("cat", parents=[common], help="write objects to stdout", epilog=epilog)
    p.add_argument("paths", metavar="fds://BUCKET/KEY", nargs="+")
    p.set_defaults(run=_cat)

    p = sub.add_parser("rm", parents=[common], help="delete objects (or blobs by GUID)", epilog=epilog,
                       description="Delete fds://BUCKET/KEY objects; with -r every key under fds://BUCKET/PREFIX. "
                                   "A GUID deletes a blob, as before.")
    p.add_argument("paths", metavar="fds://BUCKET/KEY|GUID", nargs="+")
    p.add_argument("-r", "--recursive", action="store_true", help="every key under the prefix")
    p.set_defaults(run=rm_blob_or_names)


def rm_blob_or_names(args: argparse.Namespace) -> int:
    """``fds rm``: GUIDs delete blobs (the old command), fds:// names delete objects."""
    if all(not p.startswith(_SCHEME) for p in args.paths):
        from fds.cli import _blobs

        code = EXIT_OK
        for guid in args.paths:
            code = max(code, _blobs._rm(argparse.Namespace(**{**vars(args), "guid": guid})))
        return code
    return _rm(args)
