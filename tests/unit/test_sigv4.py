"""The S3 endpoint's signature checks against requests signed by botocore (the signer boto3 and the aws cli use),
and the aws-chunked decoder against AWS's published streaming example."""

from __future__ import annotations

import base64
import hashlib
import time
import zlib
from urllib.parse import unquote, urlsplit

import pytest
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fds.s3._body import Digests
from fds.s3._chunked import ChunkedDecoder
from fds.s3._sigv2 import parse_v2, verify_v2
from fds.s3._sigv4 import SignedRequest, parse_auth, signing_key, verify
from fds.s3._xml import S3Error
from fds.s3keys import derive_secret

AK, SK = "FDSAAAAAAAAAAAAAAAAA", "s3cr3t/KEY+with/odd=chars0123456789abcd"
HOST = "127.0.0.1:7002"


def _signed(signer: type, method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None,
            secret: str = SK, **extra: object) -> tuple[str, dict[str, str]]:
    """(url, lower-cased headers) of a request botocore signed, as the server receives it (Host added)."""
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    creds = Credentials(AK, secret)
    if signer in (S3SigV4Auth, S3SigV4QueryAuth):
        signer(creds, "s3", "us-east-1", **extra).add_auth(request)
    else:
        signer(creds, **extra).add_auth(request)
    prepared = request.prepare()
    out = {k.lower(): v for k, v in prepared.headers.items()}
    out["host"] = HOST
    return prepared.url, out


def _check(url: str, headers: dict[str, str], method: str, secret: str = SK, now: float | None = None) -> None:
    split = urlsplit(url)
    v2 = parse_v2(headers, split.query)
    if v2 is not None:
        verify_v2(v2, secret, method=method, raw_path=split.path, query_string=split.query, headers=headers, now=now)
        return
    req = parse_auth(headers, split.query)
    assert isinstance(req, SignedRequest)
    verify(req, signing_key(secret, req.scope), method=method, path=unquote(split.path), raw_path=split.path,
           query_string=split.query, headers=headers, now=now)


KEYS = ["plain.txt", "a b/c+d=e&f", "ünïcödé/ключ", "(parens)!*'~", "tilde~and%percent", "a//double/./dot"]


