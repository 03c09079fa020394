"""``fds secret new FILE`` and ``fds token``: the cluster secret and the tokens minted from it.

Servers read the secret from their ``secret_file``; whoever holds it mints
tokens. Hand a token, not the secret, to anyone who only needs to read or
write blobs::

    fds token --scope read --ttl 86400      # a read-only token for a day
    FDS_TOKEN=$(fds token) fds get GUID out  # what clients send

The secret is taken from ``--secret-file``, else ``$FDS_SECRET_FILE``, else
the ``fds local up`` cluster in ``./.fds``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from fds.auth import SCOPES, AuthError, Credentials, Scope, mint, write_secret
from fds.cli import EXIT_ERROR, EXIT_OK

__all__ = ["add_parsers"]


def _new_secret(args: argparse.Namespace) -> int:
    try:
        write_secret(args.file)
    except FileExistsError:
        print(f"fds: {args.file} exists; a cluster's secret is not replaced in place (every server and client "
              "would be locked out); pick another path", file=sys.stderr)
        return EXIT_ERROR
    except OSError as exc:
        print(f"fds: cannot create {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote a new cluster secret to {args.file} (mode 0600). Give it to every server as secret_file; "
          "give clients tokens (`fds token`).", file=sys.stderr)
    return EXIT_OK


def _token(args: argparse.Namespace) -> int:
    scope: Scope = "read" if args.read_only else args.scope
    try:
        creds = Credentials.discover(secret_file=args.secret_file, environ={
            k: v for k, v in os.environ.items() if k != "FDS_TOKEN"})  # minting needs the secret itself
    except AuthError as exc:
        print(f"fds: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if creds.secret is None:
        print("fds: no cluster secret to mint with: pass --secret-file FILE, set FDS_SECRET_FILE, or run in the "
              "directory of an `fds local up` cluster", file=sys.stderr)
        return EXIT_ERROR
    if args.ttl <= 0:
        print(f"fds: --ttl must be positive, not {args.ttl}", file=sys.stderr)
        return EXIT_ERROR
    print(mint(creds.secret, scope, args.ttl))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("secret", help="make a cluster secret")
    secret_sub = p.add_subparsers(dest="secret_command", required=True, metavar="COMMAND")
    q = secret_sub.add_parser("new", help="write a new random secret to FILE (owner-only; never overwrites)")
    q.add_argument("file", metavar="FILE")
    q.set_defaults(run=_new_secret)

    p = sub.add_parser("token", help="mint a token from the cluster secret",
                       description="Print a token for Authorization: Bearer (or FDS_TOKEN). Scopes nest: read "
                                   "(GET/HEAD) < write (blobs) < cluster (servers, admin routes).")
    p.add_argument("--scope", choices=SCOPES, default="write", help="what the token may do (default write)")
    p.add_argument("--read-only", dest="read_only", action="store_true", help="same as --scope read")
    p.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires (default 3600)")
    p.add_argument("--secret-file", dest="secret_file", help="the cluster secret (default: $FDS_SECRET_FILE, "
                   "else ./.fds)")
    p.set_defaults(run=_token)
