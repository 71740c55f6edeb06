"""Stream ingestion benchmarks: three rates in the same run with the same payloads (real flight lines) at
QoS 1, then latency at a fixed rate, then autoscaling after a step in load.

The publishers are bench/loadgen (Go, compiled), as many processes as --publishers says, so that making
the load does not take the CPU the platform needs; the subscribers of (a) and the platform use paho.

(a) raw broker: publishers -> Mosquitto -> as many plain subscribers as --instances, sharing a topic,
    that only count (paho, like the platform's inbox writer); (a1) one record per message, (a2) envelopes
    of 200 records, as (c) sends them;
(b) raw Cassandra: the same rows written by a plain concurrent prepared-statement writer, no broker;
(c) end to end: publishers (envelopes of 200 records, each counted when the inbox writer confirmed it)
    -> Mosquitto -> the inbox writer -> the tenant's inbox in Cassandra -> the tenant's sandboxed stream
    app instances -> rows in Cassandra, every row verified by count.

    .venv/bin/python bench/stream_bench.py [--messages 200000] [--publishers 3] [--instances 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import threading
import time
from datetime import timezone

import common
import requests

APP = common.ROOT / "bench" / "apps" / "flightstream"
BATCH = 200  # records per envelope, mysimbdp-publish's default
BASE_CONS = {
    "formats": ["csv"],
    "max_files": {"count": 10, "per": "staged"},
    "max_file_size_bytes": 1 << 26,
    "stream": {
        "report_interval_seconds": 0.5,
        "memory_mb": 512,
        "cpus": 1.0,
        "autoscale": {"enabled": True, "min_instances": 1, "max_instances": 1},
    },
}


def lines(n: int) -> list[bytes]:
    data = common.nycflights().read_bytes().split(b"\n")[1:]
    data = [ln for ln in data if ln]
    out = []
    while len(out) < n:
        out.extend(data[: n - len(out)])
    return out


# --- publishers: bench/loadgen, a compiled MQTT QoS 1 publisher (Go, built here on first use) ---------------


def loadgen() -> str:
    exe = common.OUT / "loadgen"
    src = common.ROOT / "bench" / "loadgen" / "main.go"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        common.OUT.mkdir(parents=True, exist_ok=True)
        subprocess.run(["go", "build", "-o", str(exe), "."], cwd=common.ROOT / "bench" / "loadgen", check=True)
    return str(exe)


def publish(c, user, password, topic, total, publishers, rate=None, first_seq=0, batch=0, confirm=False) -> dict:
    """``publishers`` processes send ``total`` real flight lines as "<seq>,<sent_us>,<line>" at QoS 1,
    numbered from ``first_seq`` (rows are keyed by it: two phases of one run must not overlap). ``batch``:
    envelopes of that many records, as mysimbdp-publish sends them; ``confirm``: a record counts as acked
    when the inbox writer confirmed it (it is in Cassandra), as mysimbdp-publish counts."""
    exe = loadgen()
    share = total // publishers
    procs = []
    for k in range(publishers):
        count = share if k < publishers - 1 else total - share * (publishers - 1)
        argv = [
            exe,
            "-broker",
            f"tcp://{c.broker.host}:{c.broker.port}",
            "-user",
            user,
            "-topic",
            topic,
            "-file",
            str(common.nycflights()),
            "-start",
            str(first_seq + k * share),
            "-count",
            str(count),
        ]
        if rate:
            argv += ["-rate", str(rate / publishers)]
        if batch:
            argv += ["-batch", str(batch), "-window", "64"]
        if confirm:
            argv += ["-confirm"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env={"LOADGEN_PASSWORD": password}))
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=900)
        results.append(json.loads(out))
    agg = {k: sum(r[k] for r in results) for k in ("sent", "acked", "failed")}
    agg["t0"] = min(r["t0"] for r in results)
    agg["t1"] = max(r["t1"] for r in results)
    return agg


# --- (a) raw broker ------------------------------------------------------------------------------------------


def _count(host, port, user, password, topic, out, ready):
    """Count messages until 3 s pass without one (the figure uses the last one's time, not this wait)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got = [0, None, None]

    def on_message(cl, u, m):
        p = m.payload
        got[0] += p[: p.find(b"\n")].count(b",") + 1 if p.startswith(b"MB1 ") else 1  # records of an envelope
        now = time.time()
        if got[1] is None:
            got[1] = now
        got[2] = now

    cl = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    cl.username_pw_set(user, password)
    cl.on_message = on_message
    cl.on_subscribe = lambda *a: ready.release()
    cl.connect(host, port)
    cl.subscribe(topic, qos=1)
    cl.loop_start()
    started = time.time()
    while time.time() - (got[2] or started) < (3 if got[2] else 600):
        time.sleep(0.2)
    cl.loop_stop()
    out.put({"received": got[0], "first": got[1], "last": got[2]})


def raw_broker(c, total, publishers, subscribers, batch=0) -> float:
    """Publishers -> Mosquitto -> ``subscribers`` counting paho clients sharing the topic (paho, as the
    platform's inbox writer). ``batch``: envelopes of that many records, as in (c). The peer has its own
    broker user and topics (``svc.bench``, ``bench/#``), so the platform's inbox writer does not see them.
    Each session may queue 100,000 messages (the platform's bound): one Python subscriber behind two
    compiled publishers of one record per message falls that far behind, and the broker drops the rest."""
    from mysimbdp import broker
    from mysimbdp.services import mosquitto_broker

    topic = f"bench/raw{batch}"
    reader, reader_pw = mosquitto_broker.service_login(c, broker.BENCH_USER)
    user, password = reader, reader_pw
    mosquitto_broker.wait_for_login(c, reader, reader_pw)
    out, ready = mp.Queue(), mp.Semaphore(0)
    args = (c.broker.host, c.broker.port, reader, reader_pw, f"$share/bench/{topic}", out, ready)
    subs = [mp.Process(target=_count, args=args) for _ in range(subscribers)]
    for sub in subs:
        sub.start()
    for _ in subs:
        ready.acquire(timeout=10)
    time.sleep(0.5)
    pub = publish(c, user, password, topic, total, publishers, batch=batch)
    results = [out.get(timeout=900) for _ in subs]
    for sub in subs:
        sub.join()
    received = sum(r["received"] for r in results)
    assert received == total, ({"received": received, "subscribers": results}, pub)
    return total / (max(r["last"] for r in results) - pub["t0"])


# --- (b) raw Cassandra -----------------------------------------------------------------------------------------


def _write(ks, login, rows, out, barrier, batch=1):
    sys.path.insert(0, str(common.ROOT))
    from mysimbdp import config, db

    cfg = config.load()
    s = db.connect(cfg, login)
    stmt = s.prepare(f"INSERT INTO {ks}.flights ({', '.join(FIELDS)}) VALUES ({', '.join('?' for _ in FIELDS)})")
    slots = threading.Semaphore(64)
    done = threading.Event()
    left = [len(rows)]
    lock = threading.Lock()

    def finished(_=None):
        slots.release()
        with lock:
            left[0] -= 1
            if left[0] == 0:
                done.set()

    from cassandra.query import BatchStatement, BatchType

    groups = [rows[i : i + batch] for i in range(0, len(rows), batch)]
    left[0] = len(groups)
    barrier.wait()
    t0 = time.time()
    for group in groups:
        slots.acquire()
        if batch == 1:
            f = s.execute_async(stmt, group[0])
        else:
            b = BatchStatement(batch_type=BatchType.UNLOGGED)
            for values in group:
                b.add(stmt, values)
            f = s.execute_async(b)
        f.add_callbacks(finished, finished)
    done.wait()
    out.put((t0, time.time()))
    s.cluster.shutdown()


def raw_cassandra(c, total, writers, batch=1) -> float:
    sys.path.insert(0, str(APP))
    sys.path.insert(0, str(common.ROOT / "tenant_apps" / "sdk"))
    from table import FIELDS as F, FLIGHTS
    from mysimbdp import db

    global FIELDS
    FIELDS = F
    ks = "benchpeer"
    s = db.connect(c)
    s.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}"
    )
    s.execute(f"DROP TABLE IF EXISTS {ks}.flights")
    s.execute(FLIGHTS.create_cql(ks))
    s.cluster.shutdown()
    convert = FLIGHTS.converter(F)
    import csv

    rows = [
        convert(next(csv.reader([b"%d,%d,%s" % (i, 0, ln) for ln in [line]][0].decode().splitlines())))
        for i, line in enumerate(lines(total))
    ]
    login = db.operator_login(c)
    out, barrier = mp.Queue(), mp.Barrier(writers + 1)
    share = total // writers
    procs = [
        mp.Process(
            target=_write,
            args=(ks, login, rows[k * share : (k + 1) * share if k < writers - 1 else total], out, barrier, batch),
        )
        for k in range(writers)
    ]
    for p in procs:
        p.start()
    barrier.wait()
    times = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    n = common.count(c, ks, "flights")
    assert n == total, n
    return total / (max(t[1] for t in times) - min(t[0] for t in times))


