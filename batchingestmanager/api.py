"""The upload API (HTTP, JSON), served by gunicorn. Every request is authenticated as a tenant (HTTP Basic).

    GET    /healthz                         liveness (no auth)
    GET    /v1/constraints                  the tenant's constraints
    POST   /v1/uploads                      open or resume an upload: {"name", "size", "sha256"}
    HEAD   /v1/uploads/<id>                 how much arrived (Upload-Offset header)
    GET    /v1/uploads/<id>                 the same, as JSON
    PATCH  /v1/uploads/<id>                 append the body at Upload-Offset; completes the upload at the end
    DELETE /v1/uploads/<id>                 abandon an upload
    PUT    /v1/files/<name>                 a whole file in one request (Content-Length; optional Content-SHA256)
    GET    /v1/jobs[?status=S&limit=N]      the tenant's receipts, newest first
    GET    /v1/jobs/<job_id>                one receipt
    GET    /v1/jobs/<job_id>/rejects        the rejected rows (CSV)
    GET    /v1/jobs/<job_id>/log            the app's output for this job
    GET    /v1/openapi.json                 the OpenAPI 3.1 document of this API (no auth)

Errors are JSON ``{"error": "...", "code": "...", "hint": "..."}`` with a 4xx status for anything the
client can fix, 503 when a service the platform needs is down; never a traceback.
"""

from __future__ import annotations

import logging
import sys
import threading

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.exceptions import ClientDisconnected

from mysimbdp import config, names, web
from mysimbdp import constraints as constraints_mod
from mysimbdp.errors import ServiceError, TenantError
from mysimbdp.jobs import JobStatus, JobStore, job_file

from . import openapi
from .manager import heartbeat_age
from .uploads import Duplicate, Interrupted, Uploads

log = logging.getLogger("batchingestmanager.api")
bp = Blueprint("batch", __name__)


MANAGER_SILENCE = 15  # seconds without a heartbeat of the batch manager before uploads are refused
# An upload body must bring BODY_PIECE bytes every BODY_IDLE_SECONDS (17 KiB/s at least). Smaller pieces
# would let slower clients through, but each read costs: 64 KiB pieces halved the upload rate (measured).
BODY_IDLE_SECONDS = 60
BODY_PIECE = 1 << 20


