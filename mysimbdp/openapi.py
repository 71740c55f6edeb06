"""The OpenAPI 3.1 documents of the platform's HTTP APIs: what the three share, and the helpers each API's
own description is written with.

Every API serves its document at ``GET /v1/openapi.json`` without a login (``web.create_api`` adds the
route). The description of an API's routes lives next to them (``batchingestmanager/openapi.py``,
``streamingestmanager/openapi.py``, ``queryapi/openapi.py``); what is the same everywhere lives here: the
one error shape, the HTTP Basic login, the error answers by status, the routes every API has
(``/healthz``, ``/metrics``, this document) and the operator's ``/v1/tenants/{tenant}/...`` twins.

tests/test_openapi.py checks each document against its app's real routes and fuzzes every operation
against the running services (schemathesis): no 5xx, and every answer as documented.
"""

from __future__ import annotations

ERROR = {
    "type": "object",
    "required": ["error", "code"],
    "properties": {
        "error": {"type": "string", "description": "what went wrong, for a person"},
        "code": {
            "type": "string",
            "description": "stable, for a program to match on (never the message): unauthorized, not_found, "
            "bad_json, body_too_large, too_many_requests, database_unavailable, and each API's own",
        },
        "hint": {"type": "string", "description": "what to do about it"},
    },
}
# what each status means on every API; an API adds its own words with `document(errors=...)`
ERRORS = {
    400: "bad input: the code says which (bad_json, invalid_name, bad_request, ...)",
    401: "no login or a wrong one (unauthorized)",
    403: "not allowed",
    404: "no such thing for this tenant, or no such tenant",
    408: "the request body did not arrive in time (request_timeout)",
    409: "conflicts with the current state",
    411: "no Content-Length (length_required)",
    413: "too large (body_too_large, or a limit of the tenant's)",
    414: "the request line (path and query) is longer than 4094 bytes (uri_too_long)",
    416: "the Range is outside the object",
    422: "breaks one of the tenant's constraints (constraint_violation)",
    428: "a header that proves the body is missing",
    429: "too many failed logins (too_many_attempts), too many requests in progress (too_many_requests)",
    431: "more than 50 headers, or one longer than 8190 bytes (headers_too_large)",
    503: "a service the API needs is down: try again after Retry-After (database_unavailable, ...)",
}
# every login may be wrong, the tenant gone, the tenant's requests at their limit, the database down; and the
# server refuses a request line or headers past its limits (web.serve) before any view sees them
COMMON = (400, 401, 404, 414, 429, 431, 503)
_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Basic", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
    503: {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
}
ANY = {"type": "object", "additionalProperties": True}


def ref(name: str) -> dict:
    """A reference to a schema the document names (``document(schemas=...)``)."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_response(schema: dict, description: str = "OK", headers: dict | None = None) -> dict:
    out: dict = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def text_response(mimetype: str, description: str) -> dict:
    return {"description": description, "content": {mimetype: {"schema": {"type": "string"}}}}


def header(description: str, typ: str = "string") -> dict:
    return {"description": description, "schema": {"type": typ}}


def json_body(schema: dict, *, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def binary_body(mimetype: str = "application/octet-stream", *, required: bool = True) -> dict:
    return {"required": required, "content": {mimetype: {"schema": {"type": "string", "format": "binary"}}}}


def query(name: str, description: str, schema: dict | None = None) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def path(name: str, description: str = "") -> dict:
    out = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    if description:
        out["description"] = description
    return out


def header_param(name: str, description: str, schema: dict | None = None, *, required: bool = False) -> dict:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema or {"type": "string"},
    }


def error_refs(*codes: int, common: bool = True) -> dict:
    """References to the error answers (status: reference): the COMMON ones and ``codes``, in order."""
    wanted = set(codes) | (set(COMMON) if common else set())
    return {str(c): {"$ref": f"#/components/responses/E{c}"} for c in sorted(wanted)}


def operation(
    summary: str,
    responses: dict,
    *,
    body: dict | None = None,
    params: list | None = None,
    codes: tuple[int, ...] = (),
) -> dict:
    """One operation answering ``responses`` (status: response) and the errors: COMMON, ``codes``, and for a
    JSON body 408 and 413 (read within a time and a size, see web.json_body)."""
    if body is not None and "application/json" in body["content"]:
        codes = (*codes, 408, 413)
    op: dict = {"summary": summary, "responses": {**{str(k): v for k, v in responses.items()}, **error_refs(*codes)}}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def with_path_params(paths: dict, described: dict[str, dict]) -> dict:
    """Each path item with a parameter for each ``{name}`` in its path, as ``described`` (name: parameter)."""
    out = {}
    for p, item in paths.items():
        params = [described[name] for name in described if "{" + name + "}" in p]
        out[p] = {**item, "parameters": params} if params else item
    return out


TENANT = path("tenant", "the tenant the operator acts for")


def with_tenant_twins(paths: dict) -> dict:
    """``paths``, and for each ``/v1/...`` its operator twin ``/v1/tenants/{tenant}/...`` (the same operation
    for a tenant the operator names; a tenant may name only itself)."""
    out = dict(paths)
    for p, item in paths.items():
        twin = p.replace("/v1/", "/v1/tenants/{tenant}/", 1)
        out[twin] = {**item, "parameters": [TENANT, *item.get("parameters", [])]}
    return out


def _platform_paths() -> dict:
    """The routes web.create_api gives every API."""
    return {
        "/healthz": {
            "get": {
                "summary": "the API is up (no login)",
                "security": [],
                "responses": {"200": json_response({"type": "object", "properties": {"ok": {"type": "boolean"}}})},
            }
        },
        "/v1/openapi.json": {
            "get": {
                "summary": "this document (no login)",
                "security": [],
                "responses": {"200": json_response(ANY, "an OpenAPI 3.1 document")},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (the operator's login only)",
                "responses": {
                    "200": text_response("text/plain", "Prometheus text format"),
                    **error_refs(401, 429, common=False),
                },
            }
        },
    }


def document(
    *,
    title: str,
    description: str,
    server: str,
    paths: dict,
    schemas: dict[str, dict] | None = None,
    errors: dict[int, str] | None = None,
) -> dict:
    """The whole document of one API: its ``paths`` and the platform's own, the login, the error answers
    (``errors`` gives an API's own words for a status), and the ``schemas`` its paths refer to by name."""
    words = {**ERRORS, **(errors or {})}
    error = ref("Error")
    responses = {f"E{c}": json_response(error, d, _HEADERS.get(c)) for c, d in sorted(words.items())}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1.0.0", "description": description},
        "servers": [{"url": server}],
        "security": [{"basic": []}],
        "components": {
            "securitySchemes": {
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "a tenant's name and password, or the operator's (user operator) where the "
                    "API takes it",
                }
            },
            "schemas": {"Error": ERROR, **(schemas or {})},
            "responses": responses,
        },
        "paths": {**_platform_paths(), **paths},
    }
