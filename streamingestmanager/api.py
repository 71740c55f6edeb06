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

For a tenant, ``/v1/stream``, ``/v1/instances...``, ``/v1/reports`` and ``/v1/decisions`` are the same
for itself. Starting and stopping answer once the controller has acted (within a few seconds), with the
stream's status.
"""

from __future__ import annotations

import logging
import sys
import threading

from flask import Flask, g, jsonify, request

from mysimbdp import config, web
from mysimbdp.errors import TenantError
from mysimbdp.sandbox import runtime as sandbox_runtime

from . import service
from .state import StreamStore

log = logging.getLogger("streamingestmanager.api")


def create_app(cfg: config.Config | None = None) -> Flask:
    cfg = cfg or config.load()
    app = Flask("mysimbdp-stream")
    directory = web.Directory(cfg, operator=True)
    runtime = sandbox_runtime(cfg)
    lock = threading.Lock()
    stores: list[StreamStore] = []

    def store() -> StreamStore:
        with lock:
            if not stores:
                stores.append(StreamStore(cfg, directory.session))
            return stores[0]

    web.install_error_handlers(app, log)

    @app.before_request
    def authenticate():
        if request.endpoint in (None, "healthz"):
            return None
        directory.login()
        return None

    def who() -> str:
        return "the operator" if g.principal.is_operator else f"tenant {g.principal.name}"

    def target(tenant: str | None):
        if tenant is None:
            if g.principal.is_operator:
                raise TenantError("the operator must name the tenant", hint="use /v1/tenants/<tenant>/...")
            tenant = g.principal.name
        return directory.acting_for(tenant)

    def limit() -> int:
        try:
            return max(1, min(500, int(request.args.get("limit", "50"))))
        except ValueError:
            raise TenantError("limit must be a number") from None

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True})

    @app.get("/v1/stream")
    @app.get("/v1/tenants/<tenant>/stream")
    def status(tenant: str | None = None):
        t = target(tenant)
        return jsonify(service.status(cfg, store(), runtime, t))

    @app.post("/v1/instances")
    @app.post("/v1/tenants/<tenant>/instances")
    def start(tenant: str | None = None):
        t = target(tenant)
        body = request.get_json(silent=True) if request.data else {}
        if not isinstance(body, dict):
            raise TenantError('send a JSON object, e.g. {"count": 2}')
        service.start(cfg, store(), t, body.get("count", 1), who())
        settled = service.wait_converged(cfg, store(), runtime, t.name)
        out = service.status(cfg, store(), runtime, t)
        out["settled"] = settled
        return jsonify(out), 201 if settled else 202

    @app.delete("/v1/instances")
    @app.delete("/v1/tenants/<tenant>/instances")
    @app.delete("/v1/instances/<instance>")
    @app.delete("/v1/tenants/<tenant>/instances/<instance>")
    def stop(tenant: str | None = None, instance: str | None = None):
        t = target(tenant)
        service.stop(cfg, store(), runtime, t, instance, who())
        settled = service.wait_converged(cfg, store(), runtime, t.name, timeout=cfg.stream.drain_timeout + 10)
        out = service.status(cfg, store(), runtime, t)
        out["settled"] = settled
        return jsonify(out), 200 if settled else 202

    @app.get("/v1/instances/<instance>/log")
    @app.get("/v1/tenants/<tenant>/instances/<instance>/log")
    def instance_log(instance: str, tenant: str | None = None):
        t = target(tenant)
        text = service.instance_log(cfg, runtime, t.name, instance, lines=limit() if "limit" in request.args else 200)
        return text, 200, {"Content-Type": "text/plain; charset=utf-8"}

    @app.get("/v1/reports")
    @app.get("/v1/tenants/<tenant>/reports")
    def reports(tenant: str | None = None):
        t = target(tenant)
        return jsonify({"reports": [service.jsonable(r) for r in store().reports(t.name, limit=limit())]})

    @app.get("/v1/decisions")
    @app.get("/v1/tenants/<tenant>/decisions")
    def decisions(tenant: str | None = None):
        t = target(tenant)
        return jsonify({"decisions": [service.jsonable(d) for d in store().decisions(t.name, limit=limit())]})

    return app


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
