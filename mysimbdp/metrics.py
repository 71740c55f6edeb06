"""The platform's Prometheus metrics: one home for every metric's name, help text and labels.

Each HTTP API serves them at ``GET /metrics`` (the operator's login; a Prometheus server scrapes with
``basic_auth``). Names follow Prometheus' conventions (``mysimbdp_`` prefix, base units, ``_total`` for
counters). Labels only ever hold values of a bounded set: a route's pattern (never the path a client sent),
the method, the status code, and the tenant's name (a validated identifier; ``-`` before login or for the
operator). docs/operations.md lists them.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)  # one per process: the platform's metrics, nothing else

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

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def observe_request(service: str, route: str, method: str, status: int, tenant: str, seconds: float) -> None:
    method = method if method in METHODS else "other"  # the method is the client's word: keep the set closed
    HTTP_REQUESTS.labels(service, route, method, str(status), tenant).inc()
    HTTP_SECONDS.labels(service, route).observe(seconds)


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
