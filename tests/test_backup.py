"""Backups and restores against the real node: ingest, back up, lose the data (truncate, drop a table, delete
the tenant), restore, and every row, receipt and login is back; a damaged backup is refused, naming the file,
with nothing changed; scheduled backups and their retention."""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest import Api, count_rows, run_cli

from mysimbdp import backup as backup_mod
from mysimbdp import config as config_mod
from mysimbdp import db

pytestmark = pytest.mark.services

HEADER = "id,title,body,amount,at\n"


def notes_csv(first: int, last: int) -> bytes:
    return (
        HEADER + "".join(f'{i},t{i},"body {i}, line",{i}.5,2024-01-01T00:00:00Z\n' for i in range(first, last + 1))
    ).encode()


@pytest.fixture
def folder(tmp_path):
    """A backup folder of the test's own, given to every command as a user would (the environment)."""
    path = tmp_path / "backups"
    return path


@pytest.fixture
def session(platform):
    s = db.connect(platform)
    yield s
    s.cluster.shutdown()


def cli(folder: Path, *args: str, **kw):
    return run_cli(*args, env={"MYSIMBDP_BACKUP_FOLDER": str(folder)}, **kw)


def ingest(api: Api, name: str, body: bytes) -> dict:
    r = api.put_file(name, body)
    assert r.status_code == 201, r.text
    job = api.wait_job(r.json()["job"]["job_id"])
    assert job["status"] == "succeeded", job
    return job


def rows(session, keyspace: str, table: str = "notes") -> list[tuple]:
    return sorted(tuple(r) for r in session.execute(f"SELECT * FROM {keyspace}.{table}"))


