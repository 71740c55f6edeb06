"""The query API (HTTP, JSON), served by gunicorn on port 8803: a tenant reads, writes, searches and exports
its own tables and keeps binary objects, every statement on its own Cassandra role.

Logged in as a tenant (HTTP Basic, the same logins and lock-out as the other APIs) or as the operator,
who acts for a tenant under ``/v1/tenants/<t>/...`` (and still through that tenant's role). Answers are
``{"data": ...}``; errors ``{"error": message, "code": code, "hint": ...}`` with a 4xx (503 when the
database is down, with Retry-After). docs/query.md has every endpoint; ``/v1/openapi.json`` describes them.

    GET    /v1/tables                               the tenant's tables: columns, key, indexes
    GET    /v1/tables/<table>                       one table
    POST   /v1/tables/<table>/indexes               {"column": c}: a Storage-Attached Index on c
    DELETE /v1/tables/<table>/indexes/<name>
    POST   /v1/tables/<table>/query                 where, columns, limit, page_size, page_token
    POST   /v1/tables/<table>/count                 where
    POST   /v1/tables/<table>/rows                  {"rows": [...], "ttl": s, "if_not_exists": bool}
    POST   /v1/tables/<table>/rows/delete           {"key": {...}} or {"keys": [...]}
    POST   /v1/tables/<table>/ttl                   {"key": {...}}: seconds left of each column
    GET    /v1/tables/<table>/export                ?format=ndjson|csv&columns=a,b&resume=<token>
    GET    /v1/objects                              ?prefix=&page_size=&page_token=
    PUT    /v1/objects/<key>                        body: the bytes; X-Checksum-Sha256, ?ttl=
    GET    /v1/objects/<key>                        Range: bytes=a-b
    HEAD   /v1/objects/<key>
    DELETE /v1/objects/<key>
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading

from cassandra import InvalidRequest, Unauthorized
from flask import Blueprint, Flask, Response, current_app, g, request

from mysimbdp import config, metrics, web
from mysimbdp.errors import BadQuery, MysimbdpError, RangeNotSatisfiable, TenantError
from mysimbdp.tenants import Tenant

from . import export, objects, openapi, plan, rows, tables, tokens
from .sessions import TenantSessions

log = logging.getLogger("queryapi.api")
bp = Blueprint("query", __name__)
WRITE_BODY_BYTES = 2 << 20  # a write of max_write_rows rows
IDLE_SECONDS = 30.0
DIGITS = re.compile(r"[0-9]{1,12}")  # a download or upload may take as long as it likes, but not this long without a block


class Backend:
    """The tenant directory (logins), the tenants' own sessions, and what serves rows, exports and objects."""

    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        # what the API's worker processes share: login failures, the object quota's locks
        shared = cfg.paths.run / "query-api"
        shared.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = web.Directory(
            cfg,
            operator=True,
            threads=cfg.query.threads,
            tenant_requests=cfg.query.tenant_requests,
            hash_seconds=cfg.query.password_recheck_seconds,
            failures_file=shared / "login-failures.sqlite",
        )
        self.sessions = TenantSessions(cfg)
        self.sealer = tokens.Sealer(tokens.load_key(cfg.paths.secrets), cfg.query.token_hours)
        self.rows = rows.Rows(cfg.query, self.sealer)
        self.objects = objects.Objects(cfg.query.object_chunk_kb * 1024, ledger=self._object_ledger, lock_dir=shared)
        self._ledger: objects.Ledger | None = None
        self._sweeper = threading.Thread(target=self._sweep, name="session-sweeper", daemon=True)
        self._sweeper.start()

    def _object_ledger(self) -> objects.Ledger:
        """The platform keyspace's count of object bytes, on the platform's session (made on first use)."""
        if self._ledger is None:
            _ = self.directory.registry  # the platform schema exists once the registry is open
            self._ledger = objects.Ledger(self.directory.session, self.cfg.keyspace)
        return self._ledger

    def _sweep(self) -> None:
        import time

        while True:
            time.sleep(30)
            self.sessions.sweep()


def backend() -> Backend:
    return web.get_backend()


