"""The Mosquitto broker the platform runs: its configuration (rendered from ``mosquitto/mosquitto.conf.in``),
the password and ACL files generated from the broker users in ``$MYSIMBDP_HOME/mosquitto/users.d``, reloads,
and connection probes. Who may do what is decided in :mod:`mysimbdp.broker`.

Listeners on loopback (tenants' publishers, the platform) and on the sandbox network's gateway (tenant
app containers). Anonymous access is off.
"""

from __future__ import annotations

import hashlib
import os
import socket
import pwd
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .. import broker, credentials
from ..broker import BrokerUser
from ..config import Config
from ..errors import BrokerUnavailable, ServiceStartError
from ..locks import file_lock
from ..retry import retry
from .process import Daemon, port_free, port_open, wait_until, who_listens


def daemon(cfg: Config) -> Daemon:
    return Daemon("mosquitto", cfg.paths.run, cfg.paths.logs, match="mosquitto")


def render_config(cfg: Config) -> Path:
    rt = runtime_dir(cfg)
    (rt / "data").mkdir(parents=True, exist_ok=True)
    link = cfg.paths.mosquitto / "runtime"
    if rt != link and not link.is_symlink():
        cfg.paths.mosquitto.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(rt)
    uid, gid = _mosquitto_ids()
    if uid is not None:
        for p in (rt, rt / "data"):
            os.chown(p, uid, gid)
            os.chmod(p, 0o700)
        # parents under /var/lib/mysimbdp must be searchable, not listable
        for p in rt.parents:
            if str(p).startswith("/var/lib/mysimbdp"):
                os.chmod(p, 0o711)
    rewrite_files(cfg)
    text = (
        (cfg.source / "mosquitto" / "mosquitto.conf.in")  # bounded: the project's own template
        .read_text()
        .format(
            runtime=rt,
            host=cfg.broker.host,
            port=cfg.broker.port,
            sandbox_host=cfg.broker_sandbox_host,
            sandbox_port=cfg.broker.sandbox_port,
            max_queued=cfg.broker.max_queued_messages,
            max_queued_bytes=cfg.broker.max_queued_mb << 20,
            max_inflight=cfg.broker.max_inflight_messages,
            max_packet=cfg.broker.max_packet_kb << 10,
            memory_limit=(cfg.broker.memory_limit_mb or cfg.supervisor.broker_memory_mb * 3 // 4) << 20,
            user_line="user mosquitto" if uid is not None else "",
        )
    )
    target = cfg.paths.mosquitto / "mosquitto.conf"
    target.write_text(text)
    return target


def command(cfg: Config) -> list[str]:
    """The broker's command line, its ports checked free and its configuration and users written: the same
    whether the supervisor runs it or a container (services/compose.py)."""
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
    service_login(cfg)  # the controller's user exists before the broker reads its files
    return [exe, "-c", str(conf)]


def start(cfg: Config, timeout: float = 20.0) -> str:
    d = daemon(cfg)
    if d.running():
        connect_probe(cfg)
        return "running"
    d.start(command(cfg), memory=cfg.supervisor.broker_memory_mb << 20, oom_score_adj=200)
    if not wait_until(lambda: port_open(cfg.broker.host, cfg.broker.port), timeout, 0.1, abort=d.exited_early):
        raise ServiceStartError("Mosquitto did not start:\n" + d.log_tail())
    try:
        retry(lambda: connect_probe(cfg), on=(BrokerUnavailable,), initial=0.2, maximum=1.0, deadline=timeout)
    except BrokerUnavailable as exc:
        raise ServiceStartError(f"Mosquitto runs but refuses the platform: {exc.message}\n" + d.log_tail()) from None
    return "started"


def stop(cfg: Config) -> bool:
    return daemon(cfg).stop(timeout=20)


def status(cfg: Config) -> dict:
    pid = daemon(cfg).pid()
    ready = False
    error = None
    if pid is not None:
        try:
            connect_probe(cfg, timeout=3)
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


# --- users: files Mosquitto reads ----------------------------------------------------------------------


def runtime_dir(cfg: Config) -> Path:
    """Where the broker's password file, ACL and persistence live.

    Mosquitto started as root drops to the ``mosquitto`` user before it reads its password and ACL files,
    so they must sit where that user can reach them. The state folder qualifies only when every folder
    above it is searchable by others (a checkout in a private temporary folder is not); otherwise a
    folder under /var/lib/mysimbdp named after the state folder is used, linked from the state folder.
    """
    own = cfg.paths.mosquitto / "runtime"
    if os.geteuid() != 0 or _searchable_by_others(cfg.paths.mosquitto):
        return own
    key = hashlib.sha256(str(cfg.home).encode()).hexdigest()[:12]
    return Path("/var/lib/mysimbdp") / key / "mosquitto"


def _searchable_by_others(path: Path) -> bool:
    p = path
    while True:
        try:
            if p.exists() and not os.stat(p).st_mode & 0o001:
                return False
        except OSError:
            return False
        if p.parent == p:
            return True
        p = p.parent


def users_dir(cfg: Config) -> Path:
    return cfg.paths.mosquitto / "users.d"


@contextmanager
def _locked(cfg: Config) -> Iterator[None]:
    cfg.paths.mosquitto.mkdir(parents=True, exist_ok=True)
    with file_lock(cfg.paths.mosquitto / ".lock"):
        yield


def put_user(cfg: Config, user: BrokerUser, *, reload: bool = True) -> None:
    with _locked(cfg):
        d = users_dir(cfg)
        d.mkdir(parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        tmp = d / f".{user.name}.tmp"
        tmp.write_text(user.to_json())
        os.replace(tmp, d / f"{user.name}.json")
        _write_files(cfg)
    if reload:
        reload_broker(cfg)


def remove_users(cfg: Config, prefix: str, *, reload: bool = True) -> int:
    """Remove every broker user whose name is ``prefix`` or starts with ``prefix + '.'``."""
    removed = 0
    with _locked(cfg):
        for f in users_dir(cfg).glob("*.json"):
            name = f.stem
            if name == prefix or name.startswith(prefix + "."):
                f.unlink()
                removed += 1
        _write_files(cfg)
    if reload and removed:
        reload_broker(cfg)
    return removed


def rewrite_files(cfg: Config) -> None:
    """Rewrite the broker's password file and ACL from users.d (without reloading the broker)."""
    with _locked(cfg):
        users_dir(cfg).mkdir(parents=True, exist_ok=True)
        _write_files(cfg)


def list_users(cfg: Config) -> list[BrokerUser]:
    # bounded: the platform's own small user records (state folder, 0600), never a tenant's bytes
    return [BrokerUser.from_json(f.read_text()) for f in sorted(users_dir(cfg).glob("*.json"))]


def _write_files(cfg: Config) -> None:
    """Rewrite the broker's password file and ACL from users.d (caller holds the lock)."""
    rt = runtime_dir(cfg)
    rt.mkdir(parents=True, exist_ok=True)
    users = [broker.with_current_rights(u) for u in list_users(cfg)]
    uid, gid = _mosquitto_ids()
    for name, text in (("passwords", broker.password_file(users)), ("acl", broker.acl_file(users))):
        tmp = rt / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        if uid is not None:
            os.chown(tmp, uid, gid)
        os.replace(tmp, rt / name)


def _mosquitto_ids() -> tuple[int | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None, None
    return pw.pw_uid, pw.pw_gid


def reload_broker(cfg: Config) -> None:
    """Ask the running broker to read its users again (SIGHUP)."""
    pid = daemon(cfg).pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)


def no_delay(client) -> None:
    """Small MQTT packets go at once (paho leaves Nagle's algorithm on: a notice or an acknowledgement could
    wait up to 40 ms for the last packet's TCP acknowledgement). Call from on_connect."""
    sock = client.socket()
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


# --- logins ----------------------------------------------------------------------------------------------


def service_login(cfg: Config, name: str = broker.STREAM_CONTROLLER_USER) -> tuple[str, str]:
    """The (user, password) of a platform service user, created on first use."""
    path = cfg.paths.secrets / f"broker-{name}.json"
    if path.exists():
        data = credentials.read_secret_json(path)
        return data["username"], data["password"]
    password = credentials.generate_password()
    credentials.write_secret(path, {"username": name, "password": password})
    put_user(cfg, broker.service_user(name, credentials.mosquitto_hash(password, cfg.broker.password_iterations)))
    return name, password


def wait_for_login(cfg: Config, user: str, password: str, timeout: float = 10.0) -> None:
    """Wait until the broker accepts ``user`` (it reloads its users on a signal), signalling again if not."""
    retry(
        lambda: connect_probe(cfg, timeout=3, login=(user, password)),
        on=(BrokerUnavailable,),
        initial=0.2,
        maximum=1.0,
        deadline=timeout,
        between=lambda: reload_broker(cfg),
    )


def connect_probe(cfg: Config, timeout: float = 5.0, login: tuple[str, str] | None = None) -> None:
    """Connect and disconnect (as the controller's service user, or ``login``); raise BrokerUnavailable."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    user, password = login or service_login(cfg)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    result: dict = {}
    client.on_connect = lambda c, u, f, rc, p: result.setdefault("rc", rc)
    try:
        client.connect(cfg.broker.host, cfg.broker.port, keepalive=10)
    except OSError as exc:
        raise BrokerUnavailable(f"cannot reach the broker at {cfg.broker.host}:{cfg.broker.port}: {exc}") from None
    deadline = time.monotonic() + timeout
    while "rc" not in result and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    rc = result.get("rc")
    if rc is None:
        raise BrokerUnavailable("the broker did not answer the connection in time")
    if rc.is_failure:
        raise BrokerUnavailable(f"the broker refused the platform's login: {rc}")
