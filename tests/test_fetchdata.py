"""fetchdata as a tenant runs it: one line per file, the right exit status, splitting, resuming."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, SAMPLE_CONSTRAINTS, count_rows, run_cli

pytestmark = pytest.mark.services
HEADER = "id,title,body,amount,at\n"


def notes_csv(ids, extra="") -> str:
    return (
        HEADER + "".join(f'{i},"title {i}, with a comma","body {i}",{i}.5,2024-01-01T00:00:00Z\n' for i in ids) + extra
    )


def fetch(cfg, user, password, folder, *extra, env=None):
    return run_cli(
        "-u",
        user,
        f"--password={password}",
        "-d",
        str(folder),
        "--server",
        cfg.batch_url(),
        *extra,
        module="fetchdata",
        env=env,
    )


def lines(out: str) -> dict[str, str]:
    """file label -> its line (the summary line excluded)."""
    found = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in ("uploaded", "refused", "skipped", "failed"):
            found[parts[1].split(" ", 1)[0].rstrip(":")] = line
    return found


def test_one_line_per_file_and_exit_status(platform, batch_tenant, tmp_path):
    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_file_size_bytes": 4096, "split_large_files": False})
    d = tmp_path / "in"
    d.mkdir()
    (d / "good.csv").write_text(notes_csv(range(1, 4)))
    (d / "other.csv").write_text(notes_csv(range(10, 12)))
    (d / "image.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" * 10)
    (d / "notes.txt").write_text("hello")
    (d / "empty.csv").write_text("")
    (d / "huge.csv").write_text(notes_csv(range(1000, 1200)))
    (d / ".hidden.csv").write_text(notes_csv([99]))
    (d / "sub").mkdir()
    res = fetch(platform, t.name, pw, d)
    assert res.returncode == 4, res.stdout + res.stderr  # some refused by the constraints, the rest sent
    got = lines(res.stdout)
    assert got["good.csv"].startswith("uploaded") and "job" in got["good.csv"]
    assert got["other.csv"].startswith("uploaded")
    assert got["image.csv"].startswith("refused") and "NUL" in got["image.csv"]
    assert got["notes.txt"].startswith("refused") and "format .txt is not allowed" in got["notes.txt"]
    assert got["empty.csv"].startswith("refused") and "empty" in got["empty.csv"]
    assert (
        got["huge.csv"].startswith("refused")
        and "maximum file size" in got["huge.csv"]
        and "splitting is not allowed" in got["huge.csv"]
    )
    assert got["sub/"].startswith("skipped")
    assert got[".hidden.csv"].startswith("skipped") and "hidden" in got[".hidden.csv"]
    assert "Traceback" not in res.stderr

    # the same folder again: nothing is sent twice (and the refused are still refused)
    again = fetch(platform, t.name, pw, d)
    assert again.returncode == 4
    assert "already uploaded" in lines(again.stdout)["good.csv"]
    jobs = api.get("/v1/jobs").json()["jobs"]
    assert sorted(j["file_name"] for j in jobs) == ["good.csv", "other.csv"]
    for j in jobs:
        api.wait_job(j["job_id"])
    assert count_rows(platform, t.name, "notes") == 5


def test_wrong_password_unreachable_server_and_missing_folder(platform, batch_tenant, tmp_path):
    t, pw, api = batch_tenant()
    (tmp_path / "a.csv").write_text(notes_csv([1]))
    res = fetch(platform, t.name, "wrong-password", tmp_path)
    assert res.returncode != 0 and res.stderr.strip() == "fetchdata: error: wrong user name or password (check -u/-p)"
    res = run_cli(
        "-u", t.name, f"--password={pw}", "-d", str(tmp_path), "--server", "http://127.0.0.1:9", module="fetchdata"
    )
    assert (
        res.returncode != 0 and "cannot reach the platform" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    )
    res = fetch(platform, t.name, pw, tmp_path / "nope")
    assert res.returncode == 2 and "not a folder" in res.stderr
    # the password from the environment instead of -p
    env_res = run_cli(
        "-u",
        t.name,
        "-d",
        str(tmp_path),
        "--server",
        platform.batch_url(),
        module="fetchdata",
        env={"MYSIMBDP_PASSWORD": pw},
    )
    assert env_res.returncode == 0 and "uploaded  a.csv" in env_res.stdout


def test_too_many_files_fail_with_the_reason_and_a_nonzero_exit(platform, batch_tenant, tmp_path):
    t, pw, api = batch_tenant(
        "hanger",
        cons={
            **SAMPLE_CONSTRAINTS,
            "max_files": {"count": 2, "per": "staged"},
            "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 30},
        },
    )
    for i in range(4):
        (tmp_path / f"f{i}.csv").write_text(notes_csv([i]))
    res = fetch(platform, t.name, pw, tmp_path)
    assert res.returncode == 1
    got = lines(res.stdout)
    assert got["f0.csv"].startswith("uploaded") and got["f1.csv"].startswith("uploaded")
    assert got["f2.csv"].startswith("failed") and "limit of 2" in got["f2.csv"]
    assert got["f3.csv"].startswith("failed") and "not sent" in got["f3.csv"]


def test_large_csv_is_split_at_record_boundaries_with_the_header(platform, batch_tenant, tmp_path):
    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_file_size_bytes": 2000, "split_large_files": True})
    # records with quoted newlines and commas must not be cut
    rows = [f'{i},"t{i}","line a\r\nline b, {i}",{i},2024-01-01T00:00:00Z' for i in range(1, 301)]
    data = (HEADER.replace("\n", "\r\n") + "\r\n".join(rows) + "\r\n").encode()
    (tmp_path / "big.csv").write_bytes(data)
    res = fetch(platform, t.name, pw, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    parts = [ln for ln in res.stdout.splitlines() if ln.startswith("uploaded")]
    assert len(parts) == (len(data) // 2000) + 1 or len(parts) > len(data) // 2000
    assert all("big.csv -> big.part" in ln for ln in parts)
    jobs = api.get("/v1/jobs").json()["jobs"]
    assert all(j["size"] <= 2000 for j in jobs)
    for j in jobs:
        done = api.wait_job(j["job_id"])
        assert done["status"] == "succeeded" and done["rows_rejected"] == 0, done
    assert sum(api.get(f"/v1/jobs/{j['job_id']}").json()["rows_ingested"] for j in jobs) == 300
    assert count_rows(platform, t.name, "notes") == 300


def test_a_record_larger_than_the_limit_cannot_be_split(platform, batch_tenant, tmp_path):
    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_file_size_bytes": 500, "split_large_files": True})
    (tmp_path / "wide.csv").write_text(HEADER + f'1,"{"x" * 800}",b,1,2024-01-01T00:00:00Z\n')
    res = fetch(platform, t.name, pw, tmp_path)
    assert res.returncode == 65  # its only file was refused: nothing was sent
    assert lines(res.stdout)["wide.csv"].startswith("refused") and "cannot be split" in res.stdout


def test_an_interrupted_upload_resumes_where_it_stopped(platform, batch_tenant, tmp_path):
    # time enough for 60,000 rows on three nodes of this 2-core machine too (about 1,000 a second there)
    cons = {
        **SAMPLE_CONSTRAINTS,
        "max_file_size_bytes": 64 << 20,
        "batch": {"max_concurrent_jobs": 2, "timeout_seconds": 300},
    }
    t, pw, api = batch_tenant(cons=cons)
    n = 60000
    (tmp_path / "large.csv").write_text(notes_csv(range(n)))
    size = (tmp_path / "large.csv").stat().st_size
    # a slow upload, killed half-way through
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fetchdata",
            "-u",
            t.name,
            f"--password={pw}",
            "-d",
            str(tmp_path),
            "--server",
            platform.batch_url(),
            "--limit-rate",
            str(size // 4),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    part = list(platform.paths.uploads(t.name).glob("*.part"))
    assert len(part) == 1
    kept = part[0].stat().st_size
    assert 0 < kept < size
    res = fetch(platform, t.name, pw, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    line = lines(res.stdout)["large.csv"]
    assert line.startswith("uploaded") and "resumed at" in line
    job = api.get("/v1/jobs").json()["jobs"][0]
    assert job["size"] == size
    done = api.wait_job(job["job_id"], timeout=300)
    assert done["status"] == "succeeded" and done["rows_ingested"] == n


def test_two_runs_on_one_folder_at_once_send_each_file_once(platform, batch_tenant, tmp_path):
    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_file_size_bytes": 64 << 20})
    n = 30000
    (tmp_path / "shared.csv").write_text(notes_csv(range(n)))
    size = (tmp_path / "shared.csv").stat().st_size
    argv = [
        sys.executable,
        "-m",
        "fetchdata",
        "-u",
        t.name,
        f"--password={pw}",
        "-d",
        str(tmp_path),
        "-q",
        "--server",
        platform.batch_url(),
        "--limit-rate",
        str(size // 3),
    ]
    first = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1)
    second = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [p.communicate(timeout=120) for p in (first, second)]
    for p, (out, err) in zip((first, second), outs):
        assert p.returncode == 0, out + err
        assert "Traceback" not in err
    said = [lines(out)["shared.csv"] for out, _ in outs]
    assert any(s.startswith("uploaded") for s in said), said
    assert all(s.startswith("uploaded") or "already uploaded" in s for s in said), said
    jobs = api.get("/v1/jobs").json()["jobs"]
    assert len(jobs) == 1 and api.wait_job(jobs[0]["job_id"])["rows_ingested"] == n


def test_a_file_that_changes_while_it_is_sent_fails_alone(platform, batch_tenant, tmp_path):
    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_file_size_bytes": 64 << 20})
    (tmp_path / "a_growing.csv").write_text(notes_csv(range(30000)))
    (tmp_path / "b_after.csv").write_text(notes_csv(range(5)))
    size = (tmp_path / "a_growing.csv").stat().st_size
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fetchdata",
            "-u",
            t.name,
            f"--password={pw}",
            "-d",
            str(tmp_path),
            "-q",
            "--server",
            platform.batch_url(),
            "--limit-rate",
            str(size // 4),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    with open(tmp_path / "a_growing.csv", "r+") as fh:  # cut short while it is being sent
        fh.truncate(size // 3)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err  # one file failed
    got = lines(out)
    assert got["a_growing.csv"].startswith("failed") and "changed while being sent" in got["a_growing.csv"], out + err
    assert got["b_after.csv"].startswith("uploaded"), out  # and the rest of the folder still went


def test_progress_bar_on_a_terminal(platform, batch_tenant, tmp_path):
    """Drawn on a terminal only (script(1) gives fetchdata one)."""
    import shutil

    if not shutil.which("script"):
        pytest.fail("script(1) is needed for this test (bsdutils)")
    t, pw, api = batch_tenant(cons={**SAMPLE_CONSTRAINTS, "max_file_size_bytes": 64 << 20})
    (tmp_path / "p.csv").write_text(notes_csv(range(20000)))
    cmd = f"{sys.executable} -m fetchdata -u {t.name} --password={pw} -d {tmp_path} --server {platform.batch_url()} --limit-rate 600000"
    out = subprocess.run(["script", "-qec", cmd, "/dev/null"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "uploaded  p.csv" in out.stdout
    assert "%" in out.stdout and "MB/s" in out.stdout and "[" in out.stdout  # the bar was drawn


def test_a_folder_whose_every_file_is_refused_exits_65_and_says_so(platform, batch_tenant, tmp_path):
    t, pw, api = batch_tenant()
    d = tmp_path / "in"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    (d / "empty.csv").write_text("")
    (d / ".hidden.csv").write_text(notes_csv([1]))  # skipped, not refused: it does not count either way
    res = fetch(platform, t.name, pw, d)
    assert res.returncode == 65, res.stdout + res.stderr
    assert "0 uploaded, 2 refused, 1 skipped, 0 failed" in res.stdout
    assert api.get("/v1/jobs").json()["jobs"] == []
    (d / "good.csv").write_text(notes_csv([1, 2]))
    assert fetch(platform, t.name, pw, d).returncode == 4
    (d / "notes.txt").unlink()
    (d / "empty.csv").unlink()
    assert fetch(platform, t.name, pw, d).returncode == 0  # all sent (good.csv already)
