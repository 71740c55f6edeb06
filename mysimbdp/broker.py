"""The MQTT broker: its users, their topic rights, and connections to it.

Topic scheme (see docs/streaming.md):

* ``tenants/<tenant>/in/<stream>``  - a tenant publishes one CSV line per message here (QoS 1);
* ``reports/<tenant>/<instance>``   - each stream app instance publishes its timing reports here.

Who may do what is generated into Mosquitto's password and ACL files from one small JSON file per broker
user under ``$MYSIMBDP_HOME/mosquitto/users.d``; :func:`apply` rewrites both files and asks the broker to
reload them (SIGHUP). Users:

* a tenant ``T`` (its own password): read/write ``tenants/T/#``, read ``reports/T/#``;
* a stream app instance ``app.T.<id>`` (generated password): read ``tenants/T/in/#``, write
  ``reports/T/<id>`` only;
* the platform's stream controller ``svc.streammgr``: read ``reports/#``.
"""

from __future__ import annotations

import fcntl
import json
import os
import hashlib
import re
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import credentials, names
from .config import Config
from .errors import BrokerUnavailable, InvalidName

STREAM_CONTROLLER_USER = "svc.streammgr"
_USER = re.compile(r"(svc\.[a-z]+|[a-z][a-z0-9_]{2,31}|app\.[a-z][a-z0-9_]{2,31}\.[a-z0-9]{1,32})")


def data_topic(tenant: str, stream: str = "default") -> str:
    return f"tenants/{names.tenant(tenant)}/in/{names.stream(stream)}"


def data_filter(tenant: str) -> str:
    return f"tenants/{names.tenant(tenant)}/in/#"


def shared_data_filter(tenant: str, group: str) -> str:
    """The shared subscription all instances of one tenant join: the broker splits messages among them.
    ``group`` is the tenant's secret group name (tenants.stream_group)."""
    if not re.fullmatch(r"g[0-9a-f]{24}", group):
        raise InvalidName("bad stream group name")
    return f"$share/{group}/{data_filter(tenant)}"


def session_client_id(prefix: str, password: str) -> str:
    """A client id for a persistent session that another broker user cannot guess: Mosquitto lets any
    authenticated user connect with any client id, and so take over (or wipe) that session."""
    return f"{prefix}-{hashlib.sha256(('client-id:' + password).encode()).hexdigest()[:20]}"


def report_topic(tenant: str, instance: str) -> str:
    return f"reports/{names.tenant(tenant)}/{instance}"


def instance_user(tenant: str, instance: str) -> str:
    return f"app.{names.tenant(tenant)}.{instance}"


@dataclass(frozen=True)
class BrokerUser:
    name: str
    password_hash: str
    acl: tuple[str, ...]  # lines like "topic readwrite tenants/x/#"

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "password_hash": self.password_hash, "acl": list(self.acl)})


def tenant_user(tenant: str, password_hash: str) -> BrokerUser:
    t = names.tenant(tenant)
    return BrokerUser(t, password_hash, (f"topic readwrite tenants/{t}/#", f"topic read reports/{t}/#"))


def app_instance_user(tenant: str, instance: str, password_hash: str) -> BrokerUser:
    t = names.tenant(tenant)
    return BrokerUser(
        instance_user(t, instance),
        password_hash,
        (f"topic read tenants/{t}/in/#", f"topic write reports/{t}/{instance}"),
    )


def service_user(name: str, password_hash: str) -> BrokerUser:
    return BrokerUser(name, password_hash, ("topic read reports/#",))


# --- files -----------------------------------------------------------------------------------------


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
    import hashlib

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
    with open(cfg.paths.mosquitto / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def put_user(cfg: Config, user: BrokerUser, *, reload: bool = True) -> None:
    if not _USER.fullmatch(user.name):
        raise InvalidName(f"invalid broker user name {user.name!r}")
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
    users = []
    for f in sorted(users_dir(cfg).glob("*.json")):
        data = json.loads(f.read_text())
        users.append(BrokerUser(data["name"], data["password_hash"], tuple(data["acl"])))
    return users


def _write_files(cfg: Config) -> None:
    """Rewrite the broker's password file and ACL from users.d (caller holds the lock)."""
    rt = runtime_dir(cfg)
    rt.mkdir(parents=True, exist_ok=True)
    users = list_users(cfg)
    pw_lines = [f"{u.name}:{u.password_hash}" for u in users]
    acl_lines = ["# generated by mysimbdp from users.d; do not edit", ""]
    for u in users:
        acl_lines.append(f"user {u.name}")
        acl_lines.extend(u.acl)
        acl_lines.append("")
    uid, gid = _mosquitto_ids()
    for name, lines in (("passwords", pw_lines), ("acl", acl_lines)):
        tmp = rt / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        if uid is not None:
            os.chown(tmp, uid, gid)
        os.replace(tmp, rt / name)


def _mosquitto_ids() -> tuple[int | None, int | None]:
    if os.geteuid() != 0:
        return None, None
    import pwd

    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return None, None
    return pw.pw_uid, pw.pw_gid


def reload_broker(cfg: Config) -> None:
    from .services import mosquitto_broker

    pid = mosquitto_broker.daemon(cfg).pid()
    if pid is not None:
        os.kill(pid, signal.SIGHUP)


# --- service credentials ---------------------------------------------------------------------------


def service_login(cfg: Config, name: str = STREAM_CONTROLLER_USER) -> tuple[str, str]:
    """The (user, password) of a platform service user, created on first use."""
    path = cfg.paths.secrets / f"broker-{name}.json"
    if path.exists():
        data = credentials.read_secret_json(path)
        return data["username"], data["password"]
    password = credentials.generate_password()
    credentials.write_secret(path, {"username": name, "password": password})
    put_user(cfg, service_user(name, credentials.mosquitto_hash(password, cfg.broker.password_iterations)))
    return name, password


def wait_for_login(cfg: Config, user: str, password: str, timeout: float = 10.0) -> None:
    """Wait until the broker accepts ``user`` (it reloads its users on a signal), signalling again if not."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            connect_probe(cfg, timeout=3, login=(user, password))
            return
        except BrokerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
            reload_broker(cfg)


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
    import time

    deadline = time.monotonic() + timeout
    while "rc" not in result and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    client.disconnect()
    rc = result.get("rc")
    if rc is None:
        raise BrokerUnavailable("the broker did not answer the connection in time")
    if rc.is_failure:
        raise BrokerUnavailable(f"the broker refused the platform's login: {rc}")
