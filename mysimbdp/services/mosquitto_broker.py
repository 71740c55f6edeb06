"""The Mosquitto broker the platform runs: configuration rendered from ``mosquitto/mosquitto.conf.in``.

Listeners on loopback (tenants' publishers, the platform) and on the sandbox network's gateway (tenant
app containers). Anonymous access is off; users and ACLs come from :mod:`mysimbdp.broker`.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .. import broker
from ..config import Config
from ..errors import BrokerUnavailable, ServiceStartError
from .process import Daemon, port_free, port_open, wait_until, who_listens


def daemon(cfg: Config) -> Daemon:
    return Daemon("mosquitto", cfg.paths.run, cfg.paths.logs, match="mosquitto")


def render_config(cfg: Config) -> Path:
    rt = broker.runtime_dir(cfg)
    (rt / "data").mkdir(parents=True, exist_ok=True)
    link = cfg.paths.mosquitto / "runtime"
    if rt != link and not link.is_symlink():
        cfg.paths.mosquitto.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(rt)
    uid, gid = broker._mosquitto_ids()
    if uid is not None:
        for p in (rt, rt / "data"):
            os.chown(p, uid, gid)
            os.chmod(p, 0o700)
        # parents under /var/lib/mysimbdp must be searchable, not listable
        for p in rt.parents:
            if str(p).startswith("/var/lib/mysimbdp"):
                os.chmod(p, 0o711)
    broker.rewrite_files(cfg)
    text = (
        (cfg.source / "mosquitto" / "mosquitto.conf.in")
        .read_text()
        .format(
            runtime=rt,
            host=cfg.broker.host,
            port=cfg.broker.port,
            sandbox_host=cfg.broker_sandbox_host,
            sandbox_port=cfg.broker.sandbox_port,
            max_queued=cfg.broker.max_queued_messages,
            max_inflight=cfg.broker.max_inflight_messages,
            user_line="user mosquitto" if uid is not None else "",
        )
    )
    target = cfg.paths.mosquitto / "mosquitto.conf"
    target.write_text(text)
    return target


def start(cfg: Config, timeout: float = 20.0) -> str:
    d = daemon(cfg)
    if d.running():
        broker.connect_probe(cfg)
        return "running"
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not exe:
        raise ServiceStartError("Mosquitto is not installed", hint="run `make setup` (apt-get install mosquitto)")
    for host, port in ((cfg.broker.host, cfg.broker.port), (cfg.broker_sandbox_host, cfg.broker.sandbox_port)):
        if not port_free(host, port):
            raise ServiceStartError(
                f"Mosquitto: port {host}:{port} is already taken by {who_listens(port)}",
                hint="stop it or set MYSIMBDP_BROKER_PORT",
            )
    conf = render_config(cfg)
    broker.service_login(cfg)  # the controller's user exists before the broker reads its files
    d.start([exe, "-c", str(conf)])
    if not wait_until(lambda: port_open(cfg.broker.host, cfg.broker.port), timeout, 0.1, abort=d.exited_early):
        raise ServiceStartError("Mosquitto did not start:\n" + d.log_tail())
    deadline = time.monotonic() + timeout
    while True:
        try:
            broker.connect_probe(cfg)
            return "started"
        except BrokerUnavailable as exc:
            if time.monotonic() > deadline:
                raise ServiceStartError(
                    f"Mosquitto runs but refuses the platform: {exc.message}\n" + d.log_tail()
                ) from None
            time.sleep(0.2)


def stop(cfg: Config) -> bool:
    return daemon(cfg).stop(timeout=20)


def status(cfg: Config) -> dict:
    pid = daemon(cfg).pid()
    ready = False
    error = None
    if pid is not None:
        try:
            broker.connect_probe(cfg, timeout=3)
            ready = True
        except BrokerUnavailable as exc:
            error = exc.message
    out = {
        "running": pid is not None,
        "pid": pid,
        "ready": ready,
        "listeners": [f"{cfg.broker.host}:{cfg.broker.port}", f"{cfg.broker_sandbox_host}:{cfg.broker.sandbox_port}"],
    }
    if error:
        out["error"] = error
    return out
