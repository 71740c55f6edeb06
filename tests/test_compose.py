"""docker-compose.yml, for real: the platform's image built here with no registry (`mysimbdp compose build`),
`docker-compose up` brings up three Cassandra nodes, Mosquitto, the APIs and the managers as containers,
`mysimbdp status` sees every part ready, the sandbox's firewall rules come back when flushed, a tenant's
batch job runs in the sandbox, and a node SIGKILLed in
the middle of it is restarted by Compose with no row lost (counted at ALL once its hints are replayed).

The Compose platform has a state folder of its own, with its own ports, node network and sandbox bridge, so
it runs beside the test platform (whose Docker engine it uses).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time

import pytest
from cassandra import ConsistencyLevel
from cassandra.query import SimpleStatement

from conftest import APPS, ROOT, Api, node_pid, run_cli, wait_hints_replayed, wait_normal
from test_batch_faults import CONS as BATCH_CONS
from test_batch_faults import rows_csv, wait_status

pytestmark = [pytest.mark.services, pytest.mark.slow]

PROJECT = "mysbcomposetest"
SETTINGS = """
[cassandra]
nodes = 3
node_network = "10.254.44.0/24"
heap = "768M"
jmx_port = 17299

[broker]
port = 11883
sandbox_port = 11883

[sandbox]
network = "mysimbdp-compose-test"
bridge = "mysbcmp0"
subnet = "172.29.44.0/24"

[batch]
port = 18801

[stream]
port = 18802

[query]
port = 18803

[dashboard]
port = 18804
"""


@pytest.fixture(scope="module")
def composed(tmp_path_factory, cfg, platform):
    from mysimbdp import config
    from mysimbdp.sandbox import network
    from mysimbdp.sandbox.docker_runtime import DockerRuntime
    from mysimbdp.services import cassandra_node, compose

    home = tmp_path_factory.mktemp("compose")
    (home / "mysimbdp.toml").write_text(SETTINGS)
    env = {"MYSIMBDP_HOME": str(home)}
    ccfg = config.load(env=dict(os.environ, **env))
    cassandra_node.install(cfg)  # the test platform's jars go into the image
    (home / "cassandra").mkdir()
    (home / "cassandra" / "lib").symlink_to(cassandra_node._lib(cfg))
    t0 = time.monotonic()
    tag = compose.build(ccfg, env_file=home / ".env")
    built = time.monotonic() - t0
    dc = ["docker-compose", "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), "--env-file", str(home / ".env")]
    try:
        t0 = time.monotonic()
        up = subprocess.run([*dc, "up", "-d"], capture_output=True, text=True, timeout=1200)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        print(f"compose: image {tag} built in {built:.0f}s; `docker-compose up -d` took {time.monotonic() - t0:.0f}s")
        yield ccfg, env, dc
    finally:
        subprocess.run([*dc, "logs", "--tail", "20"], timeout=120)
        subprocess.run([*dc, "down", "-t", "60"], capture_output=True, timeout=600)
        rt = DockerRuntime(ccfg)
        for c in rt.list():  # the tenant containers the managers started
            rt.stop(c.name, timeout=5)
        network.remove(ccfg, rt.client)
        network.remove_node_addresses(ccfg)


def test_compose_up_starts_every_part_and_status_sees_it_ready(composed):
    ccfg, env, dc = composed

    def state(service: str) -> str:
        fmt = "{{.State.Status}} {{.State.ExitCode}}"
        got = subprocess.run(["docker", "inspect", "-f", fmt, f"{PROJECT}_{service}_1"], capture_output=True, text=True)
        return got.stdout.strip()

    services = ["cassandra-1", "cassandra-2", "cassandra-3", "init", "mosquitto", "batch-api", "batch-manager"]
    services += ["stream-api", "inbox-writer", "stream-controller", "query-api", "dashboard"]
    for service in services:
        assert state(service) == "running 0", (service, state(service))
    deadline = time.monotonic() + 120
    while (st := run_cli("status", env=env)).returncode != 0:  # the managers' first heartbeats
        assert time.monotonic() < deadline, st.stdout + st.stderr
        time.sleep(3)
    assert "the daemons run in containers (Compose)" in st.stdout
    for address in ccfg.node_addresses:
        assert f"node {address:<15} UN" in st.stdout, st.stdout
    # the sandbox's firewall rules flushed (as a reboot or a careless `iptables -F` would): init puts them back
    from mysimbdp.sandbox import network

    subprocess.run(["iptables", "-F", network.chain(ccfg)], check=True)
    assert not network.firewall_ok(ccfg)
    deadline = time.monotonic() + 60
    while not network.firewall_ok(ccfg):
        assert time.monotonic() < deadline, "the sandbox's firewall rules were not put back"
        time.sleep(1)
    told = run_cli("down", env=env)  # the supervisor's `down` would fight Compose's restarts: refused, with what to do
    assert told.returncode != 0 and "docker-compose down" in told.stderr and "Traceback" not in told.stderr


def test_a_node_killed_mid_job_is_restarted_by_compose_and_no_row_is_lost(composed):
    ccfg, env, dc = composed
    from mysimbdp import constraints, db
    from mysimbdp.tenants import Registry

    s = db.connect(ccfg)
    try:
        name, password = f"c{secrets.token_hex(4)}", secrets.token_urlsafe(12)
        Registry(ccfg, s).create(
            name, password, constraints.parse(BATCH_CONS), batch_app=APPS / "slownotes", check_apps=False
        )
        api = Api(ccfg, name, password)
        n = 10000
        job_id = api.put_file("big.csv", rows_csv(n)).json()["job"]["job_id"]
        wait_status(api, job_id, ("running",), timeout=120)
        time.sleep(3)  # rows are going in
        victim = node_pid(ccfg, 2)
        os.kill(victim, signal.SIGKILL)
        job = api.wait_job(job_id, timeout=600)
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        assert job["rows_ingested"] == n, job
        wait_normal(ccfg, 2, seconds=300)  # Compose started the node's container again
        assert node_pid(ccfg, 2) != victim
        restarts = subprocess.run(
            ["docker", "inspect", "-f", "{{.RestartCount}}", f"{PROJECT}_cassandra-2_1"], capture_output=True, text=True
        )
        assert int(restarts.stdout.strip()) >= 1, restarts
        wait_hints_replayed(s)
        stmt = SimpleStatement(f"SELECT count(*) FROM {name}.notes", consistency_level=ConsistencyLevel.ALL)
        assert s.execute(stmt, timeout=120).one()[0] == n
    finally:
        s.cluster.shutdown()