def create_app(cfg: config.Config | None = None) -> Flask:
    cfg = cfg or config.load()
    app = web.create_api(
        "mysimbdp-query", Backend(cfg), [bp], log, request_seconds=cfg.query.request_seconds, openapi=openapi.document
    )

    @app.after_request
    def release_when_sent(resp):
        held = g.pop("sessions_held", [])
        sessions = backend().sessions
        if held:
            resp.call_on_close(lambda: [sessions.release(name) for name in held])
        return resp

    @app.teardown_request
    def release_unanswered(exc):
        for name in g.pop("sessions_held", []):  # no answer was made (an error on the way)
            backend().sessions.release(name)

    @app.errorhandler(InvalidRequest)
    def on_invalid(exc):  # a statement Cassandra refused that no view expected: still the tenant's request
        return web.json_error(400, "bad_query", "Cassandra refused the statement: " + rows._message(exc)[:300])

    @app.errorhandler(Unauthorized)
    def on_unauthorized(exc):
        return web.json_error(403, "forbidden", "your role may not do this")

    return app


def _target(tenant: str | None) -> Tenant:
    if tenant is None:
        if g.principal.is_operator:
            raise TenantError("the operator must name the tenant", hint="use /v1/tenants/<tenant>/...")
        tenant = g.principal.name
    return backend().directory.acting_for(tenant)


def _session(t: Tenant):
    """The tenant's session, in use until this request's answer is sent (streamed answers included)."""
    held = g.setdefault("sessions_held", [])
    if t.name not in held:
        backend().sessions.acquire(t.name)
        held.append(t.name)
    return backend().sessions.get(t.name)


def _body(max_bytes: int = web.MAX_JSON_BYTES) -> dict:
    body = web.json_body(required=False, max_bytes=max_bytes)
    if not isinstance(body, dict):
        raise TenantError("send a JSON object", code="bad_json")
    return body


def _table(t: Tenant, name: str) -> tables.Table:
    return tables.get_table(_session(t), t.name, name)


def ok(data, status: int = 200):
    """The answer's one shape, ``{"data": ...}`` (jsonify's work without its per-call lookups: a point read
    is mostly such overhead)."""
    body = json.dumps({"data": data}, default=current_app.json.default, separators=(",", ":"))
    return Response(body, status, mimetype="application/json")


# --- schema ---------------------------------------------------------------------------------------------


@bp.get("/v1/tables")
@bp.get("/v1/tenants/<tenant>/tables")
def list_tables(tenant: str | None = None):
    t = _target(tenant)
    return ok({"keyspace": t.name, "tables": [x.describe() for x in tables.list_tables(_session(t), t.name)]})


@bp.get("/v1/tables/<table>")
@bp.get("/v1/tenants/<tenant>/tables/<table>")
def table_info(table: str, tenant: str | None = None):
    t = _target(tenant)
    return ok(_table(t, table).describe())


@bp.post("/v1/tables/<table>/indexes")
@bp.post("/v1/tenants/<tenant>/tables/<table>/indexes")
def create_index(table: str, tenant: str | None = None):
    t = _target(tenant)
    body = _body()
    column = body.get("column")
    if not isinstance(column, str):
        raise BadQuery('send {"column": "<name>"}')
    web.extend_deadline(150)  # building the index's structure on a large table takes a while
    with rows.cassandra_refusals():
        out = tables.create_index(_session(t), _table(t, table), column)
    return ok(out, 201 if out["created"] else 200)


@bp.delete("/v1/tables/<table>/indexes/<name>")
@bp.delete("/v1/tenants/<tenant>/tables/<table>/indexes/<name>")
def drop_index(table: str, name: str, tenant: str | None = None):
    t = _target(tenant)
    with rows.cassandra_refusals():
        tables.drop_index(_session(t), _table(t, table), name)
    return ok({"dropped": name})


# --- rows -----------------------------------------------------------------------------------------------


@bp.post("/v1/tables/<table>/query")
@bp.post("/v1/tenants/<tenant>/tables/<table>/query")
def query(table: str, tenant: str | None = None):
    t = _target(tenant)
    body = _body()
    return ok(backend().rows.query(_session(t), t.name, _table(t, table), body))


@bp.post("/v1/tables/<table>/count")
@bp.post("/v1/tenants/<tenant>/tables/<table>/count")
def count(table: str, tenant: str | None = None):
    t = _target(tenant)
    body = _body()
    web.extend_deadline(max(60, backend().cfg.query.request_seconds) + 10)
    return ok(backend().rows.count(_session(t), _table(t, table), body))


