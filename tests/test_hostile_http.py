"""Hostile HTTP against the real APIs (gunicorn): deep and huge JSON bodies, slow bodies and slow headers,
a stranger failing logins, a password change. Every answer is a 4xx with a code, never a 500; no thread
is held for long; a stranger cannot lock a tenant out; a new password counts at once on both APIs."""

from __future__ import annotations

import base64
import socket
import threading
import time

import requests

from conftest import Api, StreamApi, run_cli

NESTED = "[" * 3000 + "]" * 3000


def raw(port: int, data: bytes, *, source: str = "127.0.0.1", timeout: float = 30) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    if data:
        s.sendall(data)
    return s


def answer(s: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except OSError:
        pass
    s.close()
    return out


def auth_header(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()) + b"\r\n"


def test_deep_and_huge_json_bodies_get_a_4xx_with_a_code_never_a_500(platform, stream_tenant, bystander):
    t, pw, sapi = stream_tenant()
    bapi = Api(platform, t.name, pw)
    for resp in (
        bapi.post("/v1/uploads", data=NESTED, headers={"Content-Type": "application/json"}),
        sapi.post("/v1/instances", data=NESTED, headers={"Content-Type": "application/json"}),
    ):
        assert resp.status_code == 400, resp.text
        assert resp.json()["code"] == "bad_json" and "deeper" in resp.json()["error"]
    # a 100 MB body is refused from its Content-Length, before it is read
    big = b"{" + b" " * (100 << 20) + b"}"
    for port, path in ((platform.batch.port, "/v1/uploads"), (platform.stream.port, "/v1/instances")):
        t0 = time.monotonic()
        s = raw(
            port,
            b"POST "
            + path.encode()
            + b" HTTP/1.1\r\nHost: x\r\n"
            + auth_header(t.name, pw)
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(big),
        )
        s.sendall(big[: 1 << 20])  # the rest is never needed
        got = answer(s)
        assert got.startswith(b"HTTP/1.1 413"), got[:200]
        assert b'"code":"body_too_large"' in got.replace(b" ", b"")
        assert time.monotonic() - t0 < 10
    # the same without a Content-Length (chunked): refused after 64 KiB
    resp = bapi.post(
        "/v1/uploads", data=iter([b"[" + b"1," * 50_000 + b"1]"]), headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 413 and resp.json()["code"] == "body_too_large"
    bystander.check()


def test_slow_bodies_and_slow_headers_hold_a_thread_for_seconds_not_minutes(platform, batch_tenant, bystander):
    t, pw, api = batch_tenant()
    head = b"POST /v1/uploads HTTP/1.1\r\nHost: x\r\n" + auth_header(t.name, pw) + b"Content-Length: 200\r\n\r\n{"
    slow = []

    def drip(s: socket.socket, results: list, started: float) -> None:
        try:
            for _ in range(120):
                time.sleep(1)
                s.sendall(b" ")
        except OSError:
            pass
        results.append((time.monotonic() - started, answer(s)))

    results: list = []
    # 12 slow bodies and 12 slow heads: more than the API's 16 threads
    for k in range(24):
        data = head if k % 2 == 0 else b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\n"
        s = raw(platform.batch.port, data, timeout=180)
        th = threading.Thread(target=drip, args=(s, results, time.monotonic()))
        th.start()
        slow.append(th)
    time.sleep(1)
    # meanwhile a client at another address is served at once (two threads are always kept for others) ...
    t0 = time.monotonic()
    got = answer(
        raw(
            platform.batch.port,
            b"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth_header(t.name, pw) + b"\r\n",
            source="127.0.0.2",
        )
    )
    assert got.startswith(b"HTTP/1.1 200"), got[:200]
    assert time.monotonic() - t0 < 5
    # ... and one at the same address is told to come back (503 or 429 with Retry-After) or served: never kept
    t0 = time.monotonic()
    r = api.get("/v1/jobs")
    assert time.monotonic() - t0 < 5
    assert r.status_code == 200 or (r.status_code in (429, 503) and r.headers.get("Retry-After")), r.text
    for th in slow:
        th.join(timeout=60)
    assert len(results) == 24
    # each slow connection was cut: its head within 10 s, its body within 10 s more
    assert max(seconds for seconds, _ in results) < 25, sorted(s for s, _ in results)
    bodies = [got for _, got in results if got]
    assert all(b" 500 " not in got for got in bodies)
    bystander.check()


def test_a_stranger_failing_logins_does_not_lock_the_tenant_out(platform, stream_tenant, bystander):
    t, pw, sapi = stream_tenant()
    for port, path in ((platform.batch.port, b"/v1/constraints"), (platform.stream.port, b"/v1/stream")):
        for _ in range(platform.batch.auth_max_failures + 3):  # from another address, as anyone could
            got = answer(
                raw(
                    port,
                    b"GET "
                    + path
                    + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    + auth_header(t.name, "guess-guess")
                    + b"\r\n",
                    source="127.0.0.2",
                )
            )
            assert got.startswith((b"HTTP/1.1 401", b"HTTP/1.1 429")), got[:100]
        # the stranger's own address is now refused for this user, even with the right password ...
        got = answer(
            raw(
                port,
                b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + auth_header(t.name, pw) + b"\r\n",
                source="127.0.0.2",
            )
        )
        assert got.startswith(b"HTTP/1.1 429") and b"too_many_attempts" in got
    # ... and the tenant, from its own address, gets in at once on both APIs
    assert Api(platform, t.name, pw).get("/v1/constraints").status_code == 200
    assert sapi.get("/v1/stream").status_code == 200
    bystander.check()


def test_a_new_password_counts_at_once_on_every_api(platform, stream_tenant):
    t, old, sapi = stream_tenant()
    batch = Api(platform, t.name, old)
    assert batch.get("/v1/constraints").status_code == 200  # the old password is in the APIs' caches now
    assert sapi.get("/v1/stream").status_code == 200
    new = "a-brand-new-password"
    res = run_cli("tenant", "update", t.name, "--password-stdin", input=new + "\n")
    assert res.returncode == 0, res.stderr
    for api_old, api_new in ((batch, Api(platform, t.name, new)), (sapi, StreamApi(platform, t.name, new))):
        path = "/v1/constraints" if isinstance(api_old, Api) else "/v1/stream"
        assert api_old.get(path).status_code == 401
        assert api_new.get(path).status_code == 200
    assert requests.get(platform.batch_url() + "/healthz", timeout=5).status_code == 200


def test_a_json_lines_file_nested_too_deep_is_refused_not_a_500(platform, batch_tenant, bystander):
    from conftest import SAMPLE_CONSTRAINTS

    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "formats": ["jsonl"]})
    data = b'{"id": 1}\n' + b"[" * 20000 + b"]" * 20000 + b"\n"
    r = api.put_file("deep.jsonl", data)
    assert r.status_code == 422 and r.json()["code"] == "constraint_violation", r.text
    assert "line 2 is not a JSON object" in r.json()["error"]
    bystander.check()


