"""One node against three (issue 12), side by side in one run on this 2-core machine.

For each of cassandra.nodes = 1 (replication 1) and 3 (replication 3, LOCAL_QUORUM), a platform of its own
in a fresh state folder, brought up cold, measured, and brought down:

1. ``mysimbdp up`` from cold, and again when warm (everything running);
2. batch: the 336,776 flights through fetchdata and the airline tenant's sandboxed app, and ``cqlsh COPY
   FROM`` of the same file into an equivalent table with the platform's replication (tuned options,
   the consistency the platform writes at);
3. stream: 100,000 records through the stream path (two publishers, two instances), confirmed and counted;
4. three nodes only: the time from a node's SIGKILL to the ingest rate recovering: 32 writers at
   LOCAL_QUORUM through the platform's driver settings, acknowledged writes counted per 250 ms; recovered
   when one second's rate is back to 90% of the median before the kill; and until the node is back up.

    .venv/bin/python bench/cluster_bench.py [--nodes 1,3] [--stream 100000]

The platform in this checkout's state folder must be down (the ports are shared).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common

import batch_bench
import stream_bench

PY = sys.executable


def up(env: dict) -> float:
    t0 = time.monotonic()
    res = subprocess.run([PY, "-m", "mysimbdp", "up"], cwd=common.ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(res.stdout[-2000:] + res.stderr[-2000:])
    return time.monotonic() - t0


def down(env: dict) -> None:
    subprocess.run([PY, "-m", "mysimbdp", "down"], cwd=common.ROOT, env=env, capture_output=True, text=True)


def recovery(c) -> dict:
    """Acknowledged LOCAL_QUORUM writes per 250 ms around a node's SIGKILL."""
    from cassandra.query import SimpleStatement  # noqa: F401 - the driver, as the platform uses it

    from mysimbdp import db
    from mysimbdp.services import cassandra_node

    s = db.connect(c)
    s.execute(f"CREATE KEYSPACE IF NOT EXISTS benchrecover WITH replication = {db.replication_cql(c)}", timeout=60)
    s.execute("CREATE TABLE IF NOT EXISTS benchrecover.rows (id bigint PRIMARY KEY, v text)", timeout=60)
    insert = s.prepare("INSERT INTO benchrecover.rows (id, v) VALUES (?, ?)")
    acked: list[float] = []
    errors = [0]
    stop = threading.Event()
    lock = threading.Lock()
    counter = iter(range(10**9))

    def writer():
        while not stop.is_set():
            with lock:
                i = next(counter)
            try:
                s.execute(insert, (i, "x" * 64), timeout=10)
                acked.append(time.monotonic())
            except Exception:  # noqa: BLE001 - counted: the dip is what is measured
                errors[0] += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=writer, daemon=True) for _ in range(32)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(15)
    victim = cassandra_node.daemon(c, cassandra_node.node(c, 2)).pid()
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    back = None
    seen_down = False  # gossip takes seconds to mark the node down: "back" counts only after that
    while time.monotonic() - killed < 240:
        if back is None:
            states = [n["state"] for n in cassandra_node.cluster_nodes(c).get("nodes", ())]
            if states.count("UN") < 3:
                seen_down = True
            elif seen_down:
                back = time.monotonic() - killed
        if back is not None and time.monotonic() - killed > back + 10:
            break
        time.sleep(1)
    stop.set()
    for t in threads:
        t.join(15)
    s.cluster.shutdown()

    def rate(a: float, b: float) -> float:
        return sum(1 for x in acked if a <= x < b) / (b - a)

    before = statistics.median(rate(x, x + 1) for x in [t0 + 5 + k for k in range(int(killed - t0 - 6))])
    recovered = None
    k = killed
    while k < acked[-1]:
        if rate(k, k + 1) >= 0.9 * before and k > killed + 0.25:
            recovered = k - killed
            break
        k += 0.25
    low = min(rate(killed + j * 0.25, killed + j * 0.25 + 1) for j in range(0, 40))
    return {"before": before, "recovered_s": recovered, "lowest": low, "node_back_s": back, "errors": errors[0]}


