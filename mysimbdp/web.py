"""What the platform's HTTP APIs share: JSON errors with a code (never a traceback, never a 500 for bad
input), tenant logins, bounded request bodies and request times, and serving with gunicorn.

Every request runs against a deadline. A request's head (line and headers) must arrive within
``HEAD_SECONDS`` of its first byte; then the view has ``REQUEST_SECONDS`` unless it says otherwise (an
upload extends its deadline as long as bytes keep coming). A connection past its deadline is shut down
by a reaper thread, which frees the thread that served it: a client sending a byte at a time holds a
thread for seconds, not minutes. Each tenant may have at most ``tenant_requests`` requests in progress.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException

from . import auth, bounded, config, db, metrics
from .daemon import setup_logging  # noqa: F401 - the APIs' entry points log like the daemons
from .errors import (
    AuthenticationFailed,
    BodyTooLarge,
    InvalidName,
    MysimbdpError,
    NotFound,
    RequestTimeout,
    ServiceError,
    TenantError,
    TooManyRequests,
)
from .tenants import Registry, Tenant, TenantCache

HEAD_SECONDS = 10.0  # from a request's first byte to the end of its headers
REQUEST_SECONDS = 30.0  # from the end of the headers to the end of the answer, unless a view extends it
BODY_SECONDS = 10.0  # a JSON body, whole
MAX_JSON_BYTES = 64 * 1024
MAX_JSON_DEPTH = 16
LINGER_SECONDS = 0.002  # a worker thread waits this long for the next request on its connection
LINGER_REQUESTS = 16  # at most this many requests in a row, then the connection goes back to the poller
# no user name (it comes from the client, newlines and terminal escapes included), no referer or user agent:
# what the access log says of a request is what the server decided
ACCESS_FORMAT = '%(h)s %(t)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'


# --- deadlines ----------------------------------------------------------------------------------------------


class Deadlines:
    """When each connection being served must be done; a reaper shuts down those past it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._due: dict[socket.socket, float] = {}

    def set(self, sock: socket.socket | None, seconds: float) -> None:
        if sock is not None:
            with self._lock:
                self._due[sock] = time.monotonic() + seconds

    def clear(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._due.pop(sock, None)

    def reap(self) -> int:
        now = time.monotonic()
        with self._lock:
            late = [s for s, due in self._due.items() if due < now]
            for s in late:
                del self._due[s]
        for s in late:
            try:
                s.shutdown(socket.SHUT_RDWR)  # the blocked read ends (no data), the thread is free again
            except OSError:
                pass
        return len(late)

    def run_reaper(self, interval: float = 0.5) -> None:
        while True:
            time.sleep(interval)
            self.reap()


DEADLINES = Deadlines()  # one per process: the gunicorn worker sets head deadlines, views the rest


def extend_deadline(seconds: float) -> None:
    """Give the current request ``seconds`` more from now (no-op outside gunicorn, e.g. in tests)."""
    DEADLINES.set(request.environ.get("gunicorn.socket"), seconds)


def send_file_idle(path, *, mimetype: str, download_name: str, idle: float = 30.0) -> Response:
    """A file as a download, streamed in 64 KiB blocks: the client may take as long as it likes in all, but
    not ``idle`` seconds without taking a block (a client that stops reading frees its thread)."""
    sock = request.environ.get("gunicorn.socket")
    fh = open(path, "rb")
    size = os.fstat(fh.fileno()).st_size

    def blocks():
        with fh:
            while block := fh.read(64 * 1024):
                DEADLINES.set(sock, idle)
                yield block

    DEADLINES.set(sock, idle)
    return Response(
        blocks(),
        mimetype=mimetype,
        headers={"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{download_name}"'},
    )


# --- request bodies ----------------------------------------------------------------------------------------


def json_body(*, required: bool = True, max_bytes: int = MAX_JSON_BYTES) -> object:
    """The request's JSON body, read within BODY_SECONDS and at most ``max_bytes``, parsed with a depth
    bound; TenantError (400, 408 or 413) otherwise. An empty body is ``{}`` unless ``required``."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise BodyTooLarge(f"the JSON body is larger than {max_bytes // 1024} KiB")
    extend_deadline(BODY_SECONDS)
    started = time.monotonic()
    data = bytearray()
    try:
        while len(data) <= max_bytes:
            chunk = request.stream.read(min(16 * 1024, max_bytes + 1 - len(data)))
            if not chunk:
                break
            data += chunk
    except Exception:  # noqa: BLE001 - a client that went away, or a body gunicorn cannot parse (bad chunks)
        if time.monotonic() - started >= BODY_SECONDS - 1:
            raise RequestTimeout(f"the body did not arrive within {BODY_SECONDS:.0f}s") from None
        raise TenantError("the body ended early", code="body_ended_early") from None
    finally:
        extend_deadline(current_app.config.get("REQUEST_SECONDS", REQUEST_SECONDS))
    if len(data) > max_bytes:
        raise BodyTooLarge(f"the JSON body is larger than {max_bytes // 1024} KiB")
    if not data.strip():
        if required:
            raise TenantError("send a JSON object", code="bad_json")
        return {}
    try:
        return bounded.loads_json(bytes(data), max_bytes=max_bytes, max_depth=MAX_JSON_DEPTH)
    except ValueError as exc:
        raise TenantError(f"the body is not valid JSON: {exc}"[:300], code="bad_json") from None


# --- errors ------------------------------------------------------------------------------------------------


def json_error(status: int, code: str, message: str, hint: str | None = None, **extra) -> Response:
    """The one shape of an error answer: ``{"error": message, "code": code, "hint": hint, ...}``."""
    resp = jsonify({"error": message, "code": code, **({"hint": hint} if hint else {}), **extra})
    resp.status_code = status
    return resp


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
        resp = json_error(status, _HTTP_CODES.get(status, f"http_{status}"), exc.description or exc.name)
        for key, value in exc.get_headers():  # Allow on a 405, for one
            if key.lower() != "content-type":
                resp.headers[key] = value
        return resp

    @app.errorhandler(Exception)
    def on_unexpected(exc: Exception):
        if isinstance(exc, db.UNAVAILABLE):
            log.warning("Cassandra unavailable: %s", exc)
            resp = json_error(
                503, "database_unavailable", "the platform's database is unavailable", "try again in a moment"
            )
            resp.headers["Retry-After"] = "5"
            return resp
        log.error("unexpected error on %s %s", request.method, request.path, exc_info=exc)
        return json_error(500, "internal_error", "internal error; the operator can find it in this API's log")


_HTTP_CODES = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "body_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


# --- the app ------------------------------------------------------------------------------------------------


def get_backend():
    """The API's backend object (its Cassandra session, stores, ...), made once per app by create_api."""
    return current_app.extensions["mysimbdp"]


def create_api(
    name: str,
    backend,
    blueprints: list[Blueprint],
    log: logging.Logger,
    request_seconds: float = REQUEST_SECONDS,
    openapi: Callable[[config.Config], dict] | None = None,
) -> Flask:
    """A platform HTTP API: the blueprints, a ``/healthz`` and the API's OpenAPI document (``openapi(cfg)``, at
    ``/v1/openapi.json``) without login, every other request logged in (HTTP Basic) before its view runs, and
    errors answered as JSON with a code."""
    app = Flask(name)
    app.config["MAX_CONTENT_LENGTH"] = None  # uploads stream; JSON bodies are bounded by json_body()
    app.config["REQUEST_SECONDS"] = request_seconds
    app.extensions["mysimbdp"] = backend
    app.json.sort_keys = False  # answers keep the order they were built in (columns in the table's order)
    app.json.compact = True
    install_error_handlers(app, log)

    # the metrics are the operator's, on every API (the batch API takes no other operator login)
    cfg = backend.directory.cfg
    scraper = auth.Authenticator(
        lambda name: None,
        max_failures=cfg.batch.auth_max_failures,
        lockout=cfg.batch.auth_lockout,
        operator_password=auth.operator_api_password(cfg.paths.secrets),
    )

    @app.before_request
    def authenticate():
        g.started = time.perf_counter()
        extend_deadline(request_seconds)
        if request.endpoint in (None, "healthz", "prometheus", "openapi_document"):
            return None
        backend.directory.login()
        return None

    @app.after_request
    def measure(resp):
        try:  # never at the cost of the answer (and of the other hooks' clean-up that rides on it)
            route = request.url_rule.rule if request.url_rule is not None else "unmatched"  # never the client's path
            principal = g.get("principal")
            tenant = principal.name if principal is not None and not principal.is_operator else "-"
            seconds = time.perf_counter() - g.get("started", time.perf_counter())
            metrics.observe_request(name, route, request.method, resp.status_code, tenant, seconds)
        except Exception:  # noqa: BLE001
            log.exception("recording the metrics of a request failed")
        return resp

    @app.after_request
    def count_until_sent(resp):
        # a request counts against its tenant until its answer is sent, streamed downloads included
        name = g.pop("counted", None)
        if name is not None and resp.is_streamed:
            resp.call_on_close(lambda: backend.directory.logout(name))
        elif name is not None:
            backend.directory.logout(name)
        return resp

    @app.teardown_request
    def done(exc):
        name = g.pop("counted", None)  # no answer was made (an error on the way): it counts no more
        if name is not None:
            backend.directory.logout(name)

    @app.get("/healthz")
    def healthz():
        return jsonify({"ok": True})

    @app.get("/metrics")
    def prometheus():  # the operator's login only (a Prometheus server scrapes with basic_auth)
        creds = request.authorization
        if creds is None or creds.username != auth.OPERATOR or creds.password is None:
            # no password hash to check for any other name: refused at once
            raise AuthenticationFailed("the metrics are the operator's", hint="scrape with the operator's login")
        scraper.authenticate(creds.username, creds.password, request.remote_addr or "?")
        body, content_type = metrics.exposition(cfg.paths.run, name)
        return Response(body, content_type=content_type)

    if openapi is not None:
        document = openapi(cfg)  # built once: it depends on the configuration only

        @app.get("/v1/openapi.json")
        def openapi_document():
            return jsonify(document)

    for bp in blueprints:
        app.register_blueprint(bp)
    return app


class Directory:
    """The platform keyspace as an API needs it, created lazily (the API may start before Cassandra answers),
    with tenants cached for a few seconds (their password hashes are not: see auth.py)."""

    def __init__(
        self,
        cfg: config.Config,
        *,
        operator: bool = False,
        threads: int = 16,
        tenant_requests: int | None = None,
        hash_seconds: float = 0.0,
        failures_file: Path | None = None,
    ) -> None:
        """``failures_file``: where the failed logins are counted when the API has several worker processes
        (each worker's Directory opens it), so that the lock-out is the API's, not each worker's."""
        self.cfg = cfg
        # a password hash may be reused for this long (0: read on every login, a change counts at once)
        self.hash_seconds = hash_seconds
        self._hashes: dict[str, tuple[str | None, float]] = {}
        # one tenant may hold at most half the API's threads, whatever the configuration says
        wanted = cfg.batch.tenant_requests if tenant_requests is None else tenant_requests
        self.tenant_requests = max(1, min(wanted, threads // 2))
        self.sessions = db.SessionHolder(cfg)
        self._lock = threading.Lock()
        self._registry: Registry | None = None
        self._tenants = TenantCache(lambda: self.registry)
        self._in_progress: Counter[str] = Counter()
        self.auth = auth.Authenticator(
            self._password_hash,
            max_failures=cfg.batch.auth_max_failures,
            lockout=cfg.batch.auth_lockout,
            operator_password=auth.operator_api_password(cfg.paths.secrets) if operator else None,
            failures=None
            if failures_file is None
            else auth.SharedLoginFailures(failures_file, cfg.batch.auth_lockout),
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
        now = time.monotonic()
        if self.hash_seconds > 0:
            hit = self._hashes.get(name)
            if hit is not None and hit[1] > now:
                return hit[0]
        try:
            stored = self.registry.password_hash(name)
        except InvalidName:  # not a tenant's name: an unknown user like any other
            return None
        if self.hash_seconds > 0 and stored is not None:
            if len(self._hashes) >= 10_000:  # bounded: made-up names are never kept (stored is None for them)
                self._hashes.clear()
            self._hashes[name] = (stored, now + self.hash_seconds)
        return stored

    def login(self) -> auth.Principal:
        """Authenticate this request (HTTP Basic); sets g.principal, and g.tenant for a tenant. A tenant with
        too many requests in progress is refused (429) rather than holding more of the API's threads."""
        a = request.authorization
        principal = self.auth.authenticate(
            a.username if a else None, a.password if a else None, request.remote_addr or "?"
        )
        g.principal = principal
        g.tenant = None if principal.is_operator else self.tenant(principal.name)
        if not principal.is_operator and g.tenant is None:
            raise NotFound("no such tenant")
        if not principal.is_operator:
            self.count_request(principal.name)
        return principal

    def count_request(self, name: str) -> None:
        """Count this request against tenant ``name`` until :meth:`logout` (429 past ``tenant_requests``)."""
        with self._lock:
            if self._in_progress[name] >= self.tenant_requests:
                raise TooManyRequests(
                    f"{self.tenant_requests} requests of this tenant are in progress already",
                    retry_after=1,
                    hint="wait for one to finish",
                )
            self._in_progress[name] += 1
            g.counted = name

    def logout(self, name: str) -> None:
        """The end of a request of tenant ``name``: it no longer counts against it."""
        with self._lock:
            self._in_progress[name] -= 1
            if self._in_progress[name] <= 0:
                del self._in_progress[name]

    def acting_for(self, name: str) -> Tenant:
        """The tenant a request may act for: itself, or any tenant for the operator."""
        p: auth.Principal = g.principal
        if not p.is_operator and name != p.name:
            raise NotFound(f"no tenant {name!r}")  # not 403: do not tell tenants who else exists
        t = self.tenant(name)
        if t is None:
            raise NotFound(f"no tenant {name!r}")
        return t


# --- serving ------------------------------------------------------------------------------------------------


_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\n"
_BUSY_BODY = (
    b'{"error": "too many requests from this address are in progress", "code": "too_many_connections", '
    b'"hint": "try again in a second"}'
)


def _guarded_worker(threads: int):
    """gunicorn's threaded worker, with a deadline on each request's head, a reaper for deadlines, and at
    most ``threads - 2`` requests of one client address served at once (two threads stay for the others)."""
    from concurrent.futures import ThreadPoolExecutor

    from gunicorn.workers.gthread import ThreadWorker

    per_address = max(2, threads - 2)
    lock = threading.Lock()
    serving: Counter[str] = Counter()
    # gunicorn closes a connection "gracefully" (up to 2 s draining what the client still sends) on the
    # thread that accepts all connections: a client that keeps sending would stall everyone. Closing
    # happens here instead, off that thread.
    closer = ThreadPoolExecutor(max_workers=8, thread_name_prefix="close")

    def close(sock, graceful: bool) -> None:  # a short linger: a client that keeps sending is not waited for
        from gunicorn import util

        if graceful:
            util.close_graceful(sock, timeout=0.25)
        else:
            util.close(sock)

    class GuardedWorker(ThreadWorker):
        _beat = 0.0

        def notify(self):
            # gunicorn touches its heartbeat file on every turn of its loop, that is for every request; the
            # arbiter looks at it with a timeout of a minute or more: once a second is plenty
            now = time.monotonic()
            if now - self._beat >= 1.0:
                self._beat = now
                super().notify()

        def init_process(self):
            from gunicorn import util

            # what gunicorn answers itself (a request line or headers past the limits, a request it cannot parse)
            # is an error like any other: JSON in the one shape, not gunicorn's HTML page
            util.write_error = _write_json_error
            threading.Thread(target=DEADLINES.run_reaper, name="deadline-reaper", daemon=True).start()
            super().init_process()

        def handle(self, conn):
            conn.close = lambda graceful=False, _c=conn: closer.submit(close, _c.sock, graceful)
            addr = conn.client[0] if isinstance(conn.client, tuple) else str(conn.client)
            with lock:
                if serving[addr] >= per_address:
                    refuse = True
                else:
                    refuse = False
                    serving[addr] += 1
            if refuse:
                try:
                    conn.sock.setblocking(True)
                    conn.sock.settimeout(2)
                    conn.sock.sendall(_BUSY + b"Content-Length: %d\r\n\r\n" % len(_BUSY_BODY) + _BUSY_BODY)
                except OSError:
                    pass
                return False
            DEADLINES.set(conn.sock, HEAD_SECONDS)
            try:
                # gunicorn writes an answer's head and body separately: without this the body waits for the
                # client's acknowledgement of the head (Nagle's algorithm against delayed ACKs, up to 40 ms)
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            try:
                keep = super().handle(conn)
                # A client's next request on this connection usually comes within a millisecond of the answer:
                # wait that long for it here rather than hand the connection back to the accepting thread and
                # have it handed out again (two thread switches a request). A few requests at most, then the
                # connection goes back as gunicorn would, so that one client cannot keep a thread.
                for _ in range(LINGER_REQUESTS):
                    if keep is not True or not self.alive or _queued(self.tpool):
                        break  # others wait for a thread: this connection goes back in line
                    DEADLINES.set(conn.sock, HEAD_SECONDS)
                    buffered = conn.parser.unreader.buf.getvalue()  # read ahead already (pipelined)
                    if not buffered and not _readable_soon(conn.sock, LINGER_SECONDS):
                        break
                    keep = super().handle(conn)
                return keep
            finally:
                DEADLINES.clear(conn.sock)
                with lock:
                    serving[addr] -= 1
                    if serving[addr] <= 0:
                        del serving[addr]

    return GuardedWorker


def _write_json_error(sock, status: int, reason: str, message: str) -> None:
    """gunicorn's util.write_error (same arguments), answering in the APIs' one error shape."""
    from gunicorn import util

    body = json.dumps(
        {"error": bounded.printable(message or reason), "code": _HTTP_CODES.get(status, f"http_{status}")}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    util.write_nonblock(sock, head.encode("latin-1", "replace") + body)


def _readable_soon(sock: socket.socket, seconds: float) -> bool:
    """Whether ``sock`` has bytes to read within ``seconds`` (poll: any descriptor number, unlike select)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(seconds * 1000))
    except (OSError, ValueError):  # closed meanwhile: gunicorn's own path deals with it
        return False


def _queued(pool) -> bool:
    """Whether requests wait in gunicorn's thread pool for a free thread."""
    queue = getattr(pool, "_work_queue", None)
    return queue is not None and queue.qsize() > 0


def _access_logger():
    from gunicorn.glogging import Logger

    class AccessLogger(Logger):
        """gunicorn's logger, with every text field of the access log made printable and cut to 300
        characters: the path is the client's, and its %0a, %1b or %00 would forge a line, colour a
        terminal or make the log binary. A line is written straight to the access log's streams: through
        the logging module (a record, the caller's frame looked up, a formatter) it cost a point read a
        tenth of the API's CPU."""

        def access(self, resp, req, environ, request_time):
            if not self.access_log_enabled:
                return
            line = ACCESS_FORMAT % self.atoms(resp, req, environ, request_time)
            for handler in self.access_log.handlers:
                stream = getattr(handler, "stream", None)
                if stream is None:  # not a stream (a syslog handler, say): the logging module's way
                    handler.handle(logging.makeLogRecord({"msg": line, "name": "gunicorn.access"}))
                    continue
                with handler.lock:
                    try:
                        stream.write(line + "\n")
                        stream.flush()
                    except (OSError, ValueError):
                        pass  # a full disk or a closed log costs the line, never the answer

        def atoms(self, resp, req, environ, request_time):
            # only the atoms of ACCESS_FORMAT: gunicorn's own builds one per header and environ entry
            status = resp.status
            if isinstance(status, str):
                status = status.split(None, 1)[0]
            return {
                "h": bounded.printable(environ.get("REMOTE_ADDR") or "-"),
                "t": self.now(),
                "m": bounded.printable(environ.get("REQUEST_METHOD") or "-"),
                "U": bounded.printable(environ.get("PATH_INFO") or ""),
                "s": status,
                "B": getattr(resp, "sent", None),
                "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
            }

    return AccessLogger


def serve(
    factory: Callable[[], Flask], *, bind: str, threads: int, name: str, timeout: int = 60, workers: int = 1
) -> None:
    """Serve a Flask app with gunicorn: ``workers`` processes of ``threads`` threads (request bodies stream,
    no buffering). Each worker calls ``factory`` (nothing is shared by fork): an app with several workers
    keeps what must be the API's in files (login failures, the object quota's lock, metrics)."""
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", bind)
            self.cfg.set("workers", workers)
            self.cfg.set("worker_class", _guarded_worker(threads))
            self.cfg.set("threads", threads)
            self.cfg.set("timeout", timeout)
            # an idle kept-alive connection is closed after 5 s (gunicorn's 2 s raced clients that wait out a
            # Retry-After of 2 s and then reuse the connection: the request met a reset)
            self.cfg.set("keepalive", 5)
            self.cfg.set("graceful_timeout", 30)
            self.cfg.set("accesslog", "-")
            self.cfg.set("proc_name", name)
            self.cfg.set("control_socket_disable", True)
            self.cfg.set("access_log_format", ACCESS_FORMAT)
            self.cfg.set("logger_class", _access_logger())
            self.cfg.set("limit_request_fields", 50)
            self.cfg.set("limit_request_field_size", 8190)

        def load(self):
            return factory()

    Server().run()
