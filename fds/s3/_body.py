"""Request bodies: received, unframed (aws-chunked), cut into tracts, and checked against every digest the
client declared, without ever holding the whole body.

The digests of one body (MD5 for the ETag; the SHA-256 a signed payload declares; ``Content-MD5``; an
``x-amz-checksum-*`` header or trailer) are computed over each tract on a worker thread (hashlib and zlib
release the GIL on large buffers), one tract after another in order, while later tracts are still
arriving and earlier ones are being written. Nothing is switched to a name before :meth:`Digests.finish`
has compared them all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Awaitable, Coroutine
from typing import Any

from isal.isal_zlib import crc32  # zlib's CRC32, ~14x faster (PCLMULQDQ): botocore sends CRC32 by default

from fds.buffers import uninitialized
from fds.s3._chunked import STREAMING_MODES, ChunkedDecoder
from fds.s3._sigv4 import UNSIGNED, SignedRequest
from fds.s3._xml import S3Error
from fds.web._types import Receive

__all__ = ["Digests", "Body", "HashChain", "Window", "cut_tracts", "HASH_STEP"]

_CHECKSUMS = ("crc32", "sha1", "sha256")
_INLINE = 256 << 10
"""Buffers smaller than this are hashed on the event loop: a thread hop costs more than the hashing."""
HASH_STEP = 2 << 20
"""A body being received is hashed this much at a time, on a worker thread, while the rest arrives (1 MiB
steps cost ~10% more CPU in thread hops for no gain seen; a whole tract starts hashing only at its end)."""


class Digests:
    """The digests of one body, and what the client said they should be."""

    def __init__(self, headers: dict[str, str], payload_hash: str, *, md5: bool = True) -> None:
        self.md5 = hashlib.md5() if md5 else None
        self._sha_expected = payload_hash if len(payload_hash) == 64 else None
        self.sha256 = hashlib.sha256() if self._sha_expected else None
        self._content_md5 = headers.get("content-md5")
        if self._content_md5 is not None:
            try:
                if len(base64.b64decode(self._content_md5, validate=True)) != 16:
                    raise ValueError
            except (binascii.Error, ValueError):
                raise S3Error("InvalidDigest", "the Content-MD5 you specified is not the base64 of 16 bytes") from None
        self.etag = ""
        """The MD5 as hex, once :meth:`finish` has checked every digest."""
        self.algorithm: str | None = None
        self.expected: str | None = None
        self._trailer = False
        for name in headers:
            if name.startswith("x-amz-checksum-") and name != "x-amz-checksum-type":
                self._want(name[15:], headers[name])
        trailer = headers.get("x-amz-trailer")
        if trailer:
            name = trailer.strip().lower()
            if not name.startswith("x-amz-checksum-"):
                raise S3Error("InvalidRequest", f"unsupported x-amz-trailer {trailer[:60]!r}; only checksums")
            self._want(name[15:], None)
            self._trailer = True
        self._crc = 0
        self._other = (hashlib.sha1() if self.algorithm == "sha1" else hashlib.sha256() if self.algorithm == "sha256"
                       else None)

    def _want(self, algorithm: str, value: str | None) -> None:
        if algorithm not in _CHECKSUMS:
            raise S3Error("InvalidRequest", f"checksum algorithm {algorithm.upper()[:20]} is not supported here; "
                          "use CRC32 (botocore's default), SHA1 or SHA256")
        if self.algorithm is not None and self.algorithm != algorithm:
            raise S3Error("InvalidRequest", "a request may carry one checksum algorithm only")
        self.algorithm, self.expected = algorithm, value

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the body's next bytes (called on a worker thread for large buffers)."""
        if self.md5 is not None:
            self.md5.update(data)
        if self.sha256 is not None:
            self.sha256.update(data)
        if self.algorithm == "crc32":
            self._crc = crc32(data, self._crc)
        elif self._other is not None:
            self._other.update(data)

    def finish(self, trailers: dict[str, str] | None = None) -> str:
        """Compare every declared digest; the MD5 as hex (the ETag of a one-part object), or S3Error."""
        if self._sha_expected is not None and self.sha256 is not None \
                and self.sha256.hexdigest() != self._sha_expected:
            raise S3Error("XAmzContentSHA256Mismatch", "the provided x-amz-content-sha256 does not match what was "
                          "computed over the body")
        md5 = self.md5.digest() if self.md5 is not None else b""
        if self._content_md5 is not None and base64.b64decode(self._content_md5) != md5:
            raise S3Error("BadDigest", "the Content-MD5 you specified did not match what was received")
        if self.algorithm is not None:
            expected = self.expected
            if self._trailer:
                expected = (trailers or {}).get(f"x-amz-checksum-{self.algorithm}")
                if expected is None:
                    raise S3Error("InvalidRequest", f"x-amz-trailer names x-amz-checksum-{self.algorithm}, but the "
                                  "body's trailer does not carry it")
            if self.algorithm == "crc32":
                actual = self._crc.to_bytes(4, "big")
            else:
                assert self._other is not None
                actual = self._other.digest()
            if base64.b64encode(actual).decode() != (expected or "").strip():
                raise S3Error("BadDigest", f"the {self.algorithm.upper()} you specified did not match the "
                              "calculated checksum")
        self.etag = md5.hex()
        return self.etag


