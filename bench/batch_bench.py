"""Batch ingestion benchmarks, each against a peer in the same run.

1. End to end: fetchdata uploads the 336,776 flights, the manager runs the airline tenant's app in the
   sandbox, rows counted in the keyspace; beside it, `cqlsh COPY FROM` of the same file into an equivalent
   table on the same node, with cqlsh's defaults and with the best options we found for this machine
   (TUNED below). Rotating order, rounds after a warm-up; medians.
2. Latency from the upload finishing to the job starting (the job record's created_at -> started_at).
3. Ten concurrent fetchdata clients over two tenants: per-upload latency, total throughput, no failure.
4. Upload throughput of fetchdata against curl sending the same 1 GiB file to the same endpoint, and the
   upload API's memory while it receives it.

    .venv/bin/python bench/batch_bench.py [--rounds 3] [--skip-big]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
import requests

AIRLINE = common.ROOT / "tenant_apps" / "airline" / "app"
CONS = json.loads((common.ROOT / "constraints" / "airline.json").read_text())
COLUMNS = (
    "year,month,day,dep_time,sched_dep_time,dep_delay,arr_time,sched_arr_time,arr_delay,carrier,flight,"
    "tailnum,origin,dest,air_time,distance,hour,minute,time_hour"
)
PEER_TABLE = (
    "CREATE TABLE {ks}.flights (year int, month int, day int, dep_time int, sched_dep_time int, dep_delay int,"
    " arr_time int, sched_arr_time int, arr_delay int, carrier text, flight int, tailnum text, origin text,"
    " dest text, air_time int, distance int, hour int, minute int, time_hour timestamp,"
    " PRIMARY KEY ((origin, year, month, day), carrier, flight, sched_dep_time))"
)
PY = sys.executable
CQLSH = str(Path(sys.executable).with_name("cqlsh"))


def wait_job(c, user, password, timeout=600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = requests.get(c.batch_url() + "/v1/jobs", auth=(user, password), timeout=30).json()["jobs"]
        if jobs and all(j["status"] in ("succeeded", "failed") for j in jobs):
            return jobs[0]
        time.sleep(0.25)  # (polling costs the platform too: every run, ours and the peers', waits the same)
    raise RuntimeError("job did not finish")


def ours(c, csv_path: Path) -> tuple[float, dict]:
    user, password = common.tenant(c, "bair", CONS, batch_app=AIRLINE)
    folder = Path(tempfile.mkdtemp())
    os.symlink(csv_path, folder / "flights.csv")
    try:
        t0 = time.monotonic()
        res = subprocess.run(
            [
                PY,
                "-m",
                "fetchdata",
                "-u",
                user,
                f"--password={password}",
                "-d",
                str(folder),
                "-q",
                "--server",
                c.batch_url(),
            ],
            cwd=common.ROOT,
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(res.stdout + res.stderr)
        job = wait_job(c, user, password)
        took = time.monotonic() - t0
        if job["status"] != "succeeded":
            raise RuntimeError(f"job failed: {job}")
        n = common.count(c, user, "flights")
        return took, {**job, "counted": n, "tenant": user}
    finally:
        shutil.rmtree(folder)
        common.drop_tenant(c, user)


# the fastest COPY FROM options we found here (2 cores): NUMPROCESSES 1 (default) to 4, CHUNKSIZE 2000 to
# 10000, MAXBATCHSIZE 20 (default) to 200 were tried
TUNED = " AND NUMPROCESSES=2 AND CHUNKSIZE=5000 AND MAXBATCHSIZE=200"


def peer(c, csv_path: Path, options: str = "", consistency: str = "") -> tuple[float, int]:
    """cqlsh COPY FROM of ``csv_path`` into a table like the airline app's (``consistency``: the session's, which
    COPY writes at; cqlsh's default is ONE)."""
    ks = "benchpeer"
    from mysimbdp import db

    s = db.connect(c)
    try:
        s.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {db.replication_cql(c)}")  # the platform's
        s.execute(f"DROP TABLE IF EXISTS {ks}.flights")
        s.execute(PEER_TABLE.format(ks=ks))
    finally:
        s.cluster.shutdown()
    t0 = time.monotonic()
    res = subprocess.run(
        [
            PY,
            "-m",
            "mysimbdp",
            "cqlsh",
            "-e",
            (f"CONSISTENCY {consistency}; " if consistency else "")
            + f"COPY {ks}.flights ({COLUMNS}) FROM '{csv_path}' WITH HEADER=true AND NULL='NA'{options}",
        ],
        cwd=common.ROOT,
        capture_output=True,
        text=True,
    )
    took = time.monotonic() - t0
    if res.returncode != 0 or "rows imported" not in res.stdout:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
    return took, common.count(c, ks, "flights")


