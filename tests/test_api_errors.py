"""The 4xx answers of both HTTP APIs, through Flask's test client on apps made by create_app(cfg) (the tenant
directory behind them is the real platform keyspace): every error is JSON with a machine-readable code."""

from __future__ import annotations

import base64

import pytest

from batchingestmanager import api as batch_api
from streamingestmanager import api as stream_api


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def batch_client(platform):
    return batch_api.create_app(platform).test_client()


@pytest.fixture
def stream_client(platform):
    return stream_api.create_app(platform).test_client()


def check(resp, status: int, code: str, fragment: str = "") -> dict:
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:300])
    body = resp.get_json()
    assert body["code"] == code, body
    assert fragment.lower() in body["error"].lower(), body
    return body


def test_batch_api_without_credentials_asks_for_them(batch_client):
    resp = batch_client.get("/v1/jobs")
    check(resp, 401, "unauthorized", "authentication required")
    assert resp.headers["WWW-Authenticate"].startswith("Basic")
    assert batch_client.get("/healthz").get_json() == {"ok": True}


def test_batch_api_4xx_paths(batch_client, make_tenant):
    t, pw = make_tenant()
    h = basic(t.name, pw)
    check(batch_client.get("/v1/nothing-here", headers=h), 404, "not_found")
    resp = batch_client.delete("/v1/jobs", headers=h)
    check(resp, 405, "method_not_allowed")
    assert set(resp.headers["Allow"].split(", ")) >= {"GET", "HEAD"}  # what the route takes (RFC 9110)
    check(batch_client.post("/v1/uploads", data="not json", headers=h), 400, "bad_json", "not valid JSON")
    check(batch_client.post("/v1/uploads", json=[1, 2], headers=h), 400, "bad_json")
    sha = "ab" * 32
    check(
        batch_client.post("/v1/uploads", json={"name": "../x.csv", "size": 5, "sha256": sha}, headers=h),
        400,
        "invalid_name",
        "contains a path",
    )
    check(
        batch_client.post("/v1/uploads", json={"name": "x.exe", "size": 5, "sha256": sha}, headers=h),
        422,
        "constraint_violation",
        "not allowed",
    )
    check(
        batch_client.post("/v1/uploads", json={"name": "x.csv", "size": 10 << 20, "sha256": sha}, headers=h),
        413,
        "file_too_large",
    )
    check(
        batch_client.post("/v1/uploads", json={"name": "x.csv", "size": 5, "sha256": "no"}, headers=h),
        400,
        "bad_request",
        "sha256",
    )
    check(batch_client.patch("/v1/uploads/" + "0" * 32, headers=h), 400, "bad_offset")
    check(batch_client.patch("/v1/uploads/" + "0" * 32, headers={**h, "Upload-Offset": "0"}), 404, "not_found")
    check(batch_client.put("/v1/files/x.csv", data=b"a,b\n1,2\n", headers=h), 428, "checksum_required")
    body = check(batch_client.get("/v1/jobs?status=done", headers=h), 400, "bad_request", "unknown status")
    assert "succeeded" in body["hint"]
    check(batch_client.get("/v1/jobs?limit=many", headers=h), 400, "bad_request", "limit")
    check(batch_client.get("/v1/jobs?status=", headers=h), 400, "bad_request", "unknown status")  # not "any"
    check(batch_client.get("/v1/jobs/not-a-job", headers=h), 404, "not_found")
    check(batch_client.get("/v1/jobs/6b1b8c2e-0000-1000-8000-000000000000/log", headers=h), 404, "not_found")


def test_stream_api_4xx_paths(stream_client, make_tenant, platform):
    from mysimbdp import auth

    t, pw = make_tenant()
    other, _ = make_tenant()
    h = basic(t.name, pw)
    check(stream_client.get("/v1/stream"), 401, "unauthorized")
    check(stream_client.post("/v1/instances", data="[1]", content_type="application/json", headers=h), 400, "bad_json")
    check(stream_client.post("/v1/instances", json={"count": 0}, headers=h), 400, "bad_request", "count")
    check(stream_client.post("/v1/instances", json={"count": 1}, headers=h), 409, "no_app")
    check(stream_client.get(f"/v1/tenants/{other.name}/stream", headers=h), 404, "not_found")
    check(stream_client.get("/v1/instances/x9/log", headers=h), 404, "not_found")
    check(stream_client.get("/v1/reports?limit=lots", headers=h), 400, "bad_request")
    op = basic("operator", auth.operator_api_password(platform.paths.secrets))
    check(stream_client.get("/v1/stream", headers=op), 400, "bad_request", "must name the tenant")
    assert stream_client.get(f"/v1/tenants/{t.name}/stream", headers=op).status_code == 200
