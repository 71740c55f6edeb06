"""A tenant app that tries what a malicious or buggy tenant would. The scenario comes from the input
file (JSON); findings are printed as one line: RESULT {...}."""

import json
import os
import socket
import sys
import time

spec = json.load(open(os.environ["MYSIMBDP_INPUT_FILE"]))
scenario = spec["scenario"]
out = {"scenario": scenario}


def report():
    print("RESULT " + json.dumps(out), flush=True)


if scenario == "identity":
    status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
    out.update(
        uid=os.getuid(),
        gid=os.getgid(),
        cap_eff=status["CapEff"].strip(),
        no_new_privs=status.get("NoNewPrivs", "").strip(),
        env_keys=sorted(k for k in os.environ if k.startswith("MYSIMBDP_")),
        user=os.environ["MYSIMBDP_CASSANDRA_USERNAME"],
        keyspace=os.environ["MYSIMBDP_KEYSPACE"],
    )
    report()
elif scenario == "rootfs":
    for path in (
        "/evil",
        "/etc/evil",
        "/app/evil",
        "/usr/lib/evil",
        "/input/evil",
        "/opt/mysimbdp/sdk/evil",
        "/tmp/ok",
        "/output/ok",
    ):
        try:
            with open(path, "w") as fh:
                fh.write("x")
            out[path] = "written"
        except OSError as exc:
            out[path] = type(exc).__name__
    report()
elif scenario == "memory":
    hog = []
    for i in range(400):
        hog.append(bytearray(16 << 20))  # 16 MiB, touched
        out["mib"] = 16 * (i + 1)
    report()  # only reached if the limit did not hold
elif scenario == "forkbomb":
    out["started"] = time.time()
    report()
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
elif scenario == "forkcount":
    made, failed = 0, 0
    for _ in range(spec.get("tries", 500)):
        try:
            pid = os.fork()
        except OSError:
            failed += 1
            continue
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        made += 1
    out.update(made=made, failed=failed)
    report()
    os._exit(0)
elif scenario == "busy":
    out["started"] = time.time()
    report()
    while True:
        pass
elif scenario == "network":
    for target in spec["targets"]:
        host, port = target.rsplit(":", 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect((host, int(port)))
            out[target] = "connected"
        except OSError as exc:
            out[target] = type(exc).__name__
        finally:
            s.close()
    report()
elif scenario == "peek":
    for path in spec["paths"]:
        try:
            if os.path.isdir(path):
                out[path] = "listed:" + ",".join(os.listdir(path))
            else:
                out[path] = "read:" + open(path).read(100)
        except OSError as exc:
            out[path] = type(exc).__name__
    report()
elif scenario == "sleep":
    time.sleep(spec.get("seconds", 1))
    out["slept"] = True
    report()
else:
    sys.exit("unknown scenario")
