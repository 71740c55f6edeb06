"""A tenant's app is checked before it is installed (`tenant create/update`): its manifest and sample, that
every Python file compiles, its entry point, and a dry run on its sample into a scratch keyspace that is
dropped afterwards; installed versions are kept for `tenant rollback`. Against the real Cassandra, broker
and Docker, through the command line as an operator uses it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import APPS, ROOT, SAMPLE_CONSTRAINTS, Api, run_cli, unique_name

pytestmark = pytest.mark.services
FAST = {**SAMPLE_CONSTRAINTS, "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 5}}  # a hanging app: 5 s
SCRATCH = re.compile(r"scratch keyspace (dryrun_[0-9a-f]{12})")
NOTES_CSV = "id,title,body,amount,at\n{id},a,b,1.5,2024-01-01T00:00:00Z\n"


def scratch_names(out: str) -> list[str]:
    return SCRATCH.findall(out)


def assert_nothing_left(cfg, registry, names: list[str]) -> None:
    """No keyspace, role, container or folder of these dry runs is left."""
    from mysimbdp.sandbox import runtime

    assert names
    keyspaces = {r.keyspace_name for r in registry.session.execute("SELECT keyspace_name FROM system_schema.keyspaces")}
    for name in names:
        assert name not in keyspaces
        assert registry.session.execute("SELECT role FROM system_auth.roles WHERE role = %s", (name,)).one() is None
        assert not runtime(cfg).list(dryrun=name)
        assert not (cfg.paths.dry_runs / name).exists()


def app_copy(tmp_path: Path, name: str = "notes", version: str | None = None) -> Path:
    dest = tmp_path / f"{name}-{version or 'copy'}"
    shutil.copytree(APPS / name, dest)
    if version:
        manifest = json.loads((dest / "app.json").read_text())
        (dest / "app.json").write_text(json.dumps({**manifest, "version": version}))
    return dest


def one_line(res) -> str:
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def run_job(cfg, tenant: str, password: str, row_id: int) -> dict:
    api = Api(cfg, tenant, password)
    r = api.put_file(f"n{row_id}.csv", NOTES_CSV.format(id=row_id).encode())
    assert r.status_code == 201, r.text
    return api.wait_job(r.json()["job"]["job_id"])


def test_a_good_app_passes_its_checks_and_is_installed_with_its_dry_run_shown(platform, registry, constraints_file):
    name = unique_name("chk")
    notes = str(APPS / "notes")
    try:
        res = run_cli(
            "tenant", "create", name, "--constraints", str(constraints_file()), "--password-stdin",
            "--batch-app", notes, "--stream-app", notes, input="password-123\n",
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        out = res.stdout
        assert "compile      ok     3 Python files" in out
        assert "entry point  ok     ingest.py is there and compiles" in out
        # the batch sample has 21 records, one malformed; the stream sample 20 good ones
        assert re.search(r"dry run      ok     20 rows, 1 rejects from 21 records in [0-9.]+s", out), out
        assert re.search(r"dry run      ok     20 rows, 0 rejects from 20 records in [0-9.]+s", out), out
        assert "20 rows in its tables" in out
        logs = re.findall(r"log          kept in (\S+\.log)", out)
        assert len(logs) == 2 and all(Path(p).is_file() for p in logs)
        assert "ingested 20 rows" in Path(logs[0]).read_text()  # the batch app's own words
        assert f"tenant {name} ready" in out
        assert_nothing_left(platform, registry, scratch_names(out))
        t = registry.get(name)
        assert (t.batch_app, t.stream_app) == ("notes@2.1", "notes@2.1")
        # the dry runs wrote into their scratch keyspaces, never into the tenant's
        assert not registry.session.execute(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = %s AND table_name = 'notes'", (name,)
        ).one()
        job = run_job(platform, name, "password-123", 1)
        assert job["status"] == "succeeded" and (job["app_name"], job["app_version"]) == ("notes", "2.1"), job
    finally:
        if registry.find(name):
            registry.delete(name)


def test_a_syntax_error_is_refused_naming_the_file_and_line(platform, registry, constraints_file, tmp_path):
    app = app_copy(tmp_path)
    (app / "lib").mkdir()
    (app / "lib" / "helpers.py").write_text("x = 1\ndef f(:\n    return x\n")
    name = unique_name("syn")
    res = run_cli(
        "tenant", "create", name, "--constraints", str(constraints_file()), "--password-stdin",
        "--batch-app", str(app), input="password-123\n",
    )  # fmt: skip
    assert res.returncode == 65
    line = one_line(res)
    assert "lib/helpers.py, line 2: SyntaxError" in line and "nothing was installed" in line, line
    assert "compile      FAILED lib/helpers.py, line 2" in res.stdout
    assert "dry run" not in res.stdout  # nothing ran after the failed check
    assert registry.find(name) is None  # the tenant was not made at all
    assert not registry.session.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (name,)
    ).one()


def test_a_missing_entry_point_or_sample_is_refused_before_anything_runs(
    platform, registry, constraints_file, tmp_path
):
    no_entry = app_copy(tmp_path, version="noentry")
    (no_entry / "ingest.py").unlink()
    no_sample = app_copy(tmp_path, version="nosample")
    manifest = json.loads((no_sample / "app.json").read_text())
    del manifest["samples"]
    (no_sample / "app.json").write_text(json.dumps(manifest))
    hidden = []  # samples the installed copy would leave out, or reached through a linked folder
    for version, sample in (("pyc", "sample.pyc"), ("cache", "__pycache__/s.csv"), ("link", "d/s.csv")):
        app = app_copy(tmp_path, version=version)
        manifest = json.loads((app / "app.json").read_text())
        (app / "app.json").write_text(json.dumps({**manifest, "samples": {"batch": sample}}))
        if version == "link":
            (tmp_path / "elsewhere").mkdir()
            shutil.copyfile(app / "sample.csv", tmp_path / "elsewhere" / "s.csv")
            (app / "d").symlink_to(tmp_path / "elsewhere")
        else:
            (app / sample).parent.mkdir(exist_ok=True)
            shutil.copyfile(app / "sample.csv", app / sample)
        hidden.append(app)
    linked = app_copy(tmp_path, version="dirlink")
    (linked / "lib").symlink_to(tmp_path / "elsewhere")  # a linked folder is refused, not silently left out
    for app, fragment in (
        (no_entry, "entrypoints.batch 'ingest.py' is not a .py file"),
        (no_sample, 'app.json names no sample for the batch dry run: add "samples": {"batch": "FILE"}'),
        (hidden[0], "samples.batch 'sample.pyc' is left out of the installed copy"),
        (hidden[1], "samples.batch '__pycache__/s.csv' is left out of the installed copy"),
        (hidden[2], "samples.batch 'd/s.csv' is not a regular file"),
        (linked, "lib is a symbolic link; apps may only contain regular files"),
    ):
        name = unique_name("ent")
        res = run_cli(
            "tenant", "create", name, "--constraints", str(constraints_file()), "--password-stdin",
            "--batch-app", str(app), input="password-123\n",
        )  # fmt: skip
        assert res.returncode == 65 and fragment in one_line(res), res.stderr
        assert "manifest     FAILED" in res.stdout and "compile" not in res.stdout
        assert registry.find(name) is None


@pytest.mark.parametrize(
    "app, reason, logged",
    [
        ("crasher", "the app exited with status 1: RuntimeError: this app has a bug", "this app has a bug"),
        ("hanger", "the app stopped at the time limit after", "thinking..."),
        ("garbage", "the app exited normally but its /output/result.json is not valid", "garbage"),
    ],
)
def test_an_app_that_crashes_hangs_or_writes_garbage_is_refused_and_the_old_one_keeps_working(
    platform, registry, make_tenant, app, reason, logged
):
    from mysimbdp import apps

    t, password = make_tenant(cons=FAST, batch_app=APPS / "notes")
    t0 = time.monotonic()
    res = run_cli("tenant", "update", t.name, "--batch-app", str(APPS / app))
    assert res.returncode == 65, res.stdout + res.stderr
    line = one_line(res)
    assert f"the batch app in {APPS / app} was refused: {reason}" in line and "nothing was installed" in line, line
    log = Path(re.search(r"the dry run's log is kept in (\S+\.log)", line).group(1))
    assert logged in log.read_text(errors="replace")
    assert f"dry run      FAILED {reason}" in res.stdout
    assert re.search(r"\n    \| .*" + re.escape(logged), res.stdout), res.stdout  # the end of the log, shown
    if app == "hanger":
        assert time.monotonic() - t0 < 45  # held to the tenant's 5 s, not the platform's 900
    assert_nothing_left(platform, registry, scratch_names(res.stdout))
    # nothing changed: the old app is installed and a real job runs it
    assert registry.get(t.name).batch_app == "notes@2.1"
    assert apps.installed(platform, t.name, "batch").name == "notes"
    job = run_job(platform, t.name, password, 1)
    assert job["status"] == "succeeded" and job["app_version"] == "2.1", job


def test_a_stream_app_that_crashes_in_its_dry_run_is_refused(platform, registry, make_tenant):
    t, _ = make_tenant(stream_app=APPS / "notes")
    res = run_cli("tenant", "update", t.name, "--stream-app", str(APPS / "crasher"))
    assert res.returncode == 65, res.stdout + res.stderr
    line = one_line(res)
    assert "the app exited with status 1 before it had taken in the sample" in line, line
    assert "this stream app has a bug" in res.stdout
    assert_nothing_left(platform, registry, scratch_names(res.stdout))
    assert registry.get(t.name).stream_app == "notes@2.1"


def test_update_then_rollback_returns_to_the_previous_version(platform, registry, make_tenant, tmp_path):
    t, password = make_tenant(batch_app=APPS / "notes")
    newer = app_copy(tmp_path, version="2.2")
    res = run_cli("tenant", "update", t.name, "--batch-app", str(newer))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "dry run      ok" in res.stdout and "batch app notes@2.2" in res.stdout
    assert run_job(platform, t.name, password, 1)["app_version"] == "2.2"

    res = run_cli("tenant", "rollback", t.name, "--app", "batch")
    assert res.returncode == 0, res.stderr
    assert f"tenant {t.name}: batch app notes@2.2 (v0002) -> notes@2.1 (v0001)" in res.stdout
    assert "v0001  notes@2.1  (current)" in res.stdout and "v0002  notes@2.2" in res.stdout
    assert registry.get(t.name).batch_app == "notes@2.1"
    job = run_job(platform, t.name, password, 2)
    assert job["status"] == "succeeded" and job["app_version"] == "2.1", job  # the job ran the old version

    again = run_cli("tenant", "rollback", t.name, "--app", "batch")
    assert again.returncode == 65 and "nothing to return to" in one_line(again)
    none = run_cli("tenant", "rollback", t.name, "--app", "stream")
    assert none.returncode == 65 and f"tenant {t.name} has no stream app" in one_line(none)


def test_versions_are_bounded_and_an_install_of_before_versions_is_kept_as_the_first(
    platform, registry, make_tenant, tmp_path
):
    from mysimbdp import apps

    t, _ = make_tenant(batch_app=APPS / "notes")
    # an install made before versions were kept: the app's files right in apps/<tenant>/batch
    link = platform.paths.tenant_apps(t.name) / "batch"
    version = link.resolve()
    link.unlink()
    version.rename(link)
    assert apps.installed(platform, t.name, "batch").path == link
    for n in range(6):
        registry.update(t.name, batch_app=app_copy(tmp_path, version=f"3.{n}"), check_apps=False)
    kept = apps.versions(platform, t.name, "batch")
    assert [v["version"] for v in kept] == ["v0003", "v0004", "v0005", "v0006", "v0007"]  # v0001: the old install
    assert kept[-1]["current"] and kept[-1]["ref"] == "notes@3.5"
    back, now = registry.rollback(t.name, "batch")
    assert (back.ref, now.ref, now.path.name) == ("notes@3.5", "notes@3.4", "v0006")
    assert apps.installed(platform, t.name, "batch").version == "3.4"


def test_a_check_killed_half_way_leaves_nothing_once_the_next_check_runs(platform, registry, make_tenant):
    from mysimbdp.sandbox import runtime

    t, _ = make_tenant(cons={**SAMPLE_CONSTRAINTS, "batch": {"timeout_seconds": 120}}, batch_app=APPS / "notes")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mysimbdp", "tenant", "update", t.name, "--batch-app", str(APPS / "hanger")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    name = None
    while name is None or not runtime(platform).list(dryrun=name):  # the dry run's container runs
        assert time.monotonic() < deadline and proc.poll() is None, lines
        found = scratch_names("".join(lines))
        name = found[0] if found else None
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)  # no finally of the check runs
    proc.wait()
    assert registry.session.execute(
        "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = %s", (name,)
    ).one()  # left behind, for now
    assert (platform.paths.dry_runs / name).exists()

    res = run_cli("tenant", "update", t.name, "--batch-app", str(APPS / "notes"))  # the next check sweeps first
    assert res.returncode == 0, res.stdout + res.stderr
    assert_nothing_left(platform, registry, [name] + scratch_names(res.stdout))


def test_a_tenant_may_not_take_a_dry_runs_name(platform, constraints_file):
    res = run_cli(
        "tenant", "create", "dryrun_0123456789ab", "--constraints", str(constraints_file()), "--password-stdin",
        input="password-123\n",
    )  # fmt: skip
    assert res.returncode != 0 and "reserved for dry runs" in one_line(res)
