"""The OpenAPI 3 description of the batch (upload) API, served at ``/v1/openapi.json`` (the parts every API
shares are in mysimbdp/openapi.py). tests/test_openapi.py keeps it equal to the app's real routes."""

from __future__ import annotations

from mysimbdp import openapi as oa
from mysimbdp.config import Config
from mysimbdp.jobs import JobStatus

JOB = {
    "type": "object",
    "required": ["job_id", "status"],
    "properties": {
        "tenant": {"type": "string"},
        "job_id": {"type": "string", "format": "uuid"},
        "file_name": {"type": "string"},
        "stored_name": {"type": "string"},
        "size": {"type": "integer"},
        "sha256": {"type": "string"},
        "client_address": {"type": "string"},
        "created_at": {"type": ["string", "null"], "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "finished_at": {"type": ["string", "null"], "format": "date-time"},
        "status": {"type": "string", "enum": [s.value for s in JobStatus]},
        "attempts": {"type": "integer"},
        "rows_ingested": {"type": ["integer", "null"]},
        "rows_rejected": {"type": ["integer", "null"]},
        "seconds": {"type": ["number", "null"]},
        "app_name": {"type": ["string", "null"]},
        "app_version": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]},
        "has_log": {"type": "boolean"},
        "has_rejects": {"type": "boolean"},
    },
}
UPLOAD = {
    "type": "object",
    "required": ["upload_id", "offset"],
    "properties": {
        "upload_id": {"type": "string"},
        "name": {"type": "string"},
        "size": {"type": "integer"},
        "offset": {"type": "integer", "description": "bytes received so far"},
        "sha256": {"type": "string"},
        "status": {"type": "string", "enum": ["open", "resumed", "partial"]},
    },
}
DUPLICATE = {
    "type": "object",
    "required": ["status", "job_id"],
    "properties": {
        "status": {"const": "duplicate"},
        "job_id": {"type": "string", "description": "the job that received this content before"},
        "message": {"type": "string"},
        "file_name": {"type": "string"},
    },
}
STAGED = {
    "type": "object",
    "required": ["status", "job"],
    "properties": {"status": {"const": "staged"}, "job": oa.ref("Job")},
}
SCHEMAS = {"Job": JOB, "Upload": UPLOAD, "Duplicate": DUPLICATE, "Staged": STAGED}
OFFSET = {"Upload-Offset": oa.header("bytes received so far", "integer")}
# a new file is refused while the batch manager is down (503 batch_manager_down), like the database
FILE_CODES = (409, 413, 422)


def _paths() -> dict:
    new_upload = {
        "type": "object",
        "required": ["name", "size", "sha256"],
        "properties": {
            "name": {"type": "string", "description": "the file's name (its extension is its format)"},
            "size": {"type": "integer", "minimum": 1, "description": "bytes"},
            "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
        },
    }
    return {
        "/v1/constraints": {
            "get": oa.operation("the tenant's constraints (constraints/schema.json)", {200: oa.json_response(oa.ANY)})
        },
        "/v1/uploads": {
            "post": oa.operation(
                "open an upload session, or resume the one of the same name, size and sha256",
                {
                    201: oa.json_response(oa.ref("Upload"), "opened", {**OFFSET, "Location": oa.header("the upload")}),
                    200: oa.json_response(
                        {"oneOf": [oa.ref("Upload"), oa.ref("Duplicate")]},
                        "resumed (at Upload-Offset), or this content was received before (duplicate)",
                        OFFSET,
                    ),
                },
                body=oa.json_body(new_upload),
                codes=(413, 422),
            )
        },
        "/v1/uploads/{upload_id}": {
            "head": oa.operation(
                "how much of the upload arrived",
                {
                    200: {
                        "description": "Upload-Offset and Upload-Length",
                        "headers": {**OFFSET, "Upload-Length": oa.header("the file's size", "integer")},
                    }
                },
            ),
            "get": oa.operation("the upload session", {200: oa.json_response(oa.ref("Upload"), headers=OFFSET)}),
            "patch": oa.operation(
                "append the body at Upload-Offset; the last byte completes the upload and stages the file",
                {
                    200: oa.json_response(
                        {"oneOf": [oa.ref("Upload"), oa.ref("Duplicate")]}, "appended (partial), or a duplicate", OFFSET
                    ),
                    201: oa.json_response(oa.ref("Staged"), "complete, verified and staged: the job", OFFSET),
                },
                params=[
                    oa.header_param(
                        "Upload-Offset",
                        "where the body goes: the offset the server has",
                        {"type": "integer", "minimum": 0},
                        required=True,
                    )
                ],
                body=oa.binary_body(required=False),  # an empty body changes nothing: the answer says the offset
                codes=FILE_CODES,
            ),
            "delete": oa.operation("abandon the upload", {204: {"description": "abandoned"}}, codes=(409,)),
        },
        "/v1/files/{name}": {
            "put": oa.operation(
                "a whole file in one request (Content-Length and Content-SHA256 required)",
                {
                    201: oa.json_response(oa.ref("Staged"), "received, verified and staged: the job"),
                    200: oa.json_response(oa.ref("Duplicate"), "this content was received before"),
                },
                params=[oa.header_param("Content-SHA256", "the file's SHA-256, hex", required=True)],
                body=oa.binary_body(),
                codes=(*FILE_CODES, 411, 428),
            )
        },
        "/v1/jobs": {
            "get": oa.operation(
                "the tenant's receipts, newest first",
                {
                    200: oa.json_response(
                        {
                            "type": "object",
                            "required": ["jobs"],
                            "properties": {"jobs": {"type": "array", "items": oa.ref("Job")}},
                        }
                    )
                },
                params=[
                    oa.query(
                        "status", "only jobs in this status", {"type": "string", "enum": [s.value for s in JobStatus]}
                    ),
                    oa.query(
                        "limit",
                        "at most this many (default 100; taken as 1 below 1, as 1000 above 1000)",
                        {"type": "integer"},
                    ),
                ],
            )
        },
        "/v1/jobs/{job_id}": {"get": oa.operation("one receipt", {200: oa.json_response(oa.ref("Job"))})},
        "/v1/jobs/{job_id}/rejects": {
            "get": oa.operation("the rows the app rejected", {200: oa.text_response("text/csv", "CSV")})
        },
        "/v1/jobs/{job_id}/log": {
            "get": oa.operation("what the app wrote while it ran", {200: oa.text_response("text/plain", "the log")})
        },
    }


PARAMS = {
    "upload_id": oa.path("upload_id", "from POST /v1/uploads"),
    "name": oa.path("name", "the file's name (its extension is its format)"),
    "job_id": oa.path("job_id", "a job's id (a UUID)"),
}


def document(cfg: Config) -> dict:
    return oa.document(
        title="mysimbdp batch API",
        description="Uploads of a tenant's files (resumable, verified) and their receipts. fetchdata and the "
        "Python SDK speak it; docs/architecture.md follows one file from upload to row.",
        server=cfg.batch_url(),
        paths=oa.with_path_params(_paths(), PARAMS),
        schemas=SCHEMAS,
        errors={
            404: "no such upload, job, file or tenant",
            409: "the upload is at another offset (offset_mismatch) or being written (upload_busy)",
            413: "over the tenant's maximum file size or the declared size (file_too_large), or a JSON body too "
            "large (body_too_large)",
            422: "breaks a constraint: format, content, checksum (constraint_violation)",
            428: "no Content-SHA256 (checksum_required)",
            429: "too many failed logins, requests in progress, or files (too_many_files)",
            503: "the batch manager (batch_manager_down) or the database is down: try again after Retry-After",
        },
    )
