"""The tract server's name routes: buckets, keys and the bucket catalogue, on each namespace's primary.

Clients reach these through :class:`fds.client.Bucket`; the gateway and the CLI through the client.
Keys travel as a query parameter (``key=``), so any UTF-8 key, slashes and all, is one value.
"""

from __future__ import annotations

import base64

from fastapi import FastAPI, Query
from fastapi.responses import Response

from fds.guid import format_guid, parse_guid
from fds.models import BucketInfo, NameListing, NameRecords, ObjectInfo, ObjectPut, RenameRequest
from fds.names import CATALOGUE, bucket_guid, check_bucket
from fds.placement import METADATA_TRACT
from fds.tractserver._names import MAX_PAGE, NameService
from fds.tractserver._node import Node
from fds.web import json_response

__all__ = ["add_name_routes"]

_VERSION = Query(ge=0, description="The table version the caller used; a stale one gets 409 stale_version.")
_OP = Query(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
            description="The client's id for this operation; a retry with the same id gets the first answer.")
_KEY = Query(min_length=1, max_length=1024, description="The object's key (any UTF-8, up to 1024 bytes).")


def add_name_routes(app: FastAPI, node: Node, names: NameService) -> None:
    """Add the name routes to the tract server ``app``."""

    @app.post("/v1/buckets/{bucket}", status_code=201, response_model=BucketInfo, tags=["names"],
              summary="Create a bucket (on its namespace primary).")
    async def create_bucket(bucket: str, version: int = _VERSION, op: str | None = _OP) -> Response:
        ns = bucket_guid(check_bucket(bucket))
        table = await node.check(ns, METADATA_TRACT, version)
        return json_response(await names.create_bucket(bucket, table, op), status=201)

    @app.get("/v1/buckets/{bucket}", response_model=BucketInfo, tags=["names"], summary="A bucket, if it exists.")
    async def head_bucket(bucket: str, version: int = _VERSION) -> Response:
        ns = bucket_guid(check_bucket(bucket))
        table = await node.check(ns, METADATA_TRACT, version)
        return json_response(await names.head_bucket(bucket, table))

    @app.delete("/v1/buckets/{bucket}", status_code=204, tags=["names"],
                summary="Delete an empty bucket (409 bucket_not_empty otherwise).")
    async def delete_bucket(bucket: str, version: int = _VERSION, op: str | None = _OP) -> Response:
        ns = bucket_guid(check_bucket(bucket))
        table = await node.check(ns, METADATA_TRACT, version)
        await names.delete_bucket(bucket, table, op)
        return Response(status_code=204)

    @app.get("/v1/buckets/{bucket}/objects", response_model=NameListing, tags=["names"],
             summary="One page of the bucket's keys in UTF-8 order, by prefix, after a key, with a delimiter.")
    async def list_objects(bucket: str, version: int = _VERSION, prefix: str = Query(default="", max_length=1024),
                           start_after: str = Query(default="", max_length=1024),
                           delimiter: str = Query(default="", max_length=64),
                           limit: int = Query(default=1000, ge=1, le=MAX_PAGE)) -> Response:
        ns = bucket_guid(check_bucket(bucket))
        table = await node.check(ns, METADATA_TRACT, version)
        return Response(await names.list_names(bucket, table, prefix=prefix, after=start_after,
                                               delimiter=delimiter, limit=limit), media_type="application/json")

    @app.put("/v1/buckets/{bucket}/object", response_model=ObjectInfo, tags=["names"],
             summary="Point a key at a blob written whole, or store a small object's bytes inline: one atomic "
                     "switch, create-only or on the current ETag.")
    async def put_object(bucket: str, body: ObjectPut, key: str = _KEY, version: int = _VERSION,
                         op: str | None = _OP,
                         if_match: str | None = Query(default=None, max_length=130,
                                                      description="Only if the current ETag is this ('*': any)."),
                         if_none_match: bool = Query(default=False, description="Only if the key is free.")
                         ) -> Response:
        ns = bucket_guid(check_bucket(bucket))
        table = await node.check(ns, METADATA_TRACT, version)
        return json_response(await names.put(bucket, key, body, table, op, if_match=if_match,
                                             if_none_match=if_none_match))

    @app.get("/v1/buckets/{bucket}/object", response_model=ObjectInfo, tags=["names"],
             summary="An object's blob, size, ETag, time, content type and metadata (and an inline object's bytes).")
    async def head_object(bucket: str, key: str = _KEY, version: int = _VERSION,
                          data: bool = Query(default=False, description="For an object kept inline (no blob): its "
                                                                        "bytes too, base64, as 'data'.")) -> Response:
        ns = bucket_guid(check_bucket(bucket))
        table = await node.check(ns, METADATA_TRACT, version)
        info, inline = await names.head(bucket, key, table)
        body = info.model_dump(mode="json")
        if data and inline is not None:
            body["data"] = base64.b64encode(inline).decode()
        return json_response(body)

    @app.delete("/v1/buckets/{bucket}/object", status_code=204, tags=["names"],
                summary="Delete a key; its blob is deleted after the grace period.")
    async def delete_object(bucket: str, key: str = _KEY, version: int = _VERSION, op: str | None = _OP,
                            if_match: str | None = Query(default=None, max_length=130)) -> Response:
        ns = bucket_guid(check_bucket(bucket))
        table = await node.check(ns, METADATA_TRACT, version)
        await names.delete(bucket, key, table, op, if_match=if_match)
        return Response(status_code=204)

    @app.post("/v1/buckets/{bucket}/rename", response_model=ObjectInfo, tags=["names"],
              summary="Move an object to another key of the bucket in one step.")
    async def rename_object(bucket: str, req: RenameRequest, version: int = _VERSION,
                            op: str | None = _OP) -> Response:
        ns = bucket_guid(check_bucket(bucket))
        table = await node.check(ns, METADATA_TRACT, version)
        return json_response(await names.rename(bucket, req, table, op))

    # -- the catalogue: the list of buckets ------------------------------------------------
    @app.get("/v1/catalogue", response_model=list[BucketInfo], tags=["names"], summary="Buckets in name order.")
    async def list_buckets(version: int = _VERSION, start_after: str = Query(default="", max_length=63),
                           limit: int = Query(default=1000, ge=1, le=MAX_PAGE)) -> Response:
        table = await node.check(CATALOGUE, METADATA_TRACT, version)
        return json_response([b.model_dump() for b in await names.catalogue(start_after, limit, table)])

    @app.put("/v1/catalogue/{bucket}", status_code=204, tags=["names"], summary="List a bucket (after creating it).")
    async def list_bucket(bucket: str, created: float = Query(allow_inf_nan=False), version: int = _VERSION,
                          op: str | None = _OP) -> Response:
        table = await node.check(CATALOGUE, METADATA_TRACT, version)
        await names.catalogue_put(bucket, created, table, op)
        return Response(status_code=204)

    @app.delete("/v1/catalogue/{bucket}", status_code=204, tags=["names"],
                summary="Unlist a bucket (after deleting it).")
    async def unlist_bucket(bucket: str, version: int = _VERSION, op: str | None = _OP) -> Response:
        table = await node.check(CATALOGUE, METADATA_TRACT, version)
        await names.catalogue_delete(bucket, table, op)
        return Response(status_code=204)

    # -- between servers -----------------------------------------------------------------
    @app.put("/v1/internal/names/{ns}", tags=["internal"],
             summary="Server to server: name records from the namespace primary (the prepare).")
    async def replicate_names(ns: str, body: NameRecords, version: int = _VERSION) -> Response:
        raw = parse_guid(ns)
        table = await node.check(raw, METADATA_TRACT, version)
        await names.apply(raw, body.records, table)
        return json_response({"ns": format_guid(raw)})
