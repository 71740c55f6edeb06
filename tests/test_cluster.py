"""A managed cluster of three Cassandra nodes on this machine (cassandra.nodes = 3), beside the test
platform's one node: it starts one node at a time, shows each node, keeps every acknowledged write when a
node is killed, refuses writes cleanly with two nodes down and takes them again once one is back, and says
which node will not start and why."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest
from cassandra import ConsistencyLevel, Unavailable
from cassandra.cluster import NoHostAvailable
from cassandra.query import SimpleStatement

from conftest import node_pid, run_cli, wait_normal

pytestmark = [pytest.mark.services, pytest.mark.slow]

KS = "cluster_test"


LEGACY_ROWS = 2000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, cfg):
    """A second state folder with its own supervisor: first one node (as a fresh installation runs) holding
    a keyspace of one replica, then ``cassandra.nodes = 3`` (the Cassandra jars are the platform's; the
    platform itself need not be up)."""
    from mysimbdp import config, db
    from mysimbdp.sandbox import network
    from mysimbdp.services import cassandra_node, supervisor

    home = tmp_path_factory.mktemp("cluster")
    env = {
        "MYSIMBDP_HOME": str(home),
        "MYSIMBDP_CASSANDRA_HEAP": "768M",
        "MYSIMBDP_CASSANDRA_JMX_PORT": "17199",
        # ports and addresses of its own: the test platform's node (or nodes) stay where they are
        "MYSIMBDP_CASSANDRA_PORT": "19042",
        "MYSIMBDP_CASSANDRA_STORAGE_PORT": "17010",
        "MYSIMBDP_CASSANDRA_NODE_NETWORK": "10.254.43.0/24",
        "MYSIMBDP_SANDBOX_BRIDGE": "mysbclt0",
    }
    cassandra_node.install(cfg)  # the platform's jars (a no-op once installed)
    main_lib = cfg.paths.cassandra / "lib"
    one = config.load(env=dict(os.environ, **env, MYSIMBDP_CASSANDRA_NODES="1"))
    (home / "cassandra").mkdir(parents=True)
    (home / "cassandra" / "lib").symlink_to(main_lib)
    supervisor.ensure_running(home)
    env["MYSIMBDP_CASSANDRA_NODES"] = "3"
    cfg = config.load(env=dict(os.environ, **env))
    try:
        assert cassandra_node.start(one, timeout=300) == "started"
        s = db.connect(one)
        try:  # what a one-node installation holds: one replica of everything
            s.execute(f"CREATE KEYSPACE legacy WITH replication = {db.replication_cql(one)}", timeout=60)
            s.execute("CREATE TABLE legacy.rows (id int PRIMARY KEY, v text)", timeout=60)
            insert = s.prepare("INSERT INTO legacy.rows (id, v) VALUES (?, ?)")
            for i in range(LEGACY_ROWS):
                s.execute(insert, (i, f"row {i}"))
        finally:
            s.cluster.shutdown()
        assert cassandra_node.stop(one)
        t0 = time.monotonic()  # node 1 moves to its cluster address, nodes 2 and 3 join from cold
        assert cassandra_node.start(cfg, timeout=300).startswith("started nodes 1, 2, 3")
        cfg_started = time.monotonic() - t0
        yield cfg, env, cfg_started
    finally:
        cassandra_node.stop(cfg)
        supervisor.daemon(home).stop(timeout=30)
        network.remove_node_addresses(cfg)


def session(cfg):
    from mysimbdp import db

    return db.connect(cfg)


def keyspace(s, cfg) -> None:
    from mysimbdp import db

    s.execute(f"CREATE KEYSPACE IF NOT EXISTS {KS} WITH replication = {db.replication_cql(cfg)}", timeout=60)


def count_at_all(s, table: str) -> int:
    stmt = SimpleStatement(f"SELECT count(*) FROM {KS}.{table}", consistency_level=ConsistencyLevel.ALL)
    return s.execute(stmt, timeout=120).one()[0]


def test_three_nodes_start_one_at_a_time_and_status_shows_each(cluster):
    cfg, env, took = cluster
    from mysimbdp.services import cassandra_node

    st = cassandra_node.status(cfg)
    assert st["ready"] is True and st["schema_agreement"] is True
    nodes = st["nodes"]
    assert [n["address"] for n in nodes] == list(cfg.node_addresses)
    assert [n["state"] for n in nodes] == ["UN"] * 3, nodes
    owns = [n["owns_pct"] for n in nodes]
    assert abs(sum(owns) - 100) < 0.5 and all(15 < o < 50 for o in owns), owns  # tokens balanced for RF 3
    s = session(cfg)
    try:
        for ks in ("system_auth", "system_distributed", "system_traces"):
            rep = s.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (ks,)).one()
            assert dict(rep.replication)["datacenter1"] == "3", ks
        assert s.cluster.profile_manager.default.consistency_level == ConsistencyLevel.LOCAL_QUORUM
    finally:
        s.cluster.shutdown()
    shown = run_cli("node", "status", env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.count("UN  10.254.43.") == 3 and "schema agreement: yes" in shown.stdout
    warm = time.monotonic()
    assert cassandra_node.start(cfg) == "running"
    assert time.monotonic() - warm < 5
    print(f"three nodes from cold (node 1 from a one-node installation): {took:.0f}s")


def test_a_one_node_installation_is_replicated_to_three_and_survives_losing_two(cluster):
    """The documented move (docs/scale-out.md): nodes = 3, up, then `mysimbdp node replicate` alters every
    keyspace of one replica and repairs it. Proof: with nodes 1 and 2 stopped, node 3 (which joined after
    the rows were written) alone answers every row."""
    cfg, env, _ = cluster
    from mysimbdp.services import cassandra_node

    shown = run_cli("node", "status", env=env)
    assert "not yet replicated as configured: legacy" in shown.stdout, shown.stdout
    moved = run_cli("node", "replicate", env=env, timeout=900)
    assert moved.returncode == 0, moved.stderr
    assert "legacy: replication SimpleStrategy replication_factor:1 -> NetworkTopologyStrategy datacenter1:3" in (
        moved.stdout
    ), moved.stdout
    assert "legacy: repaired" in moved.stdout
    again = run_cli("node", "replicate", env=env, timeout=300)
    assert again.returncode == 0 and again.stdout.startswith("0 keyspaces changed"), again.stdout
    try:
        for index in (1, 2):
            assert cassandra_node.stop_node(cfg, index)
        s = session(cfg)
        try:
            stmt = SimpleStatement("SELECT count(*) FROM legacy.rows", consistency_level=ConsistencyLevel.ONE)
            assert s.execute(stmt, timeout=60).one()[0] == LEGACY_ROWS
        finally:
            s.cluster.shutdown()
    finally:
        for index in (1, 2):
            assert cassandra_node.start_node(cfg, index, timeout=300) in ("started", "running")
        wait_normal(cfg, 1)
        wait_normal(cfg, 2)


def test_a_node_killed_mid_writes_loses_no_acknowledged_row(cluster):
    cfg, env, _ = cluster

    s = session(cfg)
    try:
        keyspace(s, cfg)
        rep = s.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (KS,)).one()
        assert dict(rep.replication)["datacenter1"] == "3"  # what tenants' keyspaces get on a cluster
        s.execute(f"CREATE TABLE IF NOT EXISTS {KS}.rows (id int PRIMARY KEY, v text)", timeout=60)
        insert = s.prepare(f"INSERT INTO {KS}.rows (id, v) VALUES (?, ?)")
        insert.is_idempotent = True
        acked, retried = set(), 0
        victim = node_pid(cfg, 3)
        for i in range(1500):
            if i == 300:
                os.kill(victim, signal.SIGKILL)  # in the middle of the writes, no goodbye
            for _attempt in range(20):  # as a job does: a write that failed is sent again
                try:
                    s.execute(insert, (i, f"row {i}"), timeout=10)
                    acked.add(i)
                    break
                except Exception:  # noqa: BLE001 - counted, retried
                    retried += 1
                    time.sleep(0.5)
        assert len(acked) == 1500, f"{1500 - len(acked)} writes never acknowledged ({retried} retries)"
        # the supervisor starts the killed node again; once it is back (and its hints replayed), every
        # replica is asked: each acknowledged row is there once
        wait_normal(cfg, 3)
        assert node_pid(cfg, 3) != victim
        assert count_at_all(s, "rows") == 1500
        print(f"writes retried while node 3 was being killed: {retried}")
    finally:
        s.cluster.shutdown()


def test_two_nodes_down_refuse_writes_cleanly_and_one_back_takes_them_again(cluster):
    cfg, env, _ = cluster
    from mysimbdp.services import cassandra_node

    s = session(cfg)
    try:
        keyspace(s, cfg)
        s.execute(f"CREATE TABLE IF NOT EXISTS {KS}.two (id int PRIMARY KEY)", timeout=60)
        insert = s.prepare(f"INSERT INTO {KS}.two (id) VALUES (?)")
        s.execute(insert, (1,))
        stopped = run_cli("node", "stop", "3", env=env)
        assert stopped.returncode == 0 and "node 3: stopped" in stopped.stdout, stopped.stderr
        assert cassandra_node.stop_node(cfg, 2)
        time.sleep(3)  # the coordinator's failure detector notices
        # two of three replicas cannot answer: refused as unavailable (the driver may have asked each node
        # left, and says so for all), not as unauthorized, and nothing half-written
        with pytest.raises((Unavailable, NoHostAvailable)) as refused:
            s.execute(insert, (2,), timeout=20)
        assert "Cannot achieve consistency level LOCAL_QUORUM" in str(refused.value)
        assert cassandra_node.start_node(cfg, 2) == "started"
        s.execute(insert, (2,), timeout=20)  # two of three again: accepted
        started = run_cli("node", "start", "3", env=env, timeout=400)
        assert started.returncode == 0 and "node 3: started" in started.stdout, started.stderr
        wait_normal(cfg, 3)
        assert count_at_all(s, "two") == 2
    finally:
        s.cluster.shutdown()


def test_a_node_that_will_not_start_is_named_with_the_reason(cluster):
    cfg, env, _ = cluster
    from mysimbdp.errors import ServiceStartError
    from mysimbdp.services import cassandra_node

    assert cassandra_node.stop_node(cfg, 3)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind((cfg.node_addresses[2], cfg.cassandra.port))
    squatter.listen()
    try:
        with pytest.raises(ServiceStartError) as err:
            cassandra_node.start(cfg, timeout=60)
        assert "node 3 (10.254.43.3)" in str(err.value) and f"port {cfg.cassandra.port}" in str(err.value)
        told = run_cli("node", "start", "3", env=env, timeout=120)  # the same words for a user, no traceback
        assert (
            told.returncode == 69 and f"node 3 (10.254.43.3): port {cfg.cassandra.port} is already taken" in told.stderr
        )
        assert "Traceback" not in told.stderr
    finally:
        squatter.close()
    assert cassandra_node.start(cfg, timeout=300) == "started node 3 of 3"
    wait_normal(cfg, 3)
