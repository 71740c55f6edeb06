"""The OpenAPI 3 description of the stream API, served at ``/v1/openapi.json`` (the parts every API shares are
in mysimbdp/openapi.py). tests/test_openapi.py keeps it equal to the app's real routes.

Each route is there twice: ``/v1/...`` for a tenant's own stream, ``/v1/tenants/{tenant}/...`` for the
operator (a tenant may name only itself there)."""

from __future__ import annotations

from mysimbdp import openapi as oa
from mysimbdp.config import Config

TIME = {"type": ["string", "null"], "format": "date-time"}
REPORT = {
    "type": "object",
    "properties": {
        "tenant": {"type": "string"},
        "instance": {"type": "string"},
        "received_at": TIME,
        "window_start": TIME,
        "window_end": TIME,
        "messages": {"type": ["integer", "null"]},
        "bytes": {"type": ["integer", "null"]},
        "avg_ms": {"type": ["number", "null"]},
        "p95_ms": {"type": ["number", "null"]},
        "errors": {"type": ["integer", "null"]},
        "rejected": {"type": ["integer", "null"]},
        "pending": {"type": ["integer", "null"]},
        "instance_started": TIME,
    },
}
DECISION = {
    "type": "object",
    "properties": {
        "at": TIME,
        "action": {"type": "string"},
        "instances_before": {"type": ["integer", "null"]},
        "instances_after": {"type": ["integer", "null"]},
        "reason": {"type": ["string", "null"]},
    },
}
STATUS = {
    "type": "object",
    "required": ["tenant", "running", "desired", "instances"],
    "properties": {
        "tenant": {"type": "string"},
        "running": {"type": "boolean"},
        "desired": {"type": "integer"},
        "parked": {"type": "array", "items": {"type": "string"}},
        "stream_app": {"type": ["string", "null"]},
        "autoscale": oa.ANY,
        "report_interval_seconds": {"type": "number"},
        "instances": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "instance": {"type": "string"},
                    "state": {"type": "string"},
                    "health": {"type": "string"},
                    "started_at": {"type": ["string", "null"]},
                    "last_report": {"oneOf": [oa.ref("Report"), {"type": "null"}]},
                },
            },
        },
        "backlog": {
            "type": "object",
            "properties": {k: {"type": ["integer", "null"]} for k in ("written", "done", "waiting")},
        },
        "decisions": {"type": "array", "items": oa.ref("Decision")},
    },
}
SETTLED = {**STATUS, "properties": {**STATUS["properties"], "settled": {"type": "boolean"}}}
SCHEMAS = {"Status": STATUS, "Settled": SETTLED, "Report": REPORT, "Decision": DECISION}
LIMIT = oa.query("limit", "at most this many (default 50; taken as 1 below 1, as 500 above 500)", {"type": "integer"})


def _paths() -> dict:
    stopped = {
        200: oa.json_response(oa.ref("Settled"), "stopped: the stream's status"),
        202: oa.json_response(oa.ref("Settled"), "asked, not yet done (settled: false)"),
    }
    return {
        "/v1/stream": {
            "get": oa.operation(
                "the stream: state, instances with their health and latest report, backlog, recent decisions",
                {200: oa.json_response(oa.ref("Status"))},
            )
        },
        "/v1/instances": {
            "post": oa.operation(
                "start the stream, or add instances to it (within the tenant's autoscale maximum)",
                {
                    201: oa.json_response(oa.ref("Settled"), "started: the stream's status"),
                    202: oa.json_response(oa.ref("Settled"), "asked, not yet done (settled: false)"),
                },
                body=oa.json_body(
                    {
                        "type": "object",
                        "properties": {"count": {"type": "integer", "minimum": 1, "maximum": 32, "default": 1}},
                    },
                    required=False,
                ),
                codes=(409,),
            ),
            "delete": oa.operation("stop the stream (records wait in the tenant's inbox)", stopped, codes=(409,)),
        },
        "/v1/instances/{instance}": {
            "delete": oa.operation("stop one instance", stopped, codes=(409,)),
        },
        "/v1/instances/{instance}/log": {
            "get": oa.operation(
                "the last lines the instance wrote (kept after it ended)",
                {200: oa.text_response("text/plain", "the log")},
                params=[
                    oa.query("limit", "lines (default 200; taken as 1 below 1, as 500 above 500)", {"type": "integer"})
                ],
            )
        },
        "/v1/reports": {
            "get": oa.operation(
                "the latest timing reports of the tenant's instances",
                {
                    200: oa.json_response(
                        {
                            "type": "object",
                            "required": ["reports"],
                            "properties": {"reports": {"type": "array", "items": oa.ref("Report")}},
                        }
                    )
                },
                params=[LIMIT],
            )
        },
        "/v1/decisions": {
            "get": oa.operation(
                "the latest scaling decisions, manual starts and stops, with their reasons",
                {
                    200: oa.json_response(
                        {
                            "type": "object",
                            "required": ["decisions"],
                            "properties": {"decisions": {"type": "array", "items": oa.ref("Decision")}},
                        }
                    )
                },
                params=[LIMIT],
            )
        },
    }


PARAMS = {"instance": oa.path("instance", "s0, s1, ...")}


def document(cfg: Config) -> dict:
    return oa.document(
        title="mysimbdp stream API",
        description="Starting, stopping and watching a tenant's stream app instances. See docs/streaming.md.",
        server=cfg.stream_url(),
        paths=oa.with_tenant_twins(oa.with_path_params(_paths(), PARAMS)),
        schemas=SCHEMAS,
        errors={
            400: "bad input, or the operator named no tenant: the code says which",
            404: "no such instance, log or tenant",
            409: "the tenant has no stream app (no_app), its maximum of instances runs already, or the state "
            "kept changing (conflict)",
        },
    )
