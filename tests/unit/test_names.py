"""Bucket and key rules (S3's), namespace placement, page tokens: pure functions of fds.names."""

from __future__ import annotations

import pytest

from fds.errors import BadRequest
from fds.names import (
    CATALOGUE,
    bucket_guid,
    check_bucket,
    check_key,
    check_prefix,
    decode_token,
    encode_token,
    meta_header_text,
    meta_header_value,
)


@pytest.mark.parametrize("name", ["abc", "my-bucket", "a.b.c", "0-9", "x" * 63, "logs.2024"])
def test_valid_bucket_names(name: str) -> None:
    assert check_bucket(name) == name


@pytest.mark.parametrize(("name", "why"), [
    ("ab", "3-63"), ("x" * 64, "3-63"), ("Upper", "lower-case"), ("-a-", "beginning"), ("a_b", "letters"),
    ("a..b", "two dots"), ("10.0.0.1", "IP address"), ("xn--abc", "may not begin"), ("sthree-x", "may not begin"),
    ("x-s3alias", "may not end"), ("x--ol-s3", "may not end"), ("", "3-63"),
])
def test_invalid_bucket_names_say_why(name: str, why: str) -> None:
    with pytest.raises(BadRequest, match=why) as err:
        check_bucket(name)
    assert err.value.code == "bad_bucket_name"


def test_keys() -> None:
    assert check_key("a/b/ç/日本") == "a/b/ç/日本"
    assert check_key("é" * 512) == "é" * 512  # 1024 bytes of UTF-8
    for bad in ["", "é" * 513, "a\x00", "\udc80"]:
        with pytest.raises(BadRequest) as err:
            check_key(bad)
        assert err.value.code == "bad_key"
    assert check_prefix("") == ""


def test_namespaces_are_stable_and_distinct() -> None:
    assert bucket_guid("abc") == bucket_guid("abc") and len(bucket_guid("abc")) == 16
    assert len({bucket_guid(f"b{i:03d}") for i in range(1000)} | {CATALOGUE}) == 1001


def test_page_tokens_round_trip_and_refuse_garbage() -> None:
    for after in ["", "a", "日本/x", "k" * 1024]:
        assert decode_token(encode_token(after)) == after
    with pytest.raises(BadRequest, match="page token"):
        decode_token("!!!")
    with pytest.raises(BadRequest, match="page token"):
        decode_token("__8")  # not UTF-8


@pytest.mark.parametrize("value", ["plain ascii", "café", "日本語", "tab\there", ""])
def test_metadata_header_values_round_trip(value: str) -> None:
    sent = meta_header_value(value)
    assert sent.isascii() and sent.isprintable()
    assert (sent == value) == (value.isascii() and value.isprintable())
    assert meta_header_text(sent) == value


def test_metadata_header_text_takes_raw_utf8_and_keeps_what_it_cannot_read() -> None:
    assert meta_header_text("café".encode().decode("latin-1")) == "café"  # raw UTF-8 bytes, as a server decoded them
    assert meta_header_text("=?UTF-8?B?not base64!?=") == "=?UTF-8?B?not base64!?="
    assert meta_header_text("\xe9t\xe9") == "\xe9t\xe9"  # Latin-1 that is not UTF-8 stays as it came