def end_to_end(c, rounds: int) -> None:
    data = common.nycflights()
    rows = sum(1 for _ in open(data, "rb")) - 1
    print(f"# end to end: {rows:,} flights ({data.stat().st_size / 2**20:.1f} MiB), {rounds} rounds after a warm-up")
    ours(c, data)  # warm-up, not counted: Cassandra's JIT, the page cache
    peer(c, data)
    runs = {"mysimbdp": [], "cqlsh COPY FROM": [], "cqlsh COPY FROM, tuned": []}
    starts = []
    order = list(runs)
    for r in range(rounds):
        for who in order[r % 3 :] + order[: r % 3]:
            if who == "mysimbdp":
                t, job = ours(c, data)
                assert job["counted"] == rows and job["rows_ingested"] == rows, job
                from datetime import datetime

                start = (
                    datetime.fromisoformat(job["started_at"]) - datetime.fromisoformat(job["created_at"])
                ).total_seconds()
                starts.append(start)
                detail = f"; app {job['seconds']:.2f}s"
            else:
                t, n = peer(c, data, TUNED if who.endswith("tuned") else "")
                assert n == rows, n
                detail = ""
            runs[who].append(t)
            print(f"  round {r + 1}: {who:<24} {t:6.2f}s ({rows / t:,.0f} rows/s{detail})", flush=True)
    mine, theirs, tuned = (rows / common.median(runs[k]) for k in order)
    common.figure("batch end-to-end, fetchdata -> sandboxed app (median)", mine, "rows/s", rounds=rounds)
    common.figure("batch cqlsh COPY FROM, same file, same node (median)", theirs, "rows/s", rounds=rounds)
    common.figure("batch cqlsh COPY FROM with TUNED options (median)", tuned, "rows/s", rounds=rounds, options=TUNED)
    common.figure("batch ratio mysimbdp / COPY FROM", mine / theirs, "x (target >= 1.25)")
    common.figure("batch ratio mysimbdp / tuned COPY FROM", mine / tuned, "x")
    common.figure("batch upload finished -> job started (median)", common.median(starts) * 1000, "ms")


def airline_app(files_per_run: int) -> Path:
    """The airline app, as it is but for how many files it takes per run."""
    folder = Path(tempfile.mkdtemp()) / "app"
    shutil.copytree(AIRLINE, folder)
    manifest = json.loads((folder / "app.json").read_text())
    (folder / "app.json").write_text(json.dumps({**manifest, "files_per_run": files_per_run}))
    return folder


