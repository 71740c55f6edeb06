"""Infrastructure faults in the middle of a batch job: no row lost, no row duplicated.

These stop the real Cassandra and kill the real batch manager, so they run last (see the file name order
in pytest's collection: tests/test_batch_faults.py is collected with the batch tests; each test leaves the
platform up again).
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from conftest import SAMPLE_CONSTRAINTS, count_rows, wait_session_back

pytestmark = [pytest.mark.services, pytest.mark.slow]
CONS = {
    **SAMPLE_CONSTRAINTS,
    "max_file_size_bytes": 8 << 20,
    "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 600},
}


def rows_csv(n: int) -> bytes:
    return ("id,title,body,amount,at\n" + "".join(f"{i},t{i},b,{i},2024-01-01T00:00:00Z\n" for i in range(n))).encode()


def wait_status(api, job_id, statuses, timeout=120):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        st = api.get(f"/v1/jobs/{job_id}").json()["status"]
        if not seen or seen[-1] != st:
            seen.append(st)
        if st in statuses:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {statuses}; went through {seen}")


def test_cassandra_stopped_mid_job_the_job_is_retried_when_it_is_back(platform, batch_tenant, cfg, registry):
    from mysimbdp.services import cassandra_node, platform as platform_mod

    t, pw, api = batch_tenant("slownotes", cons=CONS)
    n = 20000  # about 20 s of writing for slownotes
    job_id = api.put_file("long.csv", rows_csv(n)).json()["job"]["job_id"]
    wait_status(api, job_id, ("running",), timeout=60)
    time.sleep(3)  # some rows are in
    assert cassandra_node.stop(cfg)
    try:
        time.sleep(12)  # longer than the app's patience (3 s): it gives up with exit 75
    finally:
        cassandra_node.start(cfg)
    platform_mod.up(cfg)  # and whatever else needs a nudge
    wait_session_back(registry.session)
    job = api.wait_job(job_id, timeout=300)
    assert job["status"] == "succeeded", job
    assert job["attempts"] >= 2  # it was run again, not failed
    assert job["rows_ingested"] == n and job["rows_rejected"] == 0
    assert count_rows(cfg, t.name, "notes") == n  # none lost, none duplicated


def test_manager_killed_mid_job_and_restarted(platform, batch_tenant, cfg):
    from mysimbdp.sandbox import runtime
    from mysimbdp.services import managers, supervisor

    t, pw, api = batch_tenant("slownotes", cons=CONS)
    n = 12000
    job_id = api.put_file("long.csv", rows_csv(n)).json()["job"]["job_id"]
    wait_status(api, job_id, ("running",), timeout=60)
    time.sleep(2)
    manager = next(p for p in managers.PARTS if p.name == "batch-manager")
    pid = manager.daemon(cfg).pid()
    os.kill(pid, signal.SIGKILL)
    assert (cfg.paths.work(t.name) / job_id).exists()  # the claimed file is still there
    # the supervisor starts it again by itself, and says why it had to
    deadline = time.monotonic() + 15
    while manager.daemon(cfg).pid() in (None, pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert manager.daemon(cfg).pid() not in (None, pid)
    deadline = time.monotonic() + 10  # the death is recorded in the supervisor's state file just after
    while not [d for d in supervisor.read_state(cfg.home, "batch-manager").deaths if d["pid"] == pid]:
        assert time.monotonic() < deadline, supervisor.read_state(cfg.home, "batch-manager").deaths
        time.sleep(0.2)
    death = next(d for d in supervisor.read_state(cfg.home, "batch-manager").deaths if d["pid"] == pid)
    assert "SIGKILL" in death["cause"] or "status is unknown" in death["cause"], death
    job = api.wait_job(job_id, timeout=300)
    assert job["status"] == "succeeded" and job["rows_ingested"] == n, job
    assert count_rows(cfg, t.name, "notes") == n
    # the orphan container of the killed manager did not survive it
    assert not [c for c in runtime(cfg).list(tenant=t.name)]
    receipts = [j for j in api.get("/v1/jobs").json()["jobs"] if j["job_id"] == job_id]
    assert len(receipts) == 1
