"""`mysimbdp tenant ...` as an operator uses it, against the real Cassandra and broker."""

from __future__ import annotations

import json
import os
import stat

import pytest

from conftest import SAMPLE_CONSTRAINTS, ROOT, run_cli, unique_name

pytestmark = pytest.mark.services


@pytest.mark.parametrize("bad", ["../x", "a;DROP", "UPPER", "a" * 40, ""])
def test_create_with_an_invalid_name_says_so_in_one_line(platform, constraints_file, bad):
    res = run_cli(
        "tenant", "create", bad, "--constraints", str(constraints_file()), "--password-stdin", input="password-123\n"
    )
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "tenant name" in lines[0], res.stderr
    assert "Traceback" not in res.stderr


def test_create_with_bad_constraints(platform, tmp_path):
    not_json = tmp_path / "c.json"
    not_json.write_text("{'formats': ['csv']")
    res = run_cli(
        "tenant", "create", unique_name(), "--constraints", str(not_json), "--password-stdin", input="pw-123456\n"
    )
    assert res.returncode != 0 and "not valid JSON" in res.stderr and len(res.stderr.strip().splitlines()) == 1

    bad_schema = tmp_path / "s.json"
    bad_schema.write_text(json.dumps({**SAMPLE_CONSTRAINTS, "max_file_size_bytes": -5}))
    res = run_cli(
        "tenant", "create", unique_name(), "--constraints", str(bad_schema), "--password-stdin", input="pw-123456\n"
    )
    assert res.returncode != 0 and "max_file_size_bytes" in res.stderr and len(res.stderr.strip().splitlines()) == 1

    missing = tmp_path / "nope.json"
    res = run_cli(
        "tenant", "create", unique_name(), "--constraints", str(missing), "--password-stdin", input="pw-123456\n"
    )
    assert res.returncode != 0 and "does not exist" in res.stderr


def test_create_list_show_delete_and_duplicate(platform, registry, constraints_file, cfg):
    name = unique_name("cli")
    cons = constraints_file()
    try:
        res = run_cli(
            "tenant",
            "create",
            name,
            "--constraints",
            str(cons),
            "--password-stdin",
            "--batch-app",
            str(ROOT / "tenant_apps" / "airline" / "app"),
            input="correct horse battery\n",
        )
        assert res.returncode == 0, res.stderr
        assert f"tenant {name} ready" in res.stdout

        # stored with a bcrypt hash, never the password
        row = registry.session.execute(
            f"SELECT password_hash, state FROM {cfg.keyspace}.tenants WHERE name = %s", (name,)
        ).one()
        assert row.state == "ready" and row.password_hash.startswith("$2") and "horse" not in row.password_hash
        # its keyspace and role exist; its folders exist
        assert registry.session.execute(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (name,)
        ).one()
        assert registry.session.execute("SELECT role FROM system_auth.roles WHERE role = %s", (name,)).one()
        assert cfg.paths.staging(name).is_dir()
        secret = cfg.paths.secrets / "tenants" / f"{name}.json"
        assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600

        listed = json.loads(run_cli("tenant", "list", "--json").stdout)
        assert name in [t["name"] for t in listed]
        shown = json.loads(run_cli("tenant", "show", name).stdout)
        assert shown["constraints"]["formats"] == ["csv"] and shown["batch_app"] == "airline@1.0.0"

        dup = run_cli("tenant", "create", name, "--constraints", str(cons), "--password-stdin", input="another-pass\n")
        assert dup.returncode != 0 and "already exists" in dup.stderr and len(dup.stderr.strip().splitlines()) == 1

        no = run_cli("tenant", "delete", name)
        assert no.returncode != 0 and "--yes" in no.stderr
    finally:
        res = run_cli("tenant", "delete", name, "--yes")
    assert res.returncode == 0, res.stderr
    assert registry.find(name) is None
    assert not registry.session.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (name,)
    ).one()
    assert not cfg.paths.staging(name).exists()
    gone = run_cli("tenant", "show", name)
    assert gone.returncode != 0 and "no tenant" in gone.stderr


def test_password_only_from_stdin_and_long_enough(platform, constraints_file):
    res = run_cli("tenant", "create", unique_name(), "--constraints", str(constraints_file()))
    assert res.returncode != 0 and "--password-stdin" in res.stderr
    res = run_cli(
        "tenant", "create", unique_name(), "--constraints", str(constraints_file()), "--password-stdin", input="short\n"
    )
    assert res.returncode != 0 and "at least 8" in res.stderr


def test_a_half_made_tenant_is_finished_by_running_create_again(platform, registry, make_tenant, cfg):
    from mysimbdp import constraints
    from datetime import datetime, timezone

    name = unique_name("half")
    # what a crash right after the first step leaves: the row in 'creating', nothing else
    registry.session.execute(
        f"INSERT INTO {cfg.keyspace}.tenants (name, state, constraints, created_at) VALUES (%s, 'creating', %s, %s)",
        (name, constraints.parse(SAMPLE_CONSTRAINTS).to_json(), datetime.now(timezone.utc)),
    )
    with pytest.raises(Exception, match="not ready"):
        registry.get(name)
    t, _ = make_tenant(name)
    assert t.state == "ready" and t.uid > cfg.sandbox.uid_base
    assert cfg.paths.staging(name).is_dir()


def test_app_without_manifest_is_refused_before_anything_is_made(platform, registry, constraints_file, tmp_path):
    name = unique_name()
    (tmp_path / "app").mkdir()
    res = run_cli(
        "tenant",
        "create",
        name,
        "--constraints",
        str(constraints_file()),
        "--password-stdin",
        "--batch-app",
        str(tmp_path / "app"),
        input="password-123\n",
    )
    assert res.returncode != 0 and "app.json" in res.stderr
    assert registry.find(name) is None