class _Body:
    """The request body as a plain stream, read BODY_PIECE at a time: each piece that arrives gives the
    request BODY_IDLE_SECONDS more (so a client must send a piece that often). A client that goes away, or
    a body gunicorn cannot parse (bad chunks), is an OSError here."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def read(self, n: int) -> bytes:
        try:
            data = self.stream.read(min(n, BODY_PIECE))
        except ClientDisconnected as exc:
            raise OSError("client disconnected") from exc
        except Exception as exc:  # noqa: BLE001 - gunicorn's parse errors of a chunked body
            raise OSError(f"the body cannot be read: {type(exc).__name__}") from exc
        web.extend_deadline(BODY_IDLE_SECONDS)
        return data


class Backend:
    """The tenant directory, plus job records and uploads on the same session (made on first use)."""

    def __init__(self, cfg: config.Config) -> None:
        self.cfg = cfg
        self.directory = web.Directory(cfg, threads=cfg.batch.threads)
        self._lock = threading.Lock()
        self._parts: tuple[JobStore, Uploads] | None = None

    def parts(self) -> tuple[JobStore, Uploads]:
        with self._lock:
            if self._parts is None:
                jobs = JobStore(self.cfg, self.directory.session)
                self._parts = (jobs, Uploads(self.cfg, jobs))
            return self._parts

    @property
    def jobs(self) -> JobStore:
        return self.parts()[0]

    @property
    def uploads(self) -> Uploads:
        return self.parts()[1]


def backend() -> Backend:
    return web.get_backend()


def create_app(cfg: config.Config | None = None) -> Flask:
    return web.create_api("mysimbdp-batch", Backend(cfg or config.load()), [bp], log, openapi=openapi.document)


def _staged(job) -> Response:
    resp = jsonify({"status": "staged", "job": job.to_dict(public=True)})
    resp.status_code = 201
    return resp


def _duplicate(dup: Duplicate, **extra) -> Response:
    return jsonify({"status": "duplicate", "job_id": str(dup.job_id), "message": str(dup), **extra})


@bp.get("/v1/constraints")
def get_constraints():
    return jsonify(g.tenant.constraints.raw)


def _manager_up() -> None:
    """Refuse new files while the batch manager is not running (its loop has not gone round lately): they
    would wait in staging with nobody to take them. The supervisor restarts it within seconds."""
    age = heartbeat_age(backend().cfg)
    if age is None or age > MANAGER_SILENCE:
        raise ServiceError(
            "the batch manager is not running; no file is taken until it is back",
            hint="it is restarted by itself within seconds: try again",
            code="batch_manager_down",
            retry_after=5,
        )


@bp.post("/v1/uploads")
def open_upload():
    _manager_up()
    data = web.json_body()
    if not isinstance(data, dict):
        raise TenantError("send a JSON object with name, size and sha256", code="bad_json")
    try:
        s, offset = backend().uploads.open(
            g.tenant, data.get("name"), data.get("size"), data.get("sha256"), request.remote_addr or ""
        )
    except Duplicate as dup:
        return _duplicate(dup, file_name=dup.file_name)
    resp = jsonify({**s.public(offset), "status": "resumed" if offset else "open"})
    resp.status_code = 200 if offset else 201
    resp.headers["Upload-Offset"] = str(offset)
    resp.headers["Location"] = f"/v1/uploads/{s.id}"
    return resp


@bp.route("/v1/uploads/<upload_id>", methods=["HEAD", "GET"])
def upload_status(upload_id: str):
    s, offset = backend().uploads.get(g.tenant.name, upload_id)
    resp = jsonify(s.public(offset)) if request.method == "GET" else Response(status=200)
    resp.headers["Upload-Offset"] = str(offset)
    resp.headers["Upload-Length"] = str(s.size)
    return resp


@bp.patch("/v1/uploads/<upload_id>")
def upload_append(upload_id: str):
    try:
        offset = int(request.headers.get("Upload-Offset", ""))
    except ValueError:
        raise TenantError("the Upload-Offset header is missing or not a number", code="bad_offset") from None
    try:
        new_offset, job = backend().uploads.append(
            g.tenant, upload_id, offset, _Body(request.stream), request.content_length
        )
    except Duplicate as dup:
        return _duplicate(dup)
    except Interrupted as exc:
        return web.json_error(
            400,
            "body_ended_early",
            f"the body ended early; {exc.offset} bytes are kept",
            "resume from Upload-Offset",
            offset=exc.offset,
        )
    if job is not None:
        resp = _staged(job)
    else:
        resp = jsonify({"upload_id": upload_id, "offset": new_offset, "status": "partial"})
    resp.headers["Upload-Offset"] = str(new_offset)
    return resp


@bp.delete("/v1/uploads/<upload_id>")
def upload_abort(upload_id: str):
    backend().uploads.abort(g.tenant, upload_id)
    return Response(status=204)


@bp.put("/v1/files/<path:name>")
def put_file(name: str):
    length = request.content_length
    if length is None:
        return web.json_error(411, "length_required", "send the file with a Content-Length", "or use POST /v1/uploads")
    _manager_up()
    safe = names.safe_file_name(name)
    constraints_mod.check_file_name(g.tenant.constraints, safe)
    constraints_mod.check_size(g.tenant.constraints, safe, length)
    sha = (request.headers.get("Content-SHA256") or "").lower()
    if not sha:  # the checksum is what proves the file arrived whole
        return web.json_error(
            428,
            "checksum_required",
            "send the file's SHA-256 in a Content-SHA256 header",
            "e.g. curl -H \"Content-SHA256: $(sha256sum FILE | cut -d' ' -f1)\"",
        )
    uploads = backend().uploads
    try:
        s, offset = uploads.open(g.tenant, safe, length, sha, request.remote_addr or "")
        if offset:
            uploads.abort(g.tenant, s.id)
            s, offset = uploads.open(g.tenant, safe, length, sha, request.remote_addr or "")
        _, job = uploads.append(g.tenant, s.id, 0, _Body(request.stream), length)
    except Duplicate as dup:
        return _duplicate(dup)
    except Interrupted as exc:
        return web.json_error(400, "body_ended_early", f"the body ended early ({exc.offset} of {length} bytes)")
    return _staged(job)


@bp.get("/v1/jobs")
def list_jobs():
    status = request.args.get("status")
    # an empty status= is refused like any unknown status (and like an empty limit=), not taken as "any"
    wanted = JobStatus.parse(status) if status is not None else None
    try:
        limit = max(1, min(1000, int(request.args.get("limit", "100"))))
    except ValueError:
        raise TenantError("limit must be a number") from None
    jobs = backend().jobs.list(g.tenant.name, status=wanted, limit=limit, since=g.tenant.created_at)
    return jsonify({"jobs": [j.to_dict(public=True) for j in jobs]})


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str):
    return jsonify(backend().jobs.get(g.tenant.name, job_id).to_dict(public=True))


@bp.get("/v1/jobs/<job_id>/rejects")
def get_rejects(job_id: str):
    job = backend().jobs.get(g.tenant.name, job_id)
    return web.send_file_idle(
        job_file(backend().cfg, job, "rejects"), mimetype="text/csv", download_name=f"{job.job_id}-rejects.csv"
    )


@bp.get("/v1/jobs/<job_id>/log")
def get_log(job_id: str):
    job = backend().jobs.get(g.tenant.name, job_id)
    return web.send_file_idle(
        job_file(backend().cfg, job, "log"), mimetype="text/plain", download_name=f"{job.job_id}.log"
    )


# --- serving --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Serve the upload API with gunicorn (a slow client may take long over one large upload)."""
    cfg = config.load()
    web.setup_logging(cfg)
    web.serve(
        lambda: create_app(cfg),
        bind=f"{cfg.batch.host}:{cfg.batch.port}",
        threads=cfg.batch.threads,
        name="mysimbdp-batch-api",
        timeout=3600,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
