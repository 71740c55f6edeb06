"""The sandbox holds against a hostile tenant app, and the platform and other tenants carry on.

Each scenario runs the test app tests/apps/hostile as tenant A's batch app, with exactly the container
settings a real batch job gets (mysimbdp.contract.batch_run), only shorter time limits.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, unique_name

pytestmark = [pytest.mark.services]
HOSTILE = ROOT / "tests" / "apps" / "hostile"


@pytest.fixture(scope="module")
def two_tenants(registry):
    from mysimbdp import constraints
    from conftest import SAMPLE_CONSTRAINTS

    names = [unique_name("sba"), unique_name("sbb")]
    made = []
    for n in names:
        cons = constraints.parse(SAMPLE_CONSTRAINTS)  # the hostile app is installed as it is: no dry run
        made.append(registry.create(n, "password-" + n, cons, batch_app=HOSTILE, check_apps=False))
    yield made
    for n in names:
        registry.delete(n)


def run_scenario(cfg, tenant, tmp_path: Path, scenario: dict, **limits):
    """Run the hostile app for ``tenant`` with ``scenario``; return (RunResult, parsed RESULT line or None)."""
    from mysimbdp import apps, contract
    from mysimbdp.sandbox import runtime

    job = str(uuid.uuid1())
    work = tmp_path / job
    work.mkdir(parents=True)
    (work / "out").mkdir()
    import os

    if os.geteuid() == 0:  # the run's output folder belongs to the tenant's sandbox user, as in a real job
        os.chown(work / "out", tenant.uid, tenant.uid)
    data = work / "input.json"
    data.write_text(json.dumps(scenario))
    data.chmod(0o644)
    app = apps.installed(cfg, tenant.name, "batch")
    spec = contract.batch_run(
        cfg, tenant, app, [contract.BatchInput(job, data, "input.json", work / "out")], log_path=work / "run.log"
    )
    if limits:
        spec = dataclasses.replace(spec, limits=dataclasses.replace(spec.limits, **limits))
    res = runtime(cfg).run(spec)
    found = None
    text = (work / "run.log").read_text(errors="replace") if (work / "run.log").exists() else ""
    for line in text.splitlines():
        if line.startswith("RESULT "):
            found = json.loads(line[len("RESULT ") :])
    return res, found


def platform_still_works(cfg, registry, other):
    """Cassandra answers, and another tenant's app runs normally."""
    assert registry.session.execute("SELECT now() FROM system.local").one()


def test_runs_as_the_tenants_own_unprivileged_user(platform, two_tenants, tmp_path):
    a, b = two_tenants
    res, out = run_scenario(platform, a, tmp_path, {"scenario": "identity"})
    assert res.ok, res.describe()
    assert out["uid"] == a.uid and out["uid"] != 0 and out["uid"] != b.uid
    assert int(out["cap_eff"], 16) == 0  # no capabilities at all
    assert out["no_new_privs"] == "1"
    assert out["user"] == a.name and out["keyspace"] == a.name  # only its own credentials
    assert not any(b.name in k for k in out["env_keys"])


def test_root_file_system_is_read_only(platform, two_tenants, tmp_path):
    a, _ = two_tenants
    res, out = run_scenario(platform, a, tmp_path, {"scenario": "rootfs"})
    assert res.ok, res.describe()
    for path in ("/evil", "/etc/evil", "/app/evil", "/usr/lib/evil", "/input/evil", "/opt/mysimbdp/sdk/evil"):
        assert out[path] in ("OSError", "PermissionError"), (path, out[path])
    assert out["/tmp/ok"] == "written" and out["/output/ok"] == "written"


def test_a_memory_hog_is_killed_at_its_limit(platform, registry, two_tenants, tmp_path):
    a, b = two_tenants
    res, out = run_scenario(platform, a, tmp_path, {"scenario": "memory"}, memory="128m", timeout=60)
    assert res.oom_killed, res
    assert out is None  # it never got past its limit
    assert not res.ok and "memory" in res.describe()
    platform_still_works(platform, registry, b)


