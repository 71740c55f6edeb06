"""The demo (`make demo`): two tenants, batch and stream, on the running platform, receipts at the end.

1. creates the sample tenants `airline` and `weather` afresh (constraints/, tenant_apps/);
2. sends each tenant's tenant_apps/<tenant>/client-input-dir with fetchdata, as the tenant would
   (a file that breaks a constraint and malformed rows included);
3. starts each tenant's stream app over the stream API and streams tenant_apps/<tenant>/stream-sample.csv
   with mysimbdp-publish (each record confirmed once it is in the tenant's inbox in Cassandra);
4. prints the receipts: the batch jobs, the rows in each keyspace, each stream's state and inbox, the
   stream reports and the scaling decisions;
5. reads back through the query API, as each tenant: a date-range query, a page through a table, an
   object stored and fetched (whole and a range), and the table exported.

The tenants' passwords are generated and kept in state/secrets/demo-tenants.json (0600).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mysimbdp import config, constraints, credentials, db  # noqa: E402
from mysimbdp.tenants import Registry  # noqa: E402

TENANTS = {"airline": "flights", "weather": "observations"}


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run(*argv: str) -> int:
    print("$ " + " ".join(a if "password" not in a else a.split("=")[0] + "=***" for a in argv), flush=True)
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT).returncode


def main() -> int:
    cfg = config.load()
    session = db.connect(cfg)
    reg = Registry(cfg, session)
    secrets_file = cfg.paths.secrets / "demo-tenants.json"
    passwords = {t: credentials.generate_password(12) for t in TENANTS}
    credentials.write_secret(secrets_file, passwords)

    step("creating the sample tenants (afresh; their apps are checked and dry run on their samples first)")
    for name in TENANTS:
        if reg.find(name) is not None:
            reg.delete(name)
        app = ROOT / "tenant_apps" / name / "app"
        t = reg.create(
            name,
            passwords[name],
            constraints.load(ROOT / "constraints" / f"{name}.json"),
            batch_app=app,
            stream_app=app,
            show=print,
        )
        print(f"tenant {t.name}: keyspace {t.name}, batch app {t.batch_app}, stream app {t.stream_app}")
    print(f"(their passwords: {secrets_file})")

    step("stream: each tenant starts its stream app (one instance; the autoscaler may add more)")
    started = time.monotonic()
    for name in TENANTS:
        r = requests.post(
            cfg.stream_url() + "/v1/instances", auth=(name, passwords[name]), json={"count": 1}, timeout=120
        )
        body = r.json()
        print(
            f"POST /v1/instances as {name}: {r.status_code}, running "
            + ", ".join(i["instance"] for i in body.get("instances", []) if i["state"] == "running")
        )

    step("batch: each tenant sends its folder with fetchdata")
    for name in TENANTS:
        folder = ROOT / "tenant_apps" / name / "client-input-dir"
        run("fetchdata", "-u", name, f"--password={passwords[name]}", "-d", str(folder), "--server", cfg.batch_url())

    step("stream: each tenant publishes a CSV file (a record counts once it is safe in Cassandra)")
    cooldown = max(float(reg.get(n).constraints.autoscale.cooldown_seconds) for n in TENANTS)
    time.sleep(max(0.0, started + cooldown + 1 - time.monotonic()))  # past the cooldown of the start
    for name in TENANTS:
        run(
            "streamingestmanager.publish",
            "-u",
            name,
            f"--password={passwords[name]}",
            str(ROOT / "tenant_apps" / name / "stream-sample.csv"),
            "--topic",
            "demo",
            "--broker",
            f"{cfg.broker.host}:{cfg.broker.port}",
        )

    step("waiting for the batch jobs, the streams, and the autoscaler (up under the burst, down when idle)")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        jobs = [
            j
            for name in TENANTS
            for j in requests.get(cfg.batch_url() + "/v1/jobs", auth=(name, passwords[name]), timeout=30).json()["jobs"]
        ]
        if jobs and all(j["status"] in ("succeeded", "failed") for j in jobs):
            break
        time.sleep(1)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        actions = [
            d["action"]
            for d in requests.get(
                cfg.stream_url() + "/v1/decisions", auth=("airline", passwords["airline"]), timeout=30
            ).json()["decisions"]
        ]
        if "scale_down" in actions or ("scale_up" not in actions and time.monotonic() > deadline - 45):
            break
        time.sleep(1)
    time.sleep(3)  # the last reports
    step("receipts: batch jobs")
    for name in TENANTS:
        subprocess.run([sys.executable, "-m", "mysimbdp", "jobs", "--tenant", name], cwd=ROOT)
    print(f"\n(one line per file also in {cfg.paths.ingestion_log()}:)")
    ids = {j["job_id"] for j in jobs}
    with open(cfg.paths.ingestion_log(), encoding="utf-8") as fh:
        for line in fh:
            if line.rsplit(" job ", 1)[-1].split()[0] in ids:
                print("  " + line.rstrip())

    step("rows in the tenants' keyspaces")
    for name, table in TENANTS.items():
        n = session.execute(f"SELECT count(*) FROM {name}.{table}", timeout=60).one()[0]
        rejected = session.execute(f"SELECT count(*) FROM {name}.rejected_messages", timeout=60).one()[0]
        print(f"  {name}.{table}: {n} rows; {name}.rejected_messages (malformed stream lines kept aside): {rejected}")

    step("streams: instances and inbox (records written, turned into rows, waiting)")
    for name in TENANTS:
        subprocess.run([sys.executable, "-m", "mysimbdp", "stream", "status", name], cwd=ROOT)

    step("stream reports (newest first)")
    for name in TENANTS:
        subprocess.run([sys.executable, "-m", "mysimbdp", "reports", "--tenant", name, "--limit", "6"], cwd=ROOT)

    step("scaling decisions")
    for name in TENANTS:
        decisions = requests.get(cfg.stream_url() + "/v1/decisions", auth=(name, passwords[name]), timeout=30).json()
        for d in reversed(decisions["decisions"]):
            print(
                f"  {name:<8} {d['at'][:19]} {d['action']:<10} {d['instances_before']} -> {d['instances_after']}  "
                f"{d['reason']}"
            )

    for name in TENANTS:
        read_back(cfg, name, passwords[name])

    step("done")
    print(
        "Try: . .venv/bin/activate; mysimbdp status; mysimbdp cqlsh --tenant airline; "
        "mysimbdp stream status airline; make test"
    )
    session.cluster.shutdown()
    return 0


READS = {
    # a date range: airline through an index on time_hour (over the whole table), weather through its
    # clustering column (inside one station's month); a page through one partition
    "airline": {
        "index": "time_hour",
        "range": {"time_hour": {"gte": "2013-01-01T10:00:00Z", "lt": "2013-01-01T12:00:00Z"}},
        "columns": ["carrier", "flight", "origin", "dest", "time_hour"],
        "partition": {"origin": "JFK", "year": 2013, "month": 1, "day": 1},
    },
    "weather": {
        "index": None,
        "range": {"origin": "JFK", "year": 2013, "month": 1,
                  "time_hour": {"gte": "2013-01-01T06:00:00Z", "lt": "2013-01-01T12:00:00Z"}},
        "columns": ["origin", "time_hour", "temp", "humid"],
        "partition": {"origin": "EWR", "year": 2013, "month": 1},
    },
}  # fmt: skip


def read_back(cfg: config.Config, name: str, password: str) -> None:
    """What a tenant reads back through the query API (docs/query.md)."""
    import hashlib

    table = TENANTS[name]
    q = requests.Session()
    q.auth = (name, password)
    base = cfg.query_url()
    spec = READS[name]
    step(f"{name}: reading back through the query API ({base})")
    if spec["index"]:
        r = q.post(f"{base}/v1/tables/{table}/indexes", json={"column": spec["index"]}, timeout=150)
        print(f"POST /v1/tables/{table}/indexes {{'column': '{spec['index']}'}}: {r.status_code} {r.json()['data']}")
    body = {"where": spec["range"], "columns": spec["columns"], "page_size": 1000}
    for _ in range(60):  # an index answers once it is built (503 with Retry-After until then)
        r = q.post(f"{base}/v1/tables/{table}/query", json=body, timeout=60)
        if r.status_code != 503:
            break
        time.sleep(1)
    rows = r.json()["data"]["rows"]
    print(f"date range {json_text(spec['range'])}: {len(rows)} rows, e.g.")
    for row in rows[:3]:
        print("   ", json_text(row))
    pages, seen, token = 0, 0, None
    while True:
        body = {"where": spec["partition"], "page_size": 50, **({"page_token": token} if token else {})}
        page = q.post(f"{base}/v1/tables/{table}/query", json=body, timeout=60).json()["data"]
        pages, seen, token = pages + 1, seen + page["count"], page["next_page_token"]
        if token is None:
            break
    print(f"a page at a time through {json_text(spec['partition'])}: {seen} rows in {pages} pages of 50")
    sample = ROOT / "tenant_apps" / name / "stream-sample.csv"
    data = sample.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    r = q.put(f"{base}/v1/objects/raw/{sample.name}", data=data,
              headers={"Content-Type": "text/csv", "X-Checksum-Sha256": sha}, timeout=60)  # fmt: skip
    print(f"PUT /v1/objects/raw/{sample.name}: {r.status_code} {r.json()['data']['size']} bytes, sha256 {sha[:12]}...")
    back = q.get(f"{base}/v1/objects/raw/{sample.name}", timeout=60).content
    part = q.get(f"{base}/v1/objects/raw/{sample.name}", headers={"Range": "bytes=0-59"}, timeout=60)
    print(f"GET it back: {'the same bytes' if back == data else 'DIFFERENT BYTES'}; "
          f"Range bytes=0-59: {part.status_code} {part.content[:60]!r}")  # fmt: skip
    r = q.get(f"{base}/v1/tables/{table}/export", params={"format": "csv"}, timeout=300)
    last = r.text.rstrip("\n").rsplit("\n", 1)[-1]
    print(f"GET /v1/tables/{table}/export?format=csv: {len(r.content):,} bytes, last line: {last}")


def json_text(value) -> str:
    import json

    return json.dumps(value, separators=(", ", ": "))


if __name__ == "__main__":
    sys.exit(main())