# --- (c) end to end ----------------------------------------------------------------------------------------------


def stream_api(c, user, password, method, path, **kw):
    r = requests.request(method, c.stream_url() + path, auth=(user, password), timeout=120, **kw)
    if r.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
    return r.json()


class Reports:
    """Every report of a tenant's instances (reports/<tenant>/#), read as the stream controller reads them: a
    tenant's own broker user may only publish."""

    def __init__(self, c, user, password) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from mysimbdp.services import mosquitto_broker

        self.messages = 0
        self.first_message_at: dict[str, float] = {}
        self.cl = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        self.cl.username_pw_set(*mosquitto_broker.service_login(c))
        self.cl.on_message = self._on
        self.cl.connect(c.broker.host, c.broker.port)
        self.cl.subscribe(f"reports/{user}/#", qos=1)
        self.cl.loop_start()

    def _on(self, cl, u, m) -> None:
        r = json.loads(m.payload)
        self.messages += r["messages"]
        if r.get("first_message_at"):
            self.first_message_at.setdefault(f"{r['instance']}@{r['started_at']}", r["first_message_at"])

    def close(self) -> None:
        self.cl.loop_stop()


def end_to_end(c, total, publishers, instances, batch=BATCH) -> tuple[float, dict]:
    cons = json.loads(json.dumps(BASE_CONS))
    cons["stream"]["autoscale"].update(min_instances=instances, max_instances=instances)
    user, password = common.tenant(c, "bstr", cons, stream_app=APP)
    reports = Reports(c, user, password)
    try:
        stream_api(c, user, password, "POST", "/v1/instances", json={"count": instances})
        time.sleep(2)
        if batch:
            pub = publish(c, user, password, f"tenants/{user}/batch/e2e", total, publishers, batch=batch, confirm=True)
        else:  # plain MQTT clients: one record per message, acknowledged by the broker only
            pub = publish(c, user, password, f"tenants/{user}/in/e2e", total, publishers)
        assert pub["acked"] == total, pub
        deadline = time.time() + 600
        while reports.messages < total and time.time() < deadline:
            time.sleep(0.1)
        done = time.time()
        n = common.count(c, user, "flights")
        assert n == total, (n, total)
        return total / (done - pub["t0"]), {"publish_rate": round(total / (pub["t1"] - pub["t0"]))}
    finally:
        reports.close()
        common.drop_tenant(c, user)