class HashChain:
    """Hashes buffers into one :class:`Digests` in order, each on a worker thread, while the caller goes on."""

    def __init__(self, digests: Digests) -> None:
        self.digests = digests
        self._last: asyncio.Future[None] | None = None

    def add(self, data: bytes | bytearray | memoryview) -> None:
        if len(data) < _INLINE and self._last is None:
            self.digests.update(data)
            return
        previous = self._last

        async def run() -> None:
            if previous is not None:
                await previous
            await asyncio.to_thread(self.digests.update, data)

        self._last = asyncio.ensure_future(run())

    async def wait(self) -> None:
        if self._last is not None:
            last, self._last = self._last, None
            await last

    def cancel(self) -> None:
        if self._last is not None:
            self._last.cancel()


class Window:
    """Run tract writes with at most ``limit`` in flight; the first failure is raised by the next call."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._running: set[asyncio.Future[Any]] = set()

    async def submit(self, write: Coroutine[Any, Any, Any] | Awaitable[Any]) -> None:
        finished = {t for t in self._running if t.done()}
        self._running -= finished
        for task in finished:
            task.result()
        while len(self._running) >= self._limit:
            done, self._running = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        self._running.add(asyncio.ensure_future(write))

    async def drain(self) -> None:
        while self._running:
            done, self._running = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()

    async def cancel(self) -> None:
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        self._running.clear()


class Body:
    """One request's body: its length (decoded, for aws-chunked) and its payload as it arrives."""

    def __init__(self, receive: Receive, headers: dict[str, str], signed: SignedRequest | None,
                 key: bytes | None) -> None:
        self._receive = receive
        payload = signed.payload_hash if signed is not None else headers.get("x-amz-content-sha256", UNSIGNED)
        self.decoder: ChunkedDecoder | None = None
        encoding = headers.get("content-encoding", "")
        if payload in STREAMING_MODES or "aws-chunked" in encoding.lower():
            mode = payload if payload in STREAMING_MODES else "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
            self.decoder = ChunkedDecoder(mode, key=key, request=signed)
            declared = headers.get("x-amz-decoded-content-length")
            if declared is None or not declared.isdigit():
                raise S3Error("MissingContentLength", "an aws-chunked body needs x-amz-decoded-content-length", 411)
            self.size: int | None = int(declared)
        else:
            length = headers.get("content-length")
            if length is not None and not length.isdigit():
                raise S3Error("InvalidArgument", f"Content-Length {length[:40]!r} is not a byte count")
            self.size = int(length) if length is not None else None
        self._raw_sha: Any = None
        if self.decoder is not None and len(payload) == 64:  # a hash of the framed body, not of the payload
            self._raw_sha, self._raw_expected = hashlib.sha256(), payload
            payload = UNSIGNED
        self.digests = Digests(headers, payload)
        self.received = 0

    async def pieces(self) -> AsyncIterator[bytes | memoryview]:
        """The payload as it arrives; IncompleteBody if it ends short of its declared length."""
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise S3Error("IncompleteBody", "the client disconnected before sending the whole body")
            chunk: bytes = message.get("body", b"")
            if chunk:
                if self.decoder is None:
                    self.received += len(chunk)
                    yield chunk
                else:
                    if self._raw_sha is not None:
                        self._raw_sha.update(chunk)
                    for piece in self.decoder.feed(chunk):
                        self.received += len(piece)
                        yield piece
            if self.size is not None and self.received > self.size:
                raise S3Error("IncompleteBody", f"the body is longer than its declared {self.size} bytes")
            if not message.get("more_body", False):
                break
        if self.decoder is not None:
            self.decoder.finish()
            if self._raw_sha is not None and self._raw_sha.hexdigest() != self._raw_expected:
                raise S3Error("XAmzContentSHA256Mismatch", "the provided x-amz-content-sha256 does not match what was "
                              "computed over the body")
        if self.size is not None and self.received != self.size:
            raise S3Error("IncompleteBody", f"the body ended after {self.received} of its declared {self.size} bytes")

    def trailers(self) -> dict[str, str]:
        return self.decoder.trailers if self.decoder is not None else {}

    async def read_all(self, limit: int) -> bytes:
        """The whole (small) body, checked; S3Error past ``limit`` bytes."""
        if self.size is not None and self.size > limit:
            raise S3Error("MaxMessageLengthExceeded", f"the request body may be at most {limit} bytes here")
        out = bytearray()
        async for piece in self.pieces():
            out += piece
            if len(out) > limit:
                raise S3Error("MaxMessageLengthExceeded", f"the request body may be at most {limit} bytes here")
        if len(out) < _INLINE:
            self.digests.update(out)
        else:
            await asyncio.to_thread(self.digests.update, out)
        self.digests.finish(self.trailers())
        return bytes(out)


async def cut_tracts(pieces: AsyncIterator[bytes | memoryview], size: int, tract_size: int,
                     chain: HashChain) -> AsyncIterator[bytearray]:
    """``size`` bytes of ``pieces`` in tract-sized buffers (the last one shorter), hashed by ``chain`` as they
    fill, a :data:`HASH_STEP` at a time: the digests of a one-tract body are mostly done when its last byte
    arrives, rather than starting then."""
    remaining = size
    buf = uninitialized(min(tract_size, remaining))
    filled = hashed = 0
    async for piece in pieces:
        view = memoryview(piece)
        while view:
            if not buf:
                raise S3Error("IncompleteBody", f"the body is longer than its declared {size} bytes")
            take = min(len(buf) - filled, len(view))
            buf[filled:filled + take] = view[:take]
            filled += take
            view = view[take:]
            if filled == len(buf):
                chain.add(memoryview(buf)[hashed:])
                yield buf
                remaining -= filled
                buf, filled, hashed = uninitialized(min(tract_size, remaining)), 0, 0
            elif filled - hashed >= HASH_STEP:
                chain.add(memoryview(buf)[hashed:filled])  # those bytes are final: the buffer only fills up
                hashed = filled
