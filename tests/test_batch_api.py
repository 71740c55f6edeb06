"""The upload API enforces everything itself, whatever the client claims (real API, Cassandra, disk)."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import pytest

from conftest import SAMPLE_CONSTRAINTS, Api, unique_name

pytestmark = pytest.mark.services

GOOD = b"id,title,body,amount,at\n1,a,b,1.5,2024-01-01T00:00:00Z\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_wrong_password_and_unknown_tenant_get_401_with_a_message(platform, batch_tenant):
    t, pw, api = batch_tenant()
    for user, password in ((t.name, "wrong-password"), (unique_name("ghost"), pw), ("", "")):
        r = Api(platform, user, password).get("/v1/constraints")
        assert r.status_code == 401 and r.headers["Content-Type"].startswith("application/json")
        assert "password" in r.json()["error"] or "authentication" in r.json()["error"]
    import requests

    r = requests.get(platform.batch_url() + "/v1/constraints", timeout=10)  # no credentials at all
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    assert api.get("/v1/constraints").json()["formats"] == ["csv"]


def test_repeated_failures_lock_the_user_out_for_a_while(platform, batch_tenant):
    t, pw, api = batch_tenant()
    bad = Api(platform, t.name, "not-it")
    codes = [bad.get("/v1/constraints").status_code for _ in range(platform.batch.auth_max_failures)]
    assert set(codes) == {401}
    locked = Api(platform, t.name, pw).get("/v1/constraints")  # even the right password, for now
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert "too many failed logins" in locked.json()["error"]


def test_a_file_over_the_size_limit_is_refused(platform, batch_tenant):
    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_file_size_bytes": 100})
    big = GOOD + b"2,x,y,1,2024-01-01T00:00:00Z\n" * 10
    r = api.put_file("big.csv", big)
    assert r.status_code == 413 and "maximum file size" in r.json()["error"]
    r = api.post("/v1/uploads", json={"name": "big.csv", "size": len(big), "sha256": sha(big)})
    assert r.status_code == 413
    assert not any(platform.paths.staging(t.name).iterdir())


def test_a_body_longer_than_declared_is_cut_off_as_soon_as_it_passes(platform, batch_tenant):
    """The server answers 413 while the client is still sending, and keeps nothing."""
    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_file_size_bytes": 1 << 20})
    declared = 64 * 1024
    r = api.post("/v1/uploads", json={"name": "liar.csv", "size": declared, "sha256": "0" * 64})
    assert r.status_code == 201, r.text
    upload = r.json()["upload_id"]
    import base64

    cred = base64.b64encode(f"{t.name}:{pw}".encode()).decode()
    s = socket.create_connection((platform.batch.host, platform.batch.port))
    s.sendall(
        (
            f"PATCH /v1/uploads/{upload} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cred}\r\n"
            f"Upload-Offset: 0\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    line = b"id,title,body,amount,at\n" + b"1,aaaaaaaaaaaaaaaaaaaaaa,b,1,2024-01-01\n" * 1000
    sent = 0
    answer = b""
    s.settimeout(0.05)
    for _ in range(2000):  # up to ~78 MB if the server never stopped us
        try:
            s.sendall(b"%x\r\n%s\r\n" % (len(line), line))
            sent += len(line)
        except OSError:
            break
        try:
            answer += s.recv(4096)
            if answer:
                break
        except socket.timeout:
            pass
    s.settimeout(5)
    try:
        answer += s.recv(4096)
    except OSError:
        pass
    s.close()
    assert b" 413 " in answer.split(b"\r\n")[0], answer[:200]
    assert sent < 4 * 1024 * 1024  # stopped long before the client was done
    leftovers = list(platform.paths.uploads(t.name).glob("*.part"))
    assert leftovers == [] and not any(platform.paths.staging(t.name).iterdir())


@pytest.mark.parametrize(
    "name, body, status, fragment",
    [
        ("data.json", b'{"a": 1}\n', 422, "format .json is not allowed"),
        ("noext", GOOD, 422, "format (none)"),
        ("binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8, 422, "NUL bytes"),
        ("latin1.csv", "id,name\n1,caf\xe9\n".encode("latin-1"), 422, "not valid UTF-8"),
        ("empty.csv", b"", 422, "empty"),
        ("headeronly.csv", b"id,title\n", 422, "no data rows"),
        ("dupcols.csv", b"id,id\n1,2\n", 422, "duplicate column"),
    ],
)
def test_wrong_content_is_refused(platform, batch_tenant, name, body, status, fragment):
    t, pw, api = batch_tenant()
    r = api.put_file(name, body)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]
    assert not any(platform.paths.staging(t.name).iterdir())


@pytest.mark.parametrize(
    "name",
    ["../escape.csv", "/etc/cron.d/x.csv", "..\\x.csv", ".hidden.csv", "a/b.csv", "x\x07.csv", "x\n.csv", "C:\\x.csv"],
)
def test_traversal_absolute_hidden_and_control_names_are_refused(platform, batch_tenant, name):
    t, pw, api = batch_tenant()
    r = api.post("/v1/uploads", json={"name": name, "size": len(GOOD), "sha256": sha(GOOD)})
    assert r.status_code == 400, r.text
    assert "error" in r.json()
    assert not any(platform.paths.staging(t.name).iterdir())


def test_traversal_in_the_url_stays_in_the_tenants_folder(platform, batch_tenant):
    t, pw, api = batch_tenant()
    other, _, _ = batch_tenant()
    for path in ("/v1/files/..%2F..%2Fescape.csv", f"/v1/files/..%2F{other.name}%2Fx.csv", "/v1/files/%2Fetc%2Fx.csv"):
        r = api.put(path, data=GOOD, headers={"Content-SHA256": sha(GOOD)})
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
    home = platform.home
    assert not (home / "escape.csv").exists() and not (home / "staging" / "escape.csv").exists()
    assert not any(platform.paths.staging(other.name).iterdir())


def test_one_tenant_cannot_see_anothers_uploads_or_jobs(platform, batch_tenant):
    a, _, api_a = batch_tenant()
    b, _, api_b = batch_tenant()
    r = api_a.post("/v1/uploads", json={"name": "x.csv", "size": len(GOOD), "sha256": sha(GOOD)})
    upload = r.json()["upload_id"]
    assert api_b.get(f"/v1/uploads/{upload}").status_code == 404
    assert api_b.patch(f"/v1/uploads/{upload}", data=GOOD, headers={"Upload-Offset": "0"}).status_code == 404
    done = api_a.patch(f"/v1/uploads/{upload}", data=GOOD, headers={"Upload-Offset": "0"})
    assert done.status_code == 201, done.text
    job = done.json()["job"]["job_id"]
    assert api_b.get(f"/v1/jobs/{job}").status_code == 404
    assert api_b.get(f"/v1/jobs/{job}/log").status_code == 404
    assert job not in json.dumps(api_b.get("/v1/jobs").json())


def test_resumable_upload_protocol(platform, batch_tenant):
    t, pw, api = batch_tenant()
    body = GOOD + b"".join(b"%d,t,b,1,2024-01-01T00:00:00Z\n" % i for i in range(2, 2000))
    r = api.post("/v1/uploads", json={"name": "r.csv", "size": len(body), "sha256": sha(body)})
    assert r.status_code == 201
    up = r.json()["upload_id"]
    r = api.patch(f"/v1/uploads/{up}", data=body[:1000], headers={"Upload-Offset": "0"})
    assert r.status_code == 200 and r.json()["offset"] == 1000
    # the same file offered again resumes the same upload
    again = api.post("/v1/uploads", json={"name": "r.csv", "size": len(body), "sha256": sha(body)})
    assert again.status_code == 200 and again.json()["upload_id"] == up and again.json()["offset"] == 1000
    wrong = api.patch(f"/v1/uploads/{up}", data=body[500:], headers={"Upload-Offset": "500"})
    assert wrong.status_code == 409 and "offset 1000" in wrong.json()["error"]
    assert api.head(f"/v1/uploads/{up}").headers["Upload-Offset"] == "1000"
    r = api.patch(f"/v1/uploads/{up}", data=body[1000:], headers={"Upload-Offset": "1000"})
    assert r.status_code == 201 and r.json()["job"]["size"] == len(body)
    job = api.wait_job(r.json()["job"]["job_id"])
    assert job["status"] == "succeeded" and job["rows_ingested"] == 1999


def test_checksum_mismatch_is_refused_and_nothing_staged(platform, batch_tenant):
    t, pw, api = batch_tenant()
    r = api.put_file("c.csv", GOOD, sha=sha(b"something else"))
    assert r.status_code == 422 and "checksum" in r.json()["error"]
    assert not any(platform.paths.staging(t.name).iterdir())


def test_the_same_content_is_not_ingested_twice(platform, batch_tenant):
    t, pw, api = batch_tenant()
    r1 = api.put_file("one.csv", GOOD)
    assert r1.status_code == 201
    r2 = api.put_file("renamed.csv", GOOD)
    assert r2.status_code == 200 and r2.json()["status"] == "duplicate"
    assert r2.json()["job_id"] == r1.json()["job"]["job_id"]


def test_too_many_files_per_staged_and_per_day(platform, batch_tenant):
    t, pw, api = batch_tenant(
        "hanger",
        cons={
            **SAMPLE_CONSTRAINTS,
            "max_files": {"count": 2, "per": "staged"},
            "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 30},
        },
    )
    bodies = [GOOD.replace(b"1,a", b"%d,a" % i) for i in range(3)]
    assert api.put_file("1.csv", bodies[0]).status_code == 201
    assert api.put_file("2.csv", bodies[1]).status_code == 201
    r = api.put_file("3.csv", bodies[2])
    assert r.status_code == 429 and "limit of 2" in r.json()["error"]

    d, pw2, api2 = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_files": {"count": 2, "per": "day"}})
    for i in range(2):
        ok = api2.put_file(f"{i}.csv", bodies[i])
        assert ok.status_code == 201
        api2.wait_job(ok.json()["job"]["job_id"])  # ingested: no longer staged, still counted today
    r = api2.put_file("2.csv", bodies[2])
    assert r.status_code == 429 and "today" in r.json()["error"]


def test_abandoned_uploads_stop_holding_places_under_max_files(platform, batch_tenant, cfg):
    import json

    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_files": {"count": 2, "per": "staged"}})
    bodies = [GOOD.replace(b"1,a", b"%d,a" % i) for i in range(3)]
    for i in range(2):  # two uploads opened and never sent
        assert api.post(
            "/v1/uploads", json={"name": f"{i}.csv", "size": len(bodies[i]), "sha256": sha(bodies[i])}
        ).status_code in (200, 201)
    r = api.post("/v1/uploads", json={"name": "2.csv", "size": len(bodies[2]), "sha256": sha(bodies[2])})
    assert r.status_code == 429 and "limit of 2" in r.json()["error"]  # while they may still come
    for meta in cfg.paths.uploads(t.name).glob("*.json"):  # ... and 11 minutes later, nothing came
        data = json.loads(meta.read_text())
        meta.write_text(json.dumps({**data, "created": data["created"] - 660}))
    r = api.put_file("2.csv", bodies[2])
    assert r.status_code == 201, r.text


def test_bad_requests_get_json_4xx_never_500(platform, batch_tenant):
    t, pw, api = batch_tenant()
    cases = [
        api.post("/v1/uploads", data="not json", headers={"Content-Type": "application/json"}),
        api.post("/v1/uploads", json=["a list"]),
        api.post("/v1/uploads", json={"name": "x.csv", "size": "ten", "sha256": sha(GOOD)}),
        api.post("/v1/uploads", json={"name": "x.csv", "size": 10, "sha256": "xyz"}),
        api.post("/v1/uploads", json={"name": 123, "size": 10, "sha256": sha(GOOD)}),
        api.post("/v1/uploads", json={"name": "x.csv", "size": -1, "sha256": sha(GOOD)}),
        api.patch("/v1/uploads/nope", data=b"x", headers={"Upload-Offset": "0"}),
        api.patch("/v1/uploads/" + "a" * 32, data=b"x", headers={"Upload-Offset": "zero"}),
        api.get("/v1/jobs/not-a-uuid"),
        api.get("/v1/jobs/" + "0" * 8 + "-0000-1000-8000-" + "0" * 12),
        api.get("/v1/jobs?status=bogus"),
        api.get("/v1/jobs?limit=many"),
        api.get("/v1/nothing-here"),
        api.delete("/v1/constraints"),
        api.put("/v1/files/x.csv", data=GOOD),  # no checksum header
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code, r.text)
        assert r.headers["Content-Type"].startswith("application/json") and r.json()["error"]
    assert "'name' must be" in cases[4].json()["error"] and "'size' must be" in cases[5].json()["error"]
    time.sleep(0)
