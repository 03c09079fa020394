"""The S3 endpoint's app: requests in S3's shape (path-style), authenticated, routed, answered in S3's XML.

The app is the fds web app (``/healthz``, ``/metrics``, request ids and their log lines, metrics) with
one piece of ASGI middleware in front of its routes, :class:`S3Middleware`, which takes every other
request: S3 requests carry SigV4 signatures, not fds tokens, so they never reach fds's token check.
It works on the raw ASGI scope (no framework objects per request: a 4 KiB GET costs its two cluster
round trips and little else) and streams bodies both ways.

Routing is S3's: ``/`` lists buckets; ``/BUCKET`` with a subresource (``?uploads``, ``?delete``,
``?location``, ``?list-type=2``...) or a method names a bucket operation; ``/BUCKET/KEY`` an object
operation (``?uploadId``, ``?partNumber`` for multipart). The handlers are in :mod:`fds.s3._objects`
and :mod:`fds.s3._multipart`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote

from fastapi import FastAPI

from fds.auth import process_credentials
from fds.client import DEFAULT_IN_FLIGHT, Client, FDSError
from fds.config import S3Config
from fds.logs import HEADER, request_id, valid_request_id
from fds.names import check_bucket
from fds.s3._body import Body
from fds.s3._sigv2 import V2Request, parse_v2, verify_v2
from fds.s3._sigv4 import SignedRequest, parse_auth, signing_key, verify
from fds.s3._xml import S3Error, error_body, from_fds
from fds.s3keys import SYSTEM_BUCKET, AccessKey, derive_secret, get_key, system_bucket
from fds.web import Metrics, log_request
from fds.web import create_app as create_base_app

__all__ = ["create_app", "S3Server", "Request", "Response", "named", "xml_response"]

log = logging.getLogger("fds.s3")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_OPEN = frozenset({"/healthz", "/metrics"})
_READ = frozenset({"GET", "HEAD"})
_RID = HEADER.encode()


@dataclass
class Request:
    """One S3 request, parsed: who signed it, which bucket and key, the query decoded."""

    method: str
    path: str
    raw_path: str
    query_string: str
    query: dict[str, str]
    headers: dict[str, str]
    receive: Receive
    bucket: str = ""
    key: str = ""
    signed: SignedRequest | None = None
    signing_key: bytes | None = None
    scope: str = "write"
    body_done: bool = False
    """Whether the whole body has been received (so a refusal need not read the rest)."""

    def body(self) -> Body:
        """The request body (its length, its payload as it arrives, its digests)."""
        return Body(self.receive, self.headers, self.signed, self.signing_key)


@dataclass
class Response:
    """An answer: a status, headers, and a body (bytes, or a stream whose length is in the headers)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes | memoryview] | None = None


def xml_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, {"content-type": "application/xml", **(headers or {})}, body)


Handler = Callable[["S3Server", Request], Awaitable[Response]]
F = TypeVar("F", bound=Callable[..., Any])


def named(operation: str) -> Callable[[F], F]:
    """Name a handler's S3 operation (``GetObject``...), for metrics and logs."""

    def mark(fn: F) -> F:
        fn.operation = operation  # type: ignore[attr-defined]
        return fn

    return mark


class _KeyCache:
    """Access keys looked up in the cluster, trusted for ``ttl`` seconds; unknown ids remembered for a second."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._found: dict[str, tuple[float, AccessKey | None]] = {}
        self._signing: dict[tuple[str, str], bytes] = {}
        self._secrets: dict[str, str] = {}

    async def lookup(self, client: Client, access_key: str) -> AccessKey | None:
        now = time.monotonic()
        cached = self._found.get(access_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await get_key(client, access_key)
        if len(self._found) > 10_000:
            self._found.clear()
        self._found[access_key] = (now + (self.ttl if found else min(self.ttl, 1.0)), found)
        return found

    def secret(self, cluster_secret: bytes, key: AccessKey) -> str:
        """The key's secret (an HMAC of the cluster secret), derived once per key."""
        found = self._secrets.get(key.access_key + "/" + key.salt)
        if found is None:
            if len(self._secrets) > 10_000:
                self._secrets.clear()
            found = self._secrets[key.access_key + "/" + key.salt] = derive_secret(cluster_secret, key.access_key,
                                                                                   key.salt)
        return found

    def signing_key(self, secret: str, key: AccessKey, scope: str) -> bytes:
        cache_key = (key.access_key + "/" + key.salt, scope)
        found = self._signing.get(cache_key)
        if found is None:
            if len(self._signing) > 10_000:
                self._signing.clear()
            found = self._signing[cache_key] = signing_key(secret, scope)
        return found


