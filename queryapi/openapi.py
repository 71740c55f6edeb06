"""The OpenAPI 3 description of the query API, served at ``/v1/openapi.json`` (the parts every API shares are
in mysimbdp/openapi.py).

tests/test_openapi.py checks it against the app's real routes: every route is described and every
described path exists. The operator's ``/v1/tenants/{tenant}/...`` twins are listed too.
"""

from __future__ import annotations

from mysimbdp import openapi as oa
from mysimbdp.config import Config

WHERE = {
    "type": "object",
    "description": 'column: value (equality) or column: {"eq"|"lt"|"lte"|"gt"|"gte": value, "in": [values]}',
    "additionalProperties": True,
}
TABLE = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "columns": {"type": "array", "items": {"type": "object"}},
        "partition_key": {"type": "array", "items": {"type": "string"}},
        "clustering": {"type": "array", "items": {"type": "object"}},
        "indexes": {"type": "array", "items": {"type": "object"}},
        "default_ttl": {"type": "integer"},
    },
}
OBJECT = {
    "type": "object",
    "properties": {
        "key": {"type": "string"},
        "size": {"type": "integer"},
        "content_type": {"type": "string"},
        "sha256": {"type": "string"},
        "created": {"type": "string", "format": "date-time"},
        "expires": {"type": ["string", "null"], "format": "date-time"},
    },
}
SCHEMAS = {"Table": TABLE, "Object": OBJECT}
BYTES = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
# a statement on the tenant's data may be refused by Cassandra for the tenant's own role
CODES = (403,)


def _data(schema: dict, description: str = "OK") -> dict:
    return oa.json_response({"type": "object", "required": ["data"], "properties": {"data": schema}}, description)


def _op(summary: str, ok: dict, *, status: int = 200, codes: tuple[int, ...] = (), **kw) -> dict:
    return oa.operation(summary, {status: ok}, codes=CODES + codes, **kw)