@bp.post("/v1/tables/<table>/rows")
@bp.post("/v1/tenants/<tenant>/tables/<table>/rows")
def write(table: str, tenant: str | None = None):
    t = _target(tenant)
    body = _body(WRITE_BODY_BYTES)
    return ok(backend().rows.write(_session(t), _table(t, table), body), 201)


@bp.post("/v1/tables/<table>/rows/delete")
@bp.post("/v1/tenants/<tenant>/tables/<table>/rows/delete")
def delete(table: str, tenant: str | None = None):
    t = _target(tenant)
    body = _body(WRITE_BODY_BYTES)
    return ok(backend().rows.delete(_session(t), _table(t, table), body))


@bp.post("/v1/tables/<table>/ttl")
@bp.post("/v1/tenants/<tenant>/tables/<table>/ttl")
def ttl(table: str, tenant: str | None = None):
    t = _target(tenant)
    return ok(backend().rows.ttl(_session(t), _table(t, table), _body()))


@bp.get("/v1/tables/<table>/export")
@bp.get("/v1/tenants/<tenant>/tables/<table>/export")
def export_table(table: str, tenant: str | None = None):
    t = _target(tenant)
    fmt = request.args.get("format", "ndjson")
    if fmt not in ("ndjson", "csv"):
        raise BadQuery("format is ndjson or csv", code="bad_format")
    tb = _table(t, table)
    cols_arg = request.args.get("columns")
    cols = plan.projection(tb, cols_arg.split(",") if cols_arg else None)
    clash = [c for c in cols if c in export.CONTROL_KEYS]
    if clash and fmt == "ndjson":
        raise BadQuery(
            f"column {clash[0]} has the name of an export control line", code="reserved_column",
            hint="export it as CSV, or leave it out with columns=",
        )
    b = backend()
    with rows.cassandra_refusals():
        job = export.Export(
            _session(t), b.sealer, t.name, tb, cols, fmt=fmt, fetch_size=b.cfg.query.export_fetch_size,
            resume=request.args.get("resume"),
        )
    sock = request.environ.get("gunicorn.socket")

    def blocks():
        for block in job.chunks():
            web.DEADLINES.set(sock, IDLE_SECONDS)  # an empty block: a page arrived, nothing to send yet
            if block:
                yield block

    web.DEADLINES.set(sock, IDLE_SECONDS)
    mimetype = "text/csv" if fmt == "csv" else "application/x-ndjson"
    return Response(blocks(), mimetype=mimetype, headers={"Cache-Control": "no-store"})


# --- objects --------------------------------------------------------------------------------------------


@bp.get("/v1/objects")
@bp.get("/v1/tenants/<tenant>/objects")
def list_objects(tenant: str | None = None):
    t = _target(tenant)
    b = backend()
    prefix = request.args.get("prefix", "")
    page_size = plan.positive_int(
        {"page_size": _int_arg("page_size", b.cfg.query.default_page_size)}, "page_size", None,
        b.cfg.query.max_page_size,
    )
    bound_to = tokens.fingerprint("objects", t.name, "", {"prefix": prefix, "page": page_size})
    token = request.args.get("page_token")
    state = b.sealer.open(token, bound_to) if token is not None else None
    items, nxt = b.objects.list(_session(t), t.name, prefix, page_size, state)
    return ok({"objects": items, "next_page_token": b.sealer.seal(bound_to, nxt) if nxt else None})


def _int_arg(name: str, default: int | None, code: str = "bad_limit") -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not DIGITS.fullmatch(raw):  # ASCII digits only: str.isdigit() takes '²' and int() takes '５'
        raise BadQuery(f"{name} must be a whole number", code=code)
    return int(raw)