# --- latency ------------------------------------------------------------------------------------------------------


def latency(c, rate: int, seconds: int) -> tuple[float, float, float]:
    cons = json.loads(json.dumps(BASE_CONS))
    user, password = common.tenant(c, "blat", cons, stream_app=APP)
    try:
        stream_api(c, user, password, "POST", "/v1/instances", json={"count": 1})
        time.sleep(2)
        total = rate * seconds
        pub = publish(c, user, password, f"tenants/{user}/batch/lat", total, 1, rate=rate, batch=BATCH, confirm=True)
        assert pub["acked"] == total
        deadline = time.time() + 60
        while common.count(c, user, "flights") < total and time.time() < deadline:
            time.sleep(0.5)
        from mysimbdp import db

        s = db.connect(c)
        lat = []
        for row in s.execute(f"SELECT sent_us, WRITETIME(carrier) AS wt FROM {user}.flights"):
            lat.append((row.wt - row.sent_us) / 1000)
        s.cluster.shutdown()
        lat.sort()
        assert len(lat) == total
        return lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1]
    finally:
        common.drop_tenant(c, user)


# --- autoscaling ---------------------------------------------------------------------------------------------------


def autoscaling(c, publishers: int) -> dict:
    cons = json.loads(json.dumps(BASE_CONS))
    cons["stream"]["report_interval_seconds"] = 1
    cons["stream"]["autoscale"].update(
        min_instances=1,
        max_instances=3,
        scale_up_avg_ms=20,
        scale_up_backlog=200,
        scale_down_rate=200,
        cooldown_seconds=5,
    )
    user, password = common.tenant(c, "bauto", cons, stream_app=APP)
    watcher = Reports(c, user, password)
    firsts = watcher.first_message_at
    try:
        stream_api(c, user, password, "POST", "/v1/instances", json={"count": 1})
        time.sleep(2)
        topic = f"tenants/{user}/batch/step"
        low = publish(c, user, password, topic, 2000, 1, rate=200, batch=BATCH, confirm=True)  # 10 s of light load
        high = publish(c, user, password, topic, 150000, publishers, first_seq=2000, batch=BATCH, confirm=True)
        time.sleep(45)  # idle: it should scale back down
        total = low["acked"] + high["acked"]
        deadline = time.time() + 120
        while common.count(c, user, "flights") < total and time.time() < deadline:
            time.sleep(1)
        rows = common.count(c, user, "flights")
        decisions = stream_api(c, user, password, "GET", "/v1/decisions?limit=100")["decisions"]
        ups = [d for d in decisions if d["action"] == "scale_up"]
        downs = [d for d in decisions if d["action"] == "scale_down"]
        from datetime import datetime

        delays = []
        for d in ups:
            at = datetime.fromisoformat(d["at"]).replace(tzinfo=timezone.utc).timestamp()
            after = [f for f in firsts.values() if f >= at]
            if after:
                delays.append(min(after) - at)
        assert low["acked"] == 2000 and high["acked"] == 150000, (low, high)
        return {
            "published": total,
            "rows": rows,
            "lost": total - rows,
            "scale_ups": len(ups),
            "scale_downs": len(downs),
            "decision_to_consuming_s": delays,
            "reasons": [d["reason"] for d in decisions if d["action"] in ("scale_up", "scale_down")],
        }
    finally:
        watcher.close()
        common.drop_tenant(c, user)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200000)
    ap.add_argument("--publishers", type=int, default=3)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--writers", type=int, default=2)
    ap.add_argument("--only", choices=["rates", "plain", "latency", "autoscale"])
    args = ap.parse_args()
    c = common.cfg()
    common.up(c)
    lines(args.messages)  # download before timing
    if args.only in (None, "rates"):
        print(f"# {args.messages:,} real flight lines at QoS 1; {args.publishers} publisher processes")
        a1 = raw_broker(c, args.messages, args.publishers, args.instances)
        common.figure(
            f"stream (a1) raw broker, one record per message: publishers -> {args.instances} counting subscribers",
            a1,
            "msg/s",
        )
        a = raw_broker(c, args.messages, args.publishers, args.instances, batch=BATCH)
        common.figure(
            f"stream (a2) raw broker, {BATCH} records per message: publishers -> {args.instances} counting subscribers",
            a,
            "records/s",
        )
        b1 = raw_cassandra(c, args.messages, args.writers)
        common.figure(
            f"stream (b1) raw Cassandra: plain prepared writer x{args.writers}, one row a request", b1, "rows/s"
        )
        b = raw_cassandra(c, args.messages, args.writers, batch=100)
        common.figure(
            f"stream (b2) raw Cassandra: prepared writer x{args.writers}, UNLOGGED batches of 100 rows", b, "rows/s"
        )
        e2e, extra = end_to_end(c, args.messages, args.publishers, args.instances)
        common.figure(
            f"stream (c) end to end, {BATCH} records per message, confirmed by the inbox, {args.instances} instances,"
            " rows verified",
            e2e,
            "records/s",
            **extra,
        )
        common.figure("stream (c) / min(a2, b2)", e2e / min(a, b), "(target >= 0.5)")
        common.figure("stream (c) / min(a1, b1)", e2e / min(a1, b1), "(the peers one record per message/row)")
    if args.only in (None, "plain"):
        plain, extra = end_to_end(c, args.messages, args.publishers, args.instances, batch=0)
        common.figure(
            f"stream (c1) end to end, one record per message (plain MQTT clients), {args.instances} instances",
            plain,
            "records/s",
            **extra,
        )
    if args.only in (None, "latency"):
        p50, p99, worst = latency(c, 1000, 30)
        common.figure("stream latency publish -> row at 1000 msg/s, p50", p50, "ms")
        common.figure("stream latency publish -> row at 1000 msg/s, p99", p99, "ms (target <= 100)")
        common.figure("stream latency publish -> row at 1000 msg/s, max", worst, "ms")
    if args.only in (None, "autoscale"):
        r = autoscaling(c, args.publishers)
        common.figure("autoscaling: scale-ups / scale-downs", f"{r['scale_ups']} / {r['scale_downs']}", "")
        if r["decision_to_consuming_s"]:
            common.figure(
                "autoscaling: decision -> new instance consuming (max)",
                max(r["decision_to_consuming_s"]),
                "s (target <= 5)",
                all=[round(x, 2) for x in r["decision_to_consuming_s"]],
                note="scale-ups whose new instance got a message while the load lasted",
            )
        common.figure(
            "autoscaling: messages lost across scale-up and scale-down",
            r["lost"],
            "(target 0)",
            published=r["published"],
            rows=r["rows"],
        )
        for reason in r["reasons"]:
            print("   decision:", reason)
    return 0


if __name__ == "__main__":
    sys.exit(main())
