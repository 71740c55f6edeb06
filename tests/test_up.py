"""`mysimbdp up` / `status`: idempotent, fast when warm, and clear about what will not start."""

from __future__ import annotations

import json
import os
import shutil
import socket
import time

import pytest

from conftest import run_cli

pytestmark = pytest.mark.services


def test_up_twice_is_harmless_and_fast(platform):
    t0 = time.monotonic()
    res = run_cli("up")
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stderr
    assert "ready" in res.stdout.splitlines()[-1]
    assert f"dashboard: {platform.dashboard_url()}/" in res.stdout  # where to look, printed by up
    for part in ("cassandra", "mosquitto", "docker", "sandbox"):
        line = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith(part))
        assert "running" in line or "ready" in line, line  # nothing was started again
    assert took < 5, f"warm `up` took {took:.1f}s"


def test_status_reports_every_part(platform):
    assert run_cli("up").returncode == 0  # as a user would: earlier tests stopped and restarted services
    res = run_cli("status", "--json")
    st = json.loads(res.stdout)
    assert res.returncode == 0, [name for name, part in st["parts"].items() if not part.get("ready")]
    assert st["ready"] is True
    for part in ("cassandra", "mosquitto", "docker", "sandbox"):
        assert st["parts"][part]["ready"] is True, part
    assert st["parts"]["sandbox"]["firewall"] is True
    # each Cassandra node, as nodetool status would show it: here the one node, up and normal, owning the ring
    (node,) = st["parts"]["cassandra"]["nodes"]
    assert node["state"] == "UN" and node["owns_pct"] == 100.0 and node["load_mib"] > 0
    assert node["cql"].endswith(f":{platform.cassandra.port}")
    assert st["parts"]["cassandra"]["schema_agreement"] is True
    human = run_cli("status")
    assert human.returncode == 0 and "platform: ready" in human.stdout
    assert f"node {node['address']}" in human.stdout and "owns 100.0%" in human.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def second_home(tmp_path, platform):
    """A second, empty state folder with its own sandbox network, ports and firewall chain."""
    home = tmp_path / "home"
    env = {
        "MYSIMBDP_HOME": str(home),
        "MYSIMBDP_CASSANDRA_PORT": str(_free_port()),
        "MYSIMBDP_CASSANDRA_STORAGE_PORT": str(_free_port()),
        "MYSIMBDP_BROKER_PORT": str(_free_port()),
        "MYSIMBDP_BROKER_SANDBOX_PORT": str(_free_port()),
        "MYSIMBDP_BATCH_PORT": str(_free_port()),
        "MYSIMBDP_STREAM_PORT": str(_free_port()),
        "MYSIMBDP_SANDBOX_NETWORK": "mysimbdp-sandbox-test",
        "MYSIMBDP_SANDBOX_BRIDGE": "mysbt0",
        "MYSIMBDP_SANDBOX_SUBNET": "172.29.200.0/28",
    }
    yield env
    run_cli("down", env=env)
    from mysimbdp import config
    from mysimbdp.services import mosquitto_broker
    from mysimbdp.sandbox import network
    from mysimbdp.sandbox.docker_runtime import client

    cfg2 = config.load(env=dict(os.environ, **env))
    network.remove(cfg2, client())
    rt = mosquitto_broker.runtime_dir(cfg2)
    if str(rt).startswith("/var/lib/mysimbdp/"):
        shutil.rmtree(rt.parent, ignore_errors=True)


def test_up_says_which_port_is_taken(second_home):
    env = second_home
    holders = []
    for key in ("MYSIMBDP_CASSANDRA_PORT", "MYSIMBDP_BROKER_PORT"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(env[key])))
        s.listen(1)
        holders.append(s)
    try:
        res = run_cli("up", env=env)
    finally:
        for s in holders:
            s.close()
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in res.stderr
    assert f"Cassandra: port {env['MYSIMBDP_CASSANDRA_PORT']} is already taken by pid {os.getpid()}" in err[0]
    assert f"Mosquitto: port 127.0.0.1:{env['MYSIMBDP_BROKER_PORT']} is already taken" in err[0]


