"""``fds decommission``, ``fds admin declare-dead``: operator commands that change the cluster's membership."""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from fds import tls
from fds.auth import Credentials, HttpxAuth
from fds.cli import EXIT_OK
from fds.cli._run import command, run
from fds.client import Client
from fds.errors import Unavailable, error_from_response

__all__ = ["add_parsers"]


async def _post_admin(client: Client, path: str, what: str) -> Any:
    """POST ``path`` on the metaserver with a cluster-scoped token; the JSON answer, or the error it sent."""
    creds = client.credentials
    admin = Credentials(secret=creds.secret, token=creds.token, scope="cluster")  # a token must be cluster-scoped
    async with httpx.AsyncClient(timeout=30.0, auth=HttpxAuth(admin), verify=tls.client_context()) as http:
        try:
            resp = await http.post(f"{client.metaserver}{path}")
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the metaserver at {client.metaserver}: {exc}") from None
    if resp.status_code != 200:
        raise error_from_response(resp.status_code, resp.content, where=what)
    return resp.json()


@command
def _decommission(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        result = await _post_admin(client, f"/v1/servers/{args.server}/decommission", f"decommission {args.server}")
        if args.json:
            print(json.dumps(result))
        else:
            print(f"decommissioning {args.server}: {result['rows_moving']} rows moving to other servers"
                  + (f", {result['rows_waiting']} waiting for a server that can take them"
                     if result["rows_waiting"] else "")
                  + ". `fds status` shows it as 'decommissioned' once it holds no rows; then stop it.")
        return EXIT_OK

    return run(args, work)


@command
def _declare_dead(args: argparse.Namespace) -> int:
    async def work(client: Client) -> int:
        result = await _post_admin(client, f"/v1/servers/{args.server}/declare-dead", f"declare {args.server} dead")
        if args.json:
            print(json.dumps(result))
        else:
            print(f"{args.server} declared dead: {result['rows_left']} rows re-replicating from their other holders"
                  + (f", {result['rows_kept']} keep it as their only complete copy" if result["rows_kept"] else "")
                  + f" (table version {result['table_version']}). If it comes back, it rejoins the rows it still "
                    "has as a filling holder.")
        return EXIT_OK

    return run(args, work)


def add_parsers(sub: Any, common: argparse.ArgumentParser, epilog: str) -> None:
    p = sub.add_parser("decommission", parents=[common], epilog=epilog,
                       help="hand every row of a tract server to the others, then let it go",
                       description="Start handing every row of tract server SERVER (its id, as `fds status` shows "
                                   "it) to other servers. Clients keep reading and writing; each row moves once its "
                                   "new holder has copied it.")
    p.add_argument("server", metavar="SERVER")
    p.add_argument("--json", action="store_true", help="print the metaserver's answer as JSON")
    p.set_defaults(run=_decommission)

    admin = sub.add_parser("admin", help="operator commands for failures: declare-dead")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    p = admin_sub.add_parser("declare-dead", parents=[common], epilog=epilog,
                             help="declare a silent tract server dead now, even during an outage",
                             description="Declare tract server SERVER (its id, as `fds status` shows it) dead now: "
                                         "its rows are re-replicated from their other holders. During an outage "
                                         "(more servers silent than k-1) nobody is declared dead automatically; "
                                         "this releases one server whose disk you know is gone. It must be "
                                         "silent: a running server is refused (decommission it instead). Needs "
                                         "a cluster-scoped token; the metaserver logs the declaration.")
    p.add_argument("server", metavar="SERVER")
    p.add_argument("--json", action="store_true", help="print the metaserver's answer as JSON")
    p.set_defaults(run=_declare_dead)
