"""The dashboard's routes: the login, the page, and the JSON calls the page polls.

    GET  /login, POST /login, POST /logout       the login form, a login (a session cookie), the end of it
    GET  /                                       the page (static/dashboard.js draws it from the calls below)
    GET  /api/session                            who is logged in, the tenants it may look at
    GET  /api/tenants                            tenants and their state (a tenant: itself)
    GET  /api/jobs[?status&file&since&until&limit&before]   receipts, newest first, filtered, a page at a time
    GET  /api/jobs/<id>                          one receipt (with its quarantine, for a failed job)
    GET  /api/jobs/<id>/rejects, .../log         the first rejected rows / the last lines of the log (bounded)
    GET  /api/jobs/<id>/download/<rejects|log>   the whole file
    POST /api/jobs/<id>/replay                   stage a failed job's file again (batchingestmanager/uploads.py)
    GET  /api/quarantine                         failed jobs, their reasons, whether their file can be replayed
    GET  /api/stream, /api/stream/series[?minutes]   instances and health; the plots' series and decisions
    GET  /api/health                             the platform's parts, Cassandra nodes, disk per keyspace

Every call acts for the logged-in tenant, or for the operator on the tenant named by ``?tenant=`` (a tenant
naming another gets 404, as for a tenant that does not exist; a job of another tenant is a job that does not
exist). Every list has a page size and every file view a size bound.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
import uuid
from datetime import datetime, timezone

from cassandra.util import datetime_from_uuid1, max_uuid_from_time
from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, url_for

from batchingestmanager.uploads import quarantined
from mysimbdp import bounded, web
from mysimbdp.errors import AuthenticationFailed, NotFound, SessionExpired, TenantError, TooManyAttempts
from mysimbdp.jobs import Job, JobStatus, job_file
from mysimbdp.tenants import Tenant
from streamingestmanager import service

from . import health, series
from .sessions import COOKIE, ENDED, same_origin, seal, unseal

logger = logging.getLogger(__name__)
bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/assets")

MAX_PAGE = 200  # receipts in one answer
MAX_SCAN = 5000  # receipts read to answer one filtered page (then the answer says there may be more)
MAX_QUARANTINE = 100
MAX_REJECT_ROWS = 1000
MAX_FIELD = 500  # characters of one field of a rejected row shown
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def backend():
    return web.get_backend()


# --- pages ---------------------------------------------------------------------------------------------------


@bp.get("/login")
def login_page():
    try:  # already logged in: the page (which sends it back here, with the reason, if the session is no good)
        unseal(backend().directory.key, request.cookies.get(COOKIE))
        return redirect(url_for("dashboard.index"), 303)
    except SessionExpired:
        pass
    return _login_form(ENDED.get(request.args.get("m", ""), ""))


def _login_form(message: str, status: int = 200, user: str = "") -> Response:
    resp = Response(render_template("login.html", message=message, user=user[:64]), status=status)
    return resp


@bp.post("/login")
def login():
    if not same_origin():
        return _login_form("This login comes from another site's page.", 403)
    user, password = request.form.get("user", ""), request.form.get("password", "")
    gate = backend().directory
    try:
        s = gate.open_session(user, password)
    except TooManyAttempts as exc:
        return _login_form(exc.one_line(), 429, user)
    except (AuthenticationFailed, SessionExpired):
        return _login_form("Wrong user name or password.", 401, user)
    resp = redirect(url_for("dashboard.index"), 303)
    d = gate.cfg.dashboard
    resp.set_cookie(
        COOKIE,
        seal(gate.key, s),
        max_age=d.session_minutes * 60,
        path="/",
        secure=d.cookie_secure,
        httponly=True,
        samesite="Strict",
    )
    return resp


@bp.post("/logout")
def logout():
    backend().directory.logged_out.add(g.session)  # a copy of the cookie is no good either from now on
    resp = redirect(url_for("dashboard.login_page", m="bye"), 303)
    resp.delete_cookie(COOKIE, path="/", secure=backend().cfg.dashboard.cookie_secure, samesite="Strict")
    return resp


@bp.get("/")
def index():
    d = backend().cfg.dashboard
    return render_template(
        "index.html",
        user=g.session.user,
        operator=g.session.operator,
        csrf=g.session.csrf,
        refresh=d.refresh_seconds,
    )


def on_session_expired(exc: SessionExpired):
    """A request without a good session: JSON calls get 401, pages go to the login with the reason."""
    reason = getattr(exc, "reason", "invalid")
    if request.path.startswith("/api/"):
        resp = web.json_error(401, exc.code, exc.message, exc.hint, reason=reason)
    else:
        resp = redirect(url_for("dashboard.login_page", m=None if reason == "none" else reason), 303)
    if request.cookies.get(COOKIE) is not None:
        resp.delete_cookie(COOKIE, path="/", secure=backend().cfg.dashboard.cookie_secure, samesite="Strict")
    return resp


def secure_headers(resp: Response) -> Response:
    """No other site may frame the page or run script in it; nothing the platform answers is cached."""
    h = resp.headers
    h["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "same-origin"  # no-referrer would make Chrome send "Origin: null" with the login
    if request.endpoint != "dashboard.static":
        h["Cache-Control"] = "no-store"
    return resp


# --- whose data ---------------------------------------------------------------------------------------------


def target() -> Tenant:
    """The tenant a call is about: the logged-in tenant itself, or the one the operator names."""
    name = request.args.get("tenant") or None
    if name is not None and len(name) > 64:
        raise NotFound("no such tenant")
    if g.principal.is_operator:
        if name is None:
            raise TenantError("name the tenant: ?tenant=NAME", code="tenant_required")
        return backend().directory.acting_for(name)
    if name not in (None, g.principal.name):
        raise NotFound(f"no tenant {name!r}")  # not 403: a tenant does not learn who else exists
    return g.tenant


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        return max(low, min(high, int(raw)))
    except ValueError:
        raise TenantError(f"{name} must be a whole number") from None


def _time(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        t = datetime.fromisoformat(raw[:40])
        t = (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except (ValueError, OverflowError):  # OverflowError: 9999-12-31T23:59-23:59 is past the last datetime
        raise TenantError(f"{name} must be a time like 2024-05-01T12:00 (UTC)") from None
    if not 1970 <= t.year <= 9000:  # a job's time comes from its time-based id: nothing lies outside these
        raise TenantError(f"{name} must be a time between the years 1970 and 9000")
    return t


def _job_view(job: Job) -> dict:
    d = job.to_dict(public=True)
    if job.status == JobStatus.FAILED:
        q = quarantined(backend().cfg, job)
        d["in_quarantine"] = q.file is not None
        d["replayed_as"] = q.replayed_as
    return d


# --- tenants ------------------------------------------------------------------------------------------------


@bp.get("/api/session")
def session_info():
    s = g.session
    if s.operator:
        tenants = [{"name": t.name, "state": t.state} for t in backend().directory.registry.list()]
    else:
        tenants = [{"name": g.tenant.name, "state": g.tenant.state}]
    return jsonify(
        {
            "user": s.user,
            "operator": s.operator,
            "expires_at": datetime.fromtimestamp(s.expires, timezone.utc).isoformat(),
            "refresh_seconds": backend().cfg.dashboard.refresh_seconds,
            "tenants": tenants,
        }
    )


@bp.get("/api/tenants")
def tenants():
    b = backend()
    listed = b.directory.registry.list() if g.principal.is_operator else [g.tenant]
    streams = {st.tenant: st for st in b.streams.all()} if g.principal.is_operator else {}
    out = []
    for t in listed:
        d = t.summary()
        d.pop("uid", None)
        st = streams.get(t.name) if g.principal.is_operator else b.streams.get(t.name)
        d["stream"] = {"running": bool(st and st.running), "desired": (st.desired if st and st.running else 0)}
        out.append(d)
    return jsonify({"tenants": out})


# --- receipts -----------------------------------------------------------------------------------------------


@bp.get("/api/jobs")
def jobs():
    t = target()
    status = request.args.get("status") or None
    wanted = JobStatus.parse(status) if status else None
    needle = (request.args.get("file") or "").strip().lower()[:200]
    since, until = _time("since"), _time("until")
    limit = _int("limit", 50, 1, MAX_PAGE)
    before = _uuid(request.args.get("before")) if request.args.get("before") else None
    if until is not None and before is None:
        before = max_uuid_from_time(max(until, datetime(1970, 1, 2, tzinfo=timezone.utc)))
    start = max((x for x in (since, t.created_at) if x is not None), default=None, key=_aware)
    found: list[Job] = []
    scanned, more = 0, False
    for job in backend().jobs.scan(t.name, since=start, before=before):
        scanned += 1
        if scanned > MAX_SCAN:  # there may be more: the answer says so
            more = True
            break
        when = datetime_from_uuid1(job.job_id).replace(tzinfo=timezone.utc)
        if since is not None and when < since:
            break
        if until is not None and when > until:
            continue
        if wanted is not None and job.status != wanted:
            continue
        if needle and needle not in job.file_name.lower():
            continue
        if len(found) >= limit:  # one more matches: the next page has it
            more = True
            break
        found.append(job)
    last = str(found[-1].job_id) if found else None
    return jsonify(
        {
            "jobs": [_job_view(j) for j in found],
            "more": more,
            "next": last if more and found else None,
            "scanned": min(scanned, MAX_SCAN),
        }
    )


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _uuid(text: str) -> uuid.UUID:
    try:
        u = uuid.UUID(text[:64])
        if u.version == 1:
            return u
    except ValueError:
        pass
    raise TenantError("before must be a job id")


@bp.get("/api/jobs/<job_id>")
def job(job_id: str):
    return jsonify(_job_view(backend().jobs.get(target().name, job_id)))


@bp.get("/api/jobs/<job_id>/rejects")
def rejects(job_id: str):
    b = backend()
    j = b.jobs.get(target().name, job_id)
    path = job_file(b.cfg, j, "rejects")
    limit = b.cfg.dashboard.max_view_kb << 10
    with open(bounded.open_regular(path), "rb", closefd=True) as fh:
        size = fh.seek(0, 2)
        fh.seek(0)
        data = fh.read(limit)
    truncated = size > len(data)
    if truncated and b"\n" in data:
        data = data[: data.rfind(b"\n") + 1]  # whole lines only
    text = data.decode("utf-8", "replace")
    out: dict = {"size": size, "shown_bytes": len(data), "truncated": truncated, "download": _download(j, "rejects")}
    try:
        rows = []
        for row in csv.reader(io.StringIO(text.replace("\0", ""))):
            rows.append([_CONTROL.sub("", f)[:MAX_FIELD] for f in row[:64]])
            if len(rows) > MAX_REJECT_ROWS:
                out["truncated"] = True
                break
        out["header"], out["rows"] = (rows[0], rows[1:]) if rows else ([], [])
    except csv.Error:  # not CSV after all (it is the tenant app's file): shown as text
        out["text"] = _CONTROL.sub("", text)
    return jsonify(out)


@bp.get("/api/jobs/<job_id>/log")
def log(job_id: str):
    b = backend()
    j = b.jobs.get(target().name, job_id)
    path = job_file(b.cfg, j, "log")
    limit = b.cfg.dashboard.max_view_kb << 10
    size = path.stat().st_size
    data = bounded.tail(path, limit)
    if size > len(data) and b"\n" in data:
        data = data[data.find(b"\n") + 1 :]  # whole lines only
    text = _CONTROL.sub("", data.decode("utf-8", "replace"))
    return jsonify(
        {
            "size": size,
            "shown_bytes": len(data),
            "truncated": size > len(data),
            "text": text,
            "download": _download(j, "log"),
        }
    )


def _download(j: Job, kind: str) -> str:
    return url_for(
        "dashboard.download", job_id=str(j.job_id), kind=kind, tenant=j.tenant if g.principal.is_operator else None
    )


@bp.get("/api/jobs/<job_id>/download/<kind>")
def download(job_id: str, kind: str):
    b = backend()
    if kind not in ("rejects", "log"):
        raise NotFound("there is no such file for this job")
    j = b.jobs.get(target().name, job_id)
    name, mimetype = (f"{j.job_id}-rejects.csv", "text/csv") if kind == "rejects" else (f"{j.job_id}.log", "text/plain")
    return web.send_file_idle(job_file(b.cfg, j, kind), mimetype=mimetype, download_name=name)


# --- the quarantine and replays -----------------------------------------------------------------------------


@bp.get("/api/quarantine")
def quarantine():
    t = target()
    found, scanned = [], 0
    for j in backend().jobs.scan(t.name, since=t.created_at):
        scanned += 1
        if scanned > MAX_SCAN or len(found) >= MAX_QUARANTINE:
            break
        if j.status == JobStatus.FAILED:
            found.append(_job_view(j))
    return jsonify({"jobs": found, "more": scanned > MAX_SCAN or len(found) >= MAX_QUARANTINE})


@bp.post("/api/jobs/<job_id>/replay")
def replay(job_id: str):
    t = target()
    new = backend().uploads.replay(t, job_id)
    logger.info("job %s of %s replayed as job %s by %s", new.replay_of, t.name, new.job_id, g.principal.name)
    resp = jsonify({"job": _job_view(new), "message": f"job {new.replay_of} replayed as job {new.job_id}"})
    resp.status_code = 201
    return resp


# --- streams ------------------------------------------------------------------------------------------------


@bp.get("/api/stream")
def stream():
    b, t = backend(), target()
    return jsonify(service.status(b.cfg, b.streams, b.runtime, t))


@bp.get("/api/stream/series")
def stream_series():
    b, t = backend(), target()
    minutes = _int("minutes", 10, 1, 24 * 60)
    interval = float(t.constraints.stream["report_interval_seconds"])
    most = max(1, t.constraints.autoscale.max_instances)
    limit = min(series.MAX_REPORTS, int(minutes * 60 / max(interval, 0.1) * most) + 50)
    reports = b.streams.reports(t.name, limit=limit, days=2)
    decisions = b.streams.decisions(t.name, limit=500, days=2)
    out = series.build(reports, decisions, end=time.time(), minutes=minutes, step=series.step_for(minutes, interval))
    out["report_interval_seconds"] = interval
    out["reports_read"] = len(reports)
    return jsonify(out)


# --- health ---------------------------------------------------------------------------------------------------


@bp.get("/api/health")
def platform_health():
    full = backend().health.get()
    if g.principal.is_operator:
        return jsonify(full)
    return jsonify(health.tenant_view(full, g.tenant.name))
