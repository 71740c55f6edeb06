"""Stream app instances of a tenant: sandboxed containers in numbered slots (s0, s1, ...).

A slot is an identity that outlives its containers: its broker user ``app.<tenant>.<slot>`` (with a
generated password kept in the state folder, mode 0600), its MQTT client id and its reports topic
``reports/<tenant>/<slot>``. An instance holds nothing the platform needs back: its records wait in the
tenant's inbox, and what it has done is in its lanes' offsets (docs/streaming.md).

Stopping comes in two kinds, told apart by the signal the instance gets; either way it finishes the round
in hand, records its offsets and exits:

* ``leave`` (SIGTERM): scale-down or stopping one of several: the slot's broker user goes too;
* ``pause`` (SIGINT): the stream stopped, or `mysimbdp down`: the slot is kept and starts first next time.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mysimbdp import apps, broker, contract, credentials, names
from mysimbdp.config import Config
from mysimbdp.errors import NoApp
from mysimbdp.sandbox import ContainerInfo, SandboxRuntime
from mysimbdp.services import mosquitto_broker
from mysimbdp.tenants import Tenant

log = logging.getLogger(__name__)
SLOT = re.compile(r"s([0-9]{1,2})")
MAX_SLOTS = 32
KEEP_LOGS = 5  # kept logs of a slot's containers (each at most 2 MiB)


@dataclass(frozen=True)
class Instance:
    tenant: str
    slot: str
    container: ContainerInfo

    @property
    def state(self) -> str:
        return self.container.state


def slot_of(c: ContainerInfo) -> str:
    return c.labels.get("mysimbdp.instance", "")


def slot_number(slot: str) -> int:
    m = SLOT.fullmatch(slot)
    return int(m.group(1)) if m else 999


def container_name(tenant: str, slot: str) -> str:
    return f"mysimbdp-stream-{names.tenant(tenant)}-{slot}"


class Instances:
    def __init__(self, cfg: Config, runtime: SandboxRuntime) -> None:
        self.cfg = cfg
        self.runtime = runtime

    def of(self, tenant: str, *, brief: bool = False) -> dict[str, Instance]:
        """The tenant's instance containers by slot (running, or exited and not yet dealt with);
        ``brief`` as in SandboxRuntime.list."""
        out = {}
        for c in self.runtime.list(brief=brief, kind="stream", tenant=tenant):
            slot = slot_of(c)
            if SLOT.fullmatch(slot):
                out[slot] = Instance(tenant, slot, c)
        return out

    def log_path(self, tenant: str, slot: str) -> Path:
        """Where the next container of this slot keeps its output; only the last KEEP_LOGS are kept."""
        folder = self.cfg.paths.sandbox_runs / tenant
        for old in sorted(folder.glob(f"stream-{slot}-*.log"))[: -(KEEP_LOGS - 1)]:
            old.unlink(missing_ok=True)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return folder / f"stream-{slot}-{stamp}.log"

    def start(self, tenant: Tenant, slot: str) -> str:
        app = apps.installed(self.cfg, tenant.name, "stream")
        if app is None:
            raise NoApp(
                f"tenant {tenant.name} has no stream ingest app",
                hint="give it one with `mysimbdp tenant update --stream-app DIR`",
            )
        if not SLOT.fullmatch(slot) or slot_number(slot) >= MAX_SLOTS:
            raise ValueError(f"bad slot {slot}")
        password = self._password(tenant.name, slot)
        self.runtime.remove(container_name(tenant.name, slot))  # a leftover of a crash, if any
        log_path = self.log_path(tenant.name, slot)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        spec = contract.stream_run(self.cfg, tenant, app, instance=slot, mqtt_password=password, log_path=log_path)
        name = self.runtime.start(spec)
        log.info("started %s (%s)", name, app.ref)
        return name

    def _secret(self, tenant: str, slot: str) -> Path:
        return self.cfg.paths.secrets / "stream" / tenant / f"{slot}.json"

    def _password(self, tenant: str, slot: str) -> str:
        """The slot's broker password: the one it has while its session lives, a new one otherwise."""
        path = self._secret(tenant, slot)
        users = {u.name for u in mosquitto_broker.list_users(self.cfg)}
        if path.exists() and broker.instance_user(tenant, slot) in users:
            return credentials.read_secret_json(path)["password"]
        password = credentials.generate_password()
        credentials.write_secret(path, {"password": password})
        mosquitto_broker.put_user(
            self.cfg,
            broker.app_instance_user(
                tenant, slot, credentials.mosquitto_hash(password, self.cfg.broker.password_iterations)
            ),
        )
        mosquitto_broker.wait_for_login(self.cfg, broker.instance_user(tenant, slot), password)
        return password

    def stop(self, tenant: str, slot: str, mode: str) -> int | None:
        """Stop one instance gracefully: ``leave`` or ``pause`` (see the module's docstring)."""
        sig = "SIGTERM" if mode == "leave" else "SIGINT"
        code = self.runtime.stop(container_name(tenant, slot), timeout=self.cfg.stream.drain_timeout, signal=sig)
        if mode == "leave":
            mosquitto_broker.remove_users(self.cfg, broker.instance_user(tenant, slot))
            self._secret(tenant, slot).unlink(missing_ok=True)
        log.info("stopped %s/%s (%s), exit %s", tenant, slot, mode, code)
        return code