@pytest.mark.parametrize("key", KEYS)
def test_header_signatures_from_botocore_verify(key: str) -> None:
    from botocore.utils import percent_encode

    url = f"http://{HOST}/bkt/{percent_encode(key, safe='/~')}?uploadId=abc&partNumber=3"
    body = b"payload bytes"
    signed_url, headers = _signed(S3SigV4Auth, "PUT", url, body,
                                  {"Content-Type": "text/plain", "x-amz-meta-colour": "  blue   sky "})
    _check(signed_url, headers, "PUT")
    assert headers["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()


def test_listing_query_signature_verifies() -> None:
    url = f"http://{HOST}/bkt?list-type=2&prefix=a%2Fb%20c&delimiter=%2F&encoding-type=url&start-after=%E2%9C%93"
    signed_url, headers = _signed(S3SigV4Auth, "GET", url)
    _check(signed_url, headers, "GET")


@pytest.mark.parametrize("change", ["secret", "method", "path", "query", "header"])
def test_tampered_requests_are_refused(change: str) -> None:
    url = f"http://{HOST}/bkt/key?partNumber=1&uploadId=u"
    signed_url, headers = _signed(S3SigV4Auth, "PUT", url, b"x", {"x-amz-meta-a": "1"})
    method, secret = "PUT", SK
    if change == "secret":
        secret = SK[:-1] + "X"
    elif change == "method":
        method = "POST"
    elif change == "path":
        signed_url = signed_url.replace("/key", "/kez")
    elif change == "query":
        signed_url = signed_url.replace("partNumber=1", "partNumber=2")
    else:
        headers["x-amz-meta-a"] = "2"
    with pytest.raises(S3Error) as caught:
        _check(signed_url, headers, method, secret)
    assert caught.value.code == "SignatureDoesNotMatch" and caught.value.status == 403


def test_clock_skew_is_refused() -> None:
    signed_url, headers = _signed(S3SigV4Auth, "GET", f"http://{HOST}/bkt/key")
    with pytest.raises(S3Error) as caught:
        _check(signed_url, headers, "GET", now=time.time() + 3600)
    assert caught.value.code == "RequestTimeTooSkewed"


def test_presigned_v4_url_verifies_and_expires() -> None:
    signed_url, headers = _signed(S3SigV4QueryAuth, "GET", f"http://{HOST}/bkt/a%20key", expires=60)
    headers.pop("x-amz-content-sha256", None)
    _check(signed_url, headers, "GET")
    with pytest.raises(S3Error) as caught:
        _check(signed_url, headers, "GET", now=time.time() + 120)
    assert caught.value.code == "AccessDenied" and "expired" in caught.value.message
    with pytest.raises(S3Error) as caught:
        _check(signed_url.replace("bkt/a%20key", "bkt/other"), headers, "GET")
    assert caught.value.code == "SignatureDoesNotMatch"


def test_signature_version_2_header_and_presigned() -> None:
    signed_url, headers = _signed(HmacV1Auth, "PUT", f"http://{HOST}/bkt/k%20y?uploadId=u&partNumber=2", b"x",
                                  {"Content-Type": "text/plain", "x-amz-meta-z": "1"})
    _check(signed_url, headers, "PUT")
    with pytest.raises(S3Error):
        _check(signed_url, {**headers, "x-amz-meta-z": "2"}, "PUT")
    url, headers = _signed(HmacV1QueryAuth, "GET", f"http://{HOST}/bkt/obj?response-content-type=text%2Fplain",
                           expires=60)
    _check(url, headers, "GET")
    with pytest.raises(S3Error) as caught:
        _check(url, headers, "GET", now=time.time() + 120)
    assert "expired" in caught.value.message


def test_malformed_authorization_is_a_clear_error() -> None:
    for header in ("AWS4-HMAC-SHA256 Credential=onlyone", "Bearer abc", "AWS4-HMAC-SHA256 garbage"):
        with pytest.raises(S3Error) as caught:
            parse_auth({"authorization": header, "x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, "")
        assert caught.value.status == 400 and caught.value.code == "AuthorizationHeaderMalformed"
    assert parse_auth({}, "") is None  # anonymous: refused by the server, not malformed


def test_secrets_derive_from_the_cluster_secret() -> None:
    one = derive_secret(b"a" * 64, "FDSX", "salt")
    assert len(one) == 40 and one == derive_secret(b"a" * 64, "FDSX", "salt")
    assert one != derive_secret(b"b" * 64, "FDSX", "salt") and one != derive_secret(b"a" * 64, "FDSX", "salt2")


# -- aws-chunked ------------------------------------------------------------------------------------------
# AWS's published example of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload ("Signature Calculations for the
# Authorization Header: Transferring Payload in Multiple Chunks"): 65536 + 1024 bytes of 'a', in two chunks.
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE = SignedRequest(access_key="AKIAIOSFODNN7EXAMPLE", amz_date="20130524T000000Z",
                        scope="20130524/us-east-1/s3/aws4_request",
                        signed_headers=("content-encoding", "content-length", "host", "x-amz-content-sha256",
                                        "x-amz-date", "x-amz-decoded-content-length", "x-amz-storage-class"),
                        signature="4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9",
                        payload_hash="STREAMING-AWS4-HMAC-SHA256-PAYLOAD")
EXAMPLE_SIGNATURES = ["ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
                      "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
                      "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"]


def _example_body(signatures: list[str]) -> bytes:
    first, second, last = signatures
    return (f"10000;chunk-signature={first}\r\n".encode() + b"a" * 65536 + b"\r\n"
            + f"400;chunk-signature={second}\r\n".encode() + b"a" * 1024 + b"\r\n"
            + f"0;chunk-signature={last}\r\n\r\n".encode())


def _decode(decoder: ChunkedDecoder, body: bytes, step: int) -> bytes:
    out = bytearray()
    for i in range(0, len(body), step):
        for piece in decoder.feed(body[i:i + step]):
            out += piece
    decoder.finish()
    return bytes(out)


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
def test_aws_streaming_example_decodes_in_any_pieces(step: int) -> None:
    key = signing_key(EXAMPLE_SECRET, EXAMPLE.scope)
    decoder = ChunkedDecoder(EXAMPLE.payload_hash, key=key, request=EXAMPLE)
    assert _decode(decoder, _example_body(EXAMPLE_SIGNATURES), step) == b"a" * 66560


def test_altered_or_reordered_chunks_are_refused() -> None:
    key = signing_key(EXAMPLE_SECRET, EXAMPLE.scope)
    body = _example_body(EXAMPLE_SIGNATURES)
    for bad in (body.replace(b"a" * 10, b"a" * 9 + b"b", 1),
                _example_body([EXAMPLE_SIGNATURES[1], EXAMPLE_SIGNATURES[0], EXAMPLE_SIGNATURES[2]])):
        with pytest.raises(S3Error) as caught:
            _decode(ChunkedDecoder(EXAMPLE.payload_hash, key=key, request=EXAMPLE), bad, 4096)
        assert caught.value.code == "SignatureDoesNotMatch"


def test_unsigned_trailer_body_and_its_checksum() -> None:
    payload = b"hello, trailer" * 1000
    crc = base64.b64encode(zlib.crc32(payload).to_bytes(4, "big")).decode()
    body = (f"{len(payload):x}\r\n".encode() + payload + f"\r\n0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode())
    decoder = ChunkedDecoder("STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    assert _decode(decoder, body, 333) == payload
    headers = {"x-amz-trailer": "x-amz-checksum-crc32"}
    digests = Digests(headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    digests.update(payload)
    assert digests.finish(decoder.trailers) == hashlib.md5(payload).hexdigest()
    wrong = Digests(headers, "STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    wrong.update(payload + b"!")
    with pytest.raises(S3Error) as caught:
        wrong.finish(decoder.trailers)
    assert caught.value.code == "BadDigest"


def test_truncated_chunked_body_is_incomplete() -> None:
    decoder = ChunkedDecoder("STREAMING-UNSIGNED-PAYLOAD-TRAILER")
    decoder.feed(b"10\r\n0123456789")
    with pytest.raises(S3Error) as caught:
        decoder.finish()
    assert caught.value.code == "IncompleteBody"


def test_header_digests() -> None:
    data = b"some bytes"
    good = {"content-md5": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "x-amz-checksum-crc32": base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()}
    digests = Digests(good, hashlib.sha256(data).hexdigest())
    digests.update(data)
    assert digests.finish() == hashlib.md5(data).hexdigest()
    for headers, payload, code in (({"content-md5": good["content-md5"]}, "UNSIGNED-PAYLOAD", "BadDigest"),
                                   ({}, hashlib.sha256(b"other").hexdigest(), "XAmzContentSHA256Mismatch"),
                                   ({"x-amz-checksum-crc32": "AAAAAA=="}, "UNSIGNED-PAYLOAD", "BadDigest")):
        digests = Digests(headers, payload)
        digests.update(data + b"?")
        with pytest.raises(S3Error) as caught:
            digests.finish()
        assert caught.value.code == code
    with pytest.raises(S3Error) as caught:
        Digests({"x-amz-checksum-crc64nvme": "x"}, "UNSIGNED-PAYLOAD")
    assert caught.value.code == "InvalidRequest"
