"""``fds s3``: run the S3 endpoint; ``fds s3 key create | list | delete``: its access keys.

An access key's secret is derived from the cluster secret (:mod:`fds.s3keys`), so ``key create`` needs
the cluster secret (``--secret-file``, ``$FDS_SECRET_FILE`` or ``./.fds``), not just a token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from fds.auth import AuthError, Credentials
from fds.cli import EXIT_OK
from fds.cli._run import fail, run
from fds.client import Client
from fds.config import S3Config

__all__ = ["add_parsers"]

_SETTINGS = ["metaserver", "max_in_flight", "region", "min_part_size", "upload_expiry", "sweep_interval",
             "key_cache_seconds", "workers"]


def _serve(args: argparse.Namespace) -> int:
    from fds.cli._servers import _load
    from fds.s3 import run

    config = _load(S3Config, "s3", args, _SETTINGS)
    run(config, ready_file=args.ready_file)
    return EXIT_OK


def _secret(args: argparse.Namespace) -> bytes | None:
    creds = Credentials.discover(secret_file=args.secret_file, environ={
        k: v for k, v in os.environ.items() if k != "FDS_TOKEN"})
    return creds.secret


def _key_create(args: argparse.Namespace) -> int:
    from fds.s3keys import create_key, write_credentials_file

    try:
        secret = _secret(args)
    except AuthError as exc:
        return fail(exc)
    if secret is None:
        return fail("an access key's secret is derived from the cluster secret: pass --secret-file FILE, set "
                     "FDS_SECRET_FILE, or run in the directory of an `fds local up` cluster")

    async def work(client: Client) -> int:
        key = await create_key(client, secret, read_only=args.read_only)
        if args.credentials_file:
            write_credentials_file(args.credentials_file, key, args.profile)
            print(f"wrote profile [{args.profile}] to {args.credentials_file} (mode 0600)", file=sys.stderr)
        if args.json:
            print(json.dumps({"access_key": key.access_key, "secret_key": key.secret, "scope": key.scope}))
        else:
            print(f"access key  {key.access_key}\nsecret key  {key.secret}\nscope       {key.scope}")
        return EXIT_OK

    return run(args, work)


def _key_list(args: argparse.Namespace) -> int:
    from fds.s3keys import list_keys

    async def work(client: Client) -> int:
        keys = await list_keys(client)
        if args.json:
            print(json.dumps([{"access_key": k.access_key, "scope": k.scope, "created": k.created} for k in keys]))
        else:
            for k in keys:
                print(f"{k.access_key}  {k.scope:<5}  {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(k.created))}")
        return EXIT_OK

    return run(args, work)


def _key_delete(args: argparse.Namespace) -> int:
    from fds.s3keys import delete_key

    async def work(client: Client) -> int:
        await delete_key(client, args.access_key)
        print(f"deleted {args.access_key}; S3 servers stop admitting it within their key cache time (10 s by "
              "default)", file=sys.stderr)
        return EXIT_OK

    return run(args, work)


def add_parsers(sub: Any) -> None:
    from fds.cli._servers import _common

    p = sub.add_parser("s3", help="run the S3-compatible endpoint; `fds s3 key ...` manages its access keys",
                       description="Run the S3 endpoint (path-style, SigV4) over this cluster's buckets and keys.")
    _common(p)
    p.add_argument("--metaserver", help="metaserver URL")
    p.add_argument("--max-in-flight", dest="max_in_flight", type=int, help="tract requests in flight per S3 request")
    p.add_argument("--region", help="the region GetBucketLocation names (default us-east-1)")
    p.add_argument("--min-part-size", dest="min_part_size", type=int,
                   help="smallest part but the last of a multipart upload (default 5 MiB, as S3)")
    p.add_argument("--upload-expiry", dest="upload_expiry", type=float,
                   help="seconds after which an unfinished multipart upload is aborted (default 86400)")
    p.add_argument("--sweep-interval", dest="sweep_interval", type=float,
                   help="seconds between passes over abandoned multipart uploads (0: never)")
    p.add_argument("--key-cache-seconds", dest="key_cache_seconds", type=float,
                   help="how long a looked-up access key is trusted (default 10)")
    p.add_argument("--workers", type=int, help="processes serving the port, sharing its socket (default 1)")
    p.set_defaults(run=_serve)
    keys = p.add_subparsers(dest="s3_command", metavar="COMMAND")
    k = keys.add_parser("key", help="access keys: create, list, delete")
    key_sub = k.add_subparsers(dest="key_command", required=True, metavar="COMMAND")

    def cluster_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--metaserver", help="metaserver URL (default: $FDS_METASERVER, else ./.fds/cluster.json)")
        q.add_argument("--json", action="store_true", help="print JSON")

    q = key_sub.add_parser("create", help="make an access key and print it (and its secret, shown only now)")
    cluster_args(q)
    q.add_argument("--read-only", dest="read_only", action="store_true", help="GET, HEAD and list only")
    q.add_argument("--secret-file", dest="secret_file", help="the cluster secret (default: $FDS_SECRET_FILE, "
                   "else ./.fds)")
    q.add_argument("--credentials-file", dest="credentials_file",
                   help="also write it to this aws cli credentials file (replaced; mode 0600)")
    q.add_argument("--profile", default="fds", help="the profile name in --credentials-file (default fds)")
    q.set_defaults(run=_key_create)
    q = key_sub.add_parser("list", help="list access keys (ids and scopes; secrets are never stored)")
    cluster_args(q)
    q.set_defaults(run=_key_list)
    q = key_sub.add_parser("delete", help="delete an access key")
    cluster_args(q)
    q.add_argument("access_key", metavar="ACCESS_KEY")
    q.set_defaults(run=_key_delete)
