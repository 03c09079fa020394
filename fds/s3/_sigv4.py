"""AWS Signature Version 4, checked the way S3 checks it: in the Authorization header and in presigned URLs.

The server rebuilds the client's *canonical request* from what arrived (method, path, query, the headers
the client says it signed, and the payload hash it declared), signs it with the access key's secret, and
compares. Two details follow S3 rather than the generic SigV4 rules:

- the path is not normalised (``a//b`` and ``a/./b`` stay as sent). S3 encodes each byte of the decoded
  path but the unreserved ones; some clients sign the path exactly as they sent it instead, so when the
  first form does not match, the raw path is tried too (one more HMAC, on failures only);
- the payload hash is whatever ``x-amz-content-sha256`` says (a hex SHA-256, ``UNSIGNED-PAYLOAD``, or a
  ``STREAMING-...`` mode); checking the body against it is the caller's job (:mod:`fds.s3._body`), as the
  body has not arrived when the headers are checked.

Pure functions, no I/O: ``tests/unit/test_sigv4.py`` checks them against requests signed by botocore.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from calendar import timegm
from dataclasses import dataclass
from urllib.parse import quote, unquote

from fds.s3._xml import S3Error

__all__ = [
    "SignedRequest",
    "parse_auth",
    "canonical_query",
    "canonical_request",
    "signing_key",
    "verify",
    "chunk_signature",
    "trailer_signature",
    "EMPTY_SHA256",
    "UNSIGNED",
    "MAX_SKEW",
]

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
MAX_SKEW = 15 * 60
"""Seconds a header-signed request's time may differ from the server's (S3's RequestTimeTooSkewed)."""
MAX_EXPIRES = 7 * 24 * 3600
"""The longest a presigned URL may live (S3's limit)."""

_AUTH_PART = re.compile(r"\s*(Credential|SignedHeaders|Signature)\s*=\s*([^,\s]*)\s*")
_SPACES = re.compile(r"\s+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_AMZ_DATE = re.compile(r"\d{8}T\d{6}Z")


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a request says about its signature: who signed, when, for what scope, over which headers."""

    access_key: str
    amz_date: str
    """The signing time, ``YYYYMMDDTHHMMSSZ``."""
    scope: str
    """``DATE/REGION/SERVICE/aws4_request``."""
    signed_headers: tuple[str, ...]
    signature: str
    payload_hash: str
    """What the canonical request ends with: a hex SHA-256, ``UNSIGNED-PAYLOAD`` or a ``STREAMING-...`` mode."""
    presigned: bool = False
    expires: int = 0
    """For a presigned URL: seconds it is valid from ``amz_date``."""

    @property
    def date(self) -> str:
        return self.scope.split("/", 1)[0]

    @property
    def region(self) -> str:
        return self.scope.split("/")[1]

    @property
    def service(self) -> str:
        return self.scope.split("/")[2]

    @property
    def timestamp(self) -> float:
        d = self.amz_date  # YYYYMMDDTHHMMSSZ, checked by the parser (strptime costs ~20 us and a locale look-up)
        return float(timegm((int(d[:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]), int(d[11:13]), int(d[13:15]))))


def _query_pairs(query_string: str) -> list[tuple[str, str]]:
    pairs = []
    for part in query_string.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((unquote(name), unquote(value)))
    return pairs


def parse_auth(headers: dict[str, str], query_string: str) -> SignedRequest | None:
    """The request's signature details, None for an anonymous request, or an S3Error for a malformed one.

    ``headers`` are lower-cased names; ``query_string`` is the raw query, as sent.
    """
    header = headers.get("authorization")
    if header is not None:
        return _from_header(header, headers)
    if "X-Amz-Signature=" in query_string or "X-Amz-Credential=" in query_string:
        return _from_query(dict(_query_pairs(query_string)), headers)
    return None


def _scope(credential: str, where: str) -> tuple[str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request" or not re.fullmatch(r"\d{8}", parts[1]):
        raise S3Error("AuthorizationHeaderMalformed" if where == "header" else "AuthorizationQueryParametersError",
                      f"the credential {credential[:120]!r} is malformed; want ACCESS_KEY/YYYYMMDD/REGION/s3/"
                      "aws4_request")
    return parts[0], "/".join(parts[1:])


def _from_header(header: str, headers: dict[str, str]) -> SignedRequest:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise S3Error("AuthorizationHeaderMalformed", f"unsupported authorization type {algorithm[:40]!r}; "
                      f"want {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        match = _AUTH_PART.fullmatch(part)
        if match is None:
            raise S3Error("AuthorizationHeaderMalformed", f"cannot read {part.strip()[:80]!r} in the "
                          "Authorization header; want Credential=..., SignedHeaders=..., Signature=...")
        fields[match.group(1)] = match.group(2)
    missing = [n for n in ("Credential", "SignedHeaders", "Signature") if not fields.get(n)]
    if missing:
        raise S3Error("AuthorizationHeaderMalformed", f"the Authorization header lacks {', '.join(missing)}")
    access_key, scope = _scope(fields["Credential"], "header")
    amz_date = headers.get("x-amz-date", "")
    if not _AMZ_DATE.fullmatch(amz_date):
        date = headers.get("date")
        if date is None:
            raise S3Error("AccessDenied", "AWS authentication requires a valid Date or x-amz-date header", 403)
        amz_date = _http_date(date)
    payload = headers.get("x-amz-content-sha256")
    if payload is None:
        raise S3Error("InvalidRequest", "missing required header for this request: x-amz-content-sha256")
    return SignedRequest(access_key=access_key, amz_date=amz_date, scope=scope,
                         signed_headers=tuple(fields["SignedHeaders"].split(";")),
                         signature=fields["Signature"], payload_hash=payload)


def _http_date(value: str) -> str:
    from email.utils import parsedate_to_datetime

    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise S3Error("AccessDenied", f"the Date header {value[:60]!r} is not an HTTP date", 403) from None
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(parsed.timestamp()))


def _from_query(params: dict[str, str], headers: dict[str, str]) -> SignedRequest:
    def need(name: str) -> str:
        value = params.get(name)
        if not value:
            raise S3Error("AuthorizationQueryParametersError", f"a presigned URL needs the {name} parameter")
        return value

    if need("X-Amz-Algorithm") != ALGORITHM:
        raise S3Error("AuthorizationQueryParametersError", f"X-Amz-Algorithm must be {ALGORITHM}")
    access_key, scope = _scope(need("X-Amz-Credential"), "query")
    amz_date = need("X-Amz-Date")
    if not _AMZ_DATE.fullmatch(amz_date):
        raise S3Error("AuthorizationQueryParametersError", "X-Amz-Date must be YYYYMMDDTHHMMSSZ")
    expires_text = need("X-Amz-Expires")
    if not expires_text.isdigit() or not 1 <= int(expires_text) <= MAX_EXPIRES:
        raise S3Error("AuthorizationQueryParametersError",
                      f"X-Amz-Expires must be a number of seconds from 1 to {MAX_EXPIRES} (a week)")
    return SignedRequest(access_key=access_key, amz_date=amz_date, scope=scope,
                         signed_headers=tuple(need("X-Amz-SignedHeaders").split(";")),
                         signature=need("X-Amz-Signature"), payload_hash=headers.get("x-amz-content-sha256", UNSIGNED),
                         presigned=True, expires=int(expires_text))


def _encode(text: str, safe: str = "-_.~") -> str:
    return quote(text, safe=safe)


def canonical_query(query_string: str, *, presigned: bool = False) -> str:
    """The canonical query string: every parameter decoded, then encoded strictly, sorted (the signature left
    out of a presigned URL's)."""
    pairs = [(_encode(n), _encode(v)) for n, v in _query_pairs(query_string)
             if not (presigned and n == "X-Amz-Signature")]
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


def canonical_request(method: str, uri: str, query: str, headers: dict[str, str], signed: tuple[str, ...],
                      payload_hash: str) -> str:
    """The canonical request SigV4 signs (``query`` already canonical, ``headers`` lower-cased names)."""
    lines = [method, uri, query]
    for name in signed:
        lines.append(f"{name}:{_SPACES.sub(' ', headers.get(name, '').strip())}")
    lines += ["", ";".join(signed), payload_hash]
    return "\n".join(lines)


def signing_key(secret: str, scope: str) -> bytes:
    """The key derived from ``secret`` for ``DATE/REGION/SERVICE/aws4_request``."""
    key = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _sign(key: bytes, amz_date: str, scope: str, canonical: str) -> str:
    to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify(req: SignedRequest, key: bytes, *, method: str, path: str, raw_path: str, query_string: str,
           headers: dict[str, str], now: float | None = None) -> None:
    """Check ``req``'s signature with ``key`` (:func:`signing_key`) and its time; S3Error if it fails.

    ``path`` is the decoded path, ``raw_path`` the path as sent (without the query).
    """
    now = time.time() if now is None else now
    if req.amz_date[:8] != req.date:
        raise S3Error("AuthorizationHeaderMalformed",
                      f"the credential's date {req.date} is not the request's date {req.amz_date[:8]}")
    signed_time = req.timestamp
    if req.presigned:
        if now > signed_time + req.expires:
            raise S3Error("AccessDenied", "Request has expired", 403,
                          extra={"X-Amz-Expires": str(req.expires), "Expires": _iso(signed_time + req.expires),
                                 "ServerTime": _iso(now)})
        if signed_time > now + MAX_SKEW:
            raise S3Error("AccessDenied", "the presigned URL is dated in the future", 403)
    elif abs(now - signed_time) > MAX_SKEW:
        raise S3Error("RequestTimeTooSkewed", "the difference between the request time and the server's time "
                      "is too large (more than 15 minutes): check the client's clock", 403,
                      extra={"RequestTime": req.amz_date, "ServerTime": _iso(now)})
    if "host" not in req.signed_headers:
        raise S3Error("AccessDenied", "the signature must cover the Host header", 403)
    if not req.presigned and req.payload_hash != UNSIGNED and not req.payload_hash.startswith("STREAMING-") \
            and not _HEX64.fullmatch(req.payload_hash):
        raise S3Error("InvalidArgument", "x-amz-content-sha256 must be a hex SHA-256, UNSIGNED-PAYLOAD or a "
                      "STREAMING-... mode")
    query = canonical_query(query_string, presigned=req.presigned)
    strict = _encode(path, safe="/-_.~")
    for uri in (strict, raw_path) if raw_path != strict else (strict,):
        canonical = canonical_request(method, uri, query, headers, req.signed_headers, req.payload_hash)
        if hmac.compare_digest(_sign(key, req.amz_date, req.scope, canonical), req.signature):
            return
    raise S3Error("SignatureDoesNotMatch", "the request signature we calculated does not match the signature "
                  "you provided; check your secret access key and signing method", 403,
                  extra={"AWSAccessKeyId": req.access_key})


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def chunk_signature(key: bytes, req: SignedRequest, previous: str, chunk_sha256: str) -> str:
    """The signature of one chunk of a ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD`` body, chained from ``previous``."""
    to_sign = (f"{ALGORITHM}-PAYLOAD\n{req.amz_date}\n{req.scope}\n{previous}\n{EMPTY_SHA256}\n{chunk_sha256}")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def trailer_signature(key: bytes, req: SignedRequest, previous: str, trailer: bytes) -> str:
    """The signature of the trailing headers of a ``...-PAYLOAD-TRAILER`` body (``trailer`` as ``name:value\\n``)."""
    to_sign = (f"{ALGORITHM}-TRAILER\n{req.amz_date}\n{req.scope}\n{previous}\n"
               f"{hashlib.sha256(trailer).hexdigest()}")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
