"""The dashboard's web app (create_app) and its server (main), served by gunicorn like the APIs.

``python -m dashboard.app`` (or ``mysimbdp-dashboard``) serves it on ``dashboard.host:dashboard.port``
(127.0.0.1:8804); ``mysimbdp up`` starts it under the supervisor with the other parts.
"""

from __future__ import annotations

import logging
import sys
import threading

from flask import Flask

from batchingestmanager.uploads import Uploads
from mysimbdp import config, web
from mysimbdp.errors import SessionExpired
from mysimbdp.jobs import JobStore
from mysimbdp.sandbox import runtime as sandbox_runtime
from streamingestmanager.state import StreamStore

from . import health, views
from .sessions import Gate

log = logging.getLogger("dashboard")
MAX_BODY = 64 * 1024  # a login form or a replay: nothing larger is ever posted


class Backend:
    """The logins (a :class:`Gate`), and the platform's own stores on its operator session, made on first
    use (the dashboard may start before Cassandra answers)."""

    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.directory = Gate(cfg)
        self.runtime = sandbox_runtime(cfg)
        self.health = health.Cached(self._health)
        self._lock = threading.Lock()
        self._parts: tuple[JobStore, Uploads, StreamStore] | None = None

    def _made(self) -> tuple[JobStore, Uploads, StreamStore]:
        with self._lock:
            if self._parts is None:
                session = self.directory.session
                jobs = JobStore(self.cfg, session)
                self._parts = (jobs, Uploads(self.cfg, jobs), StreamStore(self.cfg, session))
            return self._parts

    @property
    def jobs(self) -> JobStore:
        return self._made()[0]

    @property
    def uploads(self) -> Uploads:
        return self._made()[1]

    @property
    def streams(self) -> StreamStore:
        return self._made()[2]

    def _health(self) -> dict:
        def keyspaces(session) -> list[str]:
            return [t.name for t in self.directory.registry.list()] + [self.cfg.keyspace]

        return health.operator_view(self.cfg, lambda: self.directory.session, keyspaces)


def create_app(cfg: config.Config | None = None) -> Flask:
    cfg = cfg or config.load()
    app = web.create_api("mysimbdp-dashboard", Backend(cfg), [views.bp], log)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.register_error_handler(SessionExpired, views.on_session_expired)
    app.after_request(views.secure_headers)
    return app


def main(argv: list[str] | None = None) -> int:
    cfg = config.load()
    web.setup_logging(cfg)
    d = cfg.dashboard
    web.serve(lambda: create_app(cfg), bind=f"{d.host}:{d.port}", threads=d.threads, name="mysimbdp-dashboard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
