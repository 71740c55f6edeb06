"""The dashboard (dashboard/), driven as people use it: Debian's headless Chromium through Selenium, logged in as
tenants and as the operator, against the running platform; its JSON calls and its refusals with plain HTTP.

With DASHBOARD_SCREENSHOTS=<folder> the browser test also saves the main views there as PNGs
(docs/screenshots/ holds the ones in docs/dashboard.md).
"""

from __future__ import annotations

import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from conftest import (
    APPS,
    ROOT,
    SAMPLE_CONSTRAINTS,
    STREAM_CONSTRAINTS,
    Api,
    StreamApi,
    notes_lines,
    publish_in_background,
    run_cli,
)

pytestmark = pytest.mark.services
HEADER = "id,title,body,amount,at\n"
BAD_ROW = "99,broken,line,not-a-number,2024-01-01"
SHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


def notes_csv(ids, bad: str = "") -> str:
    rows = "".join(f'{i},"title {i}, with a comma","body {i}",{i}.5,2024-01-01T00:00:00Z\n' for i in ids)
    return HEADER + rows + (bad + "\n" if bad else "")


# --- the pure parts -----------------------------------------------------------------------------------------


def test_sessions_are_sealed_and_end():
    from dashboard import sessions
    from mysimbdp.errors import SessionExpired

    key = os.urandom(32)
    s = sessions.Session("acme", False, int(time.time()) + 60, "c" * 32, "stamp")
    assert sessions.unseal(key, sessions.seal(key, s)) == s
    sealed = sessions.seal(key, s)
    for bad, reason in (
        (None, "none"),
        ("", "none"),
        (sealed[:-2] + ("AA" if not sealed.endswith("AA") else "BB"), "invalid"),  # signature changed
        (sessions.seal(os.urandom(32), s), "invalid"),  # another key
        (sealed.replace(".", "x"), "invalid"),
        ("x" * 5000, "invalid"),
        (sessions.seal(key, sessions.Session("acme", False, int(time.time()) - 1, "c", "s")), "expired"),
    ):
        with pytest.raises(SessionExpired) as exc:
            sessions.unseal(key, bad)
        assert exc.value.reason == reason, bad
    # a payload that claims to be the operator, re-signed with another key, is still refused
    forged = sessions.seal(os.urandom(32), sessions.Session("operator", True, int(time.time()) + 60, "c", "s"))
    with pytest.raises(SessionExpired):
        sessions.unseal(key, forged)


def test_series_rates_latencies_backlog_and_decisions():
    from dashboard import series

    end = 1_000_000.0
    t = lambda s: datetime.fromtimestamp(end - s, timezone.utc)  # noqa: E731
    reports = [
        # two instances, 2 s windows, in the same 10 s step
        {
            "instance": "s0",
            "window_start": t(14),
            "window_end": t(12),
            "messages": 200,
            "avg_ms": 10,
            "p95_ms": 20,
            "pending": 5,
        },
        {
            "instance": "s1",
            "window_start": t(14),
            "window_end": t(12),
            "messages": 100,
            "avg_ms": 40,
            "p95_ms": 80,
            "pending": 7,
        },
        {
            "instance": "s0",
            "window_start": t(13),
            "window_end": t(11),
            "messages": 0,
            "avg_ms": 0,
            "p95_ms": 0,
            "pending": 1,
        },
        {"instance": "s0", "window_start": t(700), "window_end": t(690), "messages": 5},  # outside the window
    ]
    decisions = [
        {"at": t(3), "action": "scale_up", "instances_before": 1, "instances_after": 2, "reason": "backlog 600 > 500"},
        {"at": t(900), "action": "stop", "instances_before": 2, "instances_after": 1, "reason": "too old"},
    ]
    s = series.build(reports, decisions, end=end, minutes=1, step=10)
    assert s["end"] == end and len(s["time"]) == 6 and s["time"][-1] == end
    i = s["time"].index(end - 10)  # the step (end-20, end-10]: the three reports
    assert s["messages_per_s"][i] == 50 + 50  # s0: mean of 100/s and 0/s; s1: 50/s
    assert s["avg_ms"][i] == 20  # (200*10 + 100*40) / 300
    assert s["p95_ms"][i] == 80
    assert s["backlog"][i] == 1 + 7  # s0's last report, and s1's
    assert s["instances"][i] == 2
    assert s["messages_per_s"][0] is None and s["backlog"][0] is None  # no report: a gap, not a zero
    assert [d["action"] for d in s["decisions"]] == ["scale_up"] and s["decisions"][0]["reason"] == "backlog 600 > 500"
    assert series.step_for(10, 1) == 3 and series.step_for(1, 5) == 10


