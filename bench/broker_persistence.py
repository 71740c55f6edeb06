"""What would it cost to make Mosquitto itself durable? (issue 9: "measure its cost at 10,000 msg/s with a
backlog of 100,000 messages").

A private Mosquitto (Debian's 2.0.11, the platform's) on a spare port, per setting: a persistent session
subscribes and goes away, so every message is queued for it; bench/loadgen then publishes the backlog
(100,000 flight lines, QoS 1) and then 10,000 a second for --seconds more. The figures: the rate the
publisher kept, its acknowledgement latency, and how much the broker wrote to disk. Settings:

* ``none``: persistence off (a crash loses everything queued, a polite stop too);
* ``30s``: the platform's setting until issue 9 (``autosave_interval 30``: a SIGKILL loses up to 30 s);
* ``every-N``: ``autosave_on_changes true``, ``autosave_interval N``: the whole store is written again
  after every N changes. Even N = 1 leaves a gap: the PUBACK goes out before the save.

    .venv/bin/python bench/broker_persistence.py [--backlog 100000] [--seconds 10] [--settings none,30s,every-1000,every-100]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import common
import stream_bench

PORT = 18883


def write_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def run(setting: str, backlog: int, seconds: int) -> dict:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    d = Path(tempfile.mkdtemp(prefix="mqpersist-"))
    try:
        shutil.chown(d, "mosquitto", "mosquitto")  # the broker drops to this user
    except LookupError:
        pass
    conf = [
        f"listener {PORT} 127.0.0.1",
        "allow_anonymous true",
        "max_queued_messages 0",
        "max_inflight_messages 1000",
        "set_tcp_nodelay true",
        "user mosquitto",
    ]
    if setting == "none":
        conf.append("persistence false")
    else:
        conf += ["persistence true", f"persistence_location {d}/"]
        if setting == "30s":
            conf.append("autosave_interval 30")
        else:
            conf += ["autosave_on_changes true", f"autosave_interval {int(setting.split('-')[1])}"]
    (d / "m.conf").write_text("\n".join(conf) + "\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(d / "m.conf")], stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="absent", protocol=mqtt.MQTTv311, clean_session=False)
        sub.connect("127.0.0.1", PORT)
        sub.subscribe("bench/#", qos=1)
        sub.loop(0.5)
        sub.disconnect()
        before = write_bytes(broker.pid)

        class C:  # what stream_bench.publish needs of the configuration
            class broker:
                host, port = "127.0.0.1", PORT

        first = stream_bench.publish(C, "bench", "", "bench/backlog", backlog, 1)
        steady = stream_bench.publish(C, "bench", "", "bench/steady", 10000 * seconds, 1, rate=10000)
        written = write_bytes(broker.pid) - before
        return {
            "setting": setting,
            "backlog_rate": round(first["acked"] / (first["t1"] - first["t0"])),
            "steady_rate_at_10k": round(steady["acked"] / (steady["t1"] - steady["t0"])),
            "disk_written_mb": round(written / 2**20, 1),
            "acked": first["acked"] + steady["acked"],
        }
    finally:
        broker.terminate()
        broker.wait(30)
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backlog", type=int, default=100000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--settings", default="none,30s,every-10000,every-1000")
    args = ap.parse_args()
    stream_bench.lines(args.backlog)
    for setting in args.settings.split(","):
        r = run(setting, args.backlog, args.seconds)
        common.figure(
            f"broker persistence {setting}: backlog published / then at 10,000 msg/s",
            f"{r['backlog_rate']:,} / {r['steady_rate_at_10k']:,}",
            "msg/s",
            disk_written_mb=r["disk_written_mb"],
        )
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