class S3Server:
    """The state one S3 server process keeps: its fds client, access keys seen lately, the tract size."""

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.window = config.max_in_flight
        self.client: Client | None = None
        self.keys = _KeyCache(config.key_cache_seconds)
        self.uploads: dict[str, Any] = {}
        """Multipart upload records by upload id (they never change once made)."""
        self.cluster_secret: bytes | None = None

    @property
    def fds(self) -> Client:
        if self.client is None:
            raise S3Error("ServiceUnavailable", "the S3 server is starting", 503)
        return self.client

    async def tract_size(self) -> int:
        return (await self.fds.table()).tract_size

    # -- authentication --------------------------------------------------------------------
    async def authenticate(self, req: Request) -> None:
        """Check the request's signature and set its scope; S3Error (403 mostly) if it may not proceed."""
        v2 = parse_v2(req.headers, req.query_string)
        req.signed = signed = None if v2 is not None else parse_auth(req.headers, req.query_string)
        if self.config.insecure:
            return  # every request admitted, signed or not (a trusted lab network)
        if v2 is not None:
            req.scope = await self._verify_v2(req, v2)
            return
        if signed is None:
            raise S3Error("AccessDenied", "anonymous requests are not allowed: sign requests with an access key "
                          "(`fds s3 key create`)", 403)
        if self.cluster_secret is None:
            raise S3Error("AccessDenied", "this S3 server has no cluster secret, so it can check no signature", 403)
        key, secret = await self._secret(signed.access_key)
        req.signing_key = self.keys.signing_key(secret, key, signed.scope)
        verify(signed, req.signing_key, method=req.method, path=req.path, raw_path=req.raw_path,
               query_string=req.query_string, headers=req.headers)
        req.scope = key.scope

    async def _secret(self, access_key: str) -> tuple[AccessKey, str]:
        if self.cluster_secret is None:
            raise S3Error("AccessDenied", "this S3 server has no cluster secret, so it can check no signature", 403)
        key = await self.keys.lookup(self.fds, access_key)
        if key is None:
            raise S3Error("InvalidAccessKeyId", "the AWS access key id you provided does not exist in our records",
                          403, extra={"AWSAccessKeyId": access_key[:128]})
        return key, self.keys.secret(self.cluster_secret, key)

    async def _verify_v2(self, req: Request, v2: V2Request) -> str:
        key, secret = await self._secret(v2.access_key)
        verify_v2(v2, secret, method=req.method, raw_path=req.raw_path, query_string=req.query_string,
                  headers=req.headers)
        return key.scope

    # -- background ------------------------------------------------------------------------
    async def sweep_loop(self) -> None:
        """Abort abandoned multipart uploads every ``sweep_interval`` seconds."""
        from fds.s3._multipart import sweep_once

        while True:
            await asyncio.sleep(self.config.sweep_interval)
            try:
                await sweep_once(self)
            except FDSError as exc:
                log.warning("sweeping abandoned multipart uploads: %s", exc)
            except Exception:
                log.exception("sweeping abandoned multipart uploads failed")


def _route(req: Request) -> tuple[str, Handler]:
    """The operation a request names, and its handler; S3Error if none."""
    from fds.s3 import _multipart as mp
    from fds.s3 import _objects as ob

    q, m = req.query, req.method
    if not req.bucket:
        if m == "GET":
            return "ListBuckets", ob.list_buckets
        raise S3Error("MethodNotAllowed", f"{m} is not allowed on the service; GET lists buckets", 405)
    if not req.key:
        table: dict[str, dict[str, Handler]] = {
            "GET": {"location": ob.get_location, "uploads": mp.list_uploads, "versioning": ob.get_versioning,
                    "acl": ob.get_acl},
            "PUT": {}, "DELETE": {}, "HEAD": {}, "POST": {"delete": ob.delete_objects},
        }
        for name, handler in table.get(m, {}).items():
            if name in q:
                return _op_name(handler), handler
        unsupported = _SUBRESOURCES.intersection(q)
        if unsupported:
            raise S3Error("NotImplemented", f"the ?{sorted(unsupported)[0]} subresource is not implemented by fds's "
                          "S3 endpoint (docs/s3.md lists what is)", 501)
        plain: dict[str, Handler] = {"GET": ob.list_objects, "PUT": ob.create_bucket, "DELETE": ob.delete_bucket,
                                     "HEAD": ob.head_bucket}
        if m in plain:
            handler = plain[m]
            if m == "GET" and q.get("list-type") == "2":
                return "ListObjectsV2", handler
            return _op_name(handler), handler
        raise S3Error("MethodNotAllowed", f"{m} is not allowed on a bucket", 405)
    if "uploadId" in q:
        by_method: dict[str, Handler] = {"PUT": mp.upload_part, "GET": mp.list_parts, "DELETE": mp.abort_upload,
                                         "POST": mp.complete_upload}
        if m in by_method:
            return _op_name(by_method[m]), by_method[m]
        raise S3Error("MethodNotAllowed", f"{m} is not allowed on a multipart upload", 405)
    if m == "POST" and "uploads" in q:
        return "CreateMultipartUpload", mp.create_upload
    unsupported = _SUBRESOURCES.intersection(q)
    if unsupported:
        raise S3Error("NotImplemented", f"the ?{sorted(unsupported)[0]} subresource is not implemented by fds's "
                      "S3 endpoint (docs/s3.md lists what is)", 501)
    plain = {"GET": ob.get_object, "HEAD": ob.head_object, "DELETE": ob.delete_object, "PUT": ob.put_object}
    if m in plain:
        if m == "PUT" and "x-amz-copy-source" in req.headers:
            return "CopyObject", ob.put_object
        return _op_name(plain[m]), plain[m]
    raise S3Error("MethodNotAllowed", f"{m} is not allowed on an object", 405)