def _paths() -> dict:
    page = {
        "type": "object",
        "properties": {
            "rows": {"type": "array", "items": {"type": "object"}},
            "count": {"type": "integer"},
            "next_page_token": {"type": ["string", "null"]},
        },
    }
    query_body = {
        "type": "object",
        "properties": {
            "where": WHERE,
            "columns": {"type": "array", "items": {"type": "string"}},
            "limit": {"type": "integer", "minimum": 1},
            "page_size": {"type": "integer", "minimum": 1},
            "page_token": {"type": "string"},
        },
    }
    key = {"type": "object", "description": "key column: value"}
    index = oa.operation(
        "create a Storage-Attached Index on a column",
        {201: _data(oa.ANY, "the index"), 200: _data(oa.ANY, "it existed (created: false)")},
        body=oa.json_body({"type": "object", "required": ["column"], "properties": {"column": {"type": "string"}}}),
        codes=CODES,
    )
    return {
        "/v1/tables": {"get": _op("the tenant's tables", _data(oa.ANY))},
        "/v1/tables/{table}": {"get": _op("one table: columns, key, indexes", _data(oa.ref("Table")))},
        "/v1/tables/{table}/indexes": {"post": index},
        "/v1/tables/{table}/indexes/{name}": {"delete": _op("drop an index", _data(oa.ANY))},
        "/v1/tables/{table}/query": {
            "post": _op(
                "rows by key, clustering range or indexed filters, a page at a time",
                _data(page),
                body=oa.json_body(query_body, required=False),
            )
        },
        "/v1/tables/{table}/count": {
            "post": _op(
                "count the rows a filter selects",
                _data(oa.ANY),
                body=oa.json_body({"type": "object", "properties": {"where": WHERE}}, required=False),
            )
        },
        "/v1/tables/{table}/rows": {
            "post": _op(
                "insert or upsert rows, each optionally with a TTL (_ttl in a row, or ttl for all)",
                _data(oa.ANY, "written"),
                status=201,
                body=oa.json_body(
                    {
                        "type": "object",
                        "required": ["rows"],
                        "properties": {
                            "rows": {"type": "array", "items": {"type": "object"}},
                            "ttl": {"type": "integer", "minimum": 1, "maximum": 630720000},
                            "if_not_exists": {"type": "boolean"},
                        },
                    },
                    required=False,
                ),
            )
        },
        "/v1/tables/{table}/rows/delete": {
            "post": _op(
                "delete rows by key (or a partition, or a clustering prefix)",
                _data(oa.ANY),
                body=oa.json_body(
                    {"type": "object", "properties": {"key": key, "keys": {"type": "array", "items": key}}},
                    required=False,
                ),
            )
        },
        "/v1/tables/{table}/ttl": {
            "post": _op(
                "seconds left of each column of a row (null: no TTL)",
                _data(oa.ANY),
                body=oa.json_body({"type": "object", "required": ["key"], "properties": {"key": key}}, required=False),
            )
        },
        "/v1/tables/{table}/export": {
            "get": _op(
                "the whole table as NDJSON or CSV, streamed; resume marks on the way, the row count at the end",
                {
                    "description": "the rows",
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                params=[
                    oa.query("format", "ndjson (default) or csv", {"type": "string", "enum": ["ndjson", "csv"]}),
                    oa.query("columns", "comma-separated columns (default: all)"),
                    oa.query("resume", "a resume token from an earlier export of the same columns"),
                ],
            )
        },
        "/v1/objects": {
            "get": _op(
                "list objects by key prefix, a page at a time",
                _data(
                    {
                        "type": "object",
                        "properties": {
                            "objects": {"type": "array", "items": oa.ref("Object")},
                            "next_page_token": {"type": ["string", "null"]},
                        },
                    }
                ),
                params=[
                    oa.query("prefix", "key prefix"),
                    oa.query("page_size", "objects per page", {"type": "integer", "minimum": 1}),
                    oa.query("page_token", "from the previous page"),
                ],
            )
        },
        "/v1/objects/{key}": {
            "put": oa.operation(
                "store an object (streamed; Content-Length required)",
                {201: _data(oa.ref("Object"))},
                params=[
                    oa.query("ttl", "seconds the object lives", {"type": "integer"}),
                    oa.header_param("X-Checksum-Sha256", "hex sha256 of the body; the upload is refused if it differs"),
                ],
                body={"required": True, "content": BYTES},
                codes=CODES + (409, 411, 413),
            ),
            "get": oa.operation(
                "the object's bytes (Range: bytes=first-last for a part)",
                {
                    200: {"description": "the bytes", "content": BYTES},
                    206: {"description": "the part asked for", "content": BYTES},
                },
                params=[oa.header_param("Range", "bytes=first-last, first-, or -suffix")],
                codes=CODES + (409, 416),
            ),
            "head": oa.operation(
                "size, type, sha256, created, expiry as headers (of the part, with a Range)",
                {200: {"description": "OK"}, 206: {"description": "the part asked for"}},
                params=[oa.header_param("Range", "bytes=first-last, first-, or -suffix")],
                codes=CODES + (409, 416),
            ),
            "delete": _op("delete the object", _data(oa.ANY), codes=(409,)),
        },
    }


PARAMS = {
    "table": oa.path("table", "a table of the tenant's keyspace"),
    "name": oa.path("name", "the index's name"),
    "key": oa.path("key", "the object's key (may contain /)"),
}


def document(cfg: Config) -> dict:
    return oa.document(
        title="mysimbdp query API",
        description="A tenant's own tables and binary objects. See docs/query.md.",
        server=cfg.query_url(),
        paths=oa.with_tenant_twins(oa.with_path_params(_paths(), PARAMS)),
        schemas=SCHEMAS,
        errors={
            400: "bad input: the code says which (bad_query, bad_value, needs_index, bad_page_token, ...)",
            403: "the tenant's own role may not do this (forbidden)",
            404: "no such table, row, object or tenant",
            409: "the object's row was changed outside the API (object_damaged)",
            413: "too large: over a limit or the quota",
        },
    )
