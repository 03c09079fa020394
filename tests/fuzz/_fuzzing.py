"""The fuzzing harness: schemathesis cases against a running server, and what counts as a bug.

:func:`fuzz_server` loads a server's own OpenAPI document and, for every
operation, sends ``examples`` cases of each of three kinds: positive and
negative cases (schemathesis's two generation modes) of the document
*steered* towards things that exist (:func:`steer`: blobs and servers, not
only 404s), and positive cases of the document as served. Each case carries
credentials drawn from :func:`auth_variants`: mostly good, sometimes
missing, wrong or garbage.

Every run is seeded (``--fuzz-seed``, default 0, mixed with the operation's
name), so the normal suite sends the same requests every time; the database
is off, so nothing carries over between runs. Failures are collected over all
operations and reported together, one example each, with a curl line.

A response is a bug (:func:`response_problem`) when it is:

- a 5xx, except 503 and 507 with an fds error body and one of the codes that
  mean "the cluster cannot do this right now" (:data:`SERVER_STATES`);
- a 4xx without the fds error body ``{"error": {"code", "message"}}``, or
  with a traceback in it;
- a 2xx that does not match the operation's documented response schema or
  content type (schemathesis's own checks).

A request the client library refuses to send (a header ``requests`` cannot
encode) is skipped; a dropped connection or a timeout is a bug.
"""

from __future__ import annotations

import copy
import json
import socket
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

SERVER_STATES: Mapping[int, frozenset[str]] = {
    503: frozenset({"unavailable", "table_not_ready", "checksum_mismatch", "not_ready", "table_pending",
                    "lease_expired", "filling"}),
    507: frozenset({"disk_full"}),
}
"""5xx answers that describe the cluster, not the request: legitimate for any input."""

UVICORN_REJECT = b"Invalid HTTP request received."
"""uvicorn's own 400 for bytes its HTTP parser refuses; it never reaches the app."""


def auth_variants(good: Mapping[str, str], read_only: Mapping[str, str]) -> list[dict[str, str]]:
    """Authorization headers to send: the good one three times in four, else missing, wrong or garbage."""
    bad = [
        {},
        dict(read_only),
        {"authorization": "Bearer fds1.cluster.9999999999.00000000.AAAA"},
        {"authorization": "Bearer not-a-token"},
        {"authorization": "Basic dXNlcjpwYXNz"},
        {"authorization": "Bearer fds1.cluster.123.aa.\xe9"},
        {"authorization": "Bearer " + "A" * 3000},
        {"cookie": "fds_token=garbage; other=1"},
    ]
    return [dict(good)] * (3 * len(bad)) + bad


def response_problem(method: str, status: int, content_type: str, body: bytes) -> str | None:
    """Why this response is a bug, or None (see the module docstring)."""
    if status >= 500:
        code = _error_code(body)
        if code is not None and code in SERVER_STATES.get(status, ()):
            return None
        return f"server error {status}: {body[:300]!r}"
    if 400 <= status < 500 and method != "HEAD":
        if status == 400 and body == UVICORN_REJECT:
            return None
        if _error_code(body) is None:
            return f"{status} without the fds error body: {content_type} {body[:300]!r}"
        if b"Traceback" in body:
            return f"{status} with a traceback: {body[:300]!r}"
    return None


def _error_code(body: bytes) -> str | None:
    try:
        error = json.loads(body)["error"]
        code, message = error["code"], error["message"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(code, str) or not isinstance(message, str) or not message:
        return None
    return code


@dataclass
class Findings:
    """Bugs found over a run: one example per (operation, kind of failure)."""

    sent: int = 0
    skipped: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    by_operation: dict[str, dict[int, int]] = field(default_factory=dict)
    bugs: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, operation: str, kind: str, detail: str) -> None:
        self.bugs.setdefault((operation, kind), detail)

    def report(self) -> str:
        return "\n\n".join(f"{op} [{kind}]\n{detail}" for (op, kind), detail in sorted(self.bugs.items()))


def steer(document: dict[str, Any], values: Mapping[str, Iterable[Any]]) -> dict[str, Any]:
    """A copy of an OpenAPI document in which each parameter or top-level request body field named in
    ``values`` takes one of those values (an ``enum``); response schemas are left as they are.

    Positive cases then name things that exist (and the edge values listed with them), so they get
    past "no such blob"; negative cases send anything but those values, so garbage is still covered.
    """
    doc = copy.deepcopy(document)
    schemas = doc.get("components", {}).get("schemas", {})

    def widen(schema: dict[str, Any], name: str) -> dict[str, Any]:
        return {"enum": list(values[name]), "description": schema.get("description", "")}

    for path in doc.get("paths", {}).values():
        for operation in path.values():
            for param in operation.get("parameters", []):
                if param.get("name") in values and "schema" in param:
                    param["schema"] = widen(param["schema"], param["name"])
            for media in operation.get("requestBody", {}).get("content", {}).values():
                body = media.get("schema", {})
                ref = body.get("$ref", "")
                if ref.startswith("#/components/schemas/"):  # steer a copy: responses share the component
                    body = copy.deepcopy(schemas[ref.rsplit("/", 1)[1]])
                for prop, schema in body.get("properties", {}).items():
                    if prop in values:
                        body["properties"][prop] = widen(schema, prop)
                media["schema"] = body
    return doc


