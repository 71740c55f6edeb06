"""Tenants cannot touch each other: Cassandra roles and keyspaces, broker users and topics."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
import pytest
from cassandra import Unauthorized
from cassandra.protocol import SyntaxException
from paho.mqtt.enums import CallbackAPIVersion

from mysimbdp import db, tenants

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def pair(registry):
    from mysimbdp import constraints
    from conftest import SAMPLE_CONSTRAINTS, unique_name

    made = {}
    for role in ("a", "b"):
        name = unique_name(f"iso{role}")
        password = f"pw-{name}-secret"
        made[role] = (registry.create(name, password, constraints.parse(SAMPLE_CONSTRAINTS)), password)
    yield made
    for t, _ in made.values():
        registry.delete(t.name)


def tenant_session(cfg, name):
    return db.connect(cfg, tenants.cassandra_login(cfg, name))


def test_a_cannot_read_or_write_bs_keyspace_or_the_platform_keyspace(platform, pair):
    cfg = platform
    a, b = pair["a"][0].name, pair["b"][0].name
    sb = tenant_session(cfg, b)
    sa = tenant_session(cfg, a)
    try:
        sb.execute(f"CREATE TABLE IF NOT EXISTS {b}.secrets (id int PRIMARY KEY, v text)")
        sb.execute(f"INSERT INTO {b}.secrets (id, v) VALUES (1, 'only b')")
        sa.execute(f"CREATE TABLE IF NOT EXISTS {a}.mine (id int PRIMARY KEY, v text)")
        sa.execute(f"INSERT INTO {a}.mine (id, v) VALUES (1, 'a')")
        assert sa.execute(f"SELECT v FROM {a}.mine WHERE id = 1").one().v == "a"

        attempts = [
            f"SELECT * FROM {b}.secrets",
            f"INSERT INTO {b}.secrets (id, v) VALUES (2, 'from a')",
            f"DELETE FROM {b}.secrets WHERE id = 1",
            f"DROP TABLE {b}.secrets",
            f"CREATE TABLE {b}.planted (id int PRIMARY KEY)",
            f"SELECT * FROM {cfg.keyspace}.tenants",
            f"INSERT INTO {cfg.keyspace}.jobs (tenant, bucket, job_id) VALUES ('{b}', 'x', now())",
            "CREATE KEYSPACE grabbed WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
            f"GRANT SELECT ON KEYSPACE {a} TO {b}",
            f"ALTER ROLE {b} WITH PASSWORD = 'taken-over'",
            "SELECT salted_hash FROM system_auth.roles",
        ]
        for cql in attempts:
            with pytest.raises((Unauthorized, SyntaxException)) as exc:
                sa.execute(cql)
            assert isinstance(exc.value, Unauthorized), (cql, exc.value)
        assert sb.execute(f"SELECT v FROM {b}.secrets WHERE id = 1").one().v == "only b"
        assert sb.execute(f"SELECT v FROM {b}.secrets WHERE id = 2").one() is None
    finally:
        sa.cluster.shutdown()
        sb.cluster.shutdown()


class Client:
    """A broker client that records what happens to it (MQTT 5, so refusals are reported)."""

    def __init__(self, cfg, user, password):
        self.messages = []
        self.acks = {}
        self.connack = None
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
        self.c.username_pw_set(user, password)
        self.c.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.__setitem__(mid, rc)
        self.c.connect(cfg.broker.host, cfg.broker.port)
        self.c.loop_start()
        deadline = time.time() + 5
        while self.connack is None and time.time() < deadline:
            time.sleep(0.02)

    def publish(self, topic, payload):
        info = self.c.publish(topic, payload, qos=1)
        deadline = time.time() + 5
        while info.mid not in self.acks and time.time() < deadline:
            time.sleep(0.02)
        return self.acks.get(info.mid)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def test_broker_keeps_tenants_to_their_own_prefix(platform, pair):
    cfg = platform
    (ta, pa), (tb, pb) = pair["a"], pair["b"]
    a, b = ta.name, tb.name

    wrong = Client(cfg, a, "not-the-password")
    assert wrong.connack is not None and wrong.connack.is_failure
    wrong.close()

    from mysimbdp import broker
    from mysimbdp.services import mosquitto_broker

    # reads b's data as the platform's inbox writer does (its login, another client id)
    watcher_login = mosquitto_broker.service_login(cfg, broker.INBOX_WRITER_USER)
    ca, cb, watcher = Client(cfg, a, pa), Client(cfg, b, pb), Client(cfg, *watcher_login)
    try:
        assert not ca.connack.is_failure and not cb.connack.is_failure
        ca.c.subscribe([(f"tenants/{b}/#", 1), ("#", 1), (f"$share/{b}/tenants/{b}/in/#", 1), (f"reports/{b}/#", 1)])
        cb.c.subscribe(f"tenants/{b}/#", qos=1)  # a tenant may not read even its own topics (the broker would
        watcher.c.subscribe(f"tenants/{b}/#", qos=1)  # otherwise keep messages for sessions of its own)
        time.sleep(0.5)

        # b's own traffic never reaches a
        assert not cb.publish(f"tenants/{b}/in/x", b"1,b-private").is_failure
        # a cannot publish under b's prefix or b's reports: refused, and b sees nothing
        rc = ca.publish(f"tenants/{b}/in/x", b"1,forged-by-a")
        assert rc.is_failure and "authorized" in str(rc).lower()
        assert ca.publish(f"reports/{b}/i1", b"{}").is_failure
        assert ca.publish(f"inbox/{b}/plan", b'{"slots": [], "version": 9}').is_failure  # the platform's notices
        assert ca.publish(f"confirm/{b}/0123456789abcdef", b"ok 0").is_failure
        assert ca.publish("tenants/other/in/x", b"x").is_failure
        # a can use its own prefix
        assert not ca.publish(f"tenants/{a}/in/x", b"1,mine").is_failure
        time.sleep(1.0)
        assert [m for m in ca.messages if m[0].startswith(f"tenants/{b}") or m[0].startswith(f"reports/{b}")] == []
        assert (f"tenants/{b}/in/x", b"1,b-private") in watcher.messages
        assert all(payload != b"1,forged-by-a" for _, payload in watcher.messages)
        assert cb.messages == []
    finally:
        ca.close()
        cb.close()
        watcher.close()


def test_a_tenant_role_cannot_set_table_options_that_hurt_the_shared_node(platform, make_tenant):
    """Cassandra's guardrails (cassandra/cassandra.yaml.in): a table that flushed every millisecond with
    compaction off made 1,600 SSTables (and as many open files) in 20 s; zstd at level 22 kept a core busy.
    A tenant's role is refused all three."""
    from cassandra import InvalidRequest

    from mysimbdp import db, tenants

    t, _ = make_tenant()
    s = db.connect(platform, tenants.cassandra_login(platform, t.name), t.name)
    try:
        for option in (
            "memtable_flush_period_in_ms = 1",
            "compaction = {'class': 'SizeTieredCompactionStrategy', 'enabled': 'false'}",
            "compression = {'class': 'ZstdCompressor', 'compression_level': 22, 'chunk_length_in_kb': 1}",
        ):
            with pytest.raises(InvalidRequest, match="Guardrail table_properties violated"):
                s.execute(f"CREATE TABLE t (k int PRIMARY KEY) WITH {option}")
        s.execute("CREATE TABLE t (k int PRIMARY KEY) WITH default_time_to_live = 100")  # what apps need stays
    finally:
        s.cluster.shutdown()
