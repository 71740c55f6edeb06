"""The query API against its peers, in one run (ratios, not absolute times: the machine is noisy).

1. Point reads by full primary key, concurrency 1 and 32: the API (HTTP keep-alive, one connection per
   client thread) against the Python driver doing the same reads as the same tenant role (prepared
   statement, one session, the same number of threads). p50/p99 latency and reads/s. The API is asked
   three times: from ``http.client`` (``api``), from a minimal socket client (``api-lean``), both Python
   threads, and from bench/readgen (``api-go``, compiled Go: goroutines, one connection each), as a load
   generator or a service in a compiled language would call it; the client shares the machine's two cores
   with the API and Cassandra, and Python clients spend as much CPU on HTTP as a part of the API does.
2. Export of the 336,776 flights: the API as NDJSON and as CSV against ``cqlsh COPY TO`` of the same table
   as the same role; rows/s.
3. A 200 MiB object: PUT and GET through the API (curl) against the batch upload of the same bytes (curl,
   PUT /v1/files); MiB/s, and the API's resident memory before and during.
4. The same export through the Python SDK (``Table.export_to``, and iterating the rows) and the Java SDK
   (``Table.export(Format, OutputStream)``) against the raw HTTP figure of (2).

    .venv/bin/python bench/query_bench.py [--reads 3000] [--only reads|export|objects|sdk]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from base64 import b64encode
from pathlib import Path

import common

from mysimbdp import db, tenants

COLUMNS = (
    "year,month,day,dep_time,sched_dep_time,dep_delay,arr_time,sched_arr_time,arr_delay,carrier,flight,"
    "tailnum,origin,dest,air_time,distance,hour,minute,time_hour"
)
TABLE = (
    "CREATE TABLE IF NOT EXISTS {ks}.flights (year int, month int, day int, dep_time int, sched_dep_time int,"
    " dep_delay int, arr_time int, sched_arr_time int, arr_delay int, carrier text, flight int, tailnum text,"
    " origin text, dest text, air_time int, distance int, hour int, minute int, time_hour timestamp,"
    " PRIMARY KEY ((origin, year, month, day), carrier, flight, sched_dep_time))"
)
KEY = ("origin", "year", "month", "day", "carrier", "flight", "sched_dep_time")
CONS = {
    "formats": ["csv"],
    "max_files": {"count": 10, "per": "staged"},
    "max_file_size_bytes": 256 << 20,
    "objects": {"max_object_bytes": 256 << 20, "max_total_bytes": 1 << 30},
}
PY = sys.executable


def cqlsh(c, tenant: str, statement: str) -> str:
    res = subprocess.run(
        [PY, "-m", "mysimbdp", "cqlsh", "--tenant", tenant, "-e", statement],
        cwd=common.ROOT, capture_output=True, text=True,
    )  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
    return res.stdout


def load_flights(c, tenant: str, data: Path) -> int:
    s = db.connect(c, tenants.cassandra_login(c, tenant))
    try:
        s.execute(TABLE.format(ks=tenant))
    finally:
        s.cluster.shutdown()
    t0 = time.monotonic()
    cqlsh(c, tenant, f"COPY {tenant}.flights ({COLUMNS}) FROM '{data}' WITH HEADER=true AND NULL='NA'")
    n = common.count(c, tenant, "flights")
    print(f"# loaded {n:,} flights in {time.monotonic() - t0:.0f}s with cqlsh COPY FROM")
    return n


def sample_keys(data: Path, n: int) -> list[dict]:
    with open(data, newline="") as fh:
        rows = list(csv.DictReader(fh))
    random.seed(7)
    out = []
    for r in random.sample(rows, n):
        out.append({k: (r[k] if k in ("origin", "carrier") else int(r[k])) for k in KEY})
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def run_clients(n_threads: int, keys: list[dict], make_client) -> tuple[float, list[float]]:
    """Each thread reads its share of the keys with its own client; (seconds, latencies in ms)."""
    shares = [keys[i::n_threads] for i in range(n_threads)]
    lat: list[list[float]] = [[] for _ in range(n_threads)]
    barrier = threading.Barrier(n_threads + 1)

    def work(i: int) -> None:
        read = make_client()
        read(shares[i][0])  # warm the connection
        barrier.wait()
        for k in shares[i]:
            t = time.perf_counter()
            read(k)
            lat[i].append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, [x for part in lat for x in part]


def readgen(c, tenant: str, password: str, bodies: Path, conc: int) -> tuple[float, list[float]]:
    """The same reads from bench/readgen (Go, compiled here on first use): ``conc`` goroutines, one kept-alive
    connection each, as a service in Go or Java, or wrk, would call the API; (seconds, latencies in ms)."""
    exe = common.OUT / "readgen"
    src = common.ROOT / "bench" / "readgen" / "main.go"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        subprocess.run(["go", "build", "-o", str(exe), "."], cwd=src.parent, check=True)
    url = f"http://{c.query.host}:{c.query.port}/v1/tables/flights/query"
    out = subprocess.run(
        [str(exe), "-url", url, "-user", tenant, "-bodies", str(bodies), "-c", str(conc), "-expect", '"count":1'],
        env=dict(os.environ, READGEN_PASSWORD=password),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    return result["seconds"], result["latencies_ms"]


def point_reads(c, tenant: str, password: str, keys: list[dict], rounds: int = 3) -> None:
    login = tenants.cassandra_login(c, tenant)
    session = db.connect(c, login)
    stmt = session.prepare(f"SELECT * FROM {tenant}.flights WHERE " + " AND ".join(f"{k} = ?" for k in KEY))
    auth = "Basic " + b64encode(f"{tenant}:{password}".encode()).decode()

    def driver_client():
        def read(k):
            rows = session.execute(stmt, [k[x] for x in KEY]).all()
            assert len(rows) == 1

        return read

    def api_client():
        conn = http.client.HTTPConnection(c.query.host, c.query.port, timeout=30)
        headers = {"Authorization": auth, "Content-Type": "application/json"}

        def read(k):
            conn.request("POST", "/v1/tables/flights/query", body=json.dumps({"where": k}), headers=headers)
            r = conn.getresponse()
            body = r.read()
            assert r.status == 200, body[:300]
            assert b'"count":1' in body

        return read

    def lean_client():
        """The same requests from a minimal keep-alive HTTP/1.1 client (a socket, the request bytes built
        once, the answer framed by its Content-Length), as a load generator in C or Go would send them:
        http.client parses every answer's headers with the email package, which costs this machine's two
        cores as much as a part of the API does."""
        sock = socket.create_connection((c.query.host, c.query.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = (
            f"POST /v1/tables/flights/query HTTP/1.1\r\nHost: {c.query.host}\r\nAuthorization: {auth}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        buf = bytearray()

        def read(k):
            body = json.dumps({"where": k}).encode()
            sock.sendall(head + str(len(body)).encode() + b"\r\n\r\n" + body)
            while (end := buf.find(b"\r\n\r\n")) < 0:
                buf.extend(sock.recv(65536) or b"")
            lines = bytes(buf[:end]).split(b"\r\n")
            length = next(int(x.split(b":", 1)[1]) for x in lines if x.lower().startswith(b"content-length:"))
            while len(buf) < end + 4 + length:
                buf.extend(sock.recv(65536) or b"")
            answer = bytes(buf[end + 4 : end + 4 + length])
            del buf[: end + 4 + length]
            assert lines[0].split(b" ")[1] == b"200", answer[:300]
            assert b'"count":1' in answer

        return read

    bodies = common.OUT / "point-read-bodies.ndjson"
    bodies.parent.mkdir(parents=True, exist_ok=True)
    bodies.write_text("".join(json.dumps({"where": k}) + "\n" for k in keys))

    # The machine is shared and noisy: the driver and the API take turns, ``rounds`` times, over the same
    # keys; rates are the medians of the rounds, latencies pooled over them.
    for conc in (1, 32):
        contenders = (("driver", driver_client), ("api", api_client), ("api-lean", lean_client), ("api-go", None))
        rates: dict[str, list[float]] = {name: [] for name, _ in contenders}
        lats: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for _ in range(rounds):
            for name, make in contenders:
                if make is None:
                    secs, lat = readgen(c, tenant, password, bodies, conc)
                else:
                    secs, lat = run_clients(conc, keys, make)
                rates[name].append(len(lat) / secs)
                lats[name] += lat
        for name in rates:
            rate = common.median(rates[name])
            common.figure(f"point reads c={conc} {name} reads/s (median of {rounds})", rate, "reads/s")
            common.figure(f"point reads c={conc} {name} p50", pct(lats[name], 50), "ms")
            common.figure(f"point reads c={conc} {name} p99", pct(lats[name], 99), "ms")
        for name in ("api", "api-lean", "api-go"):
            ratio = common.median(rates[name]) / common.median(rates["driver"])
            common.figure(f"point reads c={conc} {name}/driver throughput", ratio, "x")
            extra = pct(lats[name], 99) - pct(lats["driver"], 99)
            common.figure(f"point reads c={conc} {name} p99 - driver p99", extra, "ms")
    session.cluster.shutdown()


def export(c, tenant: str, password: str, n: int) -> dict:
    auth = "Basic " + b64encode(f"{tenant}:{password}".encode()).decode()
    rates = {}
    for fmt in ("ndjson", "csv"):
        conn = http.client.HTTPConnection(c.query.host, c.query.port, timeout=120)
        t0 = time.perf_counter()
        conn.request("GET", f"/v1/tables/flights/export?format={fmt}", headers={"Authorization": auth})
        r = conn.getresponse()
        assert r.status == 200
        lines, tail = 0, b""
        while block := r.read(1 << 20):
            lines += block.count(b"\n")
            tail = (tail + block)[-300:]
        secs = time.perf_counter() - t0
        end = tail.decode().strip().splitlines()[-1]
        assert f"rows={n} complete" in end or f'"rows": {n}, "complete": true' in end, end
        rates[fmt] = n / secs
        common.figure(f"export {fmt} via API", rates[fmt], "rows/s", seconds=round(secs, 1))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "flights.csv"
        t0 = time.perf_counter()
        text = cqlsh(c, tenant, f"COPY {tenant}.flights TO '{out}' WITH HEADER=true")
        secs = time.perf_counter() - t0
        assert f"{n} rows exported" in text.replace(",", ""), text[-500:]
    peer = n / secs
    common.figure("export cqlsh COPY TO", peer, "rows/s", seconds=round(secs, 1))
    for fmt in rates:
        common.figure(f"export {fmt} API / cqlsh COPY TO", rates[fmt] / peer, "x")
    return rates


def java_classpath() -> str:
    """The Java SDK built (tests skipped), and the classpath of its dependencies."""
    sdk = common.ROOT / "java-sdk"
    subprocess.run(["mvn", "-B", "-q", "-DskipTests", "-DskipIntegration=true", "package"], cwd=sdk, check=True)
    out = sdk / "target" / "bench-classpath.txt"
    subprocess.run(["mvn", "-B", "-q", "dependency:build-classpath", f"-Dmdep.outputFile={out}"], cwd=sdk, check=True)
    return f"{sdk / 'target' / 'classes'}:{out.read_text().strip()}"


def raw_export(c, tenant: str, password: str, fmt: str, n: int) -> float:
    """Seconds to read the whole export over plain HTTP (bytes counted, nothing parsed)."""
    auth = "Basic " + b64encode(f"{tenant}:{password}".encode()).decode()
    conn = http.client.HTTPConnection(c.query.host, c.query.port, timeout=120)
    t0 = time.perf_counter()
    conn.request("GET", f"/v1/tables/flights/export?format={fmt}", headers={"Authorization": auth})
    r = conn.getresponse()
    while r.read(1 << 20):
        pass
    return time.perf_counter() - t0


def sdks(c, tenant: str, password: str, n: int, raw: dict, rounds: int = 3) -> None:
    """Raw HTTP, the Python SDK and the Java SDK in turn, ``rounds`` times each; medians compared."""
    from mysimbdp_client import Client

    client = Client(tenant, password, query_url=c.query_url())
    table = client.table("flights")
    cp = java_classpath()
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = common.ROOT / "bench" / "java" / "ExportBench.java"
        subprocess.run(["javac", "-d", tmp, "-cp", cp, str(src)], check=True)
        for _ in range(rounds):
            for fmt in ("ndjson", "csv"):
                times.setdefault(f"raw {fmt}", []).append(raw_export(c, tenant, password, fmt, n))
                with tempfile.TemporaryFile() as fh:
                    t0 = time.perf_counter()
                    assert table.export_to(fh, format=fmt) == n
                    times.setdefault(f"python {fmt}", []).append(time.perf_counter() - t0)
                res = subprocess.run(
                    ["java", "-cp", f"{tmp}:{cp}", "ExportBench", tenant, password, c.query_url(), "flights", fmt],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                rows, secs = res.stdout.split()
                assert int(rows) == n, res.stdout
                times.setdefault(f"java {fmt}", []).append(float(secs))
            t0 = time.perf_counter()
            assert sum(1 for _ in table.export(format="ndjson")) == n
            times.setdefault("python rows", []).append(time.perf_counter() - t0)
    med = {k: common.median(v) for k, v in times.items()}
    for fmt in ("ndjson", "csv"):
        common.figure(f"export {fmt} raw HTTP (median of {rounds})", n / med[f"raw {fmt}"], "rows/s")
        for who in ("python", "java"):
            common.figure(f"export {fmt} via {who} SDK (median of {rounds})", n / med[f"{who} {fmt}"], "rows/s")
            common.figure(f"export {fmt} {who} SDK / raw HTTP", round(med[f"raw {fmt}"] / med[f"{who} {fmt}"], 2), "x")
    common.figure("export ndjson via Python SDK, iterating dicts", n / med["python rows"], "rows/s")
    common.figure("export ndjson Python SDK dicts / raw HTTP", round(med["raw ndjson"] / med["python rows"], 2), "x")


class RssWatch:
    """The highest resident memory of any of ``pids`` (the API's worker processes: one of them serves the
    request) while it runs, sampled every 0.1 s."""

    def __init__(self, pids: list[int]) -> None:
        self.pids, self.peak, self._stop = pids, 0, threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, *(common.rss_kib(p) for p in self.pids))
            time.sleep(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *a):
        self._stop.set()
        self._t.join()


def curl(*args: str) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stderr)
    return time.perf_counter() - t0


def objects(c, tenant: str, password: str, data: Path) -> None:
    size = 200 << 20
    with tempfile.TemporaryDirectory() as tmp:
        blob = Path(tmp) / "big.csv"
        with open(blob, "wb") as out, open(data, "rb") as src:  # CSV bytes, so that the batch API takes them too
            header = src.readline()
            body = src.read()
            out.write(header)
            while out.tell() < size:
                out.write(body[: size - out.tell()])
        sha = hashlib.sha256(blob.read_bytes()).hexdigest()
        mib = size / 2**20
        master = int((c.paths.run / "query-api.pid").read_text().split()[0])
        pids = common.children(master) or [master]  # gunicorn's workers serve the requests
        base = max(common.rss_kib(p) for p in pids)
        user = f"{tenant}:{password}"
        with RssWatch(pids) as w:
            put = curl("-u", user, "-T", str(blob), "-H", f"X-Checksum-Sha256: {sha}", "-H", "Content-Type: text/csv",
                       f"{c.query_url()}/v1/objects/big.csv")  # fmt: skip
        put_peak = w.peak
        with RssWatch(pids) as w:
            get = curl("-u", user, f"{c.query_url()}/v1/objects/big.csv")
        get_peak = w.peak
        batch = curl("-u", user, "-T", str(blob), "-H", f"Content-SHA256: {sha}", f"{c.batch_url()}/v1/files/big.csv")
    common.figure("object 200 MiB PUT via API", mib / put, "MiB/s")
    common.figure("object 200 MiB GET via API", mib / get, "MiB/s")
    common.figure("batch upload of the same 200 MiB (curl)", mib / batch, "MiB/s")
    common.figure("object PUT / batch upload", (mib / put) / (mib / batch), "x")
    common.figure("object GET / batch upload", (mib / get) / (mib / batch), "x")
    common.figure("query API memory before (largest worker)", base / 1024, "MiB")
    common.figure("query API memory peak during PUT (largest worker)", put_peak / 1024, "MiB")
    common.figure("query API memory peak during GET (largest worker)", get_peak / 1024, "MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3, help="turns of driver and API over the same keys")
    ap.add_argument("--only", choices=("reads", "export", "objects", "sdk"))
    ap.add_argument("--tenant", help="NAME:PASSWORD of a tenant kept from an earlier run (KEEP_TENANT=1)")
    args = ap.parse_args()
    c = common.cfg()
    common.up(c)
    data = common.nycflights()
    if args.tenant:
        tenant, password = args.tenant.split(":", 1)
    else:
        tenant, password = common.tenant(c, "qbench", CONS)
    try:
        if args.tenant:
            n = common.count(c, tenant, "flights")
        else:
            n = load_flights(c, tenant, data) if args.only != "objects" else 0
        if args.only in (None, "reads"):
            point_reads(c, tenant, password, sample_keys(data, args.reads), args.rounds)
        if args.only in (None, "export", "sdk"):
            raw = export(c, tenant, password, n)
        if args.only in (None, "sdk"):
            sdks(c, tenant, password, n, raw)
        if args.only in (None, "objects"):
            objects(c, tenant, password, data)
    finally:
        if args.tenant:
            pass
        elif not os.environ.get("KEEP_TENANT"):
            common.drop_tenant(c, tenant)
        else:
            print(f"# kept tenant {tenant} / {password}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