def test_the_vendored_chart_library_is_the_pinned_one():
    pinned = json.loads((ROOT / "dashboard" / "package.json").read_text())["dependencies"]["uplot"]
    lock = json.loads((ROOT / "dashboard" / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/uplot"]["version"] == pinned
    vendored = ROOT / "dashboard" / "static" / "vendor" / "uplot"
    assert f"(v{pinned})" in (vendored / "uPlot.iife.min.js").read_text()[:200]
    assert "MIT" in (vendored / "LICENSE").read_text()


# --- HTTP: logins, sessions, isolation, replays -----------------------------------------------------------


class Page:
    """The dashboard as a browser's JSON calls see it (a requests session with the cookie)."""

    def __init__(self, cfg) -> None:
        self.base = cfg.dashboard_url()
        self.http = requests.Session()
        self.csrf = ""

    def login(self, user: str, password: str) -> requests.Response:
        r = self.http.post(self.base + "/login", data={"user": user, "password": password}, allow_redirects=False)
        if r.status_code == 303:
            page = self.http.get(self.base + "/")
            self.csrf = re.search(r'name="csrf-token" content="([0-9a-f]+)"', page.text).group(1)
        return r

    def get(self, path: str, **kw) -> requests.Response:
        return self.http.get(self.base + path, timeout=30, allow_redirects=False, **kw)

    def post(self, path: str, csrf: bool = True, **kw) -> requests.Response:
        headers = kw.pop("headers", {})
        if csrf:
            headers["X-CSRF-Token"] = self.csrf
        return self.http.post(self.base + path, headers=headers, timeout=30, allow_redirects=False, **kw)


def operator_password(cfg) -> str:
    return json.loads((cfg.paths.secrets / "api-operator.json").read_text())["password"]


def wait_for(what, check, timeout: float = 60, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def test_logins_sessions_and_isolation_over_http(platform, cfg, batch_tenant, registry):
    a, a_pw, a_api = batch_tenant("notes")
    b, b_pw, b_api = batch_tenant("crasher")
    r = b_api.put_file("secret-b.csv", notes_csv(range(1, 3)).encode())
    assert r.status_code == 201, r.text
    b_job = r.json()["job"]["job_id"]

    page = Page(cfg)
    # no session: the page goes to the login, JSON calls get 401 (and no Basic-auth prompt)
    r = page.get("/")
    assert r.status_code == 303 and r.headers["Location"].endswith("/login")
    r = page.get("/api/jobs")
    assert r.status_code == 401 and r.json()["code"] == "session_expired" and "WWW-Authenticate" not in r.headers
    # wrong password: the form again, with the message, and no cookie
    r = page.login(a.name, "wrong-password")
    assert r.status_code == 401 and "Wrong user name or password" in r.text and "mysimbdp_session" not in r.cookies
    # a login from another site's page is refused
    r = page.http.post(
        page.base + "/login", data={"user": a.name, "password": a_pw}, headers={"Origin": "http://evil.example"}
    )
    assert r.status_code == 403
    r = page.login(a.name, a_pw)
    assert r.status_code == 303
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Max-Age=" in cookie

    # a tenant sees its own things only: another tenant's job is a job that does not exist
    r = page.get(f"/api/jobs/{b_job}")
    assert r.status_code == 404 and r.json()["code"] == "not_found" and b.name not in r.text
    for path in (f"/api/jobs/{b_job}/rejects", f"/api/jobs/{b_job}/log", f"/api/jobs/{b_job}/download/log"):
        assert page.get(path).status_code == 404
    assert page.get(f"/api/jobs?tenant={b.name}").status_code == 404
    assert page.get(f"/api/stream?tenant={b.name}").status_code == 404
    r = page.post(f"/api/jobs/{b_job}/replay")
    assert r.status_code == 404
    assert page.get(f"/api/jobs?tenant={a.name}").json()["jobs"] == []
    assert page.get("/api/tenants").json()["tenants"][0]["name"] == a.name
    assert len(page.get("/api/tenants").json()["tenants"]) == 1
    health = page.get("/api/health").json()
    assert list(health["keyspaces"]) == [a.name]  # its own keyspace's size, no other's
    assert all(set(p) == {"ready"} for p in health["parts"].values())  # up or down, no pids, logs or deaths
    assert all(set(n) == {"up"} for n in health["nodes"])

    # CSRF: a POST without the session's token, or from another origin, is refused
    assert page.post(f"/api/jobs/{b_job}/replay", csrf=False).json()["code"] == "csrf_refused"
    r = page.post(f"/api/jobs/{b_job}/replay", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["code"] == "csrf_refused"

    # the operator sees every tenant, and acts for the one it names
    op = Page(cfg)
    assert op.login("operator", operator_password(cfg)).status_code == 303
    names = {t["name"] for t in op.get("/api/tenants").json()["tenants"]}
    assert {a.name, b.name} <= names
    assert op.get(f"/api/jobs/{b_job}?tenant={b.name}").json()["file_name"] == "secret-b.csv"
    assert op.get(f"/api/jobs?tenant={a.name}").json()["jobs"] == []
    assert op.get("/api/jobs").json()["code"] == "tenant_required"
    full = op.get("/api/health").json()
    assert {a.name, b.name, cfg.keyspace} <= set(full["keyspaces"]) and full["parts"]["dashboard"]["ready"]
    assert full["nodes"] and full["nodes"][0]["address"]

    # a logout ends the session on the server too: a copy of its cookie is no good afterwards
    saved = op.http.cookies.get("mysimbdp_session")
    assert op.post("/logout").status_code == 303
    op.http.cookies.set("mysimbdp_session", saved)
    r = op.get("/api/tenants")
    assert r.status_code == 401 and r.json()["reason"] == "bye"

    # a login just after a password change is stamped with the new password, and stays (the tenant cache held
    # the old hash for a few seconds: the session was thrown out then)
    registry.update(b.name, password="Changed-pass-123")
    fresh = Page(cfg)
    wait_for("a login with the new password", lambda: fresh.login(b.name, "Changed-pass-123").status_code == 303, 15)
    for _ in range(4):
        assert fresh.get("/api/jobs").status_code == 200
        time.sleep(2)

    # a stale session: a deleted tenant's session ends (within the tenant cache's few seconds)
    stale = page.http.cookies.get("mysimbdp_session")
    registry.delete(a.name)

    def ended():
        r = page.get("/api/jobs")
        return r.status_code == 401 and r.json()

    body = wait_for("the deleted tenant's session ends", ended, timeout=15)
    assert body["reason"] == "gone" and page.http.cookies.get("mysimbdp_session") is None  # the cookie is dropped
    page.http.cookies.set("mysimbdp_session", stale)
    r = page.get("/")
    assert r.status_code == 303 and "m=gone" in r.headers["Location"]
    assert "This tenant no longer exists" in Page(cfg).get("/login?m=gone").text


def test_replay_only_a_failed_job_once_from_http_and_cli(platform, cfg, batch_tenant):
    t, pw, api = batch_tenant("crasher")
    ok_t, ok_pw, ok_api = batch_tenant("notes")
    failed = api.put_file("crashes.csv", notes_csv(range(1, 4)).encode()).json()["job"]["job_id"]
    good = ok_api.put_file("fine.csv", notes_csv(range(1, 4)).encode()).json()["job"]["job_id"]
    assert api.wait_job(failed)["status"] == "failed"
    assert ok_api.wait_job(good)["status"] == "succeeded"

    page = Page(cfg)
    assert page.login(t.name, pw).status_code == 303
    q = page.get("/api/quarantine").json()["jobs"]
    assert [j["job_id"] for j in q] == [failed] and q[0]["in_quarantine"] and "bug" in (q[0]["reason"] or "")
    assert page.post("/api/jobs/not-a-job/replay").status_code == 404
    r = page.post(f"/api/jobs/{failed}/replay")
    assert r.status_code == 201, r.text
    new = r.json()["job"]
    assert new["replay_of"] == failed and new["file_name"] == "crashes.csv" and new["job_id"] != failed
    # the failed receipt stays; its file went, so it cannot be replayed twice
    old = page.get(f"/api/jobs/{failed}").json()
    assert old["status"] == "failed" and not old["in_quarantine"] and old["replayed_as"] == new["job_id"]
    r = page.post(f"/api/jobs/{failed}/replay")
    assert r.status_code == 409 and r.json()["code"] == "not_in_quarantine" and new["job_id"] in r.json()["error"]
    # the replay ran (and failed again: the app was not fixed): the CLI replays that one
    assert api.wait_job(new["job_id"])["status"] == "failed"
    res = run_cli("jobs", "replay", new["job_id"])
    assert res.returncode == 0, res.stderr
    assert f"job {new['job_id']} of {t.name} replayed as job" in res.stdout
    again = run_cli("jobs", "replay", new["job_id"], "--tenant", t.name)
    assert again.returncode == 65 and "no longer in the quarantine: it was replayed as job" in again.stderr
    # two replays of one job at once (two clicks, two operators): one is staged, the other refused
    third = re.search(r"replayed as job ([0-9a-f-]{36})", res.stdout).group(1)
    assert api.wait_job(third)["status"] == "failed"
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: page.post(f"/api/jobs/{third}/replay"), range(4)))
    assert sorted(r.status_code for r in answers) == [201, 409, 409, 409], [r.text for r in answers]
    assert {r.json()["code"] for r in answers if r.status_code == 409} == {"not_in_quarantine"}
    fourth = next(r.json()["job"]["job_id"] for r in answers if r.status_code == 201)
    assert api.wait_job(fourth)["status"] == "failed"
    assert len(api.get("/v1/jobs").json()["jobs"]) == 4  # the failed receipts all stay

    # the receipts' filters and pages
    def ids(query: str) -> list[str]:
        r = page.get("/api/jobs" + query)
        assert r.status_code == 200, r.text
        return [j["job_id"] for j in r.json()["jobs"]]

    newest_first = ids("")
    assert newest_first == [fourth, third, new["job_id"], failed]
    assert ids("?status=failed") == newest_first and ids("?status=succeeded") == []
    assert ids("?file=CRASHES") == newest_first and ids("?file=other") == []
    first = page.get("/api/jobs?limit=1").json()
    assert [j["job_id"] for j in first["jobs"]] == [fourth] and first["more"] and first["next"] == fourth
    assert ids(f"?limit=2&before={fourth}") == [third, new["job_id"]]
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    past = (datetime.now(timezone.utc) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert ids(f"?since={future}") == [] and ids(f"?until={past}") == [] and ids(f"?since={past}") == newest_first
    for bad in ("?status=bogus", "?limit=x", "?since=yesterday", "?before=not-a-job", "?until=9999-12-31T23:59:59-23:59"):
        assert page.get("/api/jobs" + bad).status_code == 400, bad
    # a job that did not fail is refused, with nothing staged
    res = run_cli("jobs", "replay", good)
    assert res.returncode == 65 and "only a failed job can be replayed" in res.stderr
    page_ok = Page(cfg)
    assert page_ok.login(ok_t.name, ok_pw).status_code == 303
    r = page_ok.post(f"/api/jobs/{good}/replay")
    assert r.status_code == 409 and r.json()["code"] == "not_failed"
    assert len(ok_api.get("/v1/jobs").json()["jobs"]) == 1
    assert run_cli("jobs", "replay", "0b9c3e0e-0000-1000-8000-000000000000").returncode == 65


# --- the browser --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def shot(driver, name: str) -> None:
    """The whole page (up to 2,400 px high) as docs/screenshots/<name>.png, when DASHBOARD_SCREENSHOTS says where."""
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(2400, max(1000, height + 90)))
        time.sleep(0.5)
        driver.save_screenshot(str(Path(SHOTS) / f"{name}.png"))
        driver.set_window_size(1400, 1000)


def log_in(driver, cfg, user: str, password: str, screenshot: str | None = None) -> None:
    from selenium.webdriver.common.by import By

    driver.delete_all_cookies()
    driver.get(cfg.dashboard_url() + "/login")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    if screenshot:
        shot(driver, screenshot)
    driver.find_element(By.ID, "login-button").click()
    wait_for("the page after the login", lambda: driver.find_elements(By.ID, "tabs"), timeout=20)


def until(driver, what: str, check, timeout: float = 60):
    from selenium.common.exceptions import StaleElementReferenceException

    def safe():
        try:
            return check(driver)
        except StaleElementReferenceException:  # the page redrew the table meanwhile
            return None

    return wait_for(what, safe, timeout=timeout, every=0.3)


def browser_fetch(driver, path: str) -> dict:
    """A JSON call made by the page itself (its cookie, its origin)."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(async r => done({status: r.status, body: await r.text()}))"
        ".catch(e => done({status: 0, body: String(e)}));",
        path,
    )


def test_in_a_browser(platform, cfg, browser, make_tenant, tmp_path):
    from selenium.webdriver.common.by import By

    d = browser
    a, a_pw = make_tenant(cons=STREAM_CONSTRAINTS, batch_app=APPS / "notes", stream_app=APPS / "notes")
    b, b_pw = make_tenant(cons=SAMPLE_CONSTRAINTS, batch_app=APPS / "crasher")
    b_api = Api(cfg, b.name, b_pw)
    b_job = b_api.put_file("b-private.csv", notes_csv(range(1, 4)).encode()).json()["job"]["job_id"]
    stream = StreamApi(cfg, a.name, a_pw)
    assert stream.post("/v1/instances", json={"count": 1}).status_code == 201

    # a stale or forged cookie goes back to the login, with a message
    d.get(cfg.dashboard_url() + "/login")
    d.add_cookie({"name": "mysimbdp_session", "value": "eyJ1c2VyIjoib3BlcmF0b3IifQ.AAAA", "path": "/"})
    d.get(cfg.dashboard_url() + "/#platform")
    assert "/login" in d.current_url and "not valid" in d.find_element(By.ID, "login-message").text

    # tenant a logs in, sends a file with the real fetchdata, and sees its receipt appear without reloading
    log_in(d, cfg, a.name, a_pw, screenshot="login")
    until(d, "the empty receipts", lambda d: "no receipts" in d.find_element(By.ID, "jobs-table").text)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes-with-a-bad-row.csv").write_text(notes_csv(range(1, 6), bad=BAD_ROW))
    res = run_cli(
        "-u", a.name, f"--password={a_pw}", "-d", str(folder), "--server", cfg.batch_url(), module="fetchdata"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    row = until(
        d,
        "the receipt in the page",
        lambda d: next(
            (r for r in d.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr") if "succeeded" in r.text), None
        ),
    )
    assert "notes-with-a-bad-row.csv" in row.text and d.current_url.endswith("#receipts")
    # its rejects, one click away
    row.find_element(By.CSS_SELECTOR, ".rejects-link").click()
    table = until(d, "the rejected rows", lambda d: d.find_elements(By.ID, "rejects-table"))[0]
    assert "not-a-number" in table.text and "broken" in table.text
    assert d.find_element(By.ID, "rejects-download").get_attribute("href").endswith("/download/rejects")
    shot(d, "receipts-rejects")
    d.find_element(By.ID, "show-log").click()
    until(d, "the log", lambda d: d.find_elements(By.ID, "log-text"))

    # another tenant's job: not in the page, not from its JSON calls, "no such job" at its address
    assert "b-private" not in d.page_source
    assert browser_fetch(d, f"/api/jobs/{b_job}")["status"] == 404
    assert browser_fetch(d, f"/api/jobs?tenant={b.name}")["status"] == 404
    assert browser_fetch(d, f"/api/jobs/{b_job}/rejects")["status"] == 404
    d.get(cfg.dashboard_url() + f"/#receipts/{b_job}")
    until(d, "no such job", lambda d: "No such job" in d.find_element(By.ID, "job-detail-title").text)
    assert "b-private" not in d.page_source

    # its stream: records flowing, then the autoscaler's decision on the plot (stopping the only instance goes
    # below the minimum of 1: the autoscaler starts one again at once, and says why; records wait meanwhile)
    d.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="stream"]').click()
    until(d, "a healthy instance", lambda d: "healthy" in d.find_element(By.ID, "instances-table").text)
    publisher, result = publish_in_background(cfg, a.name, a_pw, notes_lines(range(1, 2401), bad_every=100), rate=300)
    time.sleep(3)
    assert stream.delete("/v1/instances/s0").status_code == 200
    marker = until(
        d,
        "the scaling decision on the plot",
        lambda d: d.find_elements(By.CSS_SELECTOR, '#plot-rate .decision-marker[data-action="scale_up"]'),
    )[0]
    assert "below the minimum of 1" in marker.get_attribute("title")
    publisher.join(timeout=120)
    assert result["res"].returncode == 0 and "2400 confirmed" in result["res"].stdout, result["res"].stdout
    decisions = d.find_element(By.ID, "decisions-table").text
    assert "scale_up" in decisions and "below the minimum of 1" in decisions
    series = json.loads(browser_fetch(d, "/api/stream/series?minutes=10")["body"])
    assert sum(v or 0 for v in series["messages_per_s"]) > 0 and any(v for v in series["p95_ms"])
    assert d.find_elements(By.CSS_SELECTOR, "#plot-rate canvas") and d.find_elements(
        By.CSS_SELECTOR, "#plot-latency canvas"
    )
    if SHOTS:  # the last minute, once every record is written
        until(
            d,
            "the backlog drained",
            lambda d: json.loads(browser_fetch(d, "/api/stream")["body"])["backlog"]["waiting"] == 0,
        )
        d.execute_script(
            "const w = document.getElementById('window'); w.value = '1'; w.dispatchEvent(new Event('change'))"
        )
        time.sleep(7)
        shot(d, "stream")

    # tenant b: its failed job in the quarantine, replayed from the button (the app was not fixed: the new job
    # fails again, and the failed receipt stays)
    assert b_api.wait_job(b_job)["status"] == "failed"
    log_in(d, cfg, b.name, b_pw)
    d.get(cfg.dashboard_url() + "/#quarantine")
    button = until(
        d, "the replay button", lambda d: d.find_elements(By.CSS_SELECTOR, f'button.replay[data-job="{b_job}"]')
    )[0]
    reason = d.find_element(By.ID, "quarantine-table").text
    assert "this app has a bug" in reason
    shot(d, "quarantine")
    button.click()
    until(d, "the replay's message", lambda d: "replayed as job" in d.find_element(By.ID, "notice").text)
    d.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="receipts"]').click()
    until(d, "the replay's receipt", lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")) == 2)
    jobs = json.loads(browser_fetch(d, "/api/jobs")["body"])["jobs"]
    assert (
        [j["replay_of"] for j in jobs] == [b_job, None] and jobs[1]["job_id"] == b_job and jobs[1]["status"] == "failed"
    )
    assert "(replay)" in d.find_element(By.ID, "jobs-table").text

    # the operator sees both tenants, and the platform's health
    log_in(d, cfg, "operator", operator_password(cfg))
    until(
        d,
        "both tenants to pick from",
        lambda d: {a.name, b.name} <= {o.text for o in d.find_elements(By.CSS_SELECTOR, "#tenant-select option")},
    )
    d.get(cfg.dashboard_url() + f"/?tenant={a.name}#stream")
    until(
        d,
        "a's decision, for the operator",
        lambda d: d.find_elements(By.CSS_SELECTOR, '#plot-rate .decision-marker[data-action="scale_up"]'),
    )
    d.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="platform"]').click()
    until(d, "the services", lambda d: d.find_elements(By.CSS_SELECTOR, '#parts-table tr[data-part="dashboard"]'))
    until(
        d, "the keyspaces", lambda d: d.find_elements(By.CSS_SELECTOR, f'#keyspaces-table tr[data-keyspace="{b.name}"]')
    )
    shot(d, "platform")
    d.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="tenants"]').click()
    until(
        d,
        "both tenants",
        lambda d: (
            a.name in d.find_element(By.ID, "tenants-table").text
            and b.name in d.find_element(By.ID, "tenants-table").text
        ),
    )
    errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "status of 404" not in e["message"]]
    assert not errors, errors
    # logging out ends the page's session
    d.find_element(By.ID, "logout").click()
    until(d, "the login after logout", lambda d: "logged out" in d.find_element(By.ID, "login-message").text)
    d.get(cfg.dashboard_url() + "/")
    assert "/login" in d.current_url


def test_expired_session_goes_back_to_the_login(platform, cfg, make_tenant):
    """A cookie past its end (sealed with the real key, so only the time is wrong)."""
    from dashboard import sessions

    key = sessions.session_key(cfg)
    t, _ = make_tenant()
    old = sessions.Session(
        t.name, False, int((datetime.now(timezone.utc) - timedelta(minutes=1)).timestamp()), "c", "s"
    )
    page = Page(cfg)
    page.http.cookies.set("mysimbdp_session", sessions.seal(key, old))
    r = page.get("/api/session")
    assert r.status_code == 401 and r.json()["reason"] == "expired"
    r = page.get("/")
    assert r.status_code == 303 and "m=expired" in r.headers["Location"]