def logged_in_jobs(api: Api, timeout: float = 30) -> list[dict]:
    """The tenant's receipts as it sees them, once the APIs know it again (they cache tenants for seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        r = api.get("/v1/jobs")
        if r.status_code == 200 or time.monotonic() > deadline:
            assert r.status_code == 200, r.text
            return r.json()["jobs"]
        time.sleep(1)


def back_up(folder: Path, tenant: str) -> str:
    res = cli(folder, "backup", tenant)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"backup {tenant}-"), res.stdout
    return res.stdout.split()[1].rstrip(":")


def test_ingest_back_up_lose_everything_and_restore_it(platform, batch_tenant, session, folder):
    t, password, api = batch_tenant("notes")
    jobs = [ingest(api, "a.csv", notes_csv(1, 400)), ingest(api, "b.csv", notes_csv(401, 700))]
    before = rows(session, t.name)
    assert len(before) == 700
    name = back_up(folder, t.name)

    listed = json.loads(cli(folder, "backup", "list", "--json").stdout)
    assert [b["name"] for b in listed] == [name]
    assert listed[0]["tenant"] == t.name and listed[0]["kind"] == "manual" and "notes" in listed[0]["tables"]
    manifest = json.loads((folder / name / "manifest.json").read_text())
    assert manifest["receipts"]["jobs"] == 2 and any(f.endswith("-Data.db") for f in manifest["files"])
    assert oct((folder / name).stat().st_mode & 0o777) == "0o700"
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]

    # rows in the table: a restore does not overwrite them unless asked
    res = cli(folder, "restore", t.name, "--from", name)
    assert res.returncode == 73 and f"tenant {t.name} has rows in notes" in res.stderr, res.stderr

    # 1. truncated
    session.execute(f"TRUNCATE {t.name}.notes")
    assert count_rows(platform, t.name, "notes") == 0
    res = cli(folder, "restore", t.name, "--from", name)
    assert res.returncode == 0, res.stderr
    assert "tables loaded" in res.stdout and "notes" in res.stdout
    assert rows(session, t.name) == before

    # 2. the table dropped
    session.execute(f"DROP TABLE {t.name}.notes")
    res = cli(folder, "restore", t.name, "--from", name)
    assert res.returncode == 0, res.stderr
    assert "tables created notes" in res.stdout
    assert rows(session, t.name) == before

    # 3. the tenant deleted: keyspace, role, receipts, apps, broker user, all gone
    res = run_cli("tenant", "delete", t.name, "--yes")
    assert res.returncode == 0, res.stderr
    assert run_cli("tenant", "show", t.name).returncode == 67
    res = cli(folder, "restore", t.name, "--from", name)
    assert res.returncode == 0, res.stderr
    assert "made from the backup's registry row" in res.stdout
    assert rows(session, t.name) == before
    # it logs in with the password it had, sees its receipts, and its batch app ingests again
    got = {j["job_id"]: j for j in logged_in_jobs(api)}
    assert set(got) == {j["job_id"] for j in jobs}
    assert sorted(j["rows_ingested"] for j in got.values()) == [300, 400]
    assert all(j["status"] == "succeeded" for j in got.values())
    ingest(api, "c.csv", notes_csv(701, 750))
    assert count_rows(platform, t.name, "notes") == 750

    # --overwrite puts the backup's rows back in place of what is there now
    res = cli(folder, "restore", t.name, "--from", name, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert rows(session, t.name) == before


def test_restore_as_a_new_tenant_keeps_dropped_columns_and_indexes_and_leaves_the_original_alone(
    platform, batch_tenant, make_tenant, session, folder
):
    t, password, api = batch_tenant("notes")
    ingest(api, "a.csv", notes_csv(1, 300))
    # a column with values in the SSTables, dropped before the backup (Cassandra refuses such files unless the
    # drop is known), and a storage-attached index
    session.execute(f"ALTER TABLE {t.name}.notes ADD extra text")
    session.execute(f"UPDATE {t.name}.notes SET extra = 'x' WHERE id = 5")
    session.execute(f"ALTER TABLE {t.name}.notes DROP extra")
    session.execute(f"CREATE INDEX IF NOT EXISTS notes_title ON {t.name}.notes (title) USING 'sai'")
    before = rows(session, t.name)
    name = back_up(folder, t.name)

    new = f"{t.name}n"
    res = cli(folder, "restore", t.name, "--from", name, "--as", new)
    try:
        assert res.returncode == 0, res.stderr
        assert rows(session, new) == before
        assert [r.id for r in session.execute(f"SELECT id FROM {new}.notes WHERE title = 't7'")] == [7]
        assert rows(session, t.name) == before  # the original is untouched
        jobs = logged_in_jobs(Api(platform, new, password))
        assert len(jobs) == 1 and jobs[0]["rows_ingested"] == 300
        assert not jobs[0]["has_log"]  # the log is the other tenant's file: not handed over
        assert logged_in_jobs(api)[0]["has_log"]
    finally:
        run_cli("tenant", "delete", new, "--yes")


def test_a_damaged_backup_is_refused_naming_the_file_and_nothing_changes(platform, batch_tenant, session, folder):
    t, password, api = batch_tenant("notes")
    ingest(api, "a.csv", notes_csv(1, 200))
    name = back_up(folder, t.name)
    good = folder / name
    assert cli(folder, "backup", "verify", name).returncode == 0

    def damaged(how: str) -> Path:
        copy = folder / f"damaged-{how}"
        shutil.copytree(good, copy)
        return copy

    data = sorted((good / "data" / "notes").glob("*-Data.db"))[0].relative_to(good).as_posix()
    flipped = damaged("flip")
    with open(flipped / data, "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    missing = damaged("missing")
    (missing / "receipts.json").unlink()
    extra = damaged("extra")
    (extra / "data" / "notes" / "nb-99-big-Data.db").write_bytes(b"x")
    shorter = damaged("shorter")
    os.truncate(shorter / "tenant.json", 10)
    manifest = damaged("manifest")
    text = (manifest / "manifest.json").read_text()
    (manifest / "manifest.json").write_text(text.replace('"kind": "manual"', '"kind": "scheduled"'))

    session.execute(f"TRUNCATE {t.name}.notes")
    cases = [
        (flipped, f"{data} does not match its sha256"),
        (missing, "receipts.json is missing"),
        (extra, "data/notes/nb-99-big-Data.db is not in its manifest"),
        (shorter, "tenant.json has 10 bytes"),
        (manifest, "manifest.json does not match manifest.sha256"),
    ]
    for path, message in cases:
        res = cli(folder, "restore", t.name, "--from", str(path))
        assert res.returncode == 65, (path, res.stderr)
        assert message in res.stderr and res.stderr.count("\n") == 1, res.stderr
        res = cli(folder, "backup", "verify", str(path))
        assert res.returncode == 65 and message in res.stderr
        assert count_rows(platform, t.name, "notes") == 0  # nothing was loaded

    # a deleted tenant and a damaged backup: refused before the tenant is made again
    assert run_cli("tenant", "delete", t.name, "--yes").returncode == 0
    res = cli(folder, "restore", t.name, "--from", str(flipped))
    assert res.returncode == 65 and data in res.stderr
    assert run_cli("tenant", "show", t.name).returncode == 67
    ks = session.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (t.name,))
    assert ks.one() is None
    # the good backup brings it back
    res = cli(folder, "restore", t.name, "--from", name)
    assert res.returncode == 0, res.stderr
    assert count_rows(platform, t.name, "notes") == 200


def test_bad_requests_get_one_clear_line(platform, make_tenant, session, folder):
    res = cli(folder, "backup", "nosuchtenant")
    assert res.returncode == 67 and "no tenant 'nosuchtenant'" in res.stderr
    res = cli(folder, "restore", "nosuchtenant", "--from", "nosuchtenant-20250101T000000Z")
    assert res.returncode == 66 and "no backup nosuchtenant-20250101T000000Z" in res.stderr
    res = cli(folder, "restore", "nosuchtenant", "--from", "not-a-backup")
    assert res.returncode == 66 and "is not a backup name" in res.stderr
    res = cli(folder, "backup")
    assert res.returncode == 2 and "name the tenants to back up" in res.stderr

    t, _ = make_tenant()
    session.execute(f"CREATE TABLE {t.name}.things (id int PRIMARY KEY, v text)")
    name = back_up(folder, t.name)
    res = cli(folder, "restore", "othertenant", "--from", name)
    assert res.returncode == 65 and f"is of tenant {t.name}, not othertenant" in res.stderr
    res = cli(folder, "backup", "list", t.name)
    assert res.returncode == 0 and name in res.stdout and "manual" in res.stdout
    # a table that changed since: its SSTables would not load, so the restore is refused before it starts
    session.execute(f"DROP TABLE {t.name}.things")
    session.execute(f"CREATE TABLE {t.name}.things (id int PRIMARY KEY, v int)")
    res = cli(folder, "restore", t.name, "--from", name, "--overwrite")
    assert res.returncode == 73, res.stderr
    assert f"table {t.name}.things differs from the backup's: column v (text) is not there as such" in res.stderr


def _b(tenant: str, hours_ago: float, kind: str = "scheduled", now=None) -> backup_mod.Backup:
    when = now - timedelta(hours=hours_ago)
    name = f"{tenant}-{when:%Y%m%dT%H%M%SZ}"
    return backup_mod.Backup(name, Path(name), tenant, when, kind, 1, 1, ())


def test_retention_keeps_the_newest_scheduled_backups_and_never_those_made_by_hand():
    now = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)
    items = [_b("aaa", h, now=now) for h in (1, 25, 49, 73, 97)] + [
        _b("aaa", 500, kind="manual", now=now),
        _b("bbb", 1000, now=now),  # a tenant's only backup stays, however old
    ]
    by_count = backup_mod.prunable(items, keep=3, keep_days=0, now=now)
    assert [b.created_at for b in by_count] == [now - timedelta(hours=97), now - timedelta(hours=73)]
    by_age = backup_mod.prunable(items, keep=0, keep_days=2, now=now)
    assert [b.created_at for b in by_age] == [
        now - timedelta(hours=97),
        now - timedelta(hours=73),
        now - timedelta(hours=49),
    ]
    both = backup_mod.prunable(items, keep=2, keep_days=3, now=now)
    assert len(both) == 3  # past the 2 newest
    assert backup_mod.prunable(items, keep=0, keep_days=0, now=now) == []


@pytest.mark.slow
def test_the_schedule_backs_up_on_time_and_prunes(platform, make_tenant, folder):
    from mysimbdp.services.supervisor import BackupSchedule

    t, _ = make_tenant()
    manual = back_up(folder, t.name)
    env = dict(
        os.environ,
        MYSIMBDP_BACKUP_FOLDER=str(folder),
        MYSIMBDP_BACKUP_EVERY_HOURS="0.001",  # 3.6 s
        MYSIMBDP_BACKUP_TENANTS=t.name,
        MYSIMBDP_BACKUP_KEEP="2",
    )
    cfg = config_mod.load(env=env)
    schedule = BackupSchedule(cfg, env)
    starts = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(starts) < 3:
        if schedule.tick({}):
            starts.append(time.monotonic())
        time.sleep(0.1)
    while time.monotonic() < deadline and schedule.pid is not None:  # the third run ends; no fourth starts
        schedule.tick({}, now=schedule.last_start)
        time.sleep(0.1)
    assert len(starts) == 3 and schedule.pid is None, starts
    assert all(b - a >= 3.6 for a, b in zip(starts, starts[1:]))
    made = backup_mod.list_backups(cfg, t.name)
    assert [b.kind for b in made].count("scheduled") == 2  # keep = 2: the first scheduled one was pruned
    assert manual in [b.name for b in made]  # made by hand: never pruned
    log = (cfg.paths.logs / "backup.log").read_text()
    assert "pruned " in log
    # a new schedule (a supervisor started again) keeps the rhythm: nothing is due at once
    again = BackupSchedule(config_mod.load(env={**env, "MYSIMBDP_BACKUP_EVERY_HOURS": "1"}), env)
    assert not again.tick({})