@bp.put("/v1/objects/<path:key>")
@bp.put("/v1/tenants/<tenant>/objects/<path:key>")
def put_object(key: str, tenant: str | None = None):
    t = _target(tenant)
    objects.check_key(key)
    sock = request.environ.get("gunicorn.socket")
    ttl_raw = request.args.get("ttl")
    if ttl_raw is not None and not re.fullmatch(r"-?[0-9]{1,12}", ttl_raw):
        raise BadQuery("ttl must be a whole number of seconds", code="bad_ttl")
    ttl_seconds = int(ttl_raw) if ttl_raw is not None else None
    web.DEADLINES.set(sock, IDLE_SECONDS)
    try:
        meta = backend().objects.put(
            _session(t), t.name, key, request.stream,
            length=request.content_length, content_type=request.headers.get("Content-Type"),
            sha256=request.headers.get("X-Checksum-Sha256"), ttl=ttl_seconds, limits=t.constraints,
            on_bytes=lambda: web.DEADLINES.set(sock, IDLE_SECONDS),
        )  # fmt: skip
    except MysimbdpError:
        _drain(request.stream)
        raise
    return ok(meta.describe(), 201)


DRAIN_BYTES = 16 << 20
DRAIN_SECONDS = 5.0


def _drain(stream) -> None:
    """Read what is left of a refused body (at most DRAIN_BYTES, DRAIN_SECONDS), so that the client, still
    sending, reads the answer: closing on unread bytes makes the kernel reset the connection, and a reset
    can lose the answer on its way. A larger body is cut off (the client sees the connection end)."""
    import time

    started, read = time.monotonic(), 0
    try:
        while read < DRAIN_BYTES and time.monotonic() - started < DRAIN_SECONDS:
            block = stream.read(256 * 1024)
            if not block:
                return
            read += len(block)
    except Exception:  # noqa: BLE001 - a client gone away: nothing to drain
        return


def _object_headers(meta: objects.Meta) -> dict:
    d = meta.describe()
    h = {
        "Accept-Ranges": "bytes",
        "ETag": f'"{meta.sha256}"',
        "X-Checksum-Sha256": meta.sha256,
        "X-Created": d["created"],
        "Cache-Control": "private, no-cache",
    }
    if d["expires"]:
        h["X-Expires"] = d["expires"]
    return h


@bp.route("/v1/objects/<path:key>", methods=["GET", "HEAD"])
@bp.route("/v1/tenants/<tenant>/objects/<path:key>", methods=["GET", "HEAD"])
def get_object(key: str, tenant: str | None = None):
    t = _target(tenant)
    b = backend()
    session = _session(t)
    meta = b.objects.head(session, t.name, key)
    headers = _object_headers(meta)
    try:
        rng = objects.parse_range(request.headers.get("Range"), meta.size)
    except RangeNotSatisfiable as exc:
        resp = web.json_error(416, exc.code, exc.message)
        resp.headers["Content-Range"] = f"bytes */{meta.size}"
        return resp
    first, last = rng if rng else (0, meta.size - 1)
    status = 206 if rng else 200
    if rng:
        headers["Content-Range"] = f"bytes {first}-{last}/{meta.size}"
    headers["Content-Length"] = str(max(0, last - first + 1))
    if request.method == "HEAD":
        resp = Response(b"", status=status, content_type=meta.content_type)
        resp.headers.update(headers)  # after the empty body: the length is the object's
        return resp
    sock = request.environ.get("gunicorn.socket")

    def blocks():
        try:
            for block in b.objects.read(session, t.name, meta, first, last):
                web.DEADLINES.set(sock, IDLE_SECONDS)
                yield block
        except MysimbdpError as exc:  # the answer has begun: cut it short (the client sees a short body)
            log.warning("object %s of %s: %s", key, t.name, exc.message)
            raise

    web.DEADLINES.set(sock, IDLE_SECONDS)
    resp = Response(blocks(), status=status, headers=headers, content_type=meta.content_type)
    resp.automatically_set_content_length = False
    return resp


@bp.delete("/v1/objects/<path:key>")
@bp.delete("/v1/tenants/<tenant>/objects/<path:key>")
def delete_object(key: str, tenant: str | None = None):
    t = _target(tenant)
    backend().objects.delete(_session(t), t.name, key)
    return ok({"deleted": key})


def main(argv: list[str] | None = None) -> int:
    cfg = config.load()
    web.setup_logging(cfg)
    metrics.fresh_process_files()  # before the workers start: the last run's counts go
    web.serve(
        lambda: create_app(cfg),
        bind=f"{cfg.query.host}:{cfg.query.port}",
        threads=cfg.query.threads,
        workers=cfg.query.workers,
        name="mysimbdp-query-api",
        timeout=cfg.query.request_seconds + 120,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
