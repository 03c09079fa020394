"""The client's public surface is pinned: changing it is a deliberate act."""

from __future__ import annotations

import fds.client
import fds.errors


def test_client_public_names() -> None:
    assert sorted(fds.client.__all__) == sorted([
        "Client", "Blob", "SyncClient", "SyncBlob", "BlobInfo", "ClusterStatus", "Progress", "DEFAULT_IN_FLIGHT",
        "FDSError", "BadRequest", "TractTooLarge", "Unauthorized", "Forbidden", "NotFound", "BlobNotFound",
        "TractNotFound",
        "Conflict", "BlobExists", "StaleVersion", "Superseded", "PastEnd", "DiskFull", "Unavailable",
        "ChecksumMismatch", "TableNotReady",
        "Bucket", "BucketInfo", "ObjectInfo", "ListPage", "ObjectReader", "ObjectWriter", "BucketNotFound",
        "KeyNotFound", "BucketExists", "BucketNotEmpty", "PreconditionFailed",
    ])
    for name in fds.client.__all__:
        assert getattr(fds.client, name) is not None


def test_every_error_is_reexported_by_the_client() -> None:
    for name in fds.errors.__all__:
        if name[0].isupper():
            assert getattr(fds.client, name) is getattr(fds.errors, name)


def test_package_and_web_public_names() -> None:
    import fds
    import fds.web

    assert sorted(fds.__all__) == ["__version__", "tune_allocator"]
    assert sorted(fds.web.__all__) == sorted([
        "create_app", "json_response", "error_response", "MethodNotAllowed", "AuthMiddleware",
        "RequestIdMiddleware", "log_request", "Metrics", "MetricsMiddleware", "CONTENT_TYPE_LATEST", "secure",
        "serve", "bind_socket", "url_of",
    ])
    for name in fds.web.__all__:
        assert getattr(fds.web, name) is not None
