"""Staged files through tenant apps in the sandbox: rows, receipts, rejects, archive and quarantine."""

from __future__ import annotations

import csv
import io
import json
import time
from datetime import datetime, timezone

import pytest

from conftest import SAMPLE_CONSTRAINTS, count_rows, run_cli

pytestmark = pytest.mark.services

TRICKY = (
    "id,title,body,amount,at\r\n"
    '1,"Hello, world","line one\r\nline two",1.5,2024-01-01T00:00:00Z\r\n'
    '2,Café ☕,"He said ""hi"", twice",2,2024-01-02T10:00:00+02:00\r\n'
    '3,日本語のタイトル,"multi\nline\nbody",-3.25,NA\r\n'
    "4,bad amount,x,not-a-number,2024-01-01\r\n"
    "five,bad id,y,1,2024-01-01\r\n"
    "6,too,many,1,2024-01-01,extra\r\n"
    '7,"emoji 😀 in quotes","",0,2024-01-01T00:00:00Z\r\n'
    ",no id,z,1,2024-01-01\r\n"
)


def test_tricky_csv_is_ingested_exactly_and_bad_rows_are_kept_aside(platform, batch_tenant, cfg):
    t, pw, api = batch_tenant()
    r = api.put_file("tricky.csv", TRICKY.encode("utf-8"))
    assert r.status_code == 201, r.text
    job = api.wait_job(r.json()["job"]["job_id"])
    assert job["status"] == "succeeded", job
    assert job["rows_ingested"] == 4 and job["rows_rejected"] == 4
    assert job["app_name"] == "notes" and job["app_version"] == "2.1" and job["attempts"] == 1
    assert job["size"] == len(TRICKY.encode()) and job["seconds"] > 0 and job["has_rejects"] and job["has_log"]
    for k in ("created_at", "started_at", "finished_at"):
        assert datetime.fromisoformat(job[k]) <= datetime.now(timezone.utc)

    from mysimbdp import db

    s = db.connect(cfg)
    try:
        rows = {r.id: r for r in s.execute(f"SELECT * FROM {t.name}.notes")}
    finally:
        s.cluster.shutdown()
    assert sorted(rows) == [1, 2, 3, 7]
    assert rows[1].title == "Hello, world" and rows[1].body == "line one\r\nline two" and rows[1].amount == 1.5
    assert rows[2].title == "Café ☕" and rows[2].body == 'He said "hi", twice'
    assert rows[2].at.replace(tzinfo=timezone.utc) == datetime(2024, 1, 2, 8, 0, tzinfo=timezone.utc)
    assert rows[3].title == "日本語のタイトル" and rows[3].body == "multi\nline\nbody" and rows[3].at is None
    assert rows[7].title == "emoji 😀 in quotes" and rows[7].amount == 0

    rej = api.get(f"/v1/jobs/{job['job_id']}/rejects")
    assert rej.status_code == 200
    rejected = list(csv.reader(io.StringIO(rej.text)))
    assert rejected[0][:2] == ["line", "reason"]
    reasons = {row[2]: row[1] for row in rejected[1:]}
    assert (
        "amount" in reasons["4"]
        and "id" in reasons["five"]
        and "fields" in reasons["6"]
        and "key column id" in reasons[""]
    )

    # the receipt, for the operator too, and in the ingestion log
    ops = json.loads(run_cli("jobs", "--tenant", t.name, "--json").stdout)
    assert ops[0]["job_id"] == job["job_id"] and ops[0]["rows_ingested"] == 4
    log_line = [ln for ln in cfg.paths.ingestion_log().read_text().splitlines() if job["job_id"] in ln]
    assert len(log_line) == 1
    assert f"Ingestion of the file: tricky.csv for {t.name} - size: " in log_line[0]
    assert "- 4 lines ingested in " in log_line[0] and "4 rejected" in log_line[0]
    # the file is archived with its rejects and log; staging and work are empty
    archived = cfg.paths.archive(t.name) / job["job_id"]
    assert (archived / "rejects.csv").exists() and (archived / "run.log").exists()
    assert any(p.suffix == ".csv" and p.name != "rejects.csv" for p in archived.iterdir())
    assert not any(cfg.paths.staging(t.name).iterdir()) and not any(cfg.paths.work(t.name).iterdir())


def test_reingesting_the_same_rows_does_not_duplicate_them(platform, batch_tenant):
    t, pw, api = batch_tenant()
    body = "id,title,body,amount,at\n" + "".join(f"{i},t,b,1,2024-01-01T00:00:00Z\n" for i in range(100))
    for name, data in (("a.csv", body), ("b.csv", body + "\n")):  # same rows, different bytes
        job = api.wait_job(api.put_file(name, data.encode()).json()["job"]["job_id"])
        assert job["status"] == "succeeded" and job["rows_ingested"] == 100
    assert count_rows(platform, t.name, "notes") == 100


