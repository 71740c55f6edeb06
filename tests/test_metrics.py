"""Prometheus metrics at /metrics of each HTTP API: the operator scrapes them, a tenant may not; the request
counters move with requests, labelled by route pattern (never the client's path) and tenant."""

from __future__ import annotations

import re

import pytest
import requests

from mysimbdp import auth


def scrape(url: str, login) -> str:
    r = requests.get(url + "/metrics", auth=login, timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"].startswith("text/plain")
    return r.text


def sample(text: str, name: str, **labels) -> float:
    """The value of the series ``name`` whose labels include ``labels`` (0 when there is none)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize("api", ["batch", "stream", "query"])
def test_operator_scrapes_and_counters_move(platform, make_tenant, api):
    url = {"batch": platform.batch_url, "stream": platform.stream_url, "query": platform.query_url}[api]()
    op = (auth.OPERATOR, auth.operator_api_password(platform.paths.secrets))
    t, password = make_tenant()
    before = scrape(url, op)
    route = {"batch": "/v1/jobs", "stream": "/v1/decisions", "query": "/v1/tables"}[api]
    for _ in range(3):
        assert requests.get(url + route, auth=(t.name, password), timeout=30).status_code == 200
    # a hostile path: counted under "unmatched", its text never becomes a label
    assert requests.get(url + "/v1/no-such/%0a%1bEVIL", auth=(t.name, password), timeout=30).status_code == 404
    assert requests.get(url + route, auth=(t.name, "wrong password"), timeout=30).status_code == 401
    after = scrape(url, op)

    def moved(**labels) -> float:
        name = "mysimbdp_http_requests_total"
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved(route=route, method="GET", status="200", tenant=t.name) == 3
    assert moved(route="unmatched", status="404") >= 1  # no login is tried for a route that does not exist
    assert moved(route=route, status="401", tenant="-") >= 1
    assert "EVIL" not in after and "no-such" not in after
    hist = "mysimbdp_http_request_duration_seconds_count"
    assert sample(after, hist, route=route) - sample(before, hist, route=route) >= 4
    assert "# TYPE mysimbdp_http_requests_total counter" in after


def test_a_tenant_may_not_read_the_metrics(platform, make_tenant):
    t, password = make_tenant()
    r = requests.get(platform.query_url() + "/metrics", auth=(t.name, password), timeout=30)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"  # only the operator's login opens them
    r = requests.get(platform.batch_url() + "/metrics", timeout=30)
    assert r.status_code == 401
