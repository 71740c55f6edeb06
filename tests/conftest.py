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


def run_cli(*args: str, input: str | None = None, env: dict | None = None, module: str = "mysimbdp",
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command-line entry point the way a user would, in a separate process."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *args], input=input, capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=ROOT)


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
    """Create tenants for one test (through the library, as `tenant create` does) and delete them after."""
    from mysimbdp import constraints

    made = []

    def make(name: str | None = None, password: str | None = None, cons: dict | None = None,
             batch_app: Path | None = None, stream_app: Path | None = None):
        name = name or unique_name()
        password = password or secrets.token_urlsafe(12)
        t = registry.create(name, password, constraints.parse(cons or SAMPLE_CONSTRAINTS),
                            batch_app=batch_app, stream_app=stream_app)
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
