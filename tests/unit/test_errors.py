"""The error tree and its one mapping to HTTP: errors survive the wire as themselves."""

from __future__ import annotations

import inspect

import orjson
import pytest

import fds.errors as errors
from fds.errors import FDSError, error_from_response

ERROR_CLASSES = [
    getattr(errors, name)
    for name in errors.__all__
    if inspect.isclass(getattr(errors, name)) and issubclass(getattr(errors, name), FDSError)
]


def test_all_lists_the_whole_tree() -> None:
    defined = {
        obj for obj in vars(errors).values()
        if inspect.isclass(obj) and issubclass(obj, FDSError) and obj.__module__ == errors.__name__
    }
    assert set(ERROR_CLASSES) == defined
    assert len(ERROR_CLASSES) == 22


def test_codes_are_unique() -> None:
    codes = [cls.default_code for cls in ERROR_CLASSES]
    assert len(codes) == len(set(codes))


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_round_trip_keeps_class_message_and_code(cls: type[FDSError]) -> None:
    sent = cls(f"{cls.__name__} happened: tract 7 of blob 3f25…")
    body = sent.to_body()
    assert orjson.loads(body) == {"error": {"code": cls.default_code, "message": sent.message}}
    got = error_from_response(cls.status, body)
    assert type(got) is cls
    assert got.message == sent.message
    assert str(got) == sent.message
    assert got.code == cls.default_code
    assert got.status == cls.status


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_round_trip_keeps_details_and_custom_code(cls: type[FDSError]) -> None:
    sent = cls("with details", code=cls.default_code, table_version=12, server="ts3")
    got = error_from_response(cls.status, sent.to_body(), where="read tract 4")
    assert type(got) is cls
    assert got.message == "read tract 4: with details"
    assert got.details == {"table_version": 12, "server": "ts3"}


def test_status_mapping() -> None:
    expected = {
        "FDSError": 500, "BadRequest": 400, "TractTooLarge": 413, "Unauthorized": 401, "Forbidden": 403,
        "NotFound": 404,
        "BlobNotFound": 404, "TractNotFound": 404, "Conflict": 409, "BlobExists": 409, "StaleVersion": 409,
        "Superseded": 409, "BucketNotFound": 404, "KeyNotFound": 404, "BucketExists": 409, "BucketNotEmpty": 409,
        "PreconditionFailed": 412,
        "PastEnd": 416, "DiskFull": 507, "Unavailable": 503, "ChecksumMismatch": 503, "TableNotReady": 503,
    }
    assert {cls.__name__: cls.status for cls in ERROR_CLASSES} == expected


def test_hierarchy_lets_callers_catch_families() -> None:
    assert issubclass(errors.StaleVersion, errors.Conflict)
    assert issubclass(errors.Superseded, errors.Conflict)
    assert issubclass(errors.BlobNotFound, errors.NotFound)
    assert issubclass(errors.TractTooLarge, errors.BadRequest)
    assert issubclass(errors.ChecksumMismatch, errors.Unavailable)
    assert all(issubclass(cls, Exception) for cls in ERROR_CLASSES)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequest), (401, errors.Unauthorized), (403, errors.Forbidden), (404, errors.NotFound),
        (409, errors.Conflict),
        (412, errors.PreconditionFailed), (413, errors.TractTooLarge),
        (416, errors.PastEnd), (503, errors.Unavailable), (507, errors.DiskFull),
        (418, errors.BadRequest),  # any other 4xx is the caller's fault
        (500, FDSError),
    ],
)
def test_unknown_bodies_map_by_status(status: int, cls: type[FDSError]) -> None:
    for body in (b"", b"<html>proxy error</html>", b"[1, 2]", b'{"detail": "x"}', b'{"error": "boom"}',
                 b'{"error": {"code": "no_such_route", "message": "no route"}}'):
        got = error_from_response(status, body)
        assert type(got) is cls, (status, body)


def test_unknown_body_text_becomes_the_message() -> None:
    got = error_from_response(404, b"nothing here")
    assert type(got) is errors.NotFound and got.message == "nothing here"
    assert error_from_response(503, b"").message == "HTTP 503"
    assert error_from_response(502, b"x" * 1000, where="GET /t").message == "GET /t: " + "x" * 200


def test_unknown_code_keeps_the_servers_code_and_message() -> None:
    got = error_from_response(404, b'{"error": {"code": "no_such_route", "message": "no route GET /x"}}')
    assert type(got) is errors.NotFound
    assert got.code == "no_such_route" and got.message == "no route GET /x"


def test_code_wins_over_status() -> None:
    # The code says more than the status: a 404 carrying tract_not_found is TractNotFound.
    got = error_from_response(404, errors.TractNotFound("gone").to_body())
    assert type(got) is errors.TractNotFound


@pytest.mark.parametrize("code", [5, ["x"], {"a": 1}, None, True])
def test_malformed_code_falls_back_to_status(code: object) -> None:
    body = orjson.dumps({"error": {"code": code, "message": "odd"}})
    got = error_from_response(409, body)
    assert type(got) is errors.Conflict
    assert got.code == "conflict" and got.message == "odd"


def test_accepts_bytearray_and_invalid_utf8() -> None:
    assert type(error_from_response(507, bytearray(errors.DiskFull("full").to_body()))) is errors.DiskFull
    got = error_from_response(400, b"\xff\xfe bad")
    assert type(got) is errors.BadRequest and "bad" in got.message
