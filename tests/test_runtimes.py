"""Tenant apps in other runtimes than Python (mysimbdp/runtimes.py): a jar on Java 17 and a statically linked
executable, under the same contract and sandbox as a Python app.

The airline tenant's batch app exists three times: Python (tenant_apps/airline/app), Java (app-java, a jar
with the Cassandra driver in it) and Go (app-static, one static executable), built by scripts/sample-apps.sh.
Installed through `mysimbdp tenant create` with its checks and dry run, each ingests the same real file and a
tricky one into the same rows, with the same receipts and rejects. Entry points that are not what their
runtime runs are refused, naming the file, with nothing made; the sandbox holds for a JVM and a static app
as it does for Python (user, read-only root, capabilities, memory)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, Api, run_cli, unique_name

AIRLINE = ROOT / "tenant_apps" / "airline"
SAMPLES = {"python": AIRLINE / "app", "jvm": AIRLINE / "app-java", "static": AIRLINE / "app-static"}
REAL = AIRLINE / "client-input-dir" / "flights-2013-01-02.csv"  # 943 flights, one short row, one bad time
AIRLINE_CONSTRAINTS = json.loads((ROOT / "constraints" / "airline.json").read_text())
PROBES = ROOT / "tests" / "apps" / "probes"
COLUMNS = (
    "year, month, day, dep_time, sched_dep_time, dep_delay, arr_time, sched_arr_time, arr_delay, carrier, flight, "
    "tailnum, origin, dest, air_time, distance, hour, minute, time_hour"
)
HEADER = COLUMNS.replace(" ", "")
# Quoted commas and line ends, a stray quote, doubled quotes, NA, times with a space, an offset or no zone,
# a BOM and CRLF line ends; then one fault per bad row (the Python app's reasons are the reference).
TRICKY = (
    "\ufeff" + HEADER + "\r\n"
    "2013,1,3,NA,600,NA,NA,830,NA,AA,1,N1,JFK,MIA,NA,1089,6,0,2013-01-03T11:00:00Z\r\n"
    '2013,1,3,601,600,1,900,830,30,AA,2,"N2,X",JFK,"MI\nA",160,1089,6,0,2013-01-03 11:00:00\r\n'
    '2013,1,3,602,600,2,900,830,30,AA,3,N3"Q,JFK,MIA,160,1089,6,0,2013-01-03T06:00:00-05:00\r\n'
    '2013,1,3,603,600,3,900,830,30,AA,4,"N""4",JFK,MIA,160,1089,6,0,2013-01-03T11:00\r\n'
    "2013,1,3,5_17,600,3,900,830,30,AA,5,N5,JFK,MIA,160,1089,6,0,2013-01-03T11:00:00Z\r\n"
    "2013,1,3,604,600,3,900,830,30,AA,6,N6,,MIA,160,1089,6,0,2013-01-03T11:00:00Z\r\n"
    "2013,1,3,605,600,3,900,830,30,NA,7,N7,JFK,MIA,160,1089,6,0,2013-01-03T11:00:00Z\r\n"
    "2013,1,3,606,600,3,900,830,30,AA,8,N8,JFK,MIA,160,1089,6,0,2013-01-03T11:00:00Z,extra\r\n"
    "2013,1,3,607,600,3,900,830,30,AA,9,N9,JFK,MIA,160,1089,6,0,yesterday\r\n"
    "2013,1,3,608,600,3,900,830,30,AA,10.5,N10,JFK,MIA,160,1089,6,0,2013-01-03T11:00:00Z\r\n"
).encode()  # (bytes that are not UTF-8 never get this far: the upload API refuses them)
FILES = {"flights-2013-01-02.csv": REAL.read_bytes(), "tricky-flights.csv": TRICKY}


@pytest.fixture(scope="module")
def built_samples():
    """The Java and Go samples, built when their sources are newer than what was built (as `make setup` does)."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "sample-apps.sh")], capture_output=True, text=True, timeout=900, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (SAMPLES["jvm"] / "ingest-file.jar").is_file() and (SAMPLES["static"] / "ingest-file").is_file()


def ingest(cfg, tenant: str, password: str) -> dict:
    """Send FILES as the tenant; per file: its receipt, its rejects (line and reason) and the rows of flights."""
    from mysimbdp import db

    api = Api(cfg, tenant, password)
    out = {}
    for name, body in FILES.items():
        r = api.put_file(name, body)
        assert r.status_code == 201, r.text
        job = api.wait_job(r.json()["job"]["job_id"], timeout=300)
        rejects = api.get(f"/v1/jobs/{job['job_id']}/rejects")
        listed = list(csv.reader(io.StringIO(rejects.text)))[1:] if rejects.status_code == 200 else []
        out[name] = {"job": job, "rejects": sorted((row[0], row[1]) for row in listed)}
    s = db.connect(cfg)
    try:  # tenant: a name the registry accepted
        out["rows"] = sorted((tuple(r) for r in s.execute(f"SELECT {COLUMNS} FROM {tenant}.flights")), key=repr)
    finally:
        s.cluster.shutdown()
    return out


