"""``aws-chunked`` request bodies, decoded as they arrive.

Clients that stream an upload without knowing its SHA-256 up front frame the body in chunks::

    SIZE-HEX[;chunk-signature=SIG]\\r\\n  DATA  \\r\\n   ...   0[;chunk-signature=SIG]\\r\\n  TRAILERS  \\r\\n

- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD``: each chunk carries a signature chained from the request's
  (so a chunk cannot be altered, dropped or reordered); no trailers.
- ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER``: the same, then trailing headers (a checksum) signed by
  ``x-amz-trailer-signature``.
- ``STREAMING-UNSIGNED-PAYLOAD-TRAILER`` (what botocore sends over HTTPS since 1.36): plain chunks and a
  trailing checksum, ``x-amz-checksum-crc32:BASE64``.

:class:`ChunkedDecoder` is a push parser: :meth:`~ChunkedDecoder.feed` takes the bytes of one receive and
returns the payload pieces in them (views, not copies); :meth:`~ChunkedDecoder.finish` checks the body
ended where the framing says. Checking the trailing checksum against the payload is the caller's job.
"""

from __future__ import annotations

import hashlib
import hmac

from fds.s3._sigv4 import EMPTY_SHA256, SignedRequest, chunk_signature, trailer_signature
from fds.s3._xml import S3Error

__all__ = ["ChunkedDecoder", "STREAMING_MODES"]

STREAMING_MODES = frozenset({"STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
                             "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
_MAX_LINE = 8192


def _bad(message: str) -> S3Error:
    return S3Error("IncompleteBody" if "ended" in message else "InvalidRequest", f"aws-chunked body: {message}")


class ChunkedDecoder:
    """Decodes one aws-chunked body; with ``key`` and ``request`` (signed modes), checks every chunk signature."""

    def __init__(self, mode: str, *, key: bytes | None = None, request: SignedRequest | None = None) -> None:
        if mode not in STREAMING_MODES:
            raise S3Error("InvalidArgument", f"unknown x-amz-content-sha256 streaming mode {mode[:60]!r}")
        self.signed = mode.startswith("STREAMING-AWS4-HMAC-SHA256")
        if self.signed and (key is None or request is None):
            raise S3Error("AccessDenied", "a signed aws-chunked body needs a signed request", 403)
        self._key = key
        self._request = request
        self._previous = request.signature if request is not None else ""
        self._line = bytearray()
        self._state = "size"
        self._remaining = 0
        self._declared = ""
        self._sha: hashlib._Hash | None = None
        self._trailer_text = bytearray()
        self.trailers: dict[str, str] = {}
        """Trailing headers (lower-cased names), once the body has ended."""
        self.done = False
        self.decoded = 0
        """Payload bytes so far."""

    def feed(self, data: bytes | bytearray | memoryview) -> list[memoryview]:
        """The payload pieces in ``data`` (the next bytes of the body)."""
        out: list[memoryview] = []
        view = memoryview(data)
        while view:
            if self.done:
                raise _bad("bytes after the end of the body")
            if self._state == "data":
                take = min(self._remaining, len(view))
                piece = view[:take]
                out.append(piece)
                if self._sha is not None:
                    self._sha.update(piece)
                self._remaining -= take
                self.decoded += take
                view = view[take:]
                if self._remaining == 0:
                    self._state = "crlf"
                continue
            end = bytes(view[:_MAX_LINE]).find(b"\n")
            if end < 0:
                self._line += view
                if len(self._line) > _MAX_LINE:
                    raise _bad("a chunk header or trailer line is too long")
                break
            self._line += view[:end + 1]
            view = view[end + 1:]
            line = bytes(self._line).rstrip(b"\r\n")
            self._line.clear()
            self._take_line(line)
        return out

    def _take_line(self, line: bytes) -> None:
        if self._state == "crlf":
            if line:
                raise _bad("a chunk's data is longer than its declared size")
            self._check_chunk()
            self._state = "size"
        elif self._state == "size":
            self._chunk_header(line)
        else:  # trailer
            if not line:
                self.done = True
                return
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep:
                raise _bad(f"malformed trailing header {line[:60]!r}")
            name = name.strip().lower()
            if name == "x-amz-trailer-signature":
                self._check_trailer(value.strip())
                return
            self.trailers[name] = value.strip()
            self._trailer_text += f"{name}:{value.strip()}\n".encode("latin-1")

    def _chunk_header(self, line: bytes) -> None:
        size_text, _, extension = line.decode("latin-1").partition(";")
        try:
            size = int(size_text.strip(), 16)
        except ValueError:
            raise _bad(f"malformed chunk size {size_text[:20]!r}") from None
        if size < 0:
            raise _bad("negative chunk size")
        self._declared = ""
        if self.signed:
            name, _, signature = extension.partition("=")
            if name.strip() != "chunk-signature" or not signature:
                raise S3Error("SignatureDoesNotMatch", "a signed aws-chunked body's chunk lacks its chunk-signature",
                              403)
            self._declared = signature.strip()
        if size == 0:
            if self.signed:
                self._verify_chunk(EMPTY_SHA256)
            self._state = "trailer"
            return
        self._remaining = size
        self._sha = hashlib.sha256() if self.signed else None
        self._state = "data"

    def _check_chunk(self) -> None:
        if self._sha is not None:
            self._verify_chunk(self._sha.hexdigest())
            self._sha = None

    def _verify_chunk(self, digest: str) -> None:
        assert self._key is not None and self._request is not None
        expected = chunk_signature(self._key, self._request, self._previous, digest)
        if not hmac.compare_digest(expected, self._declared):
            raise S3Error("SignatureDoesNotMatch", "the signature of a chunk of the aws-chunked body does not match",
                          403)
        self._previous = expected

    def _check_trailer(self, declared: str) -> None:
        if not self.signed:
            return  # an unsigned body's trailer signature means nothing
        assert self._key is not None and self._request is not None
        expected = trailer_signature(self._key, self._request, self._previous, bytes(self._trailer_text))
        if not hmac.compare_digest(expected, declared):
            raise S3Error("SignatureDoesNotMatch", "the signature of the aws-chunked body's trailer does not match",
                          403)

    def finish(self) -> None:
        """Check the body is complete (a missing final empty line after the trailers is forgiven)."""
        if self.done or (self._state == "trailer" and not self._line):
            self.done = True
            return
        raise _bad("the body ended in the middle of a chunk")