def measure(nodes: int, stream_total: int, only_recovery: bool = False) -> dict:
    home = Path(tempfile.mkdtemp(prefix=f"bench-{nodes}node-"))
    installed = common.ROOT / "state" / "cassandra" / "lib"
    if installed.is_dir():  # the jars from Maven are not part of a start from cold
        (home / "cassandra").mkdir()
        (home / "cassandra" / "lib").symlink_to(installed)
    env = dict(os.environ, MYSIMBDP_HOME=str(home), MYSIMBDP_CASSANDRA_NODES=str(nodes), MYSIMBDP_CASSANDRA_HEAP="1G")
    os.environ.update(MYSIMBDP_HOME=str(home), MYSIMBDP_CASSANDRA_NODES=str(nodes), MYSIMBDP_CASSANDRA_HEAP="1G")
    out: dict = {"nodes": nodes}
    try:
        out["up_cold_s"] = up(env)
        out["up_warm_s"] = up(env)
        c = common.config.load()
        print(f"# {nodes} node(s): up cold {out['up_cold_s']:.0f}s, warm {out['up_warm_s']:.1f}s", flush=True)
        if only_recovery:
            out["recovery"] = recovery(c)
            print(f"  node 2 killed: {out['recovery']}", flush=True)
            return out
        data = common.nycflights()
        rows = sum(1 for _ in open(data, "rb")) - 1
        cl = "LOCAL_QUORUM" if nodes > 1 else ""  # what the platform and its apps write at
        batch_bench.ours(c, data)  # warm-up
        t, job = batch_bench.ours(c, data)
        assert job["counted"] == rows, job
        out["batch_rows_s"] = rows / t
        t, n = batch_bench.peer(c, data, batch_bench.TUNED, consistency=cl)
        assert n == rows, n
        out["copy_rows_s"] = rows / t
        print(f"  batch: mysimbdp {out['batch_rows_s']:,.0f} rows/s, COPY FROM {out['copy_rows_s']:,.0f}", flush=True)
        rate, extra = stream_bench.end_to_end(c, stream_total, 2, 2)
        out["stream_msg_s"] = rate
        print(f"  stream: {rate:,.0f} records/s end to end ({extra})", flush=True)
        if nodes > 1:
            out["recovery"] = recovery(c)
            print(f"  node 2 killed: {out['recovery']}", flush=True)
    finally:
        down(env)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", default="1,3")
    ap.add_argument("--stream", type=int, default=100_000)
    ap.add_argument("--only-recovery", action="store_true", help="three nodes: up, then only the kill and recovery")
    args = ap.parse_args()
    if args.only_recovery:
        r = measure(3, 0, only_recovery=True)
        rec = r["recovery"]
        common.figure("cluster 3 nodes: writes/s before the kill", rec["before"], "writes/s")
        common.figure("cluster 3 nodes: lowest 1 s after the kill", rec["lowest"], "writes/s")
        common.figure("cluster 3 nodes: kill -> rate back to 90%", rec["recovered_s"] or -1.0, "s")
        common.figure("cluster 3 nodes: kill -> node up and normal again", rec["node_back_s"] or -1.0, "s")
        return 0
    results = [measure(int(n), args.stream) for n in args.nodes.split(",")]
    for r in results:
        n = r["nodes"]
        common.figure(f"cluster {n} node(s): up from cold", r["up_cold_s"], "s")
        common.figure(f"cluster {n} node(s): up when running", r["up_warm_s"], "s")
        common.figure(f"cluster {n} node(s): batch, mysimbdp", r["batch_rows_s"], "rows/s")
        common.figure(f"cluster {n} node(s): batch, cqlsh COPY FROM (tuned)", r["copy_rows_s"], "rows/s")
        common.figure(f"cluster {n} node(s): batch ratio mysimbdp / COPY", r["batch_rows_s"] / r["copy_rows_s"], "x")
        common.figure(f"cluster {n} node(s): stream end to end", r["stream_msg_s"], "records/s")
        if "recovery" in r:
            rec = r["recovery"]
            common.figure(f"cluster {n} nodes: writes/s before the kill", rec["before"], "writes/s")
            common.figure(f"cluster {n} nodes: lowest 1 s after the kill", rec["lowest"], "writes/s")
            common.figure(f"cluster {n} nodes: kill -> rate back to 90%", rec["recovered_s"] or -1.0, "s")
            common.figure(f"cluster {n} nodes: kill -> node up and normal again", rec["node_back_s"] or -1.0, "s")
    if len(results) == 2:
        one, three = results
        common.figure("cluster 3/1: batch mysimbdp", three["batch_rows_s"] / one["batch_rows_s"], "x")
        common.figure("cluster 3/1: batch COPY FROM", three["copy_rows_s"] / one["copy_rows_s"], "x")
        common.figure("cluster 3/1: stream", three["stream_msg_s"] / one["stream_msg_s"], "x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
