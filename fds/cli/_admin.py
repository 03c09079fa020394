"""``fds decommission``: operator commands that change the cluster's membership."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from fds import tls
from fds.auth import Credentials, HttpxAuth
from fds.cli import EXIT_OK
from fds.cli._blobs import _command, _run
from fds.client import Client
from fds.errors import Unavailable, error_from_response

__all__ = ["add_parsers"]


@_command
def _decommission(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        creds = client.credentials
        admin = Credentials(secret=creds.secret, token=creds.token, scope="cluster")  # a token must be cluster-scoped
        async with httpx.AsyncClient(timeout=30.0, auth=HttpxAuth(admin), verify=tls.client_context()) as http:
            try:
                resp = await http.post(f"{client.metaserver}/v1/servers/{args.server}/decommission")
            except httpx.HTTPError as exc:
                raise Unavailable(f"cannot reach the metaserver at {client.metaserver}: {exc}") from None
        if resp.status_code != 200:
            raise error_from_response(resp.status_code, resp.content, where=f"decommission {args.server}")
        result = resp.json()
        if args.json:
            print(json.dumps(result))
        else:
            print(f"decommissioning {args.server}: {result['rows_moving']} rows moving to other servers"
                  + (f", {result['rows_waiting']} waiting for a server that can take them"
                     if result["rows_waiting"] else "")
                  + ". `fds status` shows it as 'decommissioned' once it holds no rows; then stop it.")
        return EXIT_OK

    return _run(args, work)


def add_parsers(sub: Any, common: argparse.ArgumentParser, epilog: str) -> None:
    p = sub.add_parser("decommission", parents=[common], epilog=epilog,
                       help="hand every row of a tract server to the others, then let it go",
                       description="Start handing every row of tract server SERVER (its id, as `fds status` shows "
                                   "it) to other servers. Clients keep reading and writing; each row moves once its "
                                   "new holder has copied it.")
    p.add_argument("server", metavar="SERVER")
    p.add_argument("--json", action="store_true", help="print the metaserver's answer as JSON")
    p.set_defaults(run=_decommission)
