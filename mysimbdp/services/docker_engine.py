"""The Docker engine: started if it is not running (by systemd where there is one, else directly).

The engine is the machine's service, not one of the platform's daemons: where there is no systemd the
platform starts it once, detached, and does not supervise it (``mysimbdp up`` starts it again if it died).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from ..config import Config
from ..errors import ServiceStartError
from .process import Daemon, wait_until


def daemon(cfg: Config) -> Daemon:
    return Daemon("dockerd", cfg.paths.run, cfg.paths.logs, match="dockerd")


def ping() -> bool:
    try:
        c = docker.from_env(timeout=5)
        ok = c.ping()
        c.close()
        return bool(ok)
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return False


def start(cfg: Config, timeout: float = 90.0) -> str:
    if ping():
        return "running"
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
    if not dockerd:
        raise ServiceStartError("the Docker engine (dockerd) is not installed", hint="run `make setup` (docker.io)")
    if Path("/run/systemd/system").is_dir() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "start", "docker"], capture_output=True)
    else:
        d = daemon(cfg)
        if not d.running():
            d.spawn([dockerd])
    if not wait_until(ping, timeout, 0.3, abort=lambda: _ours_died(cfg)):
        d = daemon(cfg)
        why = "it exited" if _ours_died(cfg) else f"it did not answer within {timeout:.0f}s"
        raise ServiceStartError(f"the Docker engine did not start ({why}); the end of {d.log_file}:\n" + d.log_tail())
    return "started"


def _ours_died(cfg: Config) -> bool:
    """True when the engine this platform started is gone (not merely still starting)."""
    d = daemon(cfg)
    return d.pid_file.exists() and d.exited_early()


def stop(cfg: Config) -> bool:
    """Stop the engine only if the platform started it (never a system-managed engine)."""
    return daemon(cfg).stop(timeout=30)


def status(cfg: Config) -> dict:
    up = ping()
    out: dict = {"running": up, "ready": up, "started_by_platform": daemon(cfg).running()}
    if up:
        try:
            c = docker.from_env(timeout=5)
            v = c.version()
            out["version"] = v.get("Version")
            out["api"] = v.get("ApiVersion")
            c.close()
        except (docker.errors.DockerException, requests.exceptions.RequestException):
            pass
    return out