def fuzz_server(base_url: str, headers: Mapping[str, str], values: Mapping[str, Iterable[Any]],
                auth: list[dict[str, str]], *, examples: int, run_seed: int, timeout: float = 30.0,
                skip: Iterable[str] = ()) -> Findings:
    """Fuzz every operation of the server's own OpenAPI document (fetched with ``headers``).

    Three passes of ``examples`` cases each: positive and negative cases of the document steered by
    ``values`` (see :func:`steer`), and positive cases of the document as served, whose free-form
    strings and unbounded integers reach what steering hides (control characters in a URL, 2**70).
    Operations named in ``skip`` (``"POST /v1/abort"``) are left out.
    """
    document = httpx.get(f"{base_url}/openapi.json", headers=dict(headers), timeout=30).json()
    passes = [(steer(document, values), (GenerationMode.POSITIVE, GenerationMode.NEGATIVE), ""),
              (document, (GenerationMode.POSITIVE,), ", unsteered")]
    findings = Findings()
    session = requests.Session()
    try:
        for doc, modes, tag in passes:
            for result in schemathesis.openapi.from_dict(doc).get_all_operations():
                operation = result.ok()
                if operation.label in skip:
                    continue
                for mode in modes:
                    _fuzz_operation(base_url, operation, mode, f"{operation.label} ({mode.value}{tag})", auth,
                                    examples, run_seed, timeout, session, findings)
    except _ServerGone:
        pass  # no point in fuzzing a server that no longer listens; the finding says where it went
    finally:
        session.close()
    return findings


class _ServerGone(Exception):
    """The server refused a connection: it died (or never listened)."""


def _fuzz_operation(base_url: str, operation: Any, mode: GenerationMode, label: str, auth: list[dict[str, str]],
                    examples: int, run_seed: int, timeout: float, session: requests.Session,
                    findings: Findings) -> None:

    @settings(max_examples=examples, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=False)
    @seed(zlib.crc32(label.encode()) ^ run_seed)
    @given(case=operation.as_strategy(generation_mode=mode), headers=st.sampled_from(auth))
    def run(case: Any, headers: dict[str, str]) -> None:
        try:
            response = case.call(base_url=base_url, headers=dict(headers), session=session, timeout=timeout)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
            findings.skipped += 1  # the client refused to send it; the server never saw it
            return
        except requests.exceptions.ConnectionError as exc:  # the server is gone: report this case only
            findings.add(label, type(exc).__name__, f"{exc}\n{_curl(case, headers, base_url)}")
            raise _ServerGone from None
        except requests.exceptions.RequestException as exc:
            findings.add(label, type(exc).__name__, f"{exc}\n{_curl(case, headers, base_url)}")
            return
        findings.sent += 1
        findings.statuses[response.status_code] = findings.statuses.get(response.status_code, 0) + 1
        seen = findings.by_operation.setdefault(label, {})
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        content_type = response.headers.get("content-type", "")
        problem = response_problem(case.method.upper(), response.status_code, content_type, response.content)
        if problem is not None:
            findings.add(label, f"status {response.status_code}", f"{problem}\n{_curl(case, headers, base_url)}")
            return
        if 200 <= response.status_code < 300 and case.method.upper() != "HEAD":
            try:
                case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])
            except AssertionError as exc:  # schemathesis's FailureGroup, or one Failure
                findings.add(label, "schema", f"{str(exc)[:1500]}\n{_curl(case, headers, base_url)}")

    try:
        run()
    except Unsatisfiable:
        pass  # no negative case exists (an operation without parameters or body)


def _curl(case: Any, headers: Mapping[str, str], base_url: str) -> str:
    """A curl line that reproduces the case (schemathesis hides the token; the line after it shows it)."""
    try:
        line = str(case.as_curl_command(headers=dict(headers), base_url=base_url))
    except Exception:  # noqa: BLE001 - the reproduction line is a courtesy
        line = repr(case)
    sent = {name: value if len(value) < 40 else value[:32] + "..." for name, value in headers.items()}
    return f"{line}\n(credentials sent: {sent or 'none'})"


def raw_exchange(port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, str, bytes] | str:
    """Send ``raw`` on a fresh connection; (status, content type, body) of the answer, or why there is none."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:
            pass  # the server may answer and close before taking all of a bad request
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    return f"connection closed after {len(received)} bytes and no complete answer"
                received += chunk
            head, _, rest = received.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ")[1])
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            expect = 0 if raw.startswith(b"HEAD ") else int(headers.get("content-length", "0"))
            while len(rest) < expect:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
        except TimeoutError:
            return f"no answer within {timeout} s (got {received[:200]!r})"
        except ConnectionResetError:
            return f"connection reset after {received[:200]!r}"
    return status, headers.get("content-type", ""), rest[:expect]
