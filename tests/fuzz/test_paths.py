"""Path traversal: no value a client sends becomes a file-system path without validation.

Every route with a path parameter, as each server's own OpenAPI document
lists them (metaserver, tract server API port, gateway), plus the data
port's tract routes, gets traversal attempts in each parameter: ``../``,
percent-encoded dots and slashes, backslashes, absolute paths, NUL bytes,
overlong and non-ASCII GUIDs, negative and huge tract numbers. Requests go
out as raw bytes over a socket, because HTTP clients normalise ``..`` away.
Each must get a 4xx with the fds error body; afterwards nothing may have
appeared outside the servers' data directories (the whole temporary tree
is listed before and after), every file inside them must have the name the
store gives a tract, and the canary name in the payloads must not exist
anywhere we can look.

Where user-supplied values meet the file system on the server side (the
audit behind this test): tract files are named from the 16 raw bytes of a
parsed GUID (``fds.guid.parse_guid``, then ``bytes.hex()``) and integers
(incarnation, tract number, generation) in ``TractStore._path``; nothing
else a request carries is ever part of a path. Server ids, blob metadata
and the metaserver's state are RocksDB keys, not file names.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from fds.client import SyncClient
from fds.guid import new_guid
from fds.local import LocalCluster
from fds.models import TableModel
from tests.fuzz._fuzzing import UVICORN_REJECT, raw_exchange
from tests.fuzz.conftest import tree_listing

CANARY = "fdscanary"
TRAVERSALS = [
    f"../{CANARY}", f"../../../../../../tmp/{CANARY}", f"..%2f{CANARY}", f"%2e%2e%2f{CANARY}",
    f"%2e%2e/%2e%2e/{CANARY}", f"%252e%252e%252f{CANARY}", f"..%5c{CANARY}", f"..\\{CANARY}", f"/tmp/{CANARY}",
    f"%2ftmp%2f{CANARY}", f"{CANARY}%00", f"{CANARY}%00.json", f"....//{CANARY}", f"..;/{CANARY}", "..", "%2e%2e",
    ".", "~", "%00", "0" * 33, "0" * 5000, "\uff13" * 32, "3f2504e0/4f89/11d3/9a0c/0305e82c3301",
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301/..", "-1", "-99999999999999999999", str(2**64), str(2**70), "1e3", "0x1",
]
"""Raw path segments (sent as they are, so '%2e' stays encoded and '/' splits segments)."""

_TRACT_NAME = re.compile(r"tracts/[0-9a-f]{2}/[0-9a-f]{32}\.\d+\.\d+\.[0-9a-f]+")
_FINE_CODES = {"bad_guid", "bad_tract", "bad_request", "no_such_route", "unknown_server", "method_not_allowed",
               "blob_not_found", "unknown_worker", "bad_bucket_name", "bad_key", "no_such_bucket", "no_such_key",
               "bucket_exists", "bucket_not_empty", "stale_version"}
_NAMES = {"bucket", "key"}
"""Parameters that are names, not paths: a traversal-looking value may be a valid name ('1e3', '0x1' and
'..a' are S3-valid buckets or keys) and succeed; names are RocksDB keys, never file names."""


def _request(method: str, target: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "host: x", "connection: close",
             *(f"{name}: {value}" for name, value in headers.items()), f"content-length: {len(body)}"]
    if body.startswith(b"{"):
        lines.append("content-type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def _check(port: int, method: str, target: str, headers: dict[str, str], body: bytes,
           name: bool = False) -> str | None:
    answer = raw_exchange(port, _request(method, target, headers, body))
    if isinstance(answer, str):
        return f"{method} {target[:120]}: {answer}"
    status, _, content = answer
    if name and 200 <= status < 300:
        return None
    if not 400 <= status < 500:
        return f"{method} {target[:120]}: {status} {content[:200]!r}, want a 4xx"
    if method == "HEAD" or content == UVICORN_REJECT:
        return None
    try:
        error = httpx.Response(200, content=content).json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{method} {target[:120]}: {status} without the fds error body: {content[:200]!r}"
    if error.get("code") not in _FINE_CODES or not error.get("message") or "Traceback" in error["message"]:
        return f"{method} {target[:120]}: {status} {error}"
    if error["code"] == "bad_guid" and "32 hex digits" not in error["message"]:
        return f"{method} {target[:120]}: bad_guid without saying what a GUID looks like: {error}"
    return None


def _routes(url: str, headers: dict[str, str]) -> list[tuple[str, str]]:
    """(method, path template) of every operation with a path parameter."""
    document = httpx.get(f"{url}/openapi.json", headers=headers, timeout=30).json()
    return [(method.upper(), path) for path, operations in document["paths"].items() if "{" in path
            for method in operations]


def _fine_tract(text: str) -> bool:
    """A tract number that is just an odd spelling of a good one ('000' is tract 0)."""
    return text.isascii() and text.isdigit() and len(text) < 100 and int(text) < 2**40


def _attempts(template: str, good: dict[str, str]) -> list[tuple[str, bool]]:
    """The template with one parameter at a time replaced by each traversal, the others good; and whether
    the replaced parameter is a name."""
    names = re.findall(r"\{(\w+)\}", template)
    paths = []
    for name in names:
        for bad in TRAVERSALS:
            if name == "tract" and _fine_tract(bad):
                continue
            path = template
            for other in names:
                path = path.replace("{" + other + "}", bad if other == name else good[other])
            paths.append((path, name in _NAMES))
    return paths


_BODIES = {
    "/v1/meta/{guid}/extend": b'{"count": 1}', "/v1/meta/{guid}": b'{"length": 0}',
    "/v1/tracts/{guid}/{tract}": b"tract", "/v1/blobs/{guid}": b"blob",
    "/v1/servers/{server_id}/heartbeat": b'{"tracts": 0, "bytes_used": 0, "disk_free": 0, "capacity_bytes": 0, '
                                         b'"table_version": 0}',
    "/v1/servers/{server_id}/filled": b'{"rows": [], "version": 0}',
}


@pytest.fixture(scope="module")
def paths_env(fuzz_cluster: LocalCluster) -> tuple[TableModel, str, int]:
    good = fuzz_cluster.headers("cluster")
    table = TableModel.model_validate(httpx.get(f"{fuzz_cluster.metaserver_url}/v1/table", headers=good).json())
    with SyncClient(fuzz_cluster.metaserver_url) as client:
        blob = client.create_blob(new_guid())
        blob.extend(1)
        blob.write_tract(0, b"paths")
        return table, blob.guid, blob.stat().incarnation


def test_traversal_attempts_are_refused(fuzz_cluster: LocalCluster, paths_env: tuple[TableModel, str, int],
                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    table, guid, incarnation = paths_env
    good = fuzz_cluster.headers("cluster")
    root = tmp_path_factory.getbasetemp()
    data_dirs = [Path(c.dir) for c in fuzz_cluster.children if c.dir] + [fuzz_cluster.dir / "logs"]
    outside_before = {p for p in tree_listing(root) if not any((root / p).is_relative_to(d) for d in data_dirs)}
    query = f"?version={table.version}&incarnation={incarnation}"
    values = {"guid": guid, "tract": "0", "server_id": table.servers[0].id, "index": "0", "sender": "0",
              "bucket": "fuzz-bucket", "key": "k", "ns": guid}
    targets: list[tuple[int, str, str, bytes, bool]] = []  # (port, method, target, body, a name?)
    servers = [(fuzz_cluster.metaserver_url, ""), (table.servers[0].url, query), (fuzz_cluster.gateway_url, "")]
    for url, suffix in servers:
        port = urlsplit(url).port
        assert port is not None
        for method, template in _routes(url, good):
            body = _BODIES.get(template, b"") if method in ("PUT", "POST", "PATCH") else b""
            targets += [(port, method, path + suffix, body, name) for path, name in _attempts(template, values)]
    data_port = urlsplit(table.servers[0].data_url).port
    assert data_port is not None
    for method in ("GET", "HEAD", "PUT"):
        targets += [(data_port, method, path + query, b"tract" if method == "PUT" else b"", False)
                    for path, _ in _attempts("/v1/tracts/{guid}/{tract}", values)]
    # Query parameters are not paths either, but they are user input too.
    for bad in ("../x", "%2e%2e%2f", "-1", "1e3", str(2**70), "%00"):
        targets.append((data_port, "GET", f"/v1/tracts/{guid}/0?version={bad}&incarnation={incarnation}", b"", False))
        targets.append((urlsplit(table.servers[0].url).port or 0, "GET",
                        f"/v1/tracts/{guid}/0?version={table.version}&incarnation={bad}", b"", False))

    problems = [p for port, method, target, body, name in targets
                if (p := _check(port, method, target, good, body, name))]
    assert not problems, f"{len(problems)} of {len(targets)} attempts:\n" + "\n".join(problems[:30])
    assert len(targets) > 500  # every route, every parameter, every payload

    outside_after = {p for p in tree_listing(root) if not any((root / p).is_relative_to(d) for d in data_dirs)}
    assert outside_after == outside_before, sorted(outside_after ^ outside_before)
    for child in fuzz_cluster.tract_children:
        for path in Path(child.dir, "tracts").rglob("*"):
            name = str(path.relative_to(child.dir))
            assert path.is_dir() or _TRACT_NAME.fullmatch(name), f"unexpected file {path}"
    for where in (root, Path("/tmp"), Path.cwd()):
        assert not list(where.glob(f"**/*{CANARY}*")) if where == root else not list(where.glob(f"*{CANARY}*"))