def test_up_says_java_is_missing(second_home, tmp_path):
    env = dict(second_home)
    bin_dir = tmp_path / "bin"  # everything the platform calls by name, except java
    bin_dir.mkdir()
    for tool in ("ip", "iptables", "mosquitto", "mvn", "dockerd", "debootstrap", "tar"):
        found = shutil.which(tool, path=os.environ["PATH"] + ":/usr/sbin:/sbin")
        if found:
            (bin_dir / tool).symlink_to(found)
    env["PATH"] = str(bin_dir)
    res = run_cli("up", env=env)
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "Java is missing" in err[0], res.stderr


def test_cqlsh_as_the_operator_and_as_a_tenant(platform, make_tenant):
    a, _ = make_tenant()
    b, _ = make_tenant()
    ok = run_cli("cqlsh", "-e", "SELECT role FROM system_auth.roles")
    assert ok.returncode == 0 and "mysimbdp_operator" in ok.stdout and "cassandra |" not in ok.stdout
    mine = run_cli("cqlsh", "--tenant", a.name, "-e", "CREATE TABLE t (id int PRIMARY KEY); SELECT * FROM t")
    assert mine.returncode == 0, mine.stderr
    assert run_cli("cqlsh", "--tenant", b.name, "-e", "CREATE TABLE t (id int PRIMARY KEY)").returncode == 0
    theirs = run_cli("cqlsh", "--tenant", a.name, "-e", f"SELECT * FROM {b.name}.t")
    assert theirs.returncode != 0 and "Unauthorized" in theirs.stderr + theirs.stdout


def test_an_existing_cluster_instead_of_the_managed_node(platform, tmp_path):
    """cassandra.managed = false: the platform uses the cluster it is given and starts none itself."""
    from mysimbdp import db

    login = db.operator_login(platform)
    pw = tmp_path / "cassandra-password"
    pw.write_text(login.password + "\n")
    env = {
        "MYSIMBDP_CASSANDRA_MANAGED": "false",
        "MYSIMBDP_CASSANDRA_USERNAME": login.username,
        "MYSIMBDP_CASSANDRA_PASSWORD_FILE": str(pw),
        "MYSIMBDP_CASSANDRA_CONTACT_POINTS": "127.0.0.1",
    }
    st = json.loads(run_cli("status", "--json", env=env).stdout)
    cass = st["parts"]["cassandra"]
    assert {k: cass[k] for k in ("managed", "running", "ready", "contact_points")} == {
        "managed": False,
        "running": True,
        "ready": True,
        "contact_points": ["127.0.0.1"],
    }
    assert "pid" not in cass  # nothing of its own is started
    assert [n["state"] for n in cass["nodes"]] == ["UN"] and cass["schema_agreement"] is True  # what it sees
    listed = run_cli("tenant", "list", env=env)
    assert listed.returncode == 0
    pw.write_text("wrong\n")
    bad = run_cli("tenant", "list", env=env)
    assert bad.returncode == 69 and "refused the login" in bad.stderr


def test_the_runtime_image_is_rebuilt_only_when_its_recipe_changes(platform, tmp_path, monkeypatch):
    from mysimbdp.sandbox import image
    from mysimbdp.sandbox.docker_runtime import client

    tag = image.image_tag(platform)
    assert image.image_present(platform, client())  # built once, then reused
    assert image.image_tag(platform) == tag
    changed = tmp_path / "recipe.json"
    changed.write_text(image.RECIPE.read_text().replace('"paho-mqtt==2.2.0"', '"paho-mqtt==2.1.0"'))
    monkeypatch.setattr(image, "RECIPE", changed)
    assert image.image_tag(platform) != tag and not image.image_present(platform, client())


def test_cassandra_listens_on_loopback_only_and_the_sandbox_reaches_it_through_its_gateway(platform):
    """CQL answers on 127.0.0.1 and, for tenant containers, at the sandbox bridge's gateway (forwarded by the
    platform's firewall); no other address of the host answers."""
    import socket
    import subprocess

    port = platform.cassandra.port
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
    addresses = {field.rsplit(":", 1)[0] for field in listening if field.endswith(f":{port}")}
    assert addresses == {"127.0.0.1"}, listening
    others = [
        a
        for a in subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
        if ":" not in a and a != platform.sandbox_gateway
    ]
    assert others  # this host has addresses besides loopback and the bridge
    for address in others:
        with socket.socket() as s:
            s.settimeout(3)
            assert s.connect_ex((address, port)) != 0, address
    # (tests/test_sandbox.py checks that a tenant container does reach it at the gateway)