@pytest.mark.parametrize(
    "app, cons_batch, fragment",
    [
        ("crasher", {}, "exited with status 1: RuntimeError: this app has a bug"),
        ("hanger", {"timeout_seconds": 5}, "stopped at the time limit"),
        ("garbage", {}, "its /output/result.json is not valid"),
    ],
)
def test_a_failing_app_fails_its_job_and_quarantines_the_file(platform, batch_tenant, cfg, app, cons_batch, fragment):
    t, pw, api = batch_tenant(
        app, cons={**SAMPLE_CONSTRAINTS, "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 60, **cons_batch}}
    )
    data = b"id,title,body,amount,at\n1,a,b,1,2024-01-01T00:00:00Z\n"
    t0 = time.monotonic()
    job = api.wait_job(api.put_file("x.csv", data).json()["job"]["job_id"])
    assert job["status"] == "failed" and fragment in job["reason"], job
    assert job["attempts"] == 1  # a tenant's failure is not retried
    if app == "hanger":
        assert 5 <= job["seconds"] < 15 and time.monotonic() - t0 < 40
    quarantined = cfg.paths.quarantine(t.name) / job["job_id"]
    assert fragment.split(":")[0] in (quarantined / "reason.txt").read_text()
    assert any(p.name.endswith(".csv") for p in quarantined.iterdir())
    log = api.get(f"/v1/jobs/{job['job_id']}/log")
    assert log.status_code == 200
    if app == "crasher":
        assert "Traceback" in log.text and "this app has a bug" in log.text
    # the platform carries on: a fixed app takes the same file again
    from mysimbdp import tenants as tenants_mod
    from conftest import APPS

    tenants_mod.open_registry(cfg).update(t.name, batch_app=APPS / "notes")
    again = api.put_file("x.csv", data)
    assert again.status_code == 201, again.text
    assert api.wait_job(again.json()["job"]["job_id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    "trick, status, fragment",
    [
        ("fifo", "failed", "result.json is not valid: result.json is not a regular file"),
        ("symlink", "failed", "result.json is not valid"),
        ("rejectsdir", "succeeded", ""),
        ("fallocate", "failed", "No space left on device"),  # past its 256 MiB tmpfs: the kernel says no
        ("hugecount", "failed", "whole numbers from 0 to 10^15"),
        ("sparse", "failed", "wrote more than its output limit"),
        ("sparserows", "failed", "wrote more than its output limit"),
        ("deep", "failed", "wrote more than its output limit"),
        ("manyfiles", "failed", "wrote more than its output limit"),
        ("nestedresult", "failed", "nested deeper than 8 levels"),
        ("longline", "succeeded", ""),
        ("errorresult", "failed", "could not ingest the file: [31mno such table"),
        ("unlinked", "failed", "stopped after 25"),  # its output folder is a 256 MiB tmpfs: no more fits
    ],
)
def test_what_an_app_leaves_in_its_output_cannot_stall_or_fool_the_manager(
    platform, batch_tenant, cfg, trick, status, fragment
):
    t, pw, api = batch_tenant(
        "trickster", cons={**SAMPLE_CONSTRAINTS, "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 60}}
    )
    data = b"id,title,body,amount,at\n1,a,b,1,2024-01-01T00:00:00Z\n"
    job = api.wait_job(api.put_file(f"{trick}.csv", data).json()["job"]["job_id"], timeout=60)
    assert job["status"] == status and fragment in (job["reason"] or ""), job
    assert job["attempts"] == 1
    assert "/work/" not in (job["reason"] or "") and "state" not in (job["reason"] or "")  # no host paths
    assert not job.get("has_rejects")  # nothing but a regular rejects.csv counts
    if status == "failed":
        assert (cfg.paths.quarantine(t.name) / job["job_id"] / "reason.txt").exists()
    # the manager is not stuck: the next file of this tenant goes through
    from mysimbdp import tenants as tenants_mod
    from conftest import APPS

    tenants_mod.open_registry(cfg).update(t.name, batch_app=APPS / "notes")
    nxt = api.wait_job(api.put_file("next.csv", data.replace(b"\n1,", b"\n2,")).json()["job"]["job_id"], timeout=60)
    assert nxt["status"] == "succeeded", nxt


def test_a_tenant_deleted_while_its_job_runs_leaves_nothing_behind(platform, batch_tenant, cfg, registry):
    from mysimbdp.jobs import JobStore

    t, pw, api = batch_tenant(
        "slownotes",
        cons={
            **SAMPLE_CONSTRAINTS,
            "max_file_size_bytes": 1 << 20,
            "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 120},
        },
    )
    rows = "".join(f"{i},t,b,1,2024-01-01T00:00:00Z\n" for i in range(3000))
    job_id = api.put_file("slow.csv", ("id,title,body,amount,at\n" + rows).encode()).json()["job"]["job_id"]
    deadline = time.monotonic() + 60
    while api.get(f"/v1/jobs/{job_id}").json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    res = run_cli("tenant", "delete", t.name, "--yes")
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 60
    while (cfg.paths.work(t.name) / job_id).exists():  # the manager is done with it
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1)
    for folder in (cfg.paths.quarantine(t.name), cfg.paths.archive(t.name), cfg.paths.work(t.name)):
        assert not any(folder.glob("*")) if folder.exists() else True, folder
    assert JobStore(cfg, registry.session).list(t.name) == []  # a new tenant of this name starts clean


def test_a_tenant_without_a_batch_app(platform, make_tenant, cfg):
    from conftest import Api

    t, pw = make_tenant()
    api = Api(cfg, t.name, pw)
    job = api.wait_job(api.put_file("x.csv", b"id,v\n1,2\n").json()["job"]["job_id"])
    assert job["status"] == "failed" and "no batch ingest app" in job["reason"]


def test_per_tenant_and_global_limits_on_concurrent_jobs(platform, batch_tenant, cfg):
    from mysimbdp.sandbox import runtime

    cons = {**SAMPLE_CONSTRAINTS, "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 60}}
    a, _, api_a = batch_tenant("slownotes", cons=cons)
    b, _, api_b = batch_tenant("slownotes", cons={**cons, "batch": {"max_concurrent_jobs": 3, "timeout_seconds": 60}})
    body = lambda k: (
        "id,title,body,amount,at\n" + "".join(f"{k * 10000 + i},t,b,1,2024-01-01T00:00:00Z\n" for i in range(1500))
    ).encode()
    ids = [api_a.put_file(f"a{k}.csv", body(k)).json()["job"]["job_id"] for k in range(3)]
    ids += [api_b.put_file(f"b{k}.csv", body(10 + k)).json()["job"]["job_id"] for k in range(3)]
    rt = runtime(cfg)
    most_a = most_total = 0
    seen_b = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = [c for c in rt.list(kind="batch") if c.tenant in (a.name, b.name) and c.state == "running"]
        most_a = max(most_a, sum(c.tenant == a.name for c in running))
        most_total = max(most_total, len(running))
        seen_b = seen_b or any(c.tenant == b.name for c in running)
        if all(
            api.get(f"/v1/jobs/{j}").json()["status"] in ("succeeded", "failed")
            for api, j in [(api_a, i) for i in ids[:3]] + [(api_b, i) for i in ids[3:]]
        ):
            break
        time.sleep(0.2)
    assert most_a == 1  # tenant a's limit
    assert most_total <= cfg.batch.workers  # the global limit
    assert seen_b  # b was not starved while a had work queued
    assert count_rows(cfg, a.name, "notes") == 4500 and count_rows(cfg, b.name, "notes") == 4500


def test_while_the_manager_is_down_uploads_are_refused_and_what_is_staged_waits_for_it(platform, batch_tenant, cfg):
    from mysimbdp.services import managers

    t, pw, api = batch_tenant()
    manager = next(p for p in managers.PARTS if p.name == "batch-manager")
    manager.stop(cfg)
    try:
        time.sleep(16)  # its heartbeat goes stale
        r = api.put_file("while-down.csv", b"id,title\n1,x\n2,y\n")
        assert r.status_code == 503 and r.json()["code"] == "batch_manager_down", r.text
        assert int(r.headers["Retry-After"]) > 0 and "try again" in r.json()["hint"]
        r = api.post("/v1/uploads", json={"name": "x.csv", "size": 10, "sha256": "ab" * 32})
        assert r.status_code == 503 and r.json()["code"] == "batch_manager_down"
        # a file an operator drops into the staging folder by hand waits for the manager
        (cfg.paths.staging(t.name) / "by-hand.csv").write_text("id,title\n3,z\n")
    finally:
        manager.start(cfg)
    job_id = api.put_file("while-down.csv", b"id,title\n1,x\n2,y\n").json()["job"]["job_id"]
    assert api.wait_job(job_id)["status"] == "succeeded"
    deadline = time.monotonic() + 60
    while count_rows(cfg, t.name, "notes") < 3 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert count_rows(cfg, t.name, "notes") == 3
    by_hand = [j for j in api.get("/v1/jobs").json()["jobs"] if j["file_name"] == "by-hand.csv"]
    assert len(by_hand) == 1 and api.wait_job(by_hand[0]["job_id"])["status"] == "succeeded"
