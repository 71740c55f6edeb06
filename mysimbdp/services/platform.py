"""``mysimbdp up``, ``status`` and ``down``: every part of the platform, in order.

Each part starts only if it is not running and is then checked for real use: a CQL login as the
operator, a broker connection, a container run in the sandbox, an HTTP answer from each manager. Running
``up`` twice is harmless; the second time only checks.
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from dataclasses import dataclass
from typing import Callable

from ..config import Config
from ..errors import MysimbdpError, ServiceStartError, UsageError
from . import cassandra_node, compose, docker_engine, managers, mosquitto_broker, supervisor

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    part: str
    outcome: str  # started | running | failed
    seconds: float
    detail: str = ""


def _timed(part: str, fn: Callable[[], str], report: Callable[[StepResult], None]) -> StepResult:
    t0 = time.monotonic()
    try:
        outcome = fn()
        res = StepResult(part, outcome, time.monotonic() - t0)
    except MysimbdpError as exc:
        res = StepResult(part, "failed", time.monotonic() - t0, exc.one_line())
    report(res)
    return res


def up(
    cfg: Config, report: Callable[[StepResult], None] = lambda r: None, *, managers_too: bool = True
) -> list[StepResult]:
    """Start what is not running, in dependency order; raise ServiceStartError naming the part that failed."""
    from ..sandbox import runtime

    results: list[StepResult] = [_timed("supervisor", lambda: _supervisor(cfg), report)]
    if results[-1].outcome == "failed":
        raise ServiceStartError(results[-1].detail)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        # Cassandra is the slowest to start: let it boot while the engine, image and network get ready.
        if cfg.cassandra.managed:
            cass = pool.submit(_timed, "cassandra", lambda: cassandra_node.start(cfg), report)
        else:
            cass = pool.submit(_timed, "cassandra", lambda: _check_external_cassandra(cfg), report)
        results.append(_timed("docker", lambda: docker_engine.start(cfg), report))
        if results[-1].outcome != "failed":
            rt = runtime(cfg)
            results.append(_timed("sandbox", lambda: _sandbox_ready(rt), report))
        if results[-1].outcome != "failed":
            results.append(_timed("mosquitto", lambda: mosquitto_broker.start(cfg), report))
        results.append(cass.result())
    finally:
        pool.shutdown(wait=True)
    failed = [r for r in results if r.outcome == "failed"]
    if failed:
        raise ServiceStartError("; ".join(r.detail for r in failed))
    results.append(_timed("schema", lambda: _schema(cfg), report))
    if managers_too:
        for part in managers.PARTS:
            res = _timed(part.name, lambda part=part: part.start(cfg), report)
            results.append(res)
            if res.outcome == "failed":
                raise ServiceStartError(f"{res.part}: {res.detail}")
    return results


def _supervisor(cfg: Config) -> str:
    if supervisor.daemon(cfg.home).running():
        return "running"
    if compose.in_containers(cfg):
        return "not used"  # docker-compose.yml runs (and restarts) the daemons
    supervisor.ensure_running(cfg.home)
    return "started"


def _check_external_cassandra(cfg: Config) -> str:
    from .. import db

    db.connect(cfg).cluster.shutdown()
    return "running"


def _sandbox_ready(rt) -> str:
    """Image and network present, firewall rules in place, and a container really runs."""
    rt.ensure_ready()
    from ..sandbox import probe

    probe.run_probe(rt)
    return "ready"


def _schema(cfg: Config) -> str:
    from .. import db

    session = db.connect(cfg)
    try:
        db.ensure_platform_schema(session, cfg)
    finally:
        session.cluster.shutdown()
    return "ready"


def down(cfg: Config, report: Callable[[StepResult], None] = lambda r: None) -> None:
    if compose.in_containers(cfg):
        raise UsageError(
            "this platform runs in containers: Compose would start again what `mysimbdp down` stops",
            hint=f"cd {cfg.source} && docker-compose down",
        )
    for part in reversed(managers.PARTS):
        report(StepResult(part.name, "stopped" if part.stop(cfg) else "not running", 0))
    report(StepResult("tenant apps", f"stopped {_stop_tenant_containers(cfg)}", 0))
    report(StepResult("mosquitto", "stopped" if mosquitto_broker.stop(cfg) else "not running", 0))
    if cfg.cassandra.managed:
        report(StepResult("cassandra", "stopped" if cassandra_node.stop(cfg) else "not running", 0))
    report(StepResult("docker", "stopped" if docker_engine.stop(cfg) else "left running (not started by mysimbdp)", 0))
    report(StepResult("supervisor", "stopped" if supervisor.daemon(cfg.home).stop(timeout=10) else "not running", 0))


def _stop_tenant_containers(cfg: Config) -> int:
    if not docker_engine.ping():
        return 0
    from ..sandbox import runtime

    rt = runtime(cfg)
    containers = rt.list()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(
            pool.map(
                lambda c: rt.stop(
                    c.name, timeout=cfg.stream.drain_timeout, signal=c.labels.get("mysimbdp.down_signal", "SIGTERM")
                ),
                containers,
            )
        )
    return len(containers)


def status(cfg: Config) -> dict:
    from ..sandbox import network

    parts: dict = {}
    sup = supervisor.daemon(cfg.home)
    containers = not sup.running() and compose.in_containers(cfg)
    if containers:
        parts["supervisor"] = {"running": False, "ready": True, "not_used": "the daemons run in containers (Compose)"}
    else:
        parts["supervisor"] = {
            "running": sup.running(),
            "ready": sup.running(),
            "pid": sup.pid(),
            "log": str(sup.log_file),
        }
    parts["cassandra"] = cassandra_node.status(cfg)
    parts["mosquitto"] = mosquitto_broker.status(cfg)
    parts["docker"] = docker_engine.status(cfg)
    if parts["docker"]["running"]:
        from .. import runtimes
        from ..sandbox import image
        from ..sandbox.docker_runtime import client

        c = client()
        parts["sandbox"] = {
            "image": image.image_tag(cfg),
            "image_present": image.image_present(cfg, c),
            # the other runtimes' images (mysimbdp/runtimes.py); the JVM's is built on first use
            "runtime_images": {
                rt: image.image_present(cfg, c, rt) for rt in runtimes.RUNTIMES if rt != runtimes.DEFAULT
            },
            "network": cfg.sandbox.network,
            "firewall": network.firewall_ok(cfg),
        }
        parts["sandbox"]["ready"] = parts["sandbox"]["image_present"] and parts["sandbox"]["firewall"]
        parts["sandbox"]["containers"] = len(c.containers.list(filters={"label": "mysimbdp=1"}))
    else:
        parts["sandbox"] = {"ready": False}
    for part in managers.PARTS:
        parts[part.name] = part.status(cfg)
    for name, part in parts.items():  # what the supervisor knows: restarts, the last death, the memory cap
        if containers:
            break  # Compose restarts and caps them: `docker-compose ps` and `docker stats` tell
        if "pid" not in part and not part.get("started_by_platform"):
            continue  # not a process of this machine's platform (an existing cluster, the system's Docker)
        st = supervisor.read_state(cfg.home, "dockerd" if name == "docker" else name)
        if st.restarts or st.deaths or st.memory_cap:
            part["restarts"] = st.restarts
            part["memory_cap"] = st.memory_cap or "none"
            if st.deaths:
                last = st.deaths[-1]
                part["last_death"] = f"{last['at']} {last['cause']}"
    return {"home": str(cfg.home), "ready": all(p.get("ready") for p in parts.values()), "parts": parts}
