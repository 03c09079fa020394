"""Fuzz the gateway: its OpenAPI schema, and the Range header it does not declare.

GUIDs are steered towards blobs uploaded before the run, so cases read,
replace and delete real blobs as well as being refused.
"""

from __future__ import annotations

import zlib

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from fds.guid import format_guid, new_guid
from fds.local import LocalCluster
from tests.fuzz._fuzzing import UVICORN_REJECT, auth_variants, fuzz_server, response_problem
from tests.fuzz.conftest import assert_all_alive


def _upload(gateway: str, headers: dict[str, str], size: int) -> str:
    guid = format_guid(new_guid())
    resp = httpx.put(f"{gateway}/v1/blobs/{guid}", content=bytes(range(256)) * (size // 256), headers=headers,
                     timeout=60)
    assert resp.status_code == 201, resp.text
    return guid


@pytest.mark.slow
def test_gateway_api(fuzz_cluster: LocalCluster, fuzz_examples: int, fuzz_seed: int) -> None:
    good = fuzz_cluster.headers("write")
    gateway = fuzz_cluster.gateway_url
    guids = [_upload(gateway, good, size) for size in (0, 1024, 3 << 20)]
    findings = fuzz_server(gateway, good, {"guid": guids + [guids[1].upper(), format_guid(bytes(16))]},
                           auth_variants(good, fuzz_cluster.headers("read")),
                           examples=fuzz_examples, run_seed=fuzz_seed, timeout=120)
    assert not findings.bugs, findings.report()
    assert any(200 <= s < 300 for s in findings.statuses), findings.statuses
    assert_all_alive(fuzz_cluster)


_NUMBER = st.one_of(st.integers(0, 2**70).map(str), st.sampled_from(["", " ", "-", "+1", "0x10", "1e3", "١"]))
_RANGE = st.one_of(
    st.builds(lambda a, b: f"bytes={a}-{b}", _NUMBER, _NUMBER),
    st.builds(lambda unit, spec: f"{unit}={spec}", st.sampled_from(["bytes", "BYTES", "items", ""]),
              st.text(st.characters(codec="latin-1"), max_size=40)),
    st.lists(st.builds(lambda a, b: f"{a}-{b}", _NUMBER, _NUMBER), min_size=2, max_size=4).map(
        lambda parts: "bytes=" + ",".join(parts)),
    st.text(st.characters(codec="latin-1", exclude_categories=("Cc",)), max_size=300),
)


@pytest.mark.slow
def test_gateway_range_header(fuzz_cluster: LocalCluster, fuzz_examples: int, fuzz_seed: int) -> None:
    """Any Range header gets 200, 206, 416 or a 4xx error body, and a 206 holds exactly the bytes it claims."""
    good = fuzz_cluster.headers("write")
    gateway = fuzz_cluster.gateway_url
    data = bytes(range(256)) * 4096 + b"tail"
    guid = format_guid(new_guid())
    assert httpx.put(f"{gateway}/v1/blobs/{guid}", content=data, headers=good, timeout=60).status_code == 201
    bugs: list[str] = []

    @settings(max_examples=fuzz_examples * 5, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @seed(zlib.crc32(b"range") ^ fuzz_seed)
    @given(header=_RANGE, if_range=st.booleans())
    def run(header: str, if_range: bool) -> None:
        headers: dict[str, str | bytes] = {**good, "range": header.encode("utf-8")}
        if if_range:
            headers["if-range"] = "x"
        try:
            resp = httpx.get(f"{gateway}/v1/blobs/{guid}", headers=headers, timeout=60)
        except httpx.LocalProtocolError:
            return  # httpx would not send this header value (a control character)
        problem = response_problem("GET", resp.status_code, resp.headers.get("content-type", ""), resp.content)
        if problem is not None:
            bugs.append(f"Range {header!r}: {problem}")
        elif resp.status_code == 206:
            first, last = resp.headers["content-range"].removeprefix("bytes ").split("/")[0].split("-")
            if resp.content != data[int(first):int(last) + 1]:
                bugs.append(f"Range {header!r}: 206 {resp.headers['content-range']} with the wrong bytes")
        elif resp.status_code == 200 and resp.content != data:
            bugs.append(f"Range {header!r}: 200 without the whole blob")
        elif resp.status_code not in (200, 206, 416) and resp.content != UVICORN_REJECT:
            bugs.append(f"Range {header!r}: unexpected {resp.status_code} {resp.text[:200]}")

    run()
    assert not bugs, "\n".join(bugs[:20])
    assert_all_alive(fuzz_cluster)
