"""Blob GUIDs: parsing what users and URLs give us, and the canonical text form."""

from __future__ import annotations

import uuid

import pytest

from fds.errors import BadRequest
from fds.guid import format_guid, new_guid, parse_guid

CANONICAL = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
RAW = bytes.fromhex("3f2504e04f8911d39a0c0305e82c3301")


@pytest.mark.parametrize(
    "text",
    [
        CANONICAL,
        CANONICAL.replace("-", ""),
        CANONICAL.upper(),
        CANONICAL.replace("-", "").upper(),
        "3F2504e0-4f89-11D3-9a0c-0305E82C3301",
        "{" + CANONICAL + "}",
        CANONICAL.encode(),
    ],
)
def test_accepts_dashed_undashed_and_upper_case(text: str | bytes) -> None:
    assert parse_guid(text) == RAW


def test_raw_16_bytes_pass_through() -> None:
    assert parse_guid(RAW) == RAW


@pytest.mark.parametrize(
    "text",
    [
        "",
        "3f2504e0",
        CANONICAL[:-1],  # 31 digits
        CANONICAL + "0",  # 33 digits
        CANONICAL.replace("-", "") + "00",
        "3f2504e0-4f89-11d3-9a0c-0305e82c330g",  # non-hex
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "a" * 100,
        "/" * 100,
        CANONICAL * 3,
        # int(x, 16) inside uuid.UUID would take all of these as 32 "digits":
        "0x" + "1" * 30,
        "+" + "1" * 31,
        " " + "1" * 31,
        "1" * 31 + "\n",
        "1_" + "1" * 30,
        "\uff11" * 32,  # full-width digit one
        "3f2504e0----4f8911d39a0c0305e82c3301",  # dashes in the wrong places
        "{" + CANONICAL,  # unbalanced brace
        "urn:uuid:" + CANONICAL,
        b"\xff" * 20,
        b"short",
    ],
)
def test_rejects_malformed_with_bad_guid(text: str | bytes) -> None:
    with pytest.raises(BadRequest) as info:
        parse_guid(text)
    assert info.value.code == "bad_guid"
    assert info.value.status == 400
    assert "32 hex digits" in info.value.message


def test_message_quotes_only_the_start_of_a_long_input() -> None:
    with pytest.raises(BadRequest) as info:
        parse_guid("x" * 10_000)
    assert len(info.value.message) < 200


def test_format_is_canonical_lower_case_dashed() -> None:
    assert format_guid(RAW) == CANONICAL


def test_round_trip() -> None:
    for _ in range(100):
        raw = new_guid()
        assert len(raw) == 16
        text = format_guid(raw)
        assert text == str(uuid.UUID(bytes=raw))
        assert parse_guid(text) == raw
        assert parse_guid(text.upper().replace("-", "")) == raw
        assert format_guid(parse_guid(text)) == text


def test_new_guids_are_distinct() -> None:
    assert len({new_guid() for _ in range(1000)}) == 1000
