"""The MQTT broker's naming and rights, with no I/O: topics, broker users and their ACL lines.

Topic scheme (see docs/streaming.md):

* ``tenants/<tenant>/in/<stream>``  - a tenant publishes one CSV line per message here (QoS 1);
* ``reports/<tenant>/<instance>``   - each stream app instance publishes its timing reports here.

Users:

* a tenant ``T`` (its own password): write ``tenants/T/in/#`` only (it reads its reports over HTTP; a
  tenant that could read here could make the broker queue messages for sessions of its own);
* a stream app instance ``app.T.<id>`` (generated password): read ``tenants/T/in/#``, write
  ``reports/T/<id>`` only;
* the platform's stream controller ``svc.streammgr``: read ``reports/#``.

The files Mosquitto reads, the reloads and the connection probes are in
:mod:`mysimbdp.services.mosquitto_broker`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable

from . import names
from .errors import InvalidName

STREAM_CONTROLLER_USER = "svc.streammgr"
_USER = re.compile(r"(svc\.[a-z]+|[a-z][a-z0-9_]{2,31}|app\.[a-z][a-z0-9_]{2,31}\.[a-z0-9]{1,32})")
_GROUP = re.compile(r"g[0-9a-f]{24}")

# --- topics ------------------------------------------------------------------------------------------

REPORTS_FILTER = "reports/+/+"  # every instance's reports (the stream controller)


def data_topic(tenant: str, stream: str = "default") -> str:
    """Where a tenant publishes one stream's records."""
    return f"tenants/{names.tenant(tenant)}/in/{names.stream(stream)}"


def data_filter(tenant: str) -> str:
    return f"tenants/{names.tenant(tenant)}/in/#"


def shared_data_filter(tenant: str, group: str) -> str:
    """The shared subscription all instances of one tenant join: the broker splits messages among them.
    ``group`` is the tenant's secret group name (tenants.stream_group)."""
    if not _GROUP.fullmatch(group):
        raise InvalidName("bad stream group name")
    return f"$share/{group}/{data_filter(tenant)}"


def report_topic(tenant: str, instance: str) -> str:
    return f"reports/{names.tenant(tenant)}/{instance}"


def parse_report_topic(topic: str) -> tuple[str, str]:
    """(tenant, instance) of a reports topic; ValueError for anything else."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "reports" or not parts[1] or not parts[2]:
        raise ValueError(f"not a reports topic: {topic[:100]!r}")
    return parts[1], parts[2]


def session_client_id(prefix: str, password: str) -> str:
    """A client id for a persistent session that another broker user cannot guess: Mosquitto lets any
    authenticated user connect with any client id, and so take over (or wipe) that session."""
    return f"{prefix}-{hashlib.sha256(('client-id:' + password).encode()).hexdigest()[:20]}"


# --- users and rights --------------------------------------------------------------------------------


def instance_user(tenant: str, instance: str) -> str:
    return f"app.{names.tenant(tenant)}.{instance}"


def instance_users_prefix(tenant: str) -> str:
    """Every instance user of ``tenant`` starts with this followed by a dot."""
    return f"app.{names.tenant(tenant)}"


@dataclass(frozen=True)
class BrokerUser:
    name: str
    password_hash: str
    acl: tuple[str, ...]  # lines like "topic readwrite tenants/x/#"

    def __post_init__(self) -> None:
        if not _USER.fullmatch(self.name):
            raise InvalidName(f"invalid broker user name {self.name!r}")

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "password_hash": self.password_hash, "acl": list(self.acl)})

    @classmethod
    def from_json(cls, text: str) -> "BrokerUser":
        data = json.loads(text)
        return cls(data["name"], data["password_hash"], tuple(data["acl"]))


def tenant_user(tenant: str, password_hash: str) -> BrokerUser:
    t = names.tenant(tenant)
    return BrokerUser(t, password_hash, (f"topic write tenants/{t}/in/#",))


def app_instance_user(tenant: str, instance: str, password_hash: str) -> BrokerUser:
    t = names.tenant(tenant)
    return BrokerUser(
        instance_user(t, instance),
        password_hash,
        (f"topic read tenants/{t}/in/#", f"topic write reports/{t}/{instance}"),
    )


def service_user(name: str, password_hash: str) -> BrokerUser:
    return BrokerUser(name, password_hash, ("topic read reports/#",))


def with_current_rights(user: BrokerUser) -> BrokerUser:
    """``user`` with the rights its kind has now (a user stored under older rules gets today's)."""
    parts = user.name.split(".")
    if len(parts) == 3 and parts[0] == "app":
        return app_instance_user(parts[1], parts[2], user.password_hash)
    if len(parts) == 2 and parts[0] == "svc":
        return service_user(user.name, user.password_hash)
    return tenant_user(user.name, user.password_hash)


def password_file(users: Iterable[BrokerUser]) -> str:
    """Mosquitto's password file for ``users``."""
    return "".join(f"{u.name}:{u.password_hash}\n" for u in users)


def acl_file(users: Iterable[BrokerUser]) -> str:
    """Mosquitto's ACL file for ``users``."""
    lines = ["# generated by mysimbdp from users.d; do not edit", ""]
    for u in users:
        lines.append(f"user {u.name}")
        lines.extend(u.acl)
        lines.append("")
    return "\n".join(lines) + "\n"
