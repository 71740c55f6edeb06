"""Pure logic: identifier patterns, file names, constraints schema, configuration layers, hashes."""

from __future__ import annotations

import json

import pytest

from mysimbdp import config, constraints, credentials, names
from mysimbdp.errors import ConfigError, InvalidConstraints, InvalidName


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../x",
        "a;DROP",
        "Alice",
        "ab",
        "a" * 33,
        "1abc",
        "a-b",
        "a b",
        "x/y",
        "system_x",
        "mysimbdp",
        "cassandra1",
        "operator",
        "svcx",
        "appx",
        "tenant\n",
    ],
)
def test_invalid_tenant_names_are_refused(bad):
    with pytest.raises(InvalidName):
        names.tenant(bad)


@pytest.mark.parametrize("good", ["abc", "airline", "weather_2", "a" * 32])
def test_valid_tenant_names(good):
    assert names.tenant(good) == good


@pytest.mark.parametrize(
    "bad",
    [
        "../etc/passwd",
        "/etc/passwd",
        "a/b.csv",
        "..\\x.csv",
        "C:\\x.csv",
        ".hidden.csv",
        "..",
        ".",
        "",
        "  ",
        "x\x00.csv",
        "x\n.csv",
        "x\x1b[31m.csv",
        "line\u2028sep.csv",  # a line separator: many readers split the ingestion log there
        "para\u2029sep.csv",
        " x.csv",
        "é" * 150,
    ],
)
def test_unsafe_file_names_are_refused(bad):
    with pytest.raises(InvalidName):
        names.safe_file_name(bad)


def test_file_names_are_normalised_and_kept_readable():
    assert names.safe_file_name("flights 2013 (jan).csv") == "flights 2013 (jan).csv"
    assert names.safe_file_name("cafe\u0301.csv") == "caf\u00e9.csv"  # NFC


def test_constraints_defaults_and_schema():
    c = constraints.parse({"formats": ["csv"], "max_files": {"count": 3, "per": "day"}, "max_file_size_bytes": 10})
    assert c.formats == ("csv",) and c.max_files == 3 and c.max_files_per == "day"
    assert c.batch["timeout_seconds"] == 600 and c.autoscale.max_instances == 4
    assert not c.split_large_files


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"formats": ["exe"], "max_files": {"count": 1, "per": "day"}, "max_file_size_bytes": 1}, "formats/0"),
        ({"formats": ["csv"], "max_files": {"count": 0, "per": "day"}, "max_file_size_bytes": 1}, "max_files/count"),
        ({"formats": ["csv"], "max_files": {"count": 1, "per": "week"}, "max_file_size_bytes": 1}, "max_files/per"),
        ({"formats": ["csv"], "max_files": {"count": 1, "per": "day"}}, "max_file_size_bytes"),
        ({"formats": ["csv"], "max_files": {"count": 1, "per": "day"}, "max_file_size_bytes": 1, "extra": 1}, "extra"),
        (
            {
                "formats": ["csv"],
                "max_files": {"count": 1, "per": "day"},
                "max_file_size_bytes": 1,
                "stream": {"autoscale": {"min_instances": 5, "max_instances": 2}},
            },
            "min_instances",
        ),
    ],
)
def test_constraints_that_break_the_schema(doc, fragment):
    with pytest.raises(InvalidConstraints) as exc:
        constraints.parse(doc)
    assert fragment in exc.value.message


def test_constraints_not_json():
    with pytest.raises(InvalidConstraints, match="not valid JSON.*line 1"):
        constraints.loads("{formats: [csv]}")


def test_config_layers(tmp_path):
    (tmp_path / "mysimbdp.toml").write_text('[cassandra]\nport = 9999\nheap = "2G"\n[batch]\nworkers = 4\n')
    cfg = config.load(
        {"home": str(tmp_path), "batch.workers": 3},
        env={"MYSIMBDP_CASSANDRA_PORT": "9100", "MYSIMBDP_SANDBOX_PIDS": "64"},
    )
    assert cfg.cassandra.port == 9100  # env beats file
    assert cfg.cassandra.heap == "2G"  # file beats default
    assert cfg.batch.workers == 3  # flags beat everything
    assert cfg.sandbox.pids == 64
    assert cfg.sandbox_gateway == "172.29.0.1"
    with pytest.raises(ConfigError):
        config.load({"home": str(tmp_path)}, env={"MYSIMBDP_CASSANDRA_PORT": "many"})
    with pytest.raises(ConfigError):
        config.load({"home": str(tmp_path), "cassandra.nonsense": 1}, env={})
    with pytest.raises(ConfigError):
        config.load({"home": str(tmp_path)}, env={"MYSIMBDP_CASSANDRA_REPLICATION_CLASS": "Evil'}; DROP"})


def test_config_is_frozen(tmp_path):
    cfg = config.load({"home": str(tmp_path)}, env={})
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.cassandra.port = 1  # type: ignore[misc]


def test_password_hashes():
    h = credentials.hash_password("s3cret-pass")
    assert h.startswith("$2") and "s3cret" not in h
    assert credentials.check_password("s3cret-pass", h)
    assert not credentials.check_password("s3cret-pasS", h)
    long = "x" * 100
    assert credentials.check_password(long, credentials.hash_password(long))
    assert not credentials.check_password("x" * 99 + "y", credentials.hash_password(long))
    m = credentials.mosquitto_hash("pw-123", 1000)
    assert m.startswith("$7$1000$") and credentials.check_mosquitto_hash("pw-123", m)
    assert not credentials.check_mosquitto_hash("pw-124", m)


def test_secret_files_are_private(tmp_path):
    import os
    import stat

    path = tmp_path / "secrets" / "x.json"
    credentials.write_secret(path, {"a": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert json.loads(path.read_text()) == {"a": 1}


def test_a_login_refused_is_told_from_a_node_not_reachable_and_a_password_is_never_printed():
    from cassandra import AuthenticationFailed
    from cassandra.cluster import NoHostAvailable

    from mysimbdp import db

    assert db.login_refused(NoHostAvailable("no", {"127.0.0.1:9042": AuthenticationFailed("bad")}))
    assert not db.login_refused(NoHostAvailable("no", {"127.0.0.1:9042": OSError("refused")}))
    # when no pool could be opened the driver gives only the hosts it tried (seen while Cassandra restarts)
    assert not db.login_refused(NoHostAvailable("Unable to connect to any servers using keyspace", ["127.0.0.1"]))
    assert "s3cret" not in repr(db.Login("op", "s3cret"))


def test_token_ownership_is_each_nodes_share_of_the_ring():
    from mysimbdp.services.cassandra_node import _ownership

    third = 2**64 // 3
    lo = -(2**63)
    # three nodes, one token each, evenly spaced: a third each (the first owns the wrap-around range)
    share = _ownership({"a": [str(lo + third)], "b": [str(lo + 2 * third)], "c": [str(lo + 3 * third)]})
    assert {k: round(v, 6) for k, v in share.items()} == {"a": 0.333333, "b": 0.333333, "c": 0.333333}
    # uneven: b's token right after a's owns almost nothing, c the rest after b
    share = _ownership({"a": ["0"], "b": ["1"], "c": [str(2**62)]})
    assert share["b"] == 1 / 2**64 and abs(share["c"] - 0.25) < 1e-9 and abs(share["a"] - 0.75) < 1e-9
    assert abs(sum(share.values()) - 1) < 1e-12
    assert _ownership({"a": ["5", "-5"]}) == {"a": 1.0}
    assert _ownership({}) == {}
