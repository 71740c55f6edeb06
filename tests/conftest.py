"""Fixtures: the real platform (Cassandra, Mosquitto, Docker), tenants made and removed per test.

The platform is brought up once per session with the same code as `mysimbdp up`; a service that cannot
start fails the tests that need it rather than skipping them.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mysimbdp import config as config_mod

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_CONSTRAINTS = {
    "formats": ["csv"],
    "max_files": {"count": 20, "per": "staged"},
    "max_file_size_bytes": 1 << 20,
    "split_large_files": True,
    "batch": {"max_concurrent_jobs": 2, "timeout_seconds": 60},
    "stream": {"report_interval_seconds": 1, "autoscale": {"min_instances": 0, "max_instances": 3}},
}


def run_cli(
    *args: str, input: str | None = None, env: dict | None = None, module: str = "mysimbdp", timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run a command-line entry point the way a user would, in a separate process."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=input,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=ROOT,
    )


@pytest.fixture(scope="session")
def cfg():
    return config_mod.load()


@pytest.fixture(scope="session")
def platform(cfg):
    """The platform, up (managers included) for the whole session."""
    from mysimbdp.services import platform as platform_mod

    platform_mod.up(cfg)
    return cfg


@pytest.fixture(scope="session")
def registry(platform):
    from mysimbdp import tenants

    reg = tenants.open_registry(platform)
    yield reg
    reg.session.cluster.shutdown()


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


@pytest.fixture
def constraints_file(tmp_path):
    def make(data: dict | None = None) -> Path:
        path = tmp_path / f"constraints-{secrets.token_hex(3)}.json"
        path.write_text(json.dumps(data or SAMPLE_CONSTRAINTS))
        return path

    return make


@pytest.fixture
def make_tenant(registry):
    """Create tenants for one test (through the library, as `tenant create` does) and delete them after.

    Their apps are installed without the checks and dry runs of `tenant create` unless ``check_apps``: the
    tests of the runtime's own defences install apps that fail on purpose (a dry run on a sample cannot prove
    that an app behaves on every file, so the runtime must hold without it), and the checks have their own
    tests (test_app_checks.py)."""
    from mysimbdp import constraints

    made = []

    def make(
        name: str | None = None,
        password: str | None = None,
        cons: dict | None = None,
        batch_app: Path | None = None,
        stream_app: Path | None = None,
        check_apps: bool = False,
    ):
        name = name or unique_name()
        password = password or secrets.token_urlsafe(12)
        parsed = constraints.parse(cons or SAMPLE_CONSTRAINTS)
        t = registry.create(name, password, parsed, batch_app=batch_app, stream_app=stream_app, check_apps=check_apps)
        made.append(name)
        return t, password

    yield make
    for name in made:
        try:
            registry.delete(name)
        except Exception as exc:  # noqa: BLE001 - cleanup must go on
            print(f"cleanup of tenant {name} failed: {exc}")


APPS = ROOT / "tests" / "apps"


class Api:
    """The upload API as a tenant sees it."""

    def __init__(self, cfg, user: str, password: str) -> None:
        import requests

        self.base = cfg.batch_url()
        self.http = requests.Session()
        self.http.auth = (user, password)

    def __getattr__(self, method):  # api.get("/v1/jobs"), api.post(...)
        def call(path, **kw):
            kw.setdefault("timeout", 60)
            return self.http.request(method.upper(), self.base + path, **kw)

        return call

    def put_file(self, name: str, data: bytes, sha: str | None = None):
        import hashlib

        headers = {"Content-SHA256": sha or hashlib.sha256(data).hexdigest()}
        return self.put(f"/v1/files/{name}", data=data, headers=headers)

    def wait_job(self, job_id: str, statuses=("succeeded", "failed"), timeout: float = 120) -> dict:
        import time

        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            r = self.get(f"/v1/jobs/{job_id}")
            if r.status_code == 200:
                last = r.json()
                if last["status"] in statuses:
                    return last
            time.sleep(0.3)
        raise AssertionError(f"job {job_id} did not reach {statuses} in {timeout}s; last seen: {last}")


@pytest.fixture
def batch_tenant(make_tenant, platform):
    """A tenant with a batch app from tests/apps (or tenant_apps), and an Api logged in as it."""

    def make(app: str | Path = "notes", cons: dict | None = None, **kw):
        folder = app if isinstance(app, Path) else APPS / app
        t, password = make_tenant(cons=cons, batch_app=folder, **kw)
        return t, password, Api(platform, t.name, password)

    return make


def count_rows(cfg, keyspace: str, table: str) -> int:
    from mysimbdp import db

    s = db.connect(cfg)
    try:
        return sum(1 for _ in s.execute(f"SELECT * FROM {keyspace}.{table}"))
    finally:
        s.cluster.shutdown()


STREAM_CONSTRAINTS = {
    **SAMPLE_CONSTRAINTS,
    "stream": {
        "report_interval_seconds": 1,
        "memory_mb": 256,
        "cpus": 1.0,
        "autoscale": {"enabled": True, "min_instances": 1, "max_instances": 1},
    },
}


class StreamApi:
    """The stream API as a tenant (or the operator) sees it."""

    def __init__(self, cfg, user: str, password: str) -> None:
        import requests

        self.cfg = cfg
        self.base = cfg.stream_url()
        self.http = requests.Session()
        self.http.auth = (user, password)

    def __getattr__(self, method):
        def call(path, **kw):
            kw.setdefault("timeout", 120)
            return self.http.request(method.upper(), self.base + path, **kw)

        return call


@pytest.fixture
def stream_tenant(make_tenant, platform):
    """A tenant with a stream app (tests/apps/notes by default) and its stream API client."""

    def make(app: str | Path = "notes", cons: dict | None = None):
        folder = app if isinstance(app, Path) else APPS / app
        t, password = make_tenant(cons=cons or STREAM_CONSTRAINTS, stream_app=folder, batch_app=folder)
        return t, password, StreamApi(platform, t.name, password)

    return make


def two_running_streams(stream_tenant, cons: dict):
    """Tenants a and b with the notes stream app and ``cons``, each with one instance running."""
    a = stream_tenant(cons=cons)
    b = stream_tenant(cons=cons)
    for _, _, api in (a, b):
        assert api.post("/v1/instances", json={"count": 1}).status_code == 201
    return a, b


def notes_lines(ids, bad_every: int = 0) -> list[str]:
    out = []
    for i in ids:
        if bad_every and i % bad_every == 0:
            out.append(f"{i},broken,line,not-a-number,2024-01-01")
        else:
            out.append(f'{i},"note {i}, streamed","body {i}",{i}.25,2024-01-01T00:00:00Z')
    return out


def publish_lines(
    cfg,
    user: str,
    password: str,
    lines: list[str],
    topic: str = "default",
    rate: float | None = None,
    extra: tuple[str, ...] = (),
):
    """Publish lines with mysimbdp-publish (the tenant's own tool); return (exit status, stdout, stderr)."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as fh:
        fh.write("\n".join(lines) + "\n")
    args = [
        "-u",
        user,
        f"--password={password}",
        fh.name,
        "--no-header",
        "--topic",
        topic,
        "-q",
        "--broker",
        f"{cfg.broker.host}:{cfg.broker.port}",
    ]
    if rate:
        args += ["--rate", str(rate)]
    args += list(extra)
    res = run_cli(*args, module="streamingestmanager.publish")
    Path(fh.name).unlink()
    return res


def publish_in_background(cfg, tenant, password, lines, rate=None, **kw):
    """publish_lines in a thread: (thread, dict that gets "res")."""
    import threading

    result = {}

    def run():
        result["res"] = publish_lines(cfg, tenant, password, lines, rate=rate, **kw)

    t = threading.Thread(target=run)
    t.start()
    return t, result


def confirmed(res) -> int:
    """How many records mysimbdp-publish said were confirmed."""
    import re

    m = re.search(r": (\d+) confirmed", res.stdout)
    return int(m.group(1)) if m else 0


def wait_rows(cfg, keyspace: str, table: str, n: int, timeout: float = 120) -> int:
    import time

    deadline = time.monotonic() + timeout
    got = -1
    while time.monotonic() < deadline:
        got = count_rows(cfg, keyspace, table)
        if got >= n:
            return got
        time.sleep(0.5)
    return got


def wait_session_back(session, timeout: float = 60) -> None:
    """After Cassandra restarts, a long-lived session reconnects on its own within seconds: wait for it."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            session.execute("SELECT now() FROM system.local", timeout=5)
            return
        except Exception:  # noqa: BLE001 - not yet
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


class Bystander:
    """A tenant minding its own business: 2 batch files (1,000 rows) and 800 stream messages into its notes
    table while the hostile tenant does its worst. ``check()`` wants exactly 1,800 rows, every receipt
    succeeded, and the platform ready."""

    def __init__(self, cfg, make_tenant) -> None:
        self.cfg = cfg
        t, self.password = make_tenant(cons=STREAM_CONSTRAINTS, batch_app=APPS / "notes", stream_app=APPS / "notes")
        self.name = t.name
        self.batch = Api(cfg, self.name, self.password)
        self.stream = StreamApi(cfg, self.name, self.password)
        self.errors: list[str] = []
        self.jobs: list[str] = []
        self.thread = threading.Thread(target=self._work, daemon=True)

    def start(self) -> "Bystander":
        r = self.stream.post("/v1/instances", json={"count": 1})
        assert r.status_code in (201, 202), r.text
        self.thread.start()
        return self

    def _work(self) -> None:
        try:
            for k in range(2):
                body = "id,title,body,amount,at\n" + "".join(
                    f"{k * 500 + i},t,b,1.5,2024-01-01T00:00:00Z\n" for i in range(1, 501)
                )
                deadline = time.monotonic() + 90
                while True:  # "not now" answers are waited out, as fetchdata does
                    r = self.batch.put_file(f"bystander-{k}.csv", body.encode())
                    if r.status_code not in (429, 503) or time.monotonic() > deadline:
                        break
                    time.sleep(float(r.headers.get("Retry-After", "1")))
                if r.status_code != 201:
                    self.errors.append(f"upload {k}: {r.status_code} {r.text}")
                    continue
                self.jobs.append(r.json()["job"]["job_id"])
                time.sleep(1)
            res = publish_lines(self.cfg, self.name, self.password, notes_lines(range(100_001, 100_801)), rate=200)
            if res.returncode != 0 or "800 confirmed" not in res.stdout:
                self.errors.append(f"publish: {res.returncode} {res.stdout} {res.stderr}")
        except Exception as exc:  # noqa: BLE001 - reported by check()
            self.errors.append(repr(exc))

    def check(self) -> None:
        from mysimbdp.services import platform as platform_mod

        self.thread.join(timeout=300)
        assert not self.errors, self.errors
        for job_id in self.jobs:
            job = self.batch.wait_job(job_id, timeout=300)
            assert job["status"] == "succeeded" and job["rows_ingested"] == 500, job
        assert wait_rows(self.cfg, self.name, "notes", 1800, timeout=180) == 1800
        time.sleep(2)
        assert count_rows(self.cfg, self.name, "notes") == 1800  # none lost, none made up
        deadline = time.monotonic() + 20
        while not platform_mod.status(self.cfg)["ready"]:
            assert time.monotonic() < deadline, platform_mod.status(self.cfg)
            time.sleep(1)


@pytest.fixture
def bystander(platform, make_tenant):
    return Bystander(platform, make_tenant).start()


# --- a cluster's nodes (cassandra.nodes = 3) ---------------------------------------------------------------


def node_pid(cfg, index: int) -> int:
    from mysimbdp.services import cassandra_node

    pid = cassandra_node.daemon(cfg, cassandra_node.node(cfg, index)).pid()
    assert pid is not None, f"node {index} is not running"
    return pid


def wait_normal(cfg, index: int, seconds: float = 240) -> None:
    """Until node ``index`` runs, is NORMAL in gossip and every node is up and normal."""
    from mysimbdp.services import cassandra_node

    address = cfg.node_addresses[index - 1]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cassandra_node.daemon(cfg, cassandra_node.node(cfg, index)).pid() and (
            cassandra_node._gossip_state(cfg, address) == "NORMAL"
        ):
            st = cassandra_node.cluster_nodes(cfg)
            if [n["state"] for n in st["nodes"]].count("UN") == cfg.cassandra.nodes:
                return
        time.sleep(2)
    raise AssertionError(f"node {index} did not come back within {seconds}s")


def pending_hints(session) -> int | None:
    """Hint files the nodes hold for others (system_views.pending_hints, asked of every node); None while
    a node cannot be asked (its hints are unknown)."""
    total = 0
    for host in session.cluster.metadata.all_hosts():
        try:
            for row in session.execute("SELECT files FROM system_views.pending_hints", host=host, timeout=10):
                total += row.files or 0
        except Exception:  # noqa: BLE001 - the session is still reconnecting to it
            return None
    return total


def wait_hints_replayed(session, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while (held := pending_hints(session)) != 0:
        assert time.monotonic() < deadline, f"hints still pending after {seconds}s: {held}"
        time.sleep(2)
