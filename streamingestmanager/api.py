"""The stream API (HTTP, JSON), served by gunicorn. Authenticated as a tenant (HTTP Basic, its own name
and password) or as the operator (user ``operator``, password in $MYSIMBDP_HOME/secrets/api-operator.json),
who may act for every tenant. Passwords travel only in the Authorization header, never in URLs.

    GET    /healthz
    GET    /v1/tenants/<t>/stream                   state, instances (health, latest report), recent decisions
    POST   /v1/tenants/<t>/instances                start instances: {"count": n} (default 1)
    DELETE /v1/tenants/<t>/instances/<instance>     stop one instance
    DELETE /v1/tenants/<t>/instances                stop the stream (messages then wait in the broker)
    GET    /v1/tenants/<t>/reports[?limit=N]        the latest timing reports
    GET    /v1/tenants/<t>/decisions[?limit=N]      the latest scaling decisions and manual starts/stops
    GET    /v1/tenants/<t>/instances/<instance>/log the instance's last lines
    GET    /v1/openapi.json                         the OpenAPI 3.1 document of this API (no auth)

For a tenant, ``/v1/stream``, ``/v1/instances...``, ``/v1/reports`` and ``/v1/decisions`` are the same
for itself. Starting and stopping answer once the controller has acted (within a few seconds), with the
stream's status.
"""

from __future__ import annotations

import logging
import sys
import threading

from flask import Blueprint, Flask, g, jsonify, request

from mysimbdp import config, web
from mysimbdp.errors import TenantError
from mysimbdp.sandbox import runtime as sandbox_runtime
from mysimbdp.tenants import Tenant

from . import openapi, service
from .state import StreamStore

log = logging.getLogger("streamingestmanager.api")
bp = Blueprint("stream", __name__)


class Backend:
    """The tenant directory (the operator may log in too), the sandbox runtime, and the stream store on the
    directory's session (made on first use: the API may start before Cassandra answers)."""

    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.directory = web.Directory(cfg, operator=True, threads=cfg.stream.threads)
        self.runtime = sandbox_runtime(cfg)
        self._lock = threading.Lock()
        self._store: StreamStore | None = None

    @property
    def store(self) -> StreamStore:
        with self._lock:
            if self._store is None:
                self._store = StreamStore(self.cfg, self.directory.session)
            return self._store


def backend() -> Backend:
    return web.get_backend()


def create_app(cfg: config.Config | None = None) -> Flask:
    cfg = cfg or config.load()
    # starting and stopping wait for the controller to act (an instance drains for up to drain_timeout)
    return web.create_api(
        "mysimbdp-stream",
        Backend(cfg),
        [bp],
        log,
        request_seconds=cfg.stream.drain_timeout + 30,
        openapi=openapi.document,
    )


def _who() -> str:
    return "the operator" if g.principal.is_operator else f"tenant {g.principal.name}"


def _target(tenant: str | None) -> Tenant:
    if tenant is None:
        if g.principal.is_operator:
            raise TenantError("the operator must name the tenant", hint="use /v1/tenants/<tenant>/...")
        tenant = g.principal.name
    return backend().directory.acting_for(tenant)


def _limit() -> int:
    try:
        return max(1, min(500, int(request.args.get("limit", "50"))))
    except ValueError:
        raise TenantError("limit must be a number") from None


@bp.get("/v1/stream")
@bp.get("/v1/tenants/<tenant>/stream")
def status(tenant: str | None = None):
    b, t = backend(), _target(tenant)
    return jsonify(service.status(b.cfg, b.store, b.runtime, t))


@bp.post("/v1/instances")
@bp.post("/v1/tenants/<tenant>/instances")
def start(tenant: str | None = None):
    b, t = backend(), _target(tenant)
    body = web.json_body(required=False)
    if not isinstance(body, dict):
        raise TenantError('send a JSON object, e.g. {"count": 2}', code="bad_json")
    service.start(b.cfg, b.store, t, body.get("count", 1), _who())
    settled = service.wait_converged(b.cfg, b.store, b.runtime, t.name)
    out = service.status(b.cfg, b.store, b.runtime, t)
    out["settled"] = settled
    return jsonify(out), 201 if settled else 202


@bp.delete("/v1/instances")
@bp.delete("/v1/tenants/<tenant>/instances")
@bp.delete("/v1/instances/<instance>")
@bp.delete("/v1/tenants/<tenant>/instances/<instance>")
def stop(tenant: str | None = None, instance: str | None = None):
    b, t = backend(), _target(tenant)
    service.stop(b.cfg, b.store, b.runtime, t, instance, _who())
    settled = service.wait_converged(b.cfg, b.store, b.runtime, t.name, timeout=b.cfg.stream.drain_timeout + 10)
    out = service.status(b.cfg, b.store, b.runtime, t)
    out["settled"] = settled
    return jsonify(out), 200 if settled else 202


@bp.get("/v1/instances/<instance>/log")
@bp.get("/v1/tenants/<tenant>/instances/<instance>/log")
def instance_log(instance: str, tenant: str | None = None):
    b, t = backend(), _target(tenant)
    lines = _limit() if "limit" in request.args else 200
    text = service.instance_log(b.cfg, b.runtime, t.name, instance, lines=lines)
    return text, 200, {"Content-Type": "text/plain; charset=utf-8"}


@bp.get("/v1/reports")
@bp.get("/v1/tenants/<tenant>/reports")
def reports(tenant: str | None = None):
    b, t = backend(), _target(tenant)
    return jsonify({"reports": [service.jsonable(r) for r in b.store.reports(t.name, limit=_limit())]})


@bp.get("/v1/decisions")
@bp.get("/v1/tenants/<tenant>/decisions")
def decisions(tenant: str | None = None):
    b, t = backend(), _target(tenant)
    return jsonify({"decisions": [service.jsonable(d) for d in b.store.decisions(t.name, limit=_limit())]})


def main(argv: list[str] | None = None) -> int:
    cfg = config.load()
    web.setup_logging(cfg)
    web.serve(
        lambda: create_app(cfg),
        bind=f"{cfg.stream.host}:{cfg.stream.port}",
        threads=cfg.stream.threads,
        name="mysimbdp-stream-api",
        timeout=cfg.stream.drain_timeout + 60,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
