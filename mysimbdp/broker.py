"""The MQTT broker's naming and rights, with no I/O: topics, broker users and their ACL lines.

Topic scheme (see docs/streaming.md):

* ``tenants/<tenant>/in/<stream>``    - one CSV record per message (any MQTT client, QoS 1);
* ``tenants/<tenant>/batch/<stream>`` - envelopes of numbered records (``mysimbdp-publish``, :mod:`.inbox`);
* ``confirm/<tenant>/<publisher>``    - the inbox writer confirms envelopes once they are in the inbox;
* ``inbox/<tenant>/notify``, ``inbox/<tenant>/plan`` - the platform tells the tenant's instances that a
  chunk was written, and which lanes each instance reads;
* ``reports/<tenant>/<instance>``     - each stream app instance publishes its timing reports here.

Users:

* a tenant ``T`` (its own password): write ``tenants/T/in/#`` and ``tenants/T/batch/#``, read
  ``confirm/T/#`` (sent at QoS 0, which the broker never queues for an absent session);
* a stream app instance ``app.T.<id>`` (generated password): read ``inbox/T/#``, write ``reports/T/<id>``
  only: tenant code never subscribes to the data topics;
* the platform's inbox writer ``svc.inbox``: read every tenant's data topics, write notices and
  confirmations; the stream controller ``svc.streammgr``: read ``reports/#``, write the lane plans.

The files Mosquitto reads, the reloads and the connection probes are in
:mod:`mysimbdp.services.mosquitto_broker`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable

from . import inbox, names
from .errors import InvalidName

STREAM_CONTROLLER_USER = "svc.streammgr"
INBOX_WRITER_USER = "svc.inbox"
BENCH_USER = "svc.bench"  # bench/stream_bench.py's raw-broker peer: its own topics, no tenant's
_USER = re.compile(r"(svc\.[a-z]+|[a-z][a-z0-9_]{2,31}|app\.[a-z][a-z0-9_]{2,31}\.[a-z0-9]{1,32})")

# --- topics ------------------------------------------------------------------------------------------

REPORTS_FILTER = "reports/+/+"  # every instance's reports (the stream controller)


def data_topic(tenant: str, stream: str = "default") -> str:
    """Where a tenant publishes one stream's records."""
    return f"tenants/{names.tenant(tenant)}/in/{names.stream(stream)}"


def batch_topic(tenant: str, stream: str = "default") -> str:
    """Where ``mysimbdp-publish`` sends envelopes of numbered records (:mod:`.inbox`)."""
    return f"tenants/{names.tenant(tenant)}/batch/{names.stream(stream)}"


INBOX_WRITER_FILTERS = ("tenants/+/in/+", "tenants/+/batch/+")  # what the inbox writer takes in


def parse_data_topic(topic: str) -> tuple[str, bool, str]:
    """(tenant, is an envelope, stream) of a data topic; InvalidName for anything else."""
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != "tenants" or parts[2] not in ("in", "batch"):
        raise InvalidName("not a data topic")
    return names.tenant(parts[1]), parts[2] == "batch", names.stream(parts[3])


def confirm_topic(tenant: str, publisher: str) -> str:
    if not inbox.PUBLISHER_ID.fullmatch(publisher):
        raise InvalidName("bad publisher id")
    return f"confirm/{names.tenant(tenant)}/{publisher}"


def instance_filter(tenant: str) -> str:
    """What a tenant's instances subscribe to: the platform's notices about its inbox."""
    return f"inbox/{names.tenant(tenant)}/#"


def notify_topic(tenant: str) -> str:
    return f"inbox/{names.tenant(tenant)}/notify"


def plan_topic(tenant: str) -> str:
    return f"inbox/{names.tenant(tenant)}/plan"


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
    return BrokerUser(
        t,
        password_hash,
        (f"topic write tenants/{t}/in/#", f"topic write tenants/{t}/batch/#", f"topic read confirm/{t}/#"),
    )


def app_instance_user(tenant: str, instance: str, password_hash: str) -> BrokerUser:
    t = names.tenant(tenant)
    return BrokerUser(
        instance_user(t, instance),
        password_hash,
        (f"topic read inbox/{t}/#", f"topic write reports/{t}/{instance}"),
    )


_SERVICE_RIGHTS = {
    STREAM_CONTROLLER_USER: ("topic read reports/#", "topic write inbox/+/plan"),
    INBOX_WRITER_USER: (
        "topic read tenants/+/in/+",
        "topic read tenants/+/batch/+",
        "topic write inbox/+/notify",
        "topic write confirm/+/+",
    ),
    BENCH_USER: ("topic readwrite bench/#",),
}


def service_user(name: str, password_hash: str) -> BrokerUser:
    return BrokerUser(name, password_hash, _SERVICE_RIGHTS.get(name, ()))


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
