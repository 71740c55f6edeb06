"""The Java client SDK (java-sdk/, ``io.mysimbdp:mysimbdp-client``) against the real platform: its JUnit tests
(``mvn -B -q verify``) run as a fresh airline tenant (the sample batch app) that this test makes and deletes:
resumable uploads and receipts, paged queries, counts, writes with TTL, deletes, exports that resume, binary
objects and typed errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, unique_name

pytestmark = [pytest.mark.services, pytest.mark.slow]

JAVA_SDK = ROOT / "java-sdk"
AIRLINE = ROOT / "tenant_apps" / "airline"
DAY1 = AIRLINE / "client-input-dir" / "flights-2013-01-01.csv"
MVN_TIMEOUT = 15 * 60


def _surefire_tail(limit: int = 12000) -> str:
    """The surefire reports of the failed run (the summaries and the failures' traces), last part."""
    reports = JAVA_SDK / "target" / "surefire-reports"
    parts = [p.read_text(errors="replace") for p in sorted(reports.glob("*.txt"))] if reports.is_dir() else []
    text = "\n".join(parts) or "(no surefire reports)"
    return text[-limit:]


def test_java_sdk_against_the_platform(platform, make_tenant, tmp_path):
    mvn = shutil.which("mvn")
    assert mvn, "Maven (mvn) and a JDK 17 are needed to build and test java-sdk/"
    cons = json.loads((ROOT / "constraints" / "airline.json").read_text())
    t, password = make_tenant(name=unique_name("jsdk"), cons=cons, batch_app=AIRLINE / "app")
    flights = tmp_path / "flights-2013-01-01.csv"
    shutil.copyfile(DAY1, flights)
    env = dict(
        os.environ,
        MYSIMBDP_USER=t.name,
        MYSIMBDP_PASSWORD=password,
        MYSIMBDP_BATCH_URL=platform.batch_url(),
        MYSIMBDP_STREAM_URL=platform.stream_url(),
        MYSIMBDP_QUERY_URL=platform.query_url(),
        MYSIMBDP_TEST_CSV=str(flights),
    )
    try:
        proc = subprocess.run(
            [mvn, "-B", "-q", "verify"],
            cwd=JAVA_SDK,
            env=env,
            capture_output=True,
            text=True,
            timeout=MVN_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")[-4000:] if isinstance(exc.stdout, bytes) else (exc.stdout or "")[-4000:]
        pytest.fail(f"mvn verify took more than {MVN_TIMEOUT}s\n{out}\n{_surefire_tail()}")
    assert proc.returncode == 0, (
        f"mvn -B -q verify exited {proc.returncode}\n--- output (tail) ---\n{(proc.stdout + proc.stderr)[-6000:]}"
        f"\n--- surefire (tail) ---\n{_surefire_tail()}"
    )
    reports = list((JAVA_SDK / "target" / "surefire-reports").glob("TEST-*PlatformIntegrationTest.xml"))
    assert reports, "the integration tests did not run"
    xml = reports[0].read_text()
    assert 'skipped="0"' in xml and 'failures="0"' in xml and 'errors="0"' in xml, xml[:2000]
