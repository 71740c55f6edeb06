"""The demo (`make demo`): two tenants, batch and stream, on the running platform, receipts at the end.

1. creates the sample tenants `airline` and `weather` afresh (constraints/, tenant_apps/);
2. sends each tenant's tenant_apps/<tenant>/client-input-dir with fetchdata, as the tenant would
   (a file that breaks a constraint and malformed rows included);
3. starts each tenant's stream app over the stream API and streams tenant_apps/<tenant>/stream-sample.csv
   with mysimbdp-publish (each record confirmed once it is in the tenant's inbox in Cassandra);
4. prints the receipts: the batch jobs, the rows in each keyspace, each stream's state and inbox, the
   stream reports and the scaling decisions.

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

    step("creating the sample tenants (afresh)")
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

    step("done")
    print(
        "Try: . .venv/bin/activate; mysimbdp status; mysimbdp cqlsh --tenant airline; "
        "mysimbdp stream status airline; make test"
    )
    session.cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
