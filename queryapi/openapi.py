"""The OpenAPI 3 description of the query API, served at ``/v1/openapi.json``.

tests/test_query_api.py checks it against the app's real routes: every route is described and every
described path exists. The operator's ``/v1/tenants/{tenant}/...`` twins are listed too.
"""

from __future__ import annotations

from mysimbdp.config import Config

ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "what went wrong, for a person"},
        "code": {"type": "string", "description": "stable, for a program: bad_query, needs_index, bad_value, ..."},
        "hint": {"type": "string", "description": "what to do about it"},
    },
}
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


def _data(schema: dict) -> dict:
    return {"type": "object", "required": ["data"], "properties": {"data": schema}}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    out = {str(c): {"$ref": f"#/components/responses/E{c}"} for c in (400, 401, 403, 404, 429, 503) + codes}
    return out


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, ok: dict, *, body: dict | None = None, params: list | None = None, codes=(), status="200"):
    op = {"summary": summary, "responses": {status: ok, **_errors(*codes)}}
    if body:
        op["requestBody"] = _body(body)
    if params:
        op["parameters"] = params
    return op


def _q(name: str, description: str, typ: str = "string") -> dict:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": {"type": typ}}


def _paths() -> dict:
    paths = _described()
    paths["/v1/tables/{table}/indexes"]["post"]["responses"]["200"] = _json(_data({"type": "object"}), "it existed")
    return paths


def _described() -> dict:
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
    return {
        "/v1/tables": {"get": _op("the tenant's tables", _json(_data({"type": "object"})))},
        "/v1/tables/{table}": {"get": _op("one table: columns, key, indexes", _json(_data(TABLE)))},
        "/v1/tables/{table}/indexes": {
            "post": _op(
                "create a Storage-Attached Index on a column",
                _json(_data({"type": "object"}), "the index (created: false when it existed)"),
                body={"type": "object", "required": ["column"], "properties": {"column": {"type": "string"}}},
                status="201",
            )
        },
        "/v1/tables/{table}/indexes/{name}": {"delete": _op("drop an index", _json(_data({"type": "object"})))},
        "/v1/tables/{table}/query": {
            "post": _op("rows by key, clustering range or indexed filters, a page at a time", _json(_data(page)),
                        body=query_body)  # fmt: skip
        },
        "/v1/tables/{table}/count": {
            "post": _op("count the rows a filter selects", _json(_data({"type": "object"})),
                        body={"type": "object", "properties": {"where": WHERE}})  # fmt: skip
        },
        "/v1/tables/{table}/rows": {
            "post": _op(
                "insert or upsert rows, each optionally with a TTL (_ttl in a row, or ttl for all)",
                _json(_data({"type": "object"}), "written"),
                body={
                    "type": "object",
                    "required": ["rows"],
                    "properties": {
                        "rows": {"type": "array", "items": {"type": "object"}},
                        "ttl": {"type": "integer", "minimum": 1, "maximum": 630720000},
                        "if_not_exists": {"type": "boolean"},
                    },
                },
                status="201",
            )
        },
        "/v1/tables/{table}/rows/delete": {
            "post": _op("delete rows by key (or a partition, or a clustering prefix)", _json(_data({"type": "object"})),
                        body={"type": "object", "properties": {"key": key, "keys": {"type": "array", "items": key}}})
        },  # fmt: skip
        "/v1/tables/{table}/ttl": {
            "post": _op("seconds left of each column of a row (null: no TTL)", _json(_data({"type": "object"})),
                        body={"type": "object", "required": ["key"], "properties": {"key": key}})  # fmt: skip
        },
        "/v1/tables/{table}/export": {
            "get": _op(
                "the whole table as NDJSON or CSV, streamed; resume marks on the way, the row count at the end",
                {
                    "description": "the rows",
                    "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                                "text/csv": {"schema": {"type": "string"}}},
                },  # fmt: skip
                params=[
                    _q("format", "ndjson (default) or csv"),
                    _q("columns", "comma-separated columns (default: all)"),
                    _q("resume", "a resume token from an earlier export of the same columns"),
                ],
            )
        },
        "/v1/objects": {
            "get": _op(
                "list objects by key prefix, a page at a time",
                _json(_data({"type": "object", "properties": {"objects": {"type": "array", "items": OBJECT},
                                                              "next_page_token": {"type": ["string", "null"]}}})),
                params=[_q("prefix", "key prefix"), _q("page_size", "objects per page", "integer"),
                        _q("page_token", "from the previous page")],
            )  # fmt: skip
        },
        "/v1/objects/{key}": {
            "put": {
                "summary": "store an object (streamed; Content-Length required)",
                "parameters": [
                    _q("ttl", "seconds the object lives", "integer"),
                    {"name": "X-Checksum-Sha256", "in": "header", "required": False, "schema": {"type": "string"},
                     "description": "hex sha256 of the body; the upload is refused if it differs"},
                ],  # fmt: skip
                "requestBody": {"required": True, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {"201": _json(_data(OBJECT)), **_errors(411, 413)},
            },
            "get": {
                "summary": "the object's bytes (Range: bytes=first-last for a part)",
                "parameters": [{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the bytes", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                    "206": {"description": "the part asked for", "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}},
                    **_errors(409, 416),
                },
            },  # fmt: skip
            "head": {"summary": "size, type, sha256, created, expiry as headers",
                     "responses": {"200": {"description": "OK"}, **_errors(409)}},
            "delete": _op("delete the object", _json(_data({"type": "object"})), codes=(409,)),
        },  # fmt: skip
    }