def test_a_busy_loop_is_stopped_at_the_wall_clock_limit(platform, registry, two_tenants, tmp_path):
    a, b = two_tenants
    t0 = time.monotonic()
    res, out = run_scenario(platform, a, tmp_path, {"scenario": "busy"}, timeout=3)
    assert res.timed_out and not res.ok
    assert 3 <= res.seconds < 10 and time.monotonic() - t0 < 20
    assert out is not None  # it did start
    platform_still_works(platform, registry, b)


def test_a_fork_bomb_is_contained_and_others_carry_on(platform, registry, two_tenants, tmp_path):
    a, b = two_tenants
    # the number of processes is capped
    res, out = run_scenario(
        platform, a, tmp_path / "count", {"scenario": "forkcount", "tries": 300}, pids=64, timeout=60
    )
    assert res.ok, res.describe()
    assert out["made"] < 64 and out["failed"] > 200
    # a real fork bomb runs until the wall clock while tenant B's job runs normally beside it
    other = {}

    def run_b():
        other["res"], other["out"] = run_scenario(platform, b, tmp_path / "b", {"scenario": "sleep", "seconds": 1})

    bomb = {}

    def run_bomb():
        bomb["res"], _ = run_scenario(platform, a, tmp_path / "bomb", {"scenario": "forkbomb"}, pids=64, timeout=8)

    tb = threading.Thread(target=run_bomb)
    tb.start()
    time.sleep(3)  # the bomb is going
    run_b()
    platform_still_works(platform, registry, b)
    tb.join(60)
    assert bomb["res"].timed_out
    assert other["res"].ok and other["out"]["slept"] is True


@pytest.fixture
def host_listener():
    """A TCP server on all host addresses, on a port the sandbox must not reach."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    srv.close()


def _host_external_ip():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
        return s.getsockname()[0]
    finally:
        s.close()


def test_network_reaches_cassandra_and_broker_only(platform, two_tenants, tmp_path, host_listener):
    cfg = platform
    a, _ = two_tenants
    gw = cfg.sandbox_gateway
    ext = _host_external_ip()
    allowed = [f"{gw}:{cfg.cassandra.port}", f"{gw}:{cfg.broker.sandbox_port}"]
    denied = [
        f"{gw}:{host_listener}",  # any other port of the host
        f"{gw}:{cfg.batch.port}",
        f"{gw}:{cfg.stream.port}",  # the platform's HTTP APIs
        f"{ext}:{host_listener}",  # the host's other addresses
        f"172.17.0.1:{host_listener}",  # Docker's default bridge
        "192.0.2.1:80",
        "1.1.1.1:53",  # outside
    ]
    # the host listener itself is reachable from the host: a refusal in the sandbox is the firewall's doing
    socket.create_connection(("127.0.0.1", host_listener), timeout=2).close()
    res, out = run_scenario(cfg, a, tmp_path, {"scenario": "network", "targets": allowed + denied}, timeout=60)
    assert res.ok, res.describe()
    for t in allowed:
        assert out[t] == "connected", (t, out[t])
    for t in denied:
        assert out[t] != "connected", (t, out[t])


def test_an_app_cannot_reach_another_tenants_staging_folder(platform, two_tenants, tmp_path):
    cfg = platform
    a, b = two_tenants
    # b's data at rest (its archive; a file in its staging folder would be ingested at once)
    secret_file = cfg.paths.archive(b.name) / "job" / "b-private.csv"
    secret_file.parent.mkdir(parents=True, exist_ok=True)
    secret_file.write_text("id,secret\n1,b-only\n")
    try:
        paths = [
            str(cfg.paths.staging(b.name)),
            str(cfg.paths.archive(b.name)),
            str(secret_file),
            str(cfg.paths.staging(a.name)),
            str(cfg.paths.secrets),
            "/var/lib/docker",
            str(cfg.home),
        ]
        res, out = run_scenario(cfg, a, tmp_path, {"scenario": "peek", "paths": paths})
        assert res.ok, res.describe()
        for p in paths:
            assert out[p] in ("FileNotFoundError", "PermissionError"), (p, out[p])
    finally:
        secret_file.unlink()


def test_run_logs_are_kept(platform, two_tenants, tmp_path):
    a, _ = two_tenants
    res, out = run_scenario(platform, a, tmp_path, {"scenario": "sleep", "seconds": 0})
    assert res.ok and res.log_path.exists() and "RESULT" in res.log_path.read_text()
