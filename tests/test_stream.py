"""Stream ingestion against the real broker, Cassandra and containers: the API, the publisher, reports,
rejects, stop and start, the autoscaler."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import (
    STREAM_CONSTRAINTS,
    StreamApi,
    count_rows,
    notes_lines,
    publish_lines,
    run_cli,
    unique_name,
    wait_rows,
)

pytestmark = pytest.mark.services


def running(status: dict) -> list[str]:
    return [i["instance"] for i in status["instances"] if i["state"] == "running"]


def test_start_publish_rows_reports_and_stop(platform, stream_tenant, cfg):
    t, pw, api = stream_tenant()
    r = api.post("/v1/instances", json={"count": 1})
    assert r.status_code == 201, r.text
    st = r.json()
    assert running(st) == ["s0"] and st["running"] and st["desired"] == 1
    assert st["decisions"][0]["action"] == "start" and t.name in st["decisions"][0]["reason"]

    res = publish_lines(cfg, t.name, pw, notes_lines(range(1, 2001), bad_every=100))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2000 confirmed" in res.stdout
    assert wait_rows(cfg, t.name, "notes", 1980) == 1980
    assert count_rows(cfg, t.name, "rejected_messages") == 20  # kept aside, the stream went on
    time.sleep(2.5)
    reports = api.get("/v1/reports").json()["reports"]
    assert sum(r["messages"] for r in reports) == 1980 and sum(r["rejected"] for r in reports) == 20
    assert all(r["instance"] == "s0" and r["tenant"] == t.name for r in reports)
    assert any(r["avg_ms"] > 0 and r["p95_ms"] >= r["avg_ms"] for r in reports if r["messages"])
    st = api.get("/v1/stream").json()
    assert st["instances"][0]["health"] == "healthy" and st["instances"][0]["last_report"] is not None
    ops = json.loads(run_cli("reports", "--tenant", t.name, "--json").stdout)
    assert sum(r["messages"] for r in ops) == 1980

    # stopping the only instance goes below the policy's minimum (1): the autoscaler brings one back at once
    first_start = st["instances"][0]["started_at"]
    r = api.delete("/v1/instances/s0")
    assert r.status_code == 200, r.text

    def restarted(status: dict) -> bool:  # a new s0: the old one may still be draining for a moment
        return running(status) == ["s0"] and status["instances"][0]["started_at"] != first_start

    deadline = time.monotonic() + 30
    st = api.get("/v1/stream").json()
    while time.monotonic() < deadline and not restarted(st):
        time.sleep(0.5)
        st = api.get("/v1/stream").json()
    assert restarted(st), st["instances"]
    actions = [(d["action"], d["reason"]) for d in st["decisions"]]
    assert ("stop", f"tenant {t.name} stopped instance s0") in actions
    assert any(a == "scale_up" and "below the minimum of 1" in why for a, why in actions)


def test_messages_published_while_stopped_wait_for_the_next_start(platform, stream_tenant, cfg):
    t, pw, api = stream_tenant()
    assert api.post("/v1/instances", json={}).status_code == 201
    assert publish_lines(cfg, t.name, pw, notes_lines(range(1, 501))).returncode == 0
    assert wait_rows(cfg, t.name, "notes", 500) == 500
    r = api.delete("/v1/instances")  # stop the stream
    assert r.status_code == 200 and not r.json()["running"] and r.json()["parked"] == ["s0"]
    res = publish_lines(cfg, t.name, pw, notes_lines(range(501, 1501)))
    assert res.returncode == 0 and "1000 confirmed" in res.stdout  # kept in the tenant's inbox
    time.sleep(2)
    assert count_rows(cfg, t.name, "notes") == 500
    assert api.post("/v1/instances", json={"count": 1}).status_code == 201
    assert wait_rows(cfg, t.name, "notes", 1500) == 1500
    time.sleep(2)
    assert count_rows(cfg, t.name, "notes") == 1500


def test_publisher_refuses_bad_options_and_a_record_too_large_for_one_message(platform, stream_tenant, cfg):
    t, pw, api = stream_tenant()
    for bad in (["--broker", "localhost"], ["--broker", "127.0.0.1:notaport"], ["--rate", "0"], ["--rate", "nan"]):
        res = run_cli("-u", t.name, f"--password={pw}", "x.csv", *bad, module="streamingestmanager.publish")
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.startswith("mysimbdp-publish: error: --"), res.stderr
    assert api.post("/v1/instances", json={"count": 1}).status_code == 201
    good = notes_lines([1, 2, 3])
    huge = good[1].replace("body 2", "b" * (300 * 1024))  # one record larger than a broker packet
    res = publish_lines(
        cfg, t.name, pw, [good[0], huge, good[2], '4,"a quote left open,x,1,2024-01-01', *["y" * 1000] * 300]
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "2 confirmed" in res.stdout and "2 records were not sent: larger than 255 KiB" in res.stdout
    assert "at line(s) 2, 4" in res.stdout
    assert wait_rows(cfg, t.name, "notes", 2) == 2


def test_records_sent_before_the_stream_ever_started_wait_in_the_inbox(platform, stream_tenant, cfg):
    t, pw, api = stream_tenant()
    res = publish_lines(cfg, t.name, pw, notes_lines(range(1, 11)))
    assert res.returncode == 0 and "10 confirmed" in res.stdout, res.stdout
    st = api.get("/v1/stream").json()
    assert st["backlog"] == {"written": 10, "done": 0, "waiting": 10}, st["backlog"]
    assert "10 waiting" in run_cli("stream", "status", t.name).stdout
    assert api.post("/v1/instances", json={"count": 1}).status_code == 201
    assert wait_rows(cfg, t.name, "notes", 10) == 10
    time.sleep(1.5)
    assert api.get("/v1/stream").json()["backlog"]["waiting"] == 0


def test_publisher_wrong_password_and_bad_input(platform, stream_tenant, cfg, tmp_path):
    t, pw, api = stream_tenant()
    res = publish_lines(cfg, t.name, "wrong-password", notes_lines([1]))
    assert (
        res.returncode == 77
        and res.stderr.strip() == "mysimbdp-publish: error: wrong user name or password (check -u/-p)"
    )
    res = publish_lines(cfg, t.name, pw, notes_lines([1]), topic="../other/#")
    assert res.returncode == 2 and "invalid stream name" in res.stderr
    res = run_cli("-u", t.name, f"--password={pw}", str(tmp_path / "missing.csv"), module="streamingestmanager.publish")
    assert res.returncode != 0 and "is not a file" in res.stderr and "Traceback" not in res.stderr


def test_api_refuses_wrong_passwords_and_bad_requests_with_json(platform, stream_tenant, cfg, make_tenant):
    t, pw, api = stream_tenant()
    other, opw, other_api = stream_tenant()
    bare, bpw = make_tenant()  # no stream app
    bare_api = StreamApi(cfg, bare.name, bpw)
    cases = [
        (StreamApi(cfg, t.name, "wrong").get("/v1/stream"), 401, "password"),
        (StreamApi(cfg, unique_name("nobody"), "x" * 10).post("/v1/instances", json={}), 401, "password"),
        (bare_api.post("/v1/instances", json={"count": 1}), 409, "no stream ingest app"),
        (api.delete("/v1/instances/s7"), 404, "no running instance"),
        (api.delete("/v1/instances/../../etc"), 404, None),
        (api.post("/v1/instances", json={"count": "many"}), 400, "count"),
        (api.post("/v1/instances", json={"count": 0}), 400, "count"),
        (api.post("/v1/instances", data="not json", headers={"Content-Type": "application/json"}), 400, "JSON"),
        (api.get(f"/v1/tenants/{other.name}/stream"), 404, "no tenant"),  # another tenant's stream
        (api.post(f"/v1/tenants/{other.name}/instances", json={}), 404, "no tenant"),
        (api.get("/v1/reports?limit=lots"), 400, "limit"),
        (api.get("/v1/nothing"), 404, None),
    ]
    for r, status, fragment in cases:
        assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
        body = r.json()
        assert body["error"] and (fragment is None or fragment in body["error"] + body.get("hint", "")), body
    # passwords are never taken from the URL
    r = StreamApi(cfg, "", "").get(f"/v1/stream?user={t.name}&password={pw}")
    assert r.status_code == 401
    # the too-many-instances case names the maximum
    assert api.post("/v1/instances", json={"count": 1}).status_code == 201
    r = api.post("/v1/instances", json={"count": 1})
    assert r.status_code == 409 and "maximum is 1" in r.json()["error"]


def test_a_crashing_stream_app_can_be_diagnosed_from_its_log(platform, stream_tenant, cfg):
    t, pw, api = stream_tenant("crasher")
    api.post("/v1/instances", json={"count": 1})  # it never consumes: answered 202 after a while
    deadline = time.monotonic() + 60
    log = None
    while time.monotonic() < deadline:
        r = api.get("/v1/instances/s0/log")
        if r.status_code == 200 and "this stream app has a bug" in r.text:
            log = r
            break
        time.sleep(1)
    assert log is not None, (r.status_code, r.text)
    assert log.headers["Content-Type"].startswith("text/plain") and "Traceback" in log.text
    decisions = api.get("/v1/decisions").json()["decisions"]
    assert any(d["action"] == "restart" and "exited with status 1" in d["reason"] for d in decisions), decisions
    for bad in ("s7", "nope", "s0x"):
        r = api.get(f"/v1/instances/{bad}/log")
        assert r.status_code == 404 and r.json()["error"], (bad, r.text)
    assert api.delete("/v1/instances").status_code in (200, 202)


def test_operator_acts_for_every_tenant(platform, stream_tenant, cfg):
    from mysimbdp import auth

    t, pw, api = stream_tenant()
    op = StreamApi(cfg, "operator", auth.operator_api_password(cfg.paths.secrets))
    r = op.post(f"/v1/tenants/{t.name}/instances", json={"count": 1})
    assert r.status_code == 201 and running(r.json()) == ["s0"]
    assert "the operator" in r.json()["decisions"][0]["reason"]
    assert op.get("/v1/stream").status_code == 400  # the operator must say for whom
    assert StreamApi(cfg, "operator", "wrong-password").get(f"/v1/tenants/{t.name}/stream").status_code == 401
    r = op.delete(f"/v1/tenants/{t.name}/instances")
    assert r.status_code == 200 and running(r.json()) == []
    # and the same from the command line
    res = run_cli("stream", "start", t.name, "--json")
    assert res.returncode == 0 and running(json.loads(res.stdout)) == ["s0"]
    res = run_cli("stream", "stop", t.name)
    assert res.returncode == 0 and "stopped" in res.stdout


def _publish_as(cfg, user, password, topic) -> bool:
    """Publish once at QoS 1 on a fresh connection: True if the broker accepted it."""
    deadline = time.monotonic() + 10
    while True:  # the broker reloads its users on a signal: the first attempts may be refused
        result = {}
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        c.username_pw_set(user, password)
        c.on_connect = lambda cl, u, f, rc, p: result.setdefault("connack", rc)
        c.on_publish = lambda cl, u, mid, rc, p: result.setdefault("puback", rc)
        c.on_disconnect = lambda cl, u, f, rc, p: result.setdefault("dropped", rc)
        c.connect(cfg.broker.host, cfg.broker.port)
        while "connack" not in result and time.monotonic() < deadline:
            c.loop(0.1)
        if not result["connack"].is_failure:
            break
        assert time.monotonic() < deadline, result
        time.sleep(0.3)
    c.publish(topic, b"{}", qos=1)
    end = time.monotonic() + 3
    while "puback" not in result and "dropped" not in result and time.monotonic() < end:
        c.loop(0.1)
    accepted = "puback" in result and not result["puback"].is_failure and "dropped" not in result
    c.disconnect()
    return accepted


def test_an_instance_may_write_only_its_own_reports(platform, stream_tenant, cfg):
    from mysimbdp import broker, credentials
    from mysimbdp.services import mosquitto_broker

    a, apw, _ = stream_tenant()
    b, bpw, _ = stream_tenant()
    user = broker.instance_user(a.name, "s5")
    mosquitto_broker.put_user(
        cfg, broker.app_instance_user(a.name, "s5", credentials.mosquitto_hash("inst-pass", 1000))
    )
    seen = []
    b_user = broker.instance_user(b.name, "s6")  # watches b's data ...
    mosquitto_broker.put_user(
        cfg, broker.app_instance_user(b.name, "s6", credentials.mosquitto_hash("watch-pass", 1000))
    )
    mosquitto_broker.wait_for_login(cfg, b_user, "watch-pass")
    watchers = []
    for login, topic in (
        ((b_user, "watch-pass"), f"inbox/{b.name}/#"),
        (mosquitto_broker.service_login(cfg), f"reports/{b.name}/#"),
    ):  # ... and its reports
        w = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        w.username_pw_set(*login)
        w.on_message = lambda cl, u, m: seen.append(m.payload)
        w.connect(cfg.broker.host, cfg.broker.port)
        w.subscribe(topic, qos=1)
        w.loop_start()
        watchers.append(w)
    try:
        time.sleep(0.5)
        assert _publish_as(cfg, user, "inst-pass", f"reports/{a.name}/s5")  # its own reports topic
        assert not _publish_as(cfg, user, "inst-pass", f"reports/{a.name}/s0")  # a sibling's
        assert not _publish_as(cfg, user, "inst-pass", f"reports/{b.name}/s0")  # another tenant's
        assert not _publish_as(cfg, user, "inst-pass", f"tenants/{b.name}/in/x")  # another tenant's data
        assert not _publish_as(cfg, user, "inst-pass", f"tenants/{a.name}/in/x")  # not even its own tenant's data
        assert not _publish_as(cfg, user, "inst-pass", f"inbox/{a.name}/plan")  # nor the platform's notices
        assert not _publish_as(cfg, user, "inst-pass", f"inbox/{a.name}/notify")
        time.sleep(1)
        assert seen == []
        # and reading: nothing of b reaches a's instance credentials
        got = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        c.username_pw_set(user, "inst-pass")
        c.on_message = lambda cl, u, m: got.append(m.topic)
        c.connect(cfg.broker.host, cfg.broker.port)
        c.subscribe(
            [
                (f"tenants/{b.name}/#", 1),
                (f"reports/{b.name}/#", 1),
                (f"inbox/{b.name}/#", 1),
                (f"confirm/{b.name}/#", 1),
            ]
        )
        c.loop_start()
        time.sleep(0.5)
        assert publish_lines(cfg, b.name, bpw, notes_lines([1])).returncode == 0  # b's notice (b's watcher has it)
        time.sleep(1)
        c.loop_stop()
        assert got == [] and len(seen) == 1
    finally:
        for w in watchers:
            w.loop_stop()
        mosquitto_broker.remove_users(cfg, user)
        mosquitto_broker.remove_users(cfg, b_user)


def test_another_tenant_cannot_take_a_share_of_a_stream_or_its_sessions(platform, stream_tenant, cfg):
    """Mosquitto grants any subscription (it checks the right to read only when delivering, and then drops
    silently) and lets any user connect with any client id. A tenant subscribing to everything, or
    connecting with the ids instances would have if they were guessable, must cost the victim nothing."""
    a, apw, _ = stream_tenant()
    b, bpw, bapi = stream_tenant()
    assert bapi.post("/v1/instances", json={"count": 1}).status_code == 201
    got = []
    thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    thief.username_pw_set(a.name, apw)
    thief.on_message = lambda cl, u, m: got.append(m.topic)
    thief.connect(cfg.broker.host, cfg.broker.port)
    thief.subscribe(
        [(f"$share/{b.name}/tenants/{b.name}/in/#", 1), ("$share/x/#", 1), ("#", 1), (f"confirm/{b.name}/#", 0)]
    )
    thief.loop_start()
    try:
        for slot in ("s0", "s1"):  # the client ids instances would have if they were guessable
            c = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"mysimbdp-{b.name}-{slot}",
                protocol=mqtt.MQTTv311,
                clean_session=True,
            )
            c.username_pw_set(a.name, apw)
            c.connect(cfg.broker.host, cfg.broker.port)
            c.loop(0.5)
            c.disconnect()
        time.sleep(1)
        res = publish_lines(cfg, b.name, bpw, notes_lines(range(1, 401)))
        assert res.returncode == 0 and "400 confirmed" in res.stdout, res.stdout
        assert wait_rows(cfg, b.name, "notes", 400, timeout=60) == 400  # none went to the thief's "share"
        assert got == []
    finally:
        thief.loop_stop()
        thief.disconnect()


def test_autoscaler_adds_an_instance_under_load_and_removes_it_when_idle(platform, stream_tenant, cfg):
    cons = {
        **STREAM_CONSTRAINTS,
        "stream": {
            "report_interval_seconds": 1,
            "memory_mb": 256,
            "cpus": 0.25,  # slow instances: easy to overload
            "autoscale": {
                "enabled": True,
                "min_instances": 1,
                "max_instances": 2,
                "scale_up_avg_ms": 30,
                "scale_up_backlog": 100,
                "scale_down_rate": 1000,
                "cooldown_seconds": 3,
            },
        },
    }
    t, pw, api = stream_tenant(cons=cons)
    assert api.post("/v1/instances", json={"count": 1}).status_code == 201
    res = publish_lines(cfg, t.name, pw, notes_lines(range(1, 20001)))
    assert res.returncode == 0, res.stdout
    deadline = time.monotonic() + 90
    ups = []
    while time.monotonic() < deadline and not ups:
        ups = [d for d in api.get("/v1/decisions").json()["decisions"] if d["action"] == "scale_up"]
        time.sleep(0.5)
    assert ups, "no scale-up under load"
    assert ups[0]["instances_before"] == 1 and ups[0]["instances_after"] == 2
    assert "ms >" in ups[0]["reason"] or "held unwritten" in ups[0]["reason"]
    assert wait_rows(cfg, t.name, "notes", 20000, timeout=180) == 20000
    deadline = time.monotonic() + 60
    downs = []
    while time.monotonic() < deadline and not downs:
        downs = [d for d in api.get("/v1/decisions").json()["decisions"] if d["action"] == "scale_down"]
        time.sleep(1)
    assert downs and "idle" in downs[0]["reason"] and downs[0]["instances_after"] == 1
    time.sleep(3)
    st = api.get("/v1/stream").json()
    assert len(running(st)) == 1  # never below the minimum, and the extra one left gracefully
    assert count_rows(cfg, t.name, "notes") == 20000  # nothing lost across scale-up and scale-down