def document(cfg: Config) -> dict:
    paths = {"/healthz": {"get": {"summary": "the API is up (no login)", "security": [],
                                  "responses": {"200": {"description": "OK"}}}},
             "/v1/openapi.json": {"get": {"summary": "this document (no login)", "security": [],
                                          "responses": {"200": {"description": "OK"}}}},
             "/metrics": {"get": {"summary": "Prometheus metrics (the operator's login)",
                                  "responses": {"200": {"description": "Prometheus text format",
                                                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                                                "401": {"description": "not the operator's login"}}}}}  # fmt: skip
    table_param = {"name": "table", "in": "path", "required": True, "schema": {"type": "string"}}
    for path, item in _paths().items():
        params = []
        if "{table}" in path:
            params.append(table_param)
        if "{name}" in path:
            params.append({"name": "name", "in": "path", "required": True, "schema": {"type": "string"}})
        if "{key}" in path:
            params.append({"name": "key", "in": "path", "required": True, "schema": {"type": "string"}})
        paths[path] = {**item, "parameters": params} if params else item
        tenant = {"name": "tenant", "in": "path", "required": True, "schema": {"type": "string"},
                  "description": "the tenant the operator acts for"}  # fmt: skip
        twin = path.replace("/v1/", "/v1/tenants/{tenant}/", 1)
        paths[twin] = {**item, "parameters": [tenant, *params]}
    responses = {
        f"E{c}": _json(ERROR, d)
        for c, d in {
            400: "bad input: the code says which (bad_query, bad_value, needs_index, bad_page_token, ...)",
            401: "no or wrong login",
            403: "the tenant's own role may not do this (forbidden)",
            409: "the object's row was changed outside the API (object_damaged)",
            404: "no such table, row, object or tenant",
            411: "no Content-Length",
            413: "too large: over a limit or the quota",
            416: "the Range is outside the object",
            429: "too many failed logins, or too many requests in progress",
            503: "the database is unavailable: try again (Retry-After)",
        }.items()
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "mysimbdp query API", "version": "1.0.0",
                 "description": "A tenant's own tables and binary objects. See docs/query.md."},  # fmt: skip
        "servers": [{"url": cfg.query_url()}],
        "security": [{"basic": []}],
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}, "responses": responses},
        "paths": paths,
    }