_SUBRESOURCES = frozenset({"acl", "policy", "cors", "lifecycle", "tagging", "versions", "website", "logging",
                           "notification", "replication", "encryption", "object-lock", "retention", "legal-hold",
                           "accelerate", "requestPayment", "analytics", "inventory", "metrics", "ownershipControls",
                           "publicAccessBlock", "intelligent-tiering", "torrent", "restore", "select", "attributes",
                           "policyStatus", "versioning", "uploads", "delete", "location"})


def _op_name(handler: Handler) -> str:
    return getattr(handler, "operation", handler.__name__)


def _parse_query(query_string: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in query_string.split("&"):
        if part:
            name, _, value = part.partition("=")
            out.setdefault(unquote(name), unquote(value.replace("+", "%20")))
    return out


class S3Middleware:
    """ASGI middleware in front of the whole fds app: it answers every request but ``/healthz`` and
    ``/metrics`` as S3, and hands those (and lifespan) to the app behind it.

    It sits outside fds's request-id, metrics and token middleware rather than inside them, and does what
    the first two do itself, once per request: each of those layers wraps ``receive`` and ``send``, and an
    8 MiB body arrives as ~130 messages, each of which went through every layer.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], server: S3Server, metrics: Metrics) -> None:
        self.app = app
        self.server = server
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPEN:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        raw_path = scope.get("raw_path") or scope["path"].encode()
        if isinstance(raw_path, bytes):
            raw_path = raw_path.decode("latin-1")
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]},{text}" if key in headers else text
        rid = valid_request_id(headers.get(HEADER))
        token = request_id.set(rid)
        query_string = scope.get("query_string", b"").decode("latin-1")
        path = scope["path"]
        bucket, _, key = path.lstrip("/").partition("/")
        counts = _Counts()

        async def tracked() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                counts.bytes_in += len(message.get("body", b""))
                if not message.get("more_body", False):
                    req.body_done = True
            else:
                req.body_done = True
            return message

        async def counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                counts.status = message["status"]
            else:
                counts.bytes_out += len(message.get("body", b""))
            await send(message)

        req = Request(method=scope["method"], path=path, raw_path=raw_path.partition("?")[0],
                      query_string=query_string, query=_parse_query(query_string), headers=headers, receive=tracked,
                      bucket=bucket, key=key)
        try:
            counts.operation = await self._serve(req, counted, rid)
        finally:
            seconds = time.perf_counter() - start
            self.metrics.observe(f"{req.method} S3 {counts.operation}", counts.status, seconds, counts.bytes_in,
                                 counts.bytes_out)
            log_request(req.method, path, counts.status, seconds, rid)
            request_id.reset(token)

    async def _serve(self, req: Request, send: Send, rid: str) -> str:
        """Answer one S3 request; the name of its operation (for metrics)."""
        operation = "unmatched"
        try:
            try:
                operation, handler = _route(req)
                await self.server.authenticate(req)
                if req.scope == "read" and req.method not in _READ:
                    raise S3Error("AccessDenied", f"this access key is read-only; {operation} needs a read-write "
                                  "key (`fds s3 key create`)", 403)
                if req.bucket:
                    check_bucket(req.bucket)
                    if req.bucket == SYSTEM_BUCKET:
                        raise S3Error("AccessDenied", f"bucket {SYSTEM_BUCKET} holds the S3 endpoint's own records "
                                      "(access keys, multipart uploads) and is not served over S3", 403)
                response = await handler(self.server, req)
            except FDSError as exc:
                raise _fds_error(exc) from None
        except S3Error as exc:
            if exc.status >= 500:
                log.warning("%s %s: %s %s", req.method, req.path, exc.code, exc.message)
            await _send_error(send, req, exc, rid)
            return operation
        except Exception:
            log.exception("unexpected error in S3 %s on %s %s", operation, req.method, req.path)
            await _send_error(send, req, S3Error("InternalError", "we encountered an internal error; please try "
                                                 "again", 500), rid)
            return operation
        await _send(send, req, response, rid)
        return operation


@dataclass
class _Counts:
    operation: str = "unmatched"
    status: int = 500
    bytes_in: int = 0
    bytes_out: int = 0


def _fds_error(exc: FDSError) -> S3Error:
    if exc.code == "bad_page_token":
        return S3Error("InvalidArgument", "the continuation token provided is incorrect")
    if exc.code == "bad_bucket_name":
        return S3Error("InvalidBucketName", exc.message)
    return from_fds(exc)


async def _send(send: Send, req: Request, response: Response, rid: str) -> None:
    headers = [(b"x-amz-request-id", rid.encode()), (_RID, rid.encode()), (b"server", b"fds")]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    if response.stream is None and "content-length" not in response.headers:
        headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if response.stream is None or req.method == "HEAD":
        await send({"type": "http.response.body", "body": b"" if req.method == "HEAD" else response.body})
        return
    stream = response.stream
    try:
        async for piece in stream:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
    except Exception as exc:  # headers are gone: all that is left is to cut the connection short
        log.warning("S3 %s %s: stream failed after the headers were sent: %s", req.method, req.path, exc)
        raise
    finally:
        if hasattr(stream, "aclose"):
            with contextlib.suppress(Exception):
                await stream.aclose()
    await send({"type": "http.response.body", "body": b""})


async def _send_error(send: Send, req: Request, error: S3Error, rid: str) -> None:
    body = b"" if req.method == "HEAD" else error_body(error, req.path, rid)
    headers = [(b"content-type", b"application/xml"), (b"content-length", str(len(body)).encode()),
               (b"x-amz-request-id", rid.encode()), (_RID, rid.encode()), (b"server", b"fds")]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await _drain(req)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drain(req: Request, limit: int = 1 << 20) -> None:
    """Read what is left of a refused request's body (up to ``limit``), so the connection stays usable."""
    # uvicorn closes a keep-alive connection whose body was not read; a small body is cheaper to read.
    length = req.headers.get("content-length", "")
    if req.body_done or not length.isdigit() or int(length) > limit:
        return
    with contextlib.suppress(Exception):
        while True:
            message = await asyncio.wait_for(req.receive(), 5)
            if message["type"] != "http.request" or not message.get("more_body", False):
                return


def create_app(config: S3Config, *, client: Client | None = None) -> FastAPI:
    """The S3 endpoint's app. ``client`` is for tests; by default one is made at start-up from ``config``."""
    server = S3Server(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = client is None
        creds = process_credentials()
        server.cluster_secret = creds.secret
        server.client = client or Client(config.metaserver, max_in_flight=max(DEFAULT_IN_FLIGHT, config.max_in_flight),
                                         credentials=creds)
        sweeper = asyncio.create_task(server.sweep_loop()) if config.sweep_interval > 0 else None
        starter = asyncio.create_task(_ensure_system_bucket(server))
        try:
            yield
        finally:
            for task in (sweeper, starter):
                if task is not None:
                    task.cancel()
            if own:
                await server.client.aclose()

    app = create_base_app("fds s3", "An S3-compatible endpoint over fds's buckets and keys (path-style, SigV4). "
                          "Every route but /healthz and /metrics is S3's; see docs/s3.md.", role="s3")
    app.router.lifespan_context = lifespan
    app.state.s3 = server
    build = app.build_middleware_stack

    def build_with_s3() -> Any:
        # Outermost, in front of fds's middleware (S3Middleware says why); /healthz and /metrics go through it.
        return S3Middleware(build(), server, app.state.metrics)

    app.build_middleware_stack = build_with_s3  # type: ignore[method-assign]
    return app


async def _ensure_system_bucket(server: S3Server) -> None:
    """Create the reserved bucket at start-up once the cluster answers (multipart uploads need it)."""
    delay = 0.2
    while True:
        try:
            await system_bucket(server.fds)
            return
        except FDSError as exc:
            log.info("waiting to create bucket %s: %s", SYSTEM_BUCKET, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
