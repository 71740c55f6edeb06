"""A hostile tenant against the platform's own code, with the real services: what its app leaves behind,
its reports, a job that keeps killing the batch manager, a daemon past its memory cap, a file whose stray
quotes used to be cut wrongly. While each of these goes on, another tenant ingests by batch and by stream,
and its counts must come out exact; the platform must stay ready (or be again within seconds)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import sys
import time
from datetime import datetime, timezone

import pytest

from conftest import APPS, SAMPLE_CONSTRAINTS, count_rows

pytestmark = [pytest.mark.services, pytest.mark.slow]


def manager_pid(cfg) -> int | None:
    from mysimbdp.services import managers

    return next(p for p in managers.PARTS if p.name == "batch-manager").daemon(cfg).pid()


@pytest.mark.parametrize("trick", ["sparse", "sparserows", "deep", "manyfiles", "nestedresult"])
def test_what_an_app_leaves_behind_fails_its_job_and_nothing_else(
    platform, batch_tenant, bystander, registry, cfg, trick
):
    before = manager_pid(cfg)
    t, pw, api = batch_tenant(
        "trickster", cons={**SAMPLE_CONSTRAINTS, "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 60}}
    )
    data = b"id,title,body,amount,at\n1,a,b,1,2024-01-01T00:00:00Z\n"
    job = api.wait_job(api.put_file(f"{trick}.csv", data).json()["job"]["job_id"], timeout=120)
    assert job["status"] == "failed" and job["reason"], job
    assert not job["has_rejects"]
    work = cfg.paths.work(t.name) / job["job_id"]
    deadline = time.monotonic() + 30
    while work.exists():  # its work folder goes (however deep) right after the receipt
        assert time.monotonic() < deadline, list(work.iterdir())
        time.sleep(0.2)
    bystander.check()
    assert manager_pid(cfg) == before  # the manager never died
    registry.delete(t.name)  # and the tenant can be deleted
    assert not cfg.paths.quarantine(t.name).exists()


def test_kept_rejects_are_the_platforms_own_files_and_bounded(platform, batch_tenant, cfg):
    """The rejects an app leaves are copied out of its tmpfs as a new file (never its set-uid, world-writable
    mode), and at most max_rejects_kept_mb of them per job: a tiny upload must not leave 40 MiB behind."""
    import stat

    t, pw, api = batch_tenant(
        "trickster", cons={**SAMPLE_CONSTRAINTS, "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 60}}
    )
    data = b"id,title,body,amount,at\n1,a,b,1,2024-01-01T00:00:00Z\n"
    job = api.wait_job(api.put_file("setuidrejects.csv", data).json()["job"]["job_id"], timeout=120)
    assert job["status"] == "succeeded" and job["has_rejects"], job
    kept = cfg.paths.archive(t.name) / job["job_id"] / "rejects.csv"
    mode = kept.stat().st_mode
    assert stat.S_IMODE(mode) == 0o640 and kept.stat().st_uid == os.geteuid(), oct(mode)
    assert api.get(f"/v1/jobs/{job['job_id']}/rejects").text.splitlines() == ["line,reason", "2,bad"]

    data = data.replace(b"1,a,b", b"2,a,b")  # (the same bytes again would be refused as a duplicate)
    job = api.wait_job(api.put_file("bigrejects.csv", data).json()["job"]["job_id"], timeout=120)
    assert job["status"] == "succeeded" and job["rows_rejected"] == 40000 and job["has_rejects"], job
    kept = cfg.paths.archive(t.name) / job["job_id"] / "rejects.csv"
    size = kept.stat().st_size
    assert size <= cfg.batch.max_rejects_kept_mb << 20 and size > (cfg.batch.max_rejects_kept_mb - 1) << 20
    assert kept.read_bytes().endswith(b"r\n")  # cut at a whole line
    log = api.get(f"/v1/jobs/{job['job_id']}/log").text
    assert f"rejects.csv kept only its first {size} bytes" in log


def test_reports_cannot_make_the_stream_controller_deaf(platform, stream_tenant, bystander, cfg):
    from mysimbdp.services import managers

    controller = next(p for p in managers.PARTS if p.name == "stream-controller").daemon(cfg)
    before = controller.pid()
    t, pw, api = stream_tenant("reporter")
    r = api.post("/v1/instances", json={"count": 1})
    assert r.status_code == 201, r.text  # its valid reports came through: it counts as started
    flood_over = datetime.now(timezone.utc)
    time.sleep(5)
    # the bystander's reports are still read and stored after the flood
    deadline = time.monotonic() + 30
    while True:
        fresh = [
            x
            for x in bystander.stream.get("/v1/reports?limit=20").json()["reports"]
            if datetime.fromisoformat(x["received_at"]).replace(tzinfo=timezone.utc) > flood_over
        ]
        if len(fresh) >= 3:
            break
        assert time.monotonic() < deadline, "no report of the bystander was stored after the flood"
        time.sleep(1)
    bystander.check()
    assert controller.pid() == before
    stored = api.get("/v1/reports?limit=500").json()["reports"]
    assert stored and all(x["tenant"] == t.name and x["messages"] == 0 for x in stored)
    log = (cfg.paths.logs / "stream-controller.log").read_text(errors="replace")
    complaints = [ln for ln in log.splitlines() if f"{t.name}/s0" in ln]
    assert 1 <= len(complaints) <= 5, complaints[-5:]  # told once a minute, not 3,000 times


def test_a_job_the_manager_dies_on_twice_is_failed_the_rest_goes_on(platform, batch_tenant, bystander, cfg):
    from mysimbdp.services import supervisor

    cons = {
        **SAMPLE_CONSTRAINTS,
        "max_file_size_bytes": 8 << 20,
        "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 600},
    }
    t, pw, api = batch_tenant("slownotes", cons=cons)
    body = "id,title,body,amount,at\n" + "".join(f"{i},t,b,1,2024-01-01T00:00:00Z\n" for i in range(60000))
    job_id = api.put_file("poison.csv", body.encode()).json()["job"]["job_id"]
    mark = cfg.paths.work(t.name) / job_id / "running"
    seen = None
    killed = []
    for death in (1, 2):
        deadline = time.monotonic() + 120
        while True:  # a manager is working on it (not the mark the dead one left)
            try:
                now = mark.read_text()
            except OSError:
                now = None
            if now and now != seen:
                seen = now
                break
            assert time.monotonic() < deadline, f"the job did not run before death {death}"
            time.sleep(0.1)
        time.sleep(1)
        pid = manager_pid(cfg)
        os.kill(pid, signal.SIGKILL)  # as a bug in reading this job's output would
        killed.append(pid)
        deadline = time.monotonic() + 20
        while manager_pid(cfg) in (None, pid):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    job = api.wait_job(job_id, timeout=120)
    assert job["status"] == "failed" and "died 2 times" in job["reason"], job
    deaths = {d["pid"]: d["cause"] for d in supervisor.read_state(cfg.home, "batch-manager").deaths}
    # each death recorded; a manager started by an earlier supervisor (another test restarts it) dies with
    # its status unknown to the one that sees it die
    assert all("SIGKILL" in deaths.get(p, "") or "status is unknown" in deaths.get(p, "") for p in killed), deaths
    bystander.check()


def test_a_daemon_past_its_memory_cap_is_killed_alone_recorded_and_restarted(platform, cfg, bystander):
    from mysimbdp.services import supervisor
    from mysimbdp.services.process import Daemon

    hog = Daemon("test-hog", cfg.paths.run, cfg.paths.logs, match="mysimbdp-test-hog")
    code = "import time; print('hogging', flush=True); x = [bytearray(1 << 20) for _ in range(400)]; time.sleep(60)"
    hog.start([sys.executable, "-c", code, "mysimbdp-test-hog"], memory=64 << 20)
    try:
        deadline = time.monotonic() + 30
        while not supervisor.read_state(cfg.home, "test-hog").deaths:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        st = supervisor.read_state(cfg.home, "test-hog")
        assert st.memory_cap.startswith(("cgroup", "rlimit")), st
        death = st.deaths[0]
        if st.memory_cap.startswith("cgroup"):
            assert "memory cap (64 MiB)" in death["cause"], death
        assert death["last_log_line"] == "hogging"
        deadline = time.monotonic() + 15
        while supervisor.read_state(cfg.home, "test-hog").restarts < 2:  # started again (and killed again)
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        hog.stop(timeout=5)
    bystander.check()


def test_a_file_with_stray_quotes_cut_for_two_processes_is_stored_exactly_as_csv_reads_it(platform, batch_tenant, cfg):
    t, pw, api = batch_tenant(
        cons={
            **SAMPLE_CONSTRAINTS,
            "max_file_size_bytes": 32 << 20,
            "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 300, "cpus": 2},
        }
    )
    lines = ["\ufeffid,title,body,amount,at\r\n"]
    pad = "p" * 140
    for i in range(1, 60_001):
        title = f'N{i}"X' if i % 7 == 0 else f"t{i}"  # a literal quote in an unquoted field
        body = f'"two\nlines {i}"' if i % 5 == 0 else (f'"say ""hi"" {i}"' if i % 11 == 0 else f"b{i}{pad}")
        lines.append(f"{i},{title},{body},{i}.5,2024-01-01T00:00:00Z" + ("\r\n" if i % 3 else "\n"))
    data = "".join(lines).encode()
    assert len(data) > 8 << 20  # large enough for the app to cut it for its two processes
    job = api.wait_job(api.put_file("stray.csv", data).json()["job"]["job_id"], timeout=300)
    assert job["status"] == "succeeded" and job["rows_rejected"] == 0, job
    expect = {
        int(r["id"]): (r["title"], r["body"]) for r in csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    }
    assert job["rows_ingested"] == len(expect) == 60_000
    from mysimbdp import db

    s = db.connect(cfg)
    try:
        got = {r.id: (r.title, r.body) for r in s.execute(f"SELECT id, title, body FROM {t.name}.notes")}
    finally:
        s.cluster.shutdown()
    assert got == expect  # row by row, field by field


def test_small_files_share_runs_and_each_gets_its_own_receipt(platform, batch_tenant, tmp_path):
    app = tmp_path / "notes-many"
    shutil.copytree(APPS / "notes", app)
    manifest = json.loads((app / "app.json").read_text())
    (app / "app.json").write_text(json.dumps({**manifest, "files_per_run": 10}))
    t, pw, api = batch_tenant(
        app,
        cons={
            **SAMPLE_CONSTRAINTS,
            "max_files": {"count": 50, "per": "staged"},
            "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 60},
        },
    )
    ids = []
    for k in range(12):
        rows = "".join(f"{k * 100 + i},t,b,1,2024-01-01T00:00:00Z\n" for i in range(100))
        if k == 5:
            rows += "not-a-number,t,b,1,2024-01-01T00:00:00Z\n"
        name = f"f{k:02d}.csv"
        if k == 7:  # no good row at all
            rows = "x,t,b,1,2024-01-01T00:00:00Z\n"
        data = ("id,title,body,amount,at\n" + rows).encode()
        ids.append(api.put_file(name, data).json()["job"]["job_id"])
    jobs = [api.wait_job(j, timeout=120) for j in ids]
    for k, job in enumerate(jobs):
        if k == 7:
            assert job["status"] == "succeeded" and job["rows_ingested"] == 0 and job["rows_rejected"] == 1, job
        else:
            assert job["status"] == "succeeded" and job["rows_ingested"] == 100, job
            assert job["rows_rejected"] == (1 if k == 5 else 0), job
    assert count_rows(platform, t.name, "notes") == 1100
    rejects = list(csv.reader(io.StringIO(api.get(f"/v1/jobs/{ids[5]}/rejects").text)))
    assert len(rejects) == 2 and rejects[1][2] == "not-a-number"  # its own rejects, and only its own
    logs = [api.get(f"/v1/jobs/{j}/log").text for j in ids]
    assert max(log.count("ingested") for log in logs) > 1  # some runs took several files
