"""Prometheus metrics at /metrics of each HTTP API: the operator scrapes them, a tenant may not; the request
counters move with requests, labelled by route pattern (never the client's path) and tenant."""

from __future__ import annotations

import re
import time

import pytest
import requests

from conftest import notes_lines, publish_lines, wait_rows
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


def scrape_until(url: str, login, done, timeout: float = 20) -> str:
    """Scrape until ``done(text)`` holds: a manager counts a job just after its receipt is written."""
    deadline = time.monotonic() + timeout
    text = scrape(url, login)
    while not done(text) and time.monotonic() < deadline:
        time.sleep(0.3)
        text = scrape(url, login)
    return text


def test_batch_manager_metrics_count_uploads_jobs_and_rows(platform, batch_tenant):
    """The batch manager serves no HTTP: its counters reach the batch API's /metrics through their files."""
    op = (auth.OPERATOR, auth.operator_api_password(platform.paths.secrets))
    t, _, api = batch_tenant("notes")
    data = b"id,title,body,amount,at\n" + b"".join(
        f'{i},"note {i}","body {i}",{i}.5,2024-01-01T00:00:00Z\n'.encode() for i in range(1, 41)
    )
    data += b"41,broken,line,not-a-number,2024-01-01\n"
    r = api.put_file("metrics.csv", data)
    assert r.status_code == 201, r.text
    job = api.wait_job(r.json()["job"]["job_id"])
    assert job["status"] == "succeeded", job
    url = platform.batch_url()
    text = scrape_until(url, op, lambda s: sample(s, "mysimbdp_batch_jobs_total", tenant=t.name) >= 1)
    assert sample(text, "mysimbdp_uploads_total", tenant=t.name, outcome="staged") == 1
    assert sample(text, "mysimbdp_upload_bytes_total", tenant=t.name) == len(data)
    assert sample(text, "mysimbdp_batch_jobs_total", tenant=t.name, status="succeeded") == 1
    assert sample(text, "mysimbdp_batch_rows_total", tenant=t.name, outcome="ingested") == job["rows_ingested"] == 40
    assert sample(text, "mysimbdp_batch_rows_total", tenant=t.name, outcome="rejected") == job["rows_rejected"] == 1
    assert sample(text, "mysimbdp_batch_job_duration_seconds_count", tenant=t.name) == 1
    assert "# TYPE mysimbdp_batch_job_duration_seconds histogram" in text

    # the same content again: refused as a duplicate, and counted so
    again = api.put_file("again.csv", data)
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
    text = scrape(url, op)
    assert sample(text, "mysimbdp_uploads_total", tenant=t.name, outcome="duplicate") == 1
    # each family is named once in the answer (the API's own and the manager's are apart)
    families = re.findall(r"^# TYPE (\S+)", text, re.M)
    assert len(families) == len(set(families))


def test_stream_metrics_count_messages_instances_and_decisions(platform, stream_tenant, cfg):
    op = (auth.OPERATOR, auth.operator_api_password(platform.paths.secrets))
    t, pw, api = stream_tenant()
    assert api.post("/v1/instances", json={"count": 1}).status_code == 201
    res = publish_lines(cfg, t.name, pw, notes_lines(range(1, 301)))
    assert res.returncode == 0, res.stdout + res.stderr
    assert wait_rows(cfg, t.name, "notes", 300) == 300
    url = platform.stream_url()
    text = scrape_until(url, op, lambda s: sample(s, "mysimbdp_stream_messages_total", tenant=t.name) >= 300)
    assert sample(text, "mysimbdp_stream_messages_total", tenant=t.name) == 300  # each acknowledged record once
    assert sample(text, "mysimbdp_stream_message_bytes_total", tenant=t.name) > 300 * 40
    assert sample(text, "mysimbdp_stream_instances", tenant=t.name) == 1
    # stopping the only instance goes below the policy's minimum: the autoscaler starts one, and counts it
    assert api.delete("/v1/instances/s0").status_code == 200
    text = scrape_until(
        url, op, lambda s: sample(s, "mysimbdp_stream_scaling_decisions_total", tenant=t.name, action="scale_up") >= 1
    )
    assert sample(text, "mysimbdp_stream_scaling_decisions_total", tenant=t.name, action="scale_up") == 1