def concurrent_clients(
    c, clients: int = 10, files: int = 10, rows_per_file: int = 1000, files_per_run: int = 64
) -> float:
    """Return the rows a second of the whole workload (uploads started to the last row counted)."""
    label = f"files_per_run={files_per_run}"
    print(
        f"# {clients} concurrent fetchdata clients over two tenants, {files} files of {rows_per_file} rows each,"
        f" {label}"
    )
    data = common.nycflights()
    lines = open(data, encoding="utf-8").read().splitlines()
    header, body = lines[0], lines[1:]
    cons = {**CONS, "max_files": {"count": 1000, "per": "staged"}}
    app = airline_app(files_per_run)
    tenants = [common.tenant(c, "bcon", cons, batch_app=app) for _ in range(2)]
    shutil.rmtree(app.parent)
    root = Path(tempfile.mkdtemp())
    try:
        folders = []
        for k in range(clients):
            d = root / f"client{k}"
            d.mkdir()
            for f in range(files):
                start = (k * files + f) * rows_per_file
                (d / f"flights-{k:02d}-{f:02d}.csv").write_text(
                    header + "\n" + "\n".join(body[start : start + rows_per_file]) + "\n"
                )
            folders.append(d)
        results = [None] * clients

        def run(k):
            user, password = tenants[k % 2]
            t0 = time.monotonic()
            res = subprocess.run(
                [
                    PY,
                    "-m",
                    "fetchdata",
                    "-u",
                    user,
                    f"--password={password}",
                    "-d",
                    str(folders[k]),
                    "-q",
                    "--server",
                    c.batch_url(),
                ],
                cwd=common.ROOT,
                capture_output=True,
                text=True,
            )
            results[k] = (res.returncode, time.monotonic() - t0, res.stdout)

        t0 = time.monotonic()
        threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        upload_wall = time.monotonic() - t0
        per_file = [float(m) for _, _, out in results for m in re.findall(r" in ([0-9.]+)s, ", out)]
        failures = sum(1 for rc, _, _ in results if rc != 0)
        total_bytes = sum(p.stat().st_size for d in folders for p in d.iterdir())
        for user, password in tenants:
            wait_job(c, user, password)
        all_wall = time.monotonic() - t0
        jobs = [
            j
            for user, password in tenants
            for j in requests.get(c.batch_url() + "/v1/jobs?limit=1000", auth=(user, password), timeout=30).json()[
                "jobs"
            ]
        ]
        ok = sum(j["status"] == "succeeded" for j in jobs)
        rows = sum(common.count(c, user, "flights") for user, _ in tenants)
        per_file.sort()
        common.figure(
            "concurrent uploads: files uploaded", len(per_file), f"of {clients * files}", failed_clients=failures
        )
        common.figure("concurrent uploads: per-upload latency p50", per_file[len(per_file) // 2] * 1000, "ms")
        common.figure(
            "concurrent uploads: per-upload latency p95", per_file[int(len(per_file) * 0.95) - 1] * 1000, "ms"
        )
        common.figure("concurrent uploads: max per-upload latency", per_file[-1] * 1000, "ms")
        common.figure(
            "concurrent uploads: upload throughput",
            total_bytes / upload_wall / 2**20,
            "MiB/s",
            files_per_s=round(len(per_file) / upload_wall, 1),
        )
        common.figure(
            f"concurrent uploads ({label}): all 100 files ingested in",
            all_wall,
            "s",
            jobs_succeeded=ok,
            rows=rows,
            rows_per_s=round(rows / all_wall),
        )
        assert failures == 0 and ok == clients * files and rows == clients * files * rows_per_file
        return rows / all_wall
    finally:
        shutil.rmtree(root)
        for user, _ in tenants:
            common.drop_tenant(c, user)


def big_file(path: Path, size: int) -> None:
    data = common.nycflights()
    raw = data.read_bytes()
    header, body = raw.split(b"\n", 1)
    with open(path, "wb") as out:
        out.write(header + b"\n")
        written = len(header) + 1
        while written < size:
            chunk = body[: size - written]
            cut = chunk.rfind(b"\n") + 1 if len(chunk) < len(body) else len(chunk)
            out.write(chunk[:cut])
            written += cut
            if cut == 0:
                break


class RssWatch:
    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.peak = 0
        self.stop = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, sum(common.rss_kib(p) for p in self.pids))
            time.sleep(0.05)

    def done(self) -> int:
        self.stop.set()
        self.t.join()
        return self.peak


def upload_throughput(c, size: int = 1 << 30) -> None:
    print(f"# upload of one {size / 2**30:.1f} GiB CSV: fetchdata vs curl to the same endpoint")
    work = Path(tempfile.mkdtemp(dir=common.DATA))
    f = work / "big.csv"
    big_file(f, size)
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    cons = {**CONS, "max_file_size_bytes": 2 << 30}
    from mysimbdp.services import managers

    api = next(p for p in managers.PARTS if p.name == "batch-api")
    master = api.daemon(c).pid()
    pids = [master, *common.children(master)]
    base_rss = sum(common.rss_kib(p) for p in pids)
    os.sync()  # the 1 GiB just written must not be flushed during whichever upload happens to go first

    def with_fetchdata() -> tuple[float, float, int]:
        # no batch app on this tenant: the job fails at once, only the upload is measured
        user, password = common.tenant(c, "bupf", cons)
        watch = RssWatch(pids)
        t0 = time.monotonic()
        res = subprocess.run(
            [
                PY,
                "-m",
                "fetchdata",
                "-u",
                user,
                f"--password={password}",
                "-d",
                str(work),
                "-q",
                "--server",
                c.batch_url(),
            ],
            cwd=common.ROOT,
            capture_output=True,
            text=True,
        )
        wall = time.monotonic() - t0
        peak = watch.done()
        m = re.search(r" in ([0-9.]+)s, ", res.stdout)
        assert res.returncode == 0 and m, res.stdout + res.stderr
        common.drop_tenant(c, user)
        return float(m.group(1)), wall, peak

    def with_curl() -> tuple[float, int]:
        # the same file, a session opened the same way, the body sent with curl
        user, password = common.tenant(c, "bupc", cons)
        r = requests.post(
            c.batch_url() + "/v1/uploads",
            auth=(user, password),
            timeout=30,
            json={"name": "big.csv", "size": f.stat().st_size, "sha256": sha},
        )
        upload = r.json()["upload_id"]
        watch = RssWatch(pids)
        t0 = time.monotonic()
        res = subprocess.run(
            [
                "curl",
                "-sS",
                "-u",
                f"{user}:{password}",
                "-X",
                "PATCH",
                "-H",
                "Upload-Offset: 0",
                "-H",
                "Content-Type: application/octet-stream",
                "-T",
                str(f),
                f"{c.batch_url()}/v1/uploads/{upload}",
            ],
            capture_output=True,
            text=True,
        )
        took = time.monotonic() - t0
        peak = watch.done()
        assert '"staged"' in res.stdout, res.stdout + res.stderr
        common.drop_tenant(c, user)
        return took, peak

    try:
        with_curl()  # warm-up, not counted: the first 1 GiB upload after writing the file is slow for either
        ours, theirs = [], []
        for order in ("fc", "cf"):  # each goes first once: the page cache favours whoever goes second
            for who in order:
                if who == "f":
                    ours.append(with_fetchdata())
                else:
                    theirs.append(with_curl())
        mib = f.stat().st_size / 2**20
        transfer = statistics.mean(t for t, _, _ in ours)
        wall = statistics.mean(w for _, w, _ in ours)
        curl_t = statistics.mean(t for t, _ in theirs)
        peak = max([p for *_, p in ours] + [p for _, p in theirs])
        common.figure(
            "upload 1 GiB: fetchdata transfer (mean of 2)",
            mib / transfer,
            "MiB/s",
            seconds=[round(t, 2) for t, _, _ in ours],
        )
        common.figure(
            "upload 1 GiB: fetchdata whole run (local check + hash + send)",
            mib / wall,
            "MiB/s",
            seconds=[round(w, 2) for _, w, _ in ours],
        )
        common.figure(
            "upload 1 GiB: curl -T (streamed), same endpoint (mean of 2)",
            mib / curl_t,
            "MiB/s",
            seconds=[round(t, 2) for t, _ in theirs],
        )
        common.figure("upload 1 GiB: fetchdata transfer / curl", curl_t / transfer, "x")
        common.figure("upload API memory (RSS) before", base_rss / 1024, "MiB")
        common.figure("upload API peak memory (RSS) receiving 1 GiB", peak / 1024, "MiB")
    finally:
        shutil.rmtree(work)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-big", action="store_true", help="skip the 1 GiB upload")
    ap.add_argument("--only", choices=["e2e", "concurrent", "upload"])
    args = ap.parse_args()
    c = common.cfg()
    common.up(c)
    if args.only in (None, "e2e"):
        end_to_end(c, args.rounds)
    if args.only in (None, "concurrent"):
        # the peer: one container (and one Cassandra login) per file, as every file was run before
        rates: dict[int, list[float]] = {1: [], 64: []}
        for order in ((1, 64), (64, 1))[: max(1, min(args.rounds, 2))]:
            for per_run in order:
                rates[per_run].append(concurrent_clients(c, files_per_run=per_run))
        one, many = statistics.median(rates[1]), statistics.median(rates[64])
        common.figure("small files: rows/s, 64 files per run", many, "rows/s", runs=[round(r) for r in rates[64]])
        common.figure("small files: rows/s, one file per run (peer)", one, "rows/s", runs=[round(r) for r in rates[1]])
        common.figure("small files: several files per run is", many / one, "x the peer")
    if args.only in (None, "upload") and not args.skip_big:
        upload_throughput(c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
