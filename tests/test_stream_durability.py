"""A confirmed record survives the crash of any single process on the stream path: the broker killed with
SIGKILL while the stream is stopped, keeping up, or far behind; the inbox writer, the controller and an
instance killed at random moments of a 100,000-record stream. Every record mysimbdp-publish confirmed is
exactly one row, and the other tenant streaming at the same time gets exactly its rows too."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time

import pytest

from conftest import (
    STREAM_CONSTRAINTS,
    confirmed,
    count_rows,
    notes_lines,
    publish_in_background,
    publish_lines,
    two_running_streams,
    run_cli,
    wait_rows,
)

pytestmark = [pytest.mark.services, pytest.mark.slow]
CONS = {
    **STREAM_CONSTRAINTS,
    "stream": {
        **STREAM_CONSTRAINTS["stream"],
        "cpus": 0.5,
        "autoscale": {"enabled": False, "min_instances": 1, "max_instances": 2},
    },
}


def kill_broker(cfg) -> None:
    """SIGKILL Mosquitto, then `mysimbdp up` (the supervisor may have started it again already)."""
    from mysimbdp.services import mosquitto_broker

    pid = mosquitto_broker.daemon(cfg).pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    res = run_cli("up")
    assert res.returncode == 0, res.stdout + res.stderr
    assert mosquitto_broker.daemon(cfg).pid() not in (None, pid)


@pytest.fixture
def pair(stream_tenant):
    """Tenant a (whose broker dies under it) and b (the bystander), each with one instance running."""
    return two_running_streams(stream_tenant, CONS)


def exactly(cfg, tenant: str, n: int, timeout: float = 180) -> None:
    assert wait_rows(cfg, tenant, "notes", n, timeout=timeout) == n
    time.sleep(2)
    assert count_rows(cfg, tenant, "notes") == n


def test_broker_killed_while_the_stream_is_stopped(platform, pair, cfg):
    (a, apw, aapi), (b, bpw, bapi) = pair
    assert aapi.delete("/v1/instances").status_code == 200
    res = publish_lines(cfg, a.name, apw, notes_lines(range(5000)))
    assert res.returncode == 0 and confirmed(res) == 5000, res.stdout
    time.sleep(2)  # as in the report: two seconds later, well inside Mosquitto's 30 s autosave
    tb, rb = publish_in_background(cfg, b.name, bpw, notes_lines(range(4000)), rate=1000)
    time.sleep(1)
    kill_broker(cfg)
    assert aapi.get("/v1/stream").json()["backlog"]["waiting"] == 5000
    assert aapi.post("/v1/instances", json={"count": 1}).status_code == 201
    exactly(cfg, a.name, 5000)
    tb.join(120)
    assert rb["res"].returncode == 0 and confirmed(rb["res"]) == 4000, rb["res"].stdout
    exactly(cfg, b.name, 4000)


def test_broker_killed_while_the_instances_keep_up(platform, pair, cfg):
    (a, apw, aapi), (b, bpw, bapi) = pair
    n = 24000
    ta, ra = publish_in_background(cfg, a.name, apw, notes_lines(range(n)), rate=2000)
    tb, rb = publish_in_background(cfg, b.name, bpw, notes_lines(range(n // 2)), rate=1000)
    time.sleep(4)
    kill_broker(cfg)
    ta.join(180)
    tb.join(180)
    # the publisher rode the crash out (reconnected, sent again what was not confirmed)
    assert ra["res"].returncode == 0 and confirmed(ra["res"]) == n, ra["res"].stdout
    assert rb["res"].returncode == 0 and confirmed(rb["res"]) == n // 2, rb["res"].stdout
    exactly(cfg, a.name, n)
    exactly(cfg, b.name, n // 2)


def test_broker_killed_while_the_instances_are_far_behind(platform, pair, cfg):
    (a, apw, aapi), (b, bpw, bapi) = pair
    n = 60000
    assert aapi.delete("/v1/instances").status_code == 200  # the backlog builds up while it is stopped ...
    res = publish_lines(cfg, a.name, apw, notes_lines(range(n)))
    assert res.returncode == 0 and confirmed(res) == n, res.stdout
    assert aapi.get("/v1/stream").json()["backlog"]["waiting"] == n
    tb, rb = publish_in_background(cfg, b.name, bpw, notes_lines(range(3000)), rate=1000)
    assert aapi.post("/v1/instances", json={"count": 1}).status_code == 201  # ... and it runs, far behind,
    waiting = aapi.get("/v1/stream").json()["backlog"]["waiting"]
    assert waiting >= 50000, waiting
    kill_broker(cfg)  # when the broker dies
    tb.join(120)
    assert rb["res"].returncode == 0 and confirmed(rb["res"]) == 3000, rb["res"].stdout
    exactly(cfg, a.name, n, timeout=300)
    exactly(cfg, b.name, 3000)
    reports = aapi.get("/v1/reports").json()["reports"]
    assert max(r["pending"] for r in reports) > 10000  # the backlog was in the reports


def test_every_other_process_on_the_path_killed_at_a_random_moment(platform, pair, cfg):
    from mysimbdp.sandbox import runtime
    from mysimbdp.services import managers

    (a, apw, aapi), (b, bpw, bapi) = pair
    assert aapi.post("/v1/instances", json={"count": 1}).status_code == 201  # two instances for a
    n = 100_000
    rng = random.Random()
    ta, ra = publish_in_background(cfg, a.name, apw, notes_lines(range(n)), rate=5000)
    tb, rb = publish_in_background(cfg, b.name, bpw, notes_lines(range(10000)), rate=500)
    parts = {p.name: p for p in managers.PARTS}
    killed = []
    steps = [("inbox-writer", (1, 4)), ("stream-controller", (1, 3)), ("s0", (1, 3)), ("s1", (1, 3))]
    rng.shuffle(steps)
    for what, window in steps:
        time.sleep(rng.uniform(*window))
        if what in ("s0", "s1"):  # each instance
            victim = f"mysimbdp-stream-{a.name}-{what}"
            runtime(cfg).client.containers.get(victim).kill(signal="SIGKILL")
            killed.append(victim)
        else:
            pid = parts[what].daemon(cfg).pid()
            os.kill(pid, signal.SIGKILL)
            killed.append(what)
    ta.join(240)
    tb.join(240)
    print("killed", killed, "publisher:", ra["res"].stdout)
    assert ra["res"].returncode == 0 and confirmed(ra["res"]) == n, (killed, ra["res"].stdout)
    assert rb["res"].returncode == 0 and confirmed(rb["res"]) == 10000, rb["res"].stdout
    exactly(cfg, a.name, n, timeout=300)
    exactly(cfg, b.name, 10000)


@pytest.mark.parametrize(
    "breakage",
    [
        ["DROP KEYSPACE {t}"],
        [  # the same table, other types: the driver then binds the writer's values by the new columns
            "DROP TABLE {t}.mysimbdp_inbox",
            "CREATE TABLE {t}.mysimbdp_inbox (lane int, bucket bigint, seq bigint, stream text, total bigint,"
            " sizes text, body text, PRIMARY KEY ((lane, bucket), seq))",
            "DROP TABLE {t}.mysimbdp_inbox_lanes",
            "CREATE TABLE {t}.mysimbdp_inbox_lanes (lane int PRIMARY KEY, first_seq text, head_seq text,"
            " head_total text)",
            "INSERT INTO {t}.mysimbdp_inbox_lanes (lane, head_seq, head_total) VALUES (1, 'x', '-1')",
        ],
        ["ALTER TABLE {t}.mysimbdp_inbox DROP stream"],  # a column the writer's statement names
    ],
    ids=["keyspace dropped", "inbox tables of other types", "a column dropped"],
)
def test_a_tenant_that_breaks_its_own_inbox_does_not_hold_up_the_others(platform, pair, cfg, breakage):
    """Its role may drop its own keyspace, or make its inbox tables again with other types: what it sends
    then is refused (and said so), the inbox writer does not stop, and the other tenant's stream goes on.
    (The writer checks a tenant's tables when it first sees the tenant and every 30 s after.)"""
    from mysimbdp import db, tenants
    from mysimbdp.services import managers

    (a, apw, aapi), (b, bpw, bapi) = pair
    writer = next(p for p in managers.PARTS if p.name == "inbox-writer").daemon(cfg)
    pid = writer.pid()
    own = db.connect(cfg, tenants.cassandra_login(cfg, a.name))
    try:
        for cql in breakage:
            own.execute(cql.format(t=a.name), timeout=60)
    finally:
        own.cluster.shutdown()
    tb, rb = publish_in_background(cfg, b.name, bpw, notes_lines(range(6000)), rate=1000)
    res = publish_lines(cfg, a.name, apw, notes_lines(range(500)), extra=("--wait-for-room", "5"))
    tb.join(120)
    assert res.returncode == 1 and "500 were refused" in res.stdout, res.stdout
    assert rb["res"].returncode == 0 and confirmed(rb["res"]) == 6000, rb["res"].stdout
    exactly(cfg, b.name, 6000)
    assert writer.pid() == pid  # never restarted
    assert aapi.get("/v1/stream").status_code == 200


def test_the_publisher_gives_up_past_its_bound_and_resumes_without_duplicates(platform, pair, cfg, tmp_path):
    from mysimbdp.services import mosquitto_broker

    (a, apw, aapi), _ = pair
    n = 30000
    data = tmp_path / "notes.csv"
    data.write_text("\n".join(notes_lines(range(n))) + "\n")
    args = ["-u", a.name, f"--password={apw}", str(data), "--no-header", "-q", "--rate", "3000"]
    args += ["--broker", f"{cfg.broker.host}:{cfg.broker.port}"]
    t, r = run_in_background(args + ["--max-outage", "3"])
    time.sleep(3)
    assert mosquitto_broker.stop(cfg)  # down, and kept down, longer than the publisher waits
    try:
        t.join(60)
    finally:
        mosquitto_broker.start(cfg)
    res = r["res"]
    assert res.returncode == 75, res.stdout + res.stderr
    m = re.search(r"The first (\d+) records of the file are confirmed; run the same command with --resume", res.stdout)
    assert m, res.stdout
    done = int(m.group(1))
    assert 0 < done < n, res.stdout
    assert json.loads((tmp_path / "notes.csv.mysimbdp-checkpoint").read_text())["records_confirmed"] == done
    again = run_cli(*args, "--resume", module="streamingestmanager.publish")
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{n - done} confirmed (after {done} confirmed before, skipped by --resume)" in again.stdout
    exactly(cfg, a.name, n)


def run_in_background(args):
    import threading

    result = {}

    def run():
        result["res"] = run_cli(*args, module="streamingestmanager.publish")

    t = threading.Thread(target=run)
    t.start()
    return t, result


def test_junk_in_a_tenants_own_inbox_tables_costs_it_nothing_and_the_others_nothing(platform, pair, cfg):
    """The lanes and offsets tables are the tenant's: rows for lanes that do not exist (many of them) and
    absurd heads and offsets are ignored by the writer, the controller and the instances."""
    from cassandra.concurrent import execute_concurrent_with_args

    from mysimbdp import db, tenants

    (a, apw, aapi), (b, bpw, bapi) = pair
    own = db.connect(cfg, tenants.cassandra_login(cfg, a.name))
    try:
        junk = own.prepare(f"INSERT INTO {a.name}.mysimbdp_inbox_offsets (lane, seq, total) VALUES (?, ?, ?)")
        execute_concurrent_with_args(own, junk, [(1000 + i, i, i) for i in range(20000)], concurrency=64)
        big = 2**63 - 1
        own.execute(
            f"INSERT INTO {a.name}.mysimbdp_inbox_lanes (lane, first_seq, head_seq, head_total)"
            f" VALUES (7, {-big - 1}, {big}, {big})"
        )
        own.execute(f"INSERT INTO {a.name}.mysimbdp_inbox_offsets (lane, seq, total) VALUES (3, {big}, -5)")
    finally:
        own.cluster.shutdown()
    assert aapi.delete("/v1/instances").status_code == 200
    assert aapi.post("/v1/instances", json={"count": 1}).status_code == 201  # it reads the junk as it starts
    tb, rb = publish_in_background(cfg, b.name, bpw, notes_lines(range(3000)), rate=1000)
    res = publish_lines(cfg, a.name, apw, notes_lines(range(3200)), rate=800, extra=("--batch", "50"))
    tb.join(120)
    assert res.returncode == 0 and confirmed(res) == 3200, res.stdout
    exactly(cfg, a.name, 3200)  # lane 7 and lane 3 included
    exactly(cfg, b.name, 3000)
    backlog = aapi.get("/v1/stream").json()["backlog"]
    assert backlog["waiting"] == 0 and backlog["written"] == 3200, backlog


def test_a_tenant_that_drops_its_inbox_mid_stream_gets_it_back(platform, pair, cfg):
    """The writer makes the table again; the instance whose reads failed ends and is started again, instead
    of living on without reading."""
    from mysimbdp import db, tenants

    (a, apw, aapi), _ = pair
    assert confirmed(publish_lines(cfg, a.name, apw, notes_lines(range(100)))) == 100
    exactly(cfg, a.name, 100)
    own = db.connect(cfg, tenants.cassandra_login(cfg, a.name))
    try:
        own.execute(f"DROP TABLE {a.name}.mysimbdp_inbox", timeout=60)
    finally:
        own.cluster.shutdown()
    res = publish_lines(cfg, a.name, apw, notes_lines(range(100, 400)))
    assert res.returncode == 0 and confirmed(res) == 300, res.stdout
    exactly(cfg, a.name, 400, timeout=120)
