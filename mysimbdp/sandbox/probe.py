"""A container that proves the sandbox works: it starts, imports the runtime's libraries, and exits."""

from __future__ import annotations

import secrets

from ..errors import RuntimeUnavailable
from .base import Limits, RunSpec, SandboxRuntime

PROBE = "import cassandra, paho.mqtt.client, sys; print('ok', sys.version.split()[0], cassandra.__version__)"


def run_probe(rt: SandboxRuntime) -> str:
    spec = RunSpec(
        name=f"mysimbdp-probe-{secrets.token_hex(4)}",
        tenant="platform",
        kind="probe",
        command=("python3", "-c", PROBE),
        uid=rt.cfg.sandbox.uid_base,
        limits=Limits(memory="128m", cpus=0.5, pids=32, timeout=60),
    )
    res = rt.run(spec)
    if not res.ok:
        raise RuntimeUnavailable(f"a probe container did not run: {res.describe()}")
    return "ok"