def test_downloads_and_malformed_bodies_leave_the_tenant_its_requests(platform, batch_tenant):
    """A download counts against its tenant while it is sent, and no longer after; a chunked body gunicorn
    cannot parse is a 400, not a 500."""
    t, pw, api = batch_tenant()
    data = b"id,title,body,amount,at\n1,a,b,1,2024-01-01T00:00:00Z\nx,a,b,1,2024-01-01T00:00:00Z\n"
    job = api.wait_job(api.put_file("d.csv", data).json()["job"]["job_id"])
    for _ in range(3 * platform.batch.tenant_requests):
        assert api.get(f"/v1/jobs/{job['job_id']}/rejects").status_code == 200
        assert api.get(f"/v1/jobs/{job['job_id']}/log").status_code == 200
    assert api.get("/v1/jobs").status_code == 200
    r = api.post("/v1/uploads", json={"name": "c.csv", "size": 10, "sha256": "ab" * 32})
    upload = r.json()["upload_id"]
    got = answer(
        raw(
            platform.batch.port,
            b"PATCH /v1/uploads/"
            + upload.encode()
            + b" HTTP/1.1\r\nHost: x\r\n"
            + auth_header(t.name, pw)
            + b"Upload-Offset: 0\r\nTransfer-Encoding: chunked\r\n"
            + b"Connection: close\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        )
    )
    assert got.startswith(b"HTTP/1.1 400"), got[:300]


def test_a_path_cannot_forge_or_colour_a_line_of_the_access_log(platform, cfg):
    """The access log records the path, which is the client's: %0a, %1b and %00 in it must not start a new
    line, reach a terminal or make the log binary."""
    marker = f"forged{time.monotonic_ns()}"
    for port, log in ((cfg.batch.port, "batch-api.log"), (cfg.stream.port, "stream-api.log")):
        path = f"/x%0a127.0.0.1%20[01/Jan/2026:00:00:00%20+0000]%20%22GET%20/{marker}%22%20200%1b%5b31m%00"
        assert requests.get(f"http://127.0.0.1:{port}{path}", timeout=10).status_code == 404
        deadline = time.monotonic() + 10
        while True:
            lines = (cfg.paths.logs / log).read_bytes()[-20000:].splitlines()
            ours = [line for line in lines if marker.encode() in line]
            if ours or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(ours) == 1, ours  # one line, the request's own
        assert ours[0].startswith(b"127.0.0.1 [") and b'"GET /x127.0.0.1' in ours[0]
        assert b"\x1b" not in ours[0] and b"\x00" not in ours[0]
