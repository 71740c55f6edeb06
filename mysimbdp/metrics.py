"""The platform's Prometheus metrics: one home for every metric's name, help text and labels.

Each HTTP API serves them at ``GET /metrics`` (the operator's login; a Prometheus server scrapes with
``basic_auth``). Names follow Prometheus' conventions (``mysimbdp_`` prefix, base units, ``_total`` for
counters). Labels only ever hold values of a bounded set: a route's pattern (never the path a client sent),
the method, the status code, and the tenant's name (a validated identifier; ``-`` before login or for the
operator). docs/operations.md lists them.

The batch manager, the inbox writer and the stream controller serve no HTTP: their metrics live in files
(prometheus_client's multiprocess mode: ``$PROMETHEUS_MULTIPROC_DIR``, set by the launcher to
``run/metrics/<process>``, emptied when the process starts), and the batch API (batch manager) and the
stream API (inbox writer, stream controller) serve them beside their own at ``/metrics``. The query API,
served by several worker processes, keeps its own in files the same way, and any worker serves them all.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # no ``_created`` series beside every counter and histogram: they doubled the count

REGISTRY = CollectorRegistry(auto_describe=True)  # one per process: the platform's metrics, nothing else
# the managers' metrics: kept out of REGISTRY so that an API, which serves the managers' values from their
# files, never names one family twice
MANAGERS = CollectorRegistry(auto_describe=True)

#: which API serves which manager's metrics (run/metrics/<process>)
SERVED_BY = {"mysimbdp-batch": ("batch-manager",), "mysimbdp-stream": ("inbox-writer", "stream-controller")}

HTTP_REQUESTS = Counter(
    "mysimbdp_http_requests",
    "HTTP requests answered, by service, route pattern, method, status code and tenant",
    ["service", "route", "method", "status", "tenant"],
    registry=REGISTRY,
)
HTTP_SECONDS = Histogram(
    "mysimbdp_http_request_duration_seconds",
    "Seconds from a request's start to its answer's head (a streamed body goes on after it), by service and route",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    registry=REGISTRY,
)

# --- the batch API ----------------------------------------------------------------------------------------
UPLOADS = Counter(
    "mysimbdp_uploads",
    "Upload requests that staged a file or were refused, by tenant and outcome (staged; rejected: a constraint, "
    "the size or the checksum; duplicate: the same content came before)",
    ["tenant", "outcome"],
    registry=REGISTRY,
)
UPLOAD_BYTES = Counter(
    "mysimbdp_upload_bytes", "Bytes of file bodies the batch API received, by tenant", ["tenant"], registry=REGISTRY
)

# --- the batch manager ------------------------------------------------------------------------------------
BATCH_JOBS = Counter(
    "mysimbdp_batch_jobs",
    "Batch jobs that reached a status (retrying, succeeded, failed), by tenant",
    ["tenant", "status"],
    registry=MANAGERS,
)
BATCH_ROWS = Counter(
    "mysimbdp_batch_rows",
    "Rows of finished batch jobs by tenant and outcome (ingested, rejected), as their receipts count them",
    ["tenant", "outcome"],
    registry=MANAGERS,
)
BATCH_JOB_SECONDS = Histogram(
    "mysimbdp_batch_job_duration_seconds",
    "Seconds of a batch job's runs, from its start to its receipt, by tenant",
    ["tenant"],
    buckets=(0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0),
    registry=MANAGERS,
)

# --- the inbox writer and the stream controller ------------------------------------------------------------
STREAM_MESSAGES = Counter(
    "mysimbdp_stream_messages",
    "Stream records kept in tenants' inboxes and acknowledged to their publishers, by tenant",
    ["tenant"],
    registry=MANAGERS,
)
STREAM_BYTES = Counter(
    "mysimbdp_stream_message_bytes",
    "Bytes of the records counted by mysimbdp_stream_messages",
    ["tenant"],
    registry=MANAGERS,
)
STREAM_INSTANCES = Gauge(
    "mysimbdp_stream_instances",
    "Stream app instances running, by tenant (as the stream controller last saw them)",
    ["tenant"],
    multiprocess_mode="livemax",
    registry=MANAGERS,
)
SCALING_DECISIONS = Counter(
    "mysimbdp_stream_scaling_decisions",
    "The stream controller's decisions by tenant and action (scale_up, scale_down, restart, ...)",
    ["tenant", "action"],
    registry=MANAGERS,
)

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(service: str, route: str, method: str, status: int, tenant: str, seconds: float) -> None:
    method = method if method in METHODS else "other"  # the method is the client's word: keep the set closed
    HTTP_REQUESTS.labels(service, route, method, str(status), tenant).inc()
    HTTP_SECONDS.labels(service, route).observe(seconds)


def process_files(run: Path, process: str) -> Path:
    """Where a manager keeps its metrics (the launcher gives it as ``PROMETHEUS_MULTIPROC_DIR``)."""
    return run / "metrics" / process


def fresh_process_files() -> None:
    """At a manager's start: its last run's files go (one process of each kind runs at a time; a counter
    starts again from zero, as Prometheus expects of a restarted process)."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        for f in Path(folder).glob("*.db"):
            f.unlink(missing_ok=True)


def exposition(run: Path | None = None, service: str = "") -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type: this process's (all its fellow worker
    processes' when they keep them in files), and those of the managers ``service`` serves (read from
    their files under ``run``)."""
    own = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if own:
        workers = CollectorRegistry()
        MultiProcessCollector(workers, path=own)
        body = generate_latest(workers)
    else:
        body = generate_latest(REGISTRY)
    for process in SERVED_BY.get(service, ()) if run is not None else ():
        folder = process_files(run, process)
        if folder.is_dir():
            managers = CollectorRegistry()
            MultiProcessCollector(managers, path=str(folder))
            body += generate_latest(managers)
    return body, CONTENT_TYPE_LATEST
