"""Fuzz a tract server's data port (our own HTTP/1.1 server, no OpenAPI) with raw requests over a socket.

Hypothesis builds request lines, targets (real and traversal-shaped GUIDs,
negative and huge tract numbers, odd queries), headers (garbage
Content-Length, chunked, good and bad credentials, malformed lines) and
bodies, and sends the bytes as they are: no client library normalises
anything. Every request must get an answer that :func:`response_problem`
accepts, within seconds; a dropped connection or silence is a bug. The API
port gets the same requests (uvicorn's own 400 for bytes it cannot parse is
allowed there).
"""

from __future__ import annotations

import uuid
import zlib
from urllib.parse import urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from fds.client import SyncClient
from fds.guid import format_guid
from fds.local import LocalCluster
from fds.models import TableModel
from fds.placement import tract_row
from tests.fuzz._fuzzing import raw_exchange, response_problem
from tests.fuzz.conftest import assert_all_alive

_SAFE_TEXT = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=60)
_TRAVERSAL = ["..", "../..", "%2e%2e", "%2e%2e%2f%2e%2e%2fetc", "..%2f..%2fetc%2fpasswd", "/etc/passwd",
              "%2fetc%2fpasswd", "a%00b", "%00", "....//", "..\\..", "~root", "*", "?", "%", "%zz"]


def _number_text() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(-(2**70), 2**70).map(str),
                     st.sampled_from(["", "-0", "+1", " 1", "1_0", "0x1", "1e3", "\u00b2", "\u0661", "9" * 5000]),
                     _SAFE_TEXT)


def _request(guid: str, version: int, incarnation: int, good: str, read: str) -> st.SearchStrategy[bytes]:
    """Raw HTTP/1.x requests aimed at the tract routes, most of them nearly right."""
    guids = st.one_of(st.just(guid), st.just(guid.upper()), st.just(guid.replace("-", "")),
                      st.sampled_from(_TRAVERSAL), _SAFE_TEXT.filter(lambda t: " " not in t),
                      st.text(alphabet="0123456789abcdef-", min_size=30, max_size=40))
    numbers = _number_text().filter(lambda t: " " not in t and "?" not in t and "#" not in t)
    path = st.one_of(
        st.builds(lambda g, t: f"/v1/tracts/{g}/{t}", guids, numbers),
        st.builds(lambda g: f"/v1/tracts/{g}", guids),
        st.builds(lambda g, t, x: f"/v1/tracts/{g}/{t}/{x}", guids, numbers, st.sampled_from(["", "..", "x"])),
        st.sampled_from(["/", "*", "/v1/tracts/", "/v1/meta/x", "/healthz", "//v1/tracts/a/0",
                         f"http://[/v1/tracts/{guid}/0", f"http://x/v1/tracts/{guid}/0"]),
    )
    query = st.lists(st.one_of(
        st.builds(lambda v: f"version={v}", st.one_of(st.just(str(version)), numbers)),
        st.builds(lambda v: f"incarnation={v}", st.one_of(st.just(str(incarnation)), numbers)),
        st.sampled_from(["version", "=", "&&", "incarnation=%ff%fe", "x=1", "version=1&version=2"]),
    ), max_size=4).map("&".join)
    target = st.builds(lambda p, q: f"{p}?{q}" if q else p, path, query)
    method = st.one_of(st.sampled_from(["GET", "PUT", "HEAD", "POST", "DELETE", "OPTIONS", "get", "PUT "]),
                       st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8))
    protocol = st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/1.1 x", "FOO"])
    auth = st.sampled_from([f"authorization: {good}"] * 6 + [
        "", f"authorization: {read}", "authorization: Bearer x", "authorization: Basic YTpi",
        "authorization: Bearer fds1.cluster.1.aa.\u00e9", "cookie: fds_token=x"])
    extra = st.lists(st.one_of(
        st.sampled_from(["connection: close", "connection: keep-alive", "transfer-encoding: chunked",
                         "transfer-encoding: identity", "expect: 100-continue", "no colon here", ": empty name",
                         "host: x", "x-" + "a" * 17000]),
        st.builds(lambda n, v: f"{n}: {v}", st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1,
                                                     max_size=12), _SAFE_TEXT),
    ), max_size=3)
    body = st.binary(max_size=2048)
    length = st.one_of(st.none(), st.just("exact"), st.just("padded"),
                       st.sampled_from(["-1", "\u00b2", "1" * 30, "0" * 5000, "0x10", "1.5", "", "12 34"]))

    def build(method: str, target: str, protocol: str, auth: str, extra: list[str], body: bytes,
              length: str | None) -> bytes:
        lines = [f"{method} {target} {protocol}", *([auth] if auth else []), *extra]
        if length == "exact":
            lines.append(f"content-length: {len(body)}")
        elif length == "padded":
            lines.append(f"content-length:   {len(body):05d}  ")
        elif length is not None:
            lines.append(f"content-length: {length}")  # malformed: must be refused at once
        else:
            body = b""  # no length: no body, or the server would wait for what it cannot frame
        if length not in (None, "exact", "padded"):
            body = b""
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body

    return st.builds(build, method, target, protocol, auth, extra, body, length)


@pytest.mark.parametrize("port_kind", ["data", "api"])
def test_raw_requests(fuzz_cluster: LocalCluster, fuzz_examples: int, fuzz_seed: int, port_kind: str) -> None:
    good = fuzz_cluster.headers("cluster")
    table = TableModel.model_validate(httpx.get(f"{fuzz_cluster.metaserver_url}/v1/table", headers=good).json())
    server = table.servers[1]
    with SyncClient(fuzz_cluster.metaserver_url) as client:
        while True:
            raw = uuid.uuid4().bytes
            if 1 in table.rows[tract_row(raw, 0, len(table.rows))]:
                break
        blob = client.create_blob(raw)
        blob.extend(2)
        blob.write_tract(0, b"data-port-fuzz")
        incarnation = blob.stat().incarnation
    url = server.data_url if port_kind == "data" else server.url
    port = urlsplit(url).port
    assert port is not None
    bugs: list[str] = []
    strategy = _request(format_guid(raw), table.version, incarnation, good["authorization"],
                        fuzz_cluster.headers("read")["authorization"])

    @settings(max_examples=fuzz_examples * 20, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @seed(zlib.crc32(port_kind.encode()) ^ fuzz_seed)
    @given(request=strategy)
    def run(request: bytes) -> None:
        answer = raw_exchange(port, request)
        if isinstance(answer, str):
            bugs.append(f"{request[:300]!r}: {answer}")
            return
        status, content_type, body = answer
        method = request.split(b" ", 1)[0].decode("latin-1")
        problem = response_problem(method, status, content_type, body)
        if problem is not None:
            bugs.append(f"{request[:300]!r}: {problem}")

    run()
    assert not bugs, "\n".join(bugs[:20])
    assert_all_alive(fuzz_cluster)
    back = httpx.get(f"{url}/v1/tracts/{format_guid(raw)}/0", params={"version": table.version,
                                                                      "incarnation": incarnation}, headers=good)
    assert back.status_code == 200, back.text  # still serving tracts (the fuzz may have rewritten this one)