@pytest.fixture(scope="module")
def python_reference(platform, registry):
    """What the Python sample app makes of FILES: the reference for the other runtimes."""
    from mysimbdp import constraints

    name, password = unique_name("rtpy"), "password-" + uuid.uuid4().hex[:8]
    registry.create(
        name, password, constraints.parse(AIRLINE_CONSTRAINTS), batch_app=SAMPLES["python"], check_apps=False
    )
    try:
        yield ingest(platform, name, password)
    finally:
        registry.delete(name)


def tenant_create(name: str, app: Path, tmp_path: Path, constraints: dict | None = None):
    cons = tmp_path / f"{name}.json"
    cons.write_text(json.dumps(constraints or AIRLINE_CONSTRAINTS))
    return run_cli(
        "tenant", "create", name, "--constraints", str(cons), "--password-stdin", "--batch-app", str(app),
        input="password-123\n",
    )  # fmt: skip


# --- the samples: same rows, receipts and rejects as the Python app ---------------------------------------------


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.parametrize(
    "runtime, entry_line",
    [
        ("jvm", "entry point  ok     ingest-file.jar is a jar, Main-Class io.mysimbdp.samples.airline.IngestFile"),
        ("static", "entry point  ok     ingest-file is a static x86-64 ELF executable"),
    ],
)
def test_the_sample_app_installs_with_its_checks_and_ingests_as_the_python_app_does(
    platform, registry, built_samples, python_reference, tmp_path, runtime, entry_line
):
    name = unique_name(f"rt{runtime[:3]}")
    try:
        res = tenant_create(name, SAMPLES[runtime], tmp_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"compile      ok     no Python files (a {runtime} app)" in res.stdout
        assert entry_line in res.stdout
        assert "dry run      ok     50 rows, 0 rejects from 50 records" in res.stdout
        got = ingest(platform, name, "password-123")
    finally:
        registry.delete(name)
    want = python_reference
    assert len(want["rows"]) == 941 + 4 and got["rows"] == want["rows"]  # every value of every row
    for file in FILES:
        job, ref = got[file]["job"], want[file]["job"]
        assert job["status"] == "succeeded" and job["app_name"] == f"airline-{'java' if runtime == 'jvm' else runtime}"
        assert (job["rows_ingested"], job["rows_rejected"]) == (ref["rows_ingested"], ref["rows_rejected"])
        assert got[file]["rejects"] == want[file]["rejects"]  # the same lines, for the same reasons
    assert (want["tricky-flights.csv"]["job"]["rows_ingested"], want["tricky-flights.csv"]["job"]["rows_rejected"]) == (
        4,
        6,
    )


# --- entry points that are not what their runtime runs ----------------------------------------------------------


def jar(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, body in entries.items():
            z.writestr(name, body)
    return path


def app_folder(tmp_path: Path, runtime: str, entry: str, make) -> Path:
    """An app folder of ``runtime`` with the airline sample and ``entry`` made by ``make(path)``."""
    folder = tmp_path / f"app-{runtime}-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    shutil.copyfile(SAMPLES[runtime] / "sample.csv", folder / "sample.csv")
    manifest = {"name": "bad", "version": "1", "runtime": runtime}
    manifest |= {"entrypoints": {"batch": entry}, "samples": {"batch": "sample.csv"}}
    (folder / "app.json").write_text(json.dumps(manifest))
    make(folder / entry)
    return folder


MANIFEST = b"Manifest-Version: 1.0\r\nCreated-By: tests\r\n"
NOT_RUNNABLE = [
    (
        "jvm",
        "x.jar",
        lambda p: p.write_text("I am a text file, not a jar\n"),
        "x.jar is not a jar: a jar is a zip file",
    ),
    ("jvm", "x.jar", lambda p: jar(p, {"Main.class": b"\xca\xfe\xba\xbe"}), "x.jar is a zip file without META-INF"),
    ("jvm", "x.jar", lambda p: jar(p, {"META-INF/MANIFEST.MF": MANIFEST}), "x.jar has no Main-Class in its manifest"),
    (
        "jvm",
        "x.jar",
        lambda p: jar(p, {"META-INF/MANIFEST.MF": MANIFEST + b"Main-Class: io.example.Gone\r\n"}),
        "x.jar names Main-Class io.example.Gone in its manifest, but the jar has no such class",
    ),
    (
        "static",
        "ingest",
        lambda p: shutil.copyfile("/bin/true", p),
        "ingest is dynamically linked (it needs the loader",
    ),
    ("static", "ingest", lambda p: p.write_text("#!/bin/sh\necho hi\n"), "ingest is not an ELF executable"),
]


@pytest.mark.services
@pytest.mark.parametrize("runtime, entry, make, why", NOT_RUNNABLE)
def test_an_entry_point_its_runtime_cannot_run_is_refused_naming_it_and_nothing_is_made(
    platform, registry, tmp_path, runtime, entry, make, why
):
    name = unique_name("rtbad")
    res = tenant_create(name, app_folder(tmp_path, runtime, entry, make), tmp_path)
    assert res.returncode == 65, res.stdout + res.stderr
    assert "  entry point  FAILED " + why in res.stdout, res.stdout
    assert why in res.stderr and "nothing was installed" in res.stderr and "Traceback" not in res.stderr
    assert "dry run" not in res.stdout  # refused before anything of it ran
    assert registry.find(name) is None  # no tenant, keyspace or role made
    keyspaces = {r.keyspace_name for r in registry.session.execute("SELECT keyspace_name FROM system_schema.keyspaces")}
    assert name not in keyspaces
    assert not (platform.paths.tenant_apps(name)).exists()


@pytest.mark.services
def test_update_with_a_jar_that_is_not_a_jar_keeps_the_app_the_tenant_had(platform, make_tenant, tmp_path):
    from mysimbdp import apps

    t, _ = make_tenant(cons=AIRLINE_CONSTRAINTS, batch_app=SAMPLES["python"])
    bad = app_folder(tmp_path, "jvm", "ingest.jar", lambda p: p.write_bytes(b"PK\x03\x04 but no more of a zip"))
    res = run_cli("tenant", "update", t.name, "--batch-app", str(bad))
    assert res.returncode == 65 and "ingest.jar is not a jar" in res.stderr, res.stdout + res.stderr
    kept = apps.installed(platform, t.name, "batch")
    assert kept.runtime == "python" and kept.name == "airline" and [v["version"] for v in apps.versions(
        platform, t.name, "batch")] == ["v0001"]  # fmt: skip


def test_the_manifest_names_a_known_runtime_and_an_entry_point_of_its_kind(tmp_path):
    from mysimbdp import apps

    folder = app_folder(tmp_path, "jvm", "ingest.py", lambda p: p.write_text("print(1)\n"))
    with pytest.raises(apps.InvalidApp, match=r"'ingest.py' is not a .jar file .* \(a jvm app\)"):
        apps.read_manifest(folder, "batch")
    manifest = json.loads((folder / "app.json").read_text())
    (folder / "app.json").write_text(json.dumps({**manifest, "runtime": "cobol"}))
    with pytest.raises(apps.InvalidApp, match="runtime must be one of python, jvm, static"):
        apps.read_manifest(folder, "batch")


# --- what is read of an entry point is bounded ------------------------------------------------------------------


def test_a_jar_is_read_within_bounds(tmp_path):
    from mysimbdp import runtimes

    many = tmp_path / "many.jar"
    with zipfile.ZipFile(many, "w") as z:  # stored, empty entries: a small file with a long directory
        for k in range(runtimes.MAX_JAR_ENTRIES + 1):
            z.writestr(f"{k}", b"")
    with pytest.raises(ValueError, match="has 50,001 files"):
        runtimes.jar_main_class(many)
    big = jar(tmp_path / "big.jar", {"META-INF/MANIFEST.MF": MANIFEST + b"X-Pad: " + b"a" * (70 << 10) + b"\r\n"})
    with pytest.raises(ValueError, match="manifest larger than 64 KiB"):
        runtimes.jar_main_class(big)
    bomb = tmp_path / "bomb.jar"  # the manifest's declared size is a lie: only 64 KiB of it is ever inflated
    jar(bomb, {"META-INF/MANIFEST.MF": MANIFEST + b"Main-Class: A\r\n" + b" " * (8 << 20), "A.class": b""})
    raw = bytearray(bomb.read_bytes())
    for sig in (b"PK\x01\x02",):  # the central directory's record of the manifest: uncompressed size := 1 KiB
        at = raw.find(sig)
        struct.pack_into("<L", raw, at + 24, 1024)
    bomb.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="manifest larger than 64 KiB|not a readable jar"):
        runtimes.jar_main_class(bomb)
    good = jar(tmp_path / "good.jar", {"META-INF/MANIFEST.MF": MANIFEST + b"Main-Class: a.b.C\r\n", "a/b/C.class": b""})
    assert runtimes.jar_main_class(good) == "a.b.C"
    body = good.read_bytes()  # a zip64 locator before the end record: zipfile would read the zip64 record instead
    at = body.rfind(b"PK\x05\x06")
    zip64 = tmp_path / "zip64.jar"
    zip64.write_bytes(body[:at] + b"PK\x06\x07" + bytes(16) + body[at:])
    with pytest.raises(ValueError, match="zip64"):
        runtimes.jar_main_class(zip64)


def test_an_executable_is_read_within_bounds(tmp_path):
    from mysimbdp import runtimes

    lib = next(
        Path(p) for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6") if Path(p).exists()
    )
    with pytest.raises(ValueError, match="not an executable|dynamically linked"):
        runtimes.static_executable(lib)
    header = bytearray(Path(shutil.which("go") or "/usr/local/go/bin/go").read_bytes()[:64])
    cut = tmp_path / "cut"
    cut.write_bytes(bytes(header))  # the header promises program headers the file does not have
    with pytest.raises(ValueError, match="truncated"):
        runtimes.static_executable(cut)
    struct.pack_into("<H", header, 18, 183)  # an arm64 executable
    other = tmp_path / "other"
    other.write_bytes(bytes(header))
    with pytest.raises(ValueError, match="another processor"):
        runtimes.static_executable(other)
    struct.pack_into("<H", header, 18, 62)
    struct.pack_into("<H", header, 56, 60000)  # too many program headers to read
    many = tmp_path / "many"
    many.write_bytes(bytes(header))
    with pytest.raises(ValueError, match="program header table"):
        runtimes.static_executable(many)


def test_the_jvm_is_told_its_limits():
    from mysimbdp import runtimes
    from mysimbdp.sandbox import Limits

    cmd = runtimes.command("jvm", "x.jar", Limits(memory="768m", cpus=1.5))
    assert cmd[0] == "java" and cmd[-2:] == ("-jar", "/app/x.jar")
    assert {"-Xmx384m", "-XX:MaxDirectMemorySize=96m", "-XX:ActiveProcessorCount=2", "-XX:+UseSerialGC"} <= set(cmd)
    assert runtimes.command("static", "ingest", Limits()) == ("/app/ingest",)
    assert runtimes.command("python", "a.py", Limits()) == ("python3", "/app/a.py")


# --- the same sandbox for every runtime --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def probe_apps(tmp_path_factory):
    """tests/apps/probes compiled: Probe.java into a jar (javac, zipfile), probe.go into a static executable."""
    work = tmp_path_factory.mktemp("probes")
    classes = work / "classes"
    javac = shutil.which("javac")
    assert javac, "a JDK 17 (javac) is needed to build the JVM probe"
    subprocess.run([javac, "--release", "17", "-nowarn", "-d", str(classes), str(PROBES / "Probe.java")], check=True,
                   capture_output=True)  # fmt: skip
    folders = {}
    for runtime, entry in (("jvm", "probe.jar"), ("static", "probe")):
        folder = work / f"app-{runtime}"
        folder.mkdir()
        (folder / "app.json").write_text(
            json.dumps(
                {"name": f"probe-{runtime}", "version": "1", "runtime": runtime, "entrypoints": {"batch": entry}}
            )
        )
        folders[runtime] = folder
    entries = {"META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\r\nMain-Class: Probe\r\n"}
    entries |= {p.name: p.read_bytes() for p in classes.glob("*.class")}
    jar(folders["jvm"] / "probe.jar", entries)
    go = shutil.which("go") or "/usr/local/go/bin/go"
    env = dict(os.environ, CGO_ENABLED="0")
    subprocess.run([go, "build", "-o", str(folders["static"] / "probe"), str(PROBES / "probe.go")], check=True,
                   env=env, capture_output=True, cwd=work)  # fmt: skip
    return folders


def run_probe(cfg, tenant, tmp_path: Path, scenario: str):
    """Run the tenant's batch app on ``scenario`` with exactly the container a real job gets; the RunResult and
    the RESULT line it printed (or None)."""
    from mysimbdp import apps, contract
    from mysimbdp.sandbox import outputs, runtime

    job = str(uuid.uuid1())
    work = tmp_path / job
    work.mkdir(parents=True)
    out = work / "out"
    outputs.prepare(out, tenant.uid, cfg.sandbox.max_output_mb << 20)
    data = work / "input.txt"
    data.write_text(scenario)
    data.chmod(0o644)
    app = apps.installed(cfg, tenant.name, "batch")
    spec = contract.batch_run(
        cfg, tenant, app, [contract.BatchInput(job, data, "input.txt", out)], log_path=work / "run.log"
    )
    try:
        res = runtime(cfg).run(spec)
    finally:
        outputs.release(out)
    text = (work / "run.log").read_text(errors="replace") if (work / "run.log").exists() else ""
    found = [json.loads(line[len("RESULT ") :]) for line in text.splitlines() if line.startswith("RESULT ")]
    return res, (found[0] if found else None), spec


SMALL = {
    **AIRLINE_CONSTRAINTS,
    "batch": {"max_concurrent_jobs": 1, "timeout_seconds": 120, "memory_mb": 256, "cpus": 1},
}


@pytest.mark.services
@pytest.mark.parametrize("runtime", ["jvm", "static"])
def test_a_jvm_or_static_app_runs_as_the_tenants_unprivileged_user_on_a_read_only_root(
    platform, make_tenant, probe_apps, tmp_path, runtime
):
    t, _ = make_tenant(cons=SMALL, batch_app=probe_apps[runtime])
    res, out, spec = run_probe(platform, t, tmp_path, "identity")
    assert res.ok, (res.describe(), (tmp_path / "run.log"))
    assert spec.runtime == runtime and out is not None
    assert out["uid"] == t.uid and out["uid"] != 0
    assert int(out["cap_eff"], 16) == 0 and out["no_new_privs"] == "1"
    writes = out["writes"]
    assert writes["/tmp/ok"] == "written" and writes["/output/ok"] == "written"
    assert all(writes[p] != "written" for p in ("/evil", "/etc/evil", "/app/evil"))
    if runtime == "jvm":  # the JVM sized to the tenant's 256 MiB and 1 CPU, whatever it reads of its cgroup
        assert 100 <= out["max_heap_mb"] <= 128 and out["processors"] == 1
    else:  # nothing in the static image but its own files and the mount points: no shell, no libraries
        assert out["shell"] is False and "usr" not in out["root"] and "bin" not in out["root"]


@pytest.mark.services
@pytest.mark.slow
@pytest.mark.parametrize(
    "scenario, reason",
    [
        ("native", "the app killed: it used more memory than its limit"),
        ("heap", "the app exited with status 3: Terminating due to java.lang.OutOfMemoryError: Java heap space"),
    ],
)
def test_a_jar_that_takes_too_much_memory_fails_its_job_with_the_reason(
    platform, make_tenant, probe_apps, scenario, reason
):
    t, password = make_tenant(cons=SMALL, batch_app=probe_apps["jvm"])
    api = Api(platform, t.name, password)
    r = api.put_file(f"{scenario}.csv", scenario.encode() + b"\nrow\n")  # an upload has a header and a row
    assert r.status_code == 201, r.text
    job = api.wait_job(r.json()["job"]["job_id"], timeout=180)
    assert job["status"] == "failed" and job["reason"].startswith(reason), job
    ok = api.put_file("identity.csv", b"identity\nrow\n")  # the tenant's next job runs: only that run was stopped
    assert api.wait_job(ok.json()["job"]["job_id"], timeout=180)["status"] == "succeeded"


# --- the samples' exit status when Cassandra does not answer --------------------------------------------------


@pytest.mark.parametrize("runtime", ["jvm", "static"])
def test_the_sample_app_exits_75_when_cassandra_does_not_answer(built_samples, tmp_path, runtime):
    """Run on the host against a port nothing listens on, waiting 3 s instead of 60: exit 75 (the platform
    retries the job later) with the reason as its last line, and no result."""
    sample = SAMPLES[runtime] / "sample.csv"
    env = dict(
        os.environ,
        MYSIMBDP_KEYSPACE="nowhere",
        MYSIMBDP_CASSANDRA_HOSTS="127.0.0.1",
        MYSIMBDP_CASSANDRA_PORT="9",
        MYSIMBDP_CASSANDRA_USERNAME="nobody",
        MYSIMBDP_CASSANDRA_PASSWORD="nothing",
        MYSIMBDP_INPUT_FILE=str(sample),
        MYSIMBDP_FILE_NAME="sample.csv",
        MYSIMBDP_OUTPUT_DIR=str(tmp_path),
    )
    if runtime == "jvm":
        argv = ["java", "-Dretry.seconds=3", "-jar", str(SAMPLES[runtime] / "ingest-file.jar")]
    else:
        argv = [str(SAMPLES[runtime] / "ingest-file"), "-retry-for", "3s"]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Cassandra unavailable, the platform will retry: ")
    assert not (tmp_path / "result.json").exists()
