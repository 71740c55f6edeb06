"""What the platform's HTTP APIs share: JSON errors (never a traceback, never a 500 for bad input),
tenant logins, cached tenant lookups, and serving with gunicorn."""

from __future__ import annotations

import logging
import threading
from typing import Callable

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import auth, config, db
from .daemon import setup_logging  # noqa: F401 - the APIs' entry points log like the daemons
from .errors import MysimbdpError, NotFound, ServiceError
from .tenants import Registry, Tenant, TenantCache


def json_error(status: int, code: str, message: str, hint: str | None = None, **extra) -> Response:
    """The one shape of an error answer: ``{"error": message, "code": code, "hint": hint, ...}``."""
    resp = jsonify({"error": message, "code": code, **({"hint": hint} if hint else {}), **extra})
    resp.status_code = status
    return resp


def get_backend():
    """The API's backend object (its Cassandra session, stores, ...), made once per app by create_api."""
    return current_app.extensions["mysimbdp"]


def create_api(name: str, backend, blueprints: list[Blueprint], log: logging.Logger) -> Flask:
    """A platform HTTP API: the blueprints, a ``/healthz`` without login, every other request logged in (HTTP
    Basic) before its view runs, and errors answered as JSON with a code."""
    app = Flask(name)
    app.extensions["mysimbdp"] = backend
    install_error_handlers(app, log)

    @app.before_request
    def authenticate():
        if request.endpoint in (None, "healthz"):
            return None
        backend.directory.login()
        return None

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True})

    for bp in blueprints:
        app.register_blueprint(bp)
    return app


def install_error_handlers(app: Flask, log: logging.Logger) -> None:
    @app.errorhandler(MysimbdpError)
    def on_platform_error(exc: MysimbdpError):
        if isinstance(exc, ServiceError):
            log.warning("service error: %s", exc.one_line())
        resp = json_error(exc.http_status, exc.code, exc.message, exc.hint)
        if exc.retry_after is not None:
            resp.headers["Retry-After"] = str(exc.retry_after)
        if exc.http_status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="mysimbdp"'
        return resp

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException):
        status = exc.code or 400
        return json_error(status, _HTTP_CODES.get(status, f"http_{status}"), exc.description or exc.name)

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception):
        if isinstance(exc, db.UNAVAILABLE):
            log.warning("Cassandra unavailable: %s", exc)
            return json_error(
                503, "database_unavailable", "the platform's database is unavailable", "try again in a moment"
            )
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
        return json_error(500, "internal_error", "internal error; the operator can find it in this API's log")


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class Directory:
    """The platform keyspace as an API needs it, created lazily (the API may start before Cassandra answers),
    with tenants cached for a few seconds."""

    def __init__(self, cfg: config.Config, *, operator: bool = False) -> None:
        self.cfg = cfg
        self.sessions = db.SessionHolder(cfg)
        self._lock = threading.Lock()
        self._registry: Registry | None = None
        self._tenants = TenantCache(lambda: self.registry)
        self.auth = auth.Authenticator(
            self._password_hash,
            max_failures=cfg.batch.auth_max_failures,
            lockout=cfg.batch.auth_lockout,
            operator_password=auth.operator_api_password(cfg.paths.secrets) if operator else None,
        )

    @property
    def session(self):
        return self.sessions.get()

    @property
    def registry(self) -> Registry:
        with self._lock:
            if self._registry is None:
                self._registry = Registry(self.cfg, self.session)
            return self._registry

    def tenant(self, name: str) -> Tenant | None:
        return self._tenants.get(name)

    def _password_hash(self, name: str) -> str | None:
        t = self.tenant(name)
        return t.password_hash if t else None

    def login(self) -> auth.Principal:
        """Authenticate this request (HTTP Basic); sets g.principal, and g.tenant for a tenant."""
        a = request.authorization
        principal = self.auth.authenticate(
            a.username if a else None, a.password if a else None, request.remote_addr or "?"
        )
        g.principal = principal
        g.tenant = None if principal.is_operator else self.tenant(principal.name)
        if not principal.is_operator and g.tenant is None:
            raise NotFound("no such tenant")
        return principal

    def acting_for(self, name: str) -> Tenant:
        """The tenant a request may act for: itself, or any tenant for the operator."""
        p: auth.Principal = g.principal
        if not p.is_operator and name != p.name:
            raise NotFound(f"no tenant {name!r}")  # not 403: do not tell tenants who else exists
        t = self.tenant(name)
        if t is None:
            raise NotFound(f"no tenant {name!r}")
        return t


def serve(factory: Callable[[], Flask], *, bind: str, threads: int, name: str, timeout: int = 60) -> None:
    """Serve a Flask app with gunicorn: one process, threads (request bodies stream, no buffering)."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", bind)
            self.cfg.set("workers", 1)  # one process: login throttling and limits are per process
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", timeout)
            self.cfg.set("graceful_timeout", 30)
            self.cfg.set("accesslog", "-")
            self.cfg.set("proc_name", name)
            self.cfg.set("control_socket_disable", True)

        def load(self):
            return factory()

    Server().run()
