"""The one configuration object.

Layers, each overriding the one before: built-in defaults, then a TOML file (``$MYSIMBDP_HOME/mysimbdp.toml``
or ``$MYSIMBDP_CONFIG``), then ``MYSIMBDP_<SECTION>_<KEY>`` environment variables, then overrides passed by
an entry point (its flags). The result is validated once into frozen dataclasses; nothing else in the code
reads the environment for settings.

Example: ``MYSIMBDP_CASSANDRA_CONTACT_POINTS=10.0.0.5,10.0.0.6`` and ``MYSIMBDP_CASSANDRA_MANAGED=false``
point the platform at an existing cluster instead of the one it runs itself.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .names import TENANT_PATTERN

#: the checkout: cassandra/, mosquitto/, constraints/ and tenant_apps/ are read from here.
SOURCE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class CassandraSettings:
    managed: bool = True  # run Cassandra here; false = use an existing cluster
    # managed nodes on this machine: 1 (on 127.0.0.1), or a cluster of up to 5, node i on the i-th address
    # of node_network (added to the loopback interface: the host and the sandbox's containers reach it)
    nodes: int = 1
    node_network: str = "10.254.42.0/24"
    version: str = "5.0.9"
    lib: str = ""  # the Cassandra jars; default $MYSIMBDP_HOME/cassandra/lib (the platform's image: its own copy)
    contact_points: tuple[str, ...] = ("127.0.0.1",)
    port: int = 9042
    storage_port: int = 7000
    heap: str = "2G"
    # replication of the platform keyspace and of every tenant keyspace
    replication_class: str = "SimpleStrategy"  # or NetworkTopologyStrategy
    replication_factor: int = 1  # SimpleStrategy
    datacenters: str = ""  # NetworkTopologyStrategy: "dc1:3,dc2:3"
    username: str = "mysimbdp_operator"
    password_file: str = ""  # existing cluster: a file holding the operator role's password
    sandbox_host: str = ""  # address tenant containers use; default: the sandbox network's gateway
    connect_timeout: float = 5.0
    # nodetool's JMX port (backups): opened on 127.0.0.1 only, with a generated login, the first time a
    # backup or restore needs it (services/cassandra_node.py: ensure_jmx)
    jmx_port: int = 7199
    # how often the stream controller's node watch looks at the nodes (nodewatch.py: up/down events)
    watch_interval: float = 5.0


@dataclass(frozen=True)
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    sandbox_host: str = ""  # default: the sandbox network's gateway
    sandbox_port: int = 1883
    # What one client's session (a stream instance's, also while it is stopped) may hold queued: past
    # either bound the broker drops further messages for that session (docs/streaming.md). Mosquitto's
    # default of 1000 messages would drop them at once; 0 would let one tenant grow the broker without end.
    max_queued_messages: int = 100_000
    max_queued_mb: int = 64
    max_inflight_messages: int = 1000
    max_packet_kb: int = 256  # the largest MQTT packet (one CSV record and its topic); larger: disconnected
    memory_limit_mb: int = 0  # the broker's own heap ceiling; 0: three quarters of its memory cap
    password_iterations: int = 20000  # PBKDF2-SHA512 rounds for the broker's password file


@dataclass(frozen=True)
class SandboxSettings:
    network: str = "mysimbdp-sandbox"
    bridge: str = "mysb0"
    subnet: str = "172.29.0.0/24"
    image: str = "mysimbdp/tenant-runtime"
    pids: int = 128  # processes a run may have (memory and CPUs come from each tenant's constraints)
    scratch: str = "64m"  # size of the writable /tmp
    max_output_mb: int = 256  # what one run may write to its output folder (rejects, result)
    timeout: int = 900  # platform ceiling on a one-shot run's wall clock, seconds
    uid_base: int = 20000  # tenant n runs as uid/gid uid_base + n
    debian_suite: str = "bookworm"
    # a heartbeat file in run/ that proves the sandbox's firewall rules were in place within 30 s; when set,
    # no tenant container starts without it (docker-compose.yml: init's watch writes it, the managers check)
    firewall_heartbeat: str = ""


@dataclass(frozen=True)
class BatchSettings:
    host: str = "127.0.0.1"
    port: int = 8801
    threads: int = 16  # concurrent HTTP requests the upload API serves
    workers: int = 4  # global limit on concurrent batch jobs (much of a small job is waiting on Docker)
    after_success: str = "archive"  # or "delete"
    retry_initial: float = 2.0  # first back-off after an infrastructure failure, seconds
    retry_max: float = 60.0
    max_attempts: int = 20
    auth_max_failures: int = 5  # failures (per client address or per user) before a lock-out
    auth_lockout: int = 60  # seconds
    tenant_requests: int = 8  # requests of one tenant in progress at once on one API (the rest get 429)
    # rejected rows kept for the tenant: at most this much of one job's rejects.csv (its first lines), and
    # of all its jobs together (after that a job's rejects are counted in its receipt but not kept)
    max_rejects_kept_mb: int = 16
    max_rejects_kept_total_mb: int = 1024


@dataclass(frozen=True)
class StreamSettings:
    host: str = "127.0.0.1"
    port: int = 8802
    threads: int = 16
    control_interval: float = 0.5  # how often the controller reconciles instances and scales
    drain_timeout: int = 30  # seconds an instance gets to drain on stop
    inbox_flush_ms: float = 5.0  # how long the inbox writer lets a round gather
    inbox_retention_hours: int = 48  # a record not turned into a row by then expires from the inbox
    inbox_max_backlog: int = 2_000_000  # records waiting per tenant; past it the writer answers "full"
    inbox_max_mb: int = 4096  # what one tenant's inbox may take in a retention window (the node's disk is shared)


@dataclass(frozen=True)
class QuerySettings:
    host: str = "127.0.0.1"
    port: int = 8803
    # worker processes: a read costs the API about twice the CPU the driver spends on it, and one Python
    # process cannot use more than one core (bench/RESULTS.md); each worker has its own threads and sessions
    workers: int = 3
    # reads are short and many: one tenant may have 32 in progress in one worker (a client with 32
    # connections), and as many threads again stay for the others
    threads: int = 64
    tenant_requests: int = 32
    # a tenant's password hash is read again after this long: a point read then costs one Cassandra round
    # trip, not two; a changed password or a deleted tenant reaches this API within it
    password_recheck_seconds: float = 1.0
    sessions: int = 32  # tenants' Cassandra sessions kept open at once (least recently used closed first)
    session_idle: int = 300  # seconds a tenant's unused session stays open
    max_page_size: int = 1000  # rows in one page of a query
    default_page_size: int = 100
    max_write_rows: int = 500  # rows in one write request
    max_in_values: int = 100  # values of one `in` filter
    token_hours: int = 24  # a page token is valid this long
    export_fetch_size: int = 2000  # rows read from Cassandra at a time by an export
    object_chunk_kb: int = 1024  # binary objects are stored in rows of this size (a mutation stays far below 16 MiB)
    request_seconds: int = 60  # a query or write answers within this (exports and objects stream past it)


@dataclass(frozen=True)
class DashboardSettings:
    host: str = "127.0.0.1"
    port: int = 8804
    threads: int = 16
    session_minutes: int = 480  # a login lasts this long (then the page asks for it again)
    cookie_secure: bool = False  # set when the dashboard is served behind TLS: the cookie then goes over HTTPS only
    refresh_seconds: int = 5  # how often the page polls what it shows
    max_view_kb: int = 64  # of a job's log or rejects shown in the page (the whole file is a download)


@dataclass(frozen=True)
class SupervisorSettings:
    max_log_mb: int = 64  # a daemon's log is rotated past this (two old copies kept)
    # memory caps (MiB) of the platform's daemons; past its cap the kernel kills that daemon alone and the
    # supervisor starts it again. Cassandra: 0 = twice its heap, plus 1 GiB
    api_memory_mb: int = 768
    manager_memory_mb: int = 1024
    broker_memory_mb: int = 1024
    cassandra_memory_mb: int = 0


@dataclass(frozen=True)
class BackupSettings:
    folder: str = ""  # where backups are written; default $MYSIMBDP_HOME/backups (on the Cassandra host)
    # scheduled backups (started by the supervisor): every this many hours, of these tenants (none: all of
    # them); 0 = no scheduled backups
    every_hours: float = 0.0
    tenants: tuple[str, ...] = ()
    # retention of scheduled backups (never of those made by hand), per tenant: the newest `keep` are kept
    # (0: no limit by count), and none older than `keep_days` (0: no limit by age); the newest always stays
    keep: int = 7
    keep_days: int = 0
    snapshot_ttl_hours: int = 6  # a node snapshot left behind by a backup that died is dropped by Cassandra then


@dataclass(frozen=True)
class Config:
    home: Path
    source: Path = SOURCE_ROOT
    keyspace: str = "mysimbdp"  # the platform keyspace
    log_level: str = "INFO"
    cassandra: CassandraSettings = field(default_factory=CassandraSettings)
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    sandbox: SandboxSettings = field(default_factory=SandboxSettings)
    batch: BatchSettings = field(default_factory=BatchSettings)
    stream: StreamSettings = field(default_factory=StreamSettings)
    query: QuerySettings = field(default_factory=QuerySettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    supervisor: SupervisorSettings = field(default_factory=SupervisorSettings)
    backup: BackupSettings = field(default_factory=BackupSettings)

    # --- derived places -------------------------------------------------------------------------
    @property
    def paths(self) -> "Paths":
        return Paths(self.home)

    @property
    def sandbox_gateway(self) -> str:
        net = ipaddress.ip_network(self.sandbox.subnet)
        return str(next(net.hosts()))

    @property
    def cluster(self) -> bool:
        """A managed cluster of several nodes on this machine (cassandra.nodes > 1)."""
        return self.cassandra.managed and self.cassandra.nodes > 1

    @property
    def node_addresses(self) -> tuple[str, ...]:
        """The managed nodes' addresses, node 1 first: 127.0.0.1 for the one node, else node_network's."""
        if not self.cluster:
            return ("127.0.0.1",)
        net = ipaddress.ip_network(self.cassandra.node_network)
        return tuple(str(net.network_address + i) for i in range(1, self.cassandra.nodes + 1))

    @property
    def contact_points(self) -> tuple[str, ...]:
        return self.node_addresses if self.cluster else self.cassandra.contact_points

    @property
    def cassandra_sandbox_host(self) -> str:
        """What tenant containers connect to (comma-separated): a cluster's nodes directly (their addresses
        answer on the sandbox bridge), else the gateway, forwarded to the one node on loopback."""
        if self.cassandra.sandbox_host:
            return self.cassandra.sandbox_host
        return ",".join(self.node_addresses) if self.cluster else self.sandbox_gateway

    @property
    def broker_sandbox_host(self) -> str:
        return self.broker.sandbox_host or self.sandbox_gateway

    def replication_map(self) -> dict[str, str]:
        """The replication map for CREATE KEYSPACE, built from validated settings only."""
        c = self.cassandra
        if self.cluster:  # every node in one datacenter (SimpleSnitch): three replicas, or as many as nodes
            return {"class": "NetworkTopologyStrategy", "datacenter1": str(min(3, c.nodes))}
        if c.replication_class == "SimpleStrategy":
            return {"class": "SimpleStrategy", "replication_factor": str(c.replication_factor)}
        dcs = dict(item.split(":") for item in c.datacenters.split(","))
        return {"class": "NetworkTopologyStrategy", **dcs}

    def batch_url(self) -> str:
        return f"http://{self.batch.host}:{self.batch.port}"

    def stream_url(self) -> str:
        return f"http://{self.stream.host}:{self.stream.port}"

    def query_url(self) -> str:
        return f"http://{self.query.host}:{self.query.port}"

    def dashboard_url(self) -> str:
        return f"http://{self.dashboard.host}:{self.dashboard.port}"

    @property
    def backup_folder(self) -> Path:
        return Path(self.backup.folder).expanduser().resolve() if self.backup.folder else self.paths.backups


@dataclass(frozen=True)
class Paths:
    """Every place under the state folder, in one spot."""

    home: Path

    @property
    def secrets(self) -> Path:
        return self.home / "secrets"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def run(self) -> Path:
        return self.home / "run"

    @property
    def cassandra(self) -> Path:
        return self.home / "cassandra"

    @property
    def mosquitto(self) -> Path:
        return self.home / "mosquitto"

    @property
    def docker(self) -> Path:
        return self.home / "docker"

    @property
    def image(self) -> Path:
        return self.home / "image"

    @property
    def sandbox_runs(self) -> Path:
        return self.home / "runs"

    def staging(self, tenant: str) -> Path:
        return self.home / "staging" / tenant

    def uploads(self, tenant: str) -> Path:
        return self.home / "uploads" / tenant

    def work(self, tenant: str) -> Path:
        return self.home / "work" / tenant

    def archive(self, tenant: str) -> Path:
        return self.home / "archive" / tenant

    def quarantine(self, tenant: str) -> Path:
        return self.home / "quarantine" / tenant

    def tenant_apps(self, tenant: str) -> Path:
        return self.home / "apps" / tenant

    @property
    def dry_runs(self) -> Path:
        """Dry runs of tenant apps under way (mysimbdp/dryrun.py), and their logs under logs/dryruns."""
        return self.home / "dryruns"

    def tenant_folders(self, tenant: str) -> tuple[Path, ...]:
        """Every folder that holds something of ``tenant``'s."""
        return (
            self.staging(tenant),
            self.uploads(tenant),
            self.work(tenant),
            self.archive(tenant),
            self.quarantine(tenant),
            self.tenant_apps(tenant),
            self.sandbox_runs / tenant,
        )

    def ingestion_log(self) -> Path:
        return self.logs / "ingestion.log"

    @property
    def backups(self) -> Path:
        return self.home / "backups"


# --- loading --------------------------------------------------------------------------------------

_SECTIONS = {
    "cassandra": CassandraSettings,
    "broker": BrokerSettings,
    "sandbox": SandboxSettings,
    "batch": BatchSettings,
    "stream": StreamSettings,
    "query": QuerySettings,
    "dashboard": DashboardSettings,
    "supervisor": SupervisorSettings,
    "backup": BackupSettings,
}
_TOP = {"keyspace", "log_level"}


def load(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration: defaults < file < environment < ``overrides``.

    ``overrides`` uses dotted keys: ``{"cassandra.port": 9043, "home": "/srv/mysimbdp"}``.
    """
    env = os.environ if env is None else env
    home = Path(str((overrides or {}).get("home") or env.get("MYSIMBDP_HOME") or SOURCE_ROOT / "state"))
    home = home.expanduser().resolve()
    layers: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    top: dict[str, Any] = {}

    cfg_file = Path(env["MYSIMBDP_CONFIG"]) if env.get("MYSIMBDP_CONFIG") else home / "mysimbdp.toml"
    if env.get("MYSIMBDP_CONFIG") and not cfg_file.is_file():
        raise ConfigError(f"configuration file {cfg_file} does not exist")
    if cfg_file.is_file():
        try:
            data = tomllib.loads(cfg_file.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{cfg_file}: not valid TOML: {exc}") from None
        for key, value in data.items():
            if key in _SECTIONS and isinstance(value, dict):
                layers[key].update(value)
            elif key in _TOP:
                top[key] = value
            else:
                raise ConfigError(f"{cfg_file}: unknown setting {key!r}")

    for name, value in env.items():
        if not name.startswith("MYSIMBDP_") or name in ("MYSIMBDP_HOME", "MYSIMBDP_CONFIG"):
            continue
        rest = name[len("MYSIMBDP_") :].lower()
        section, _, key = rest.partition("_")
        if section in _SECTIONS and key:
            layers[section][key] = value
        elif rest in _TOP:
            top[rest] = value

    for dotted, value in (overrides or {}).items():
        if dotted == "home":
            continue
        section, _, key = dotted.partition(".")
        if key and section in _SECTIONS:
            layers[section][key] = value
        elif dotted in _TOP:
            top[dotted] = value
        else:
            raise ConfigError(f"unknown setting {dotted!r}")

    sections = {name: _build(cls, layers[name], name) for name, cls in _SECTIONS.items()}
    cfg = Config(home=home, **{k: str(v) for k, v in top.items()}, **sections)
    _validate(cfg)
    return cfg


def _build(cls: type, values: dict[str, Any], section: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, raw in values.items():
        if key not in known:
            raise ConfigError(f"unknown setting {section}.{key}")
        kwargs[key] = _coerce(raw, hints[key], f"{section}.{key}")
    return cls(**kwargs)


def _coerce(raw: Any, typ: Any, where: str) -> Any:
    try:
        if typ is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if typ is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if typ is float:
            return float(raw)
        if typ is str:
            return str(raw)
        if typing.get_origin(typ) is tuple:
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
            return tuple(str(i).strip() for i in items if str(i).strip())
    except (TypeError, ValueError):
        raise ConfigError(f"setting {where}: {raw!r} is not a valid {getattr(typ, '__name__', typ)}") from None
    raise ConfigError(f"setting {where}: unsupported type")  # pragma: no cover


_SIZE = re.compile(r"[1-9][0-9]*[kmg]")
_DC = re.compile(r"[A-Za-z0-9_-]+:[1-9][0-9]?")
_IFNAME = re.compile(r"[a-z][a-z0-9]{1,14}")
_KEYSPACE = re.compile(r"[a-z][a-z0-9_]{0,47}")


def _validate(cfg: Config) -> None:
    c, s = cfg.cassandra, cfg.sandbox
    if not _KEYSPACE.fullmatch(cfg.keyspace):
        raise ConfigError(f"keyspace {cfg.keyspace!r} is not a valid keyspace name")
    if c.replication_class not in ("SimpleStrategy", "NetworkTopologyStrategy"):
        raise ConfigError("cassandra.replication_class must be SimpleStrategy or NetworkTopologyStrategy")
    if c.replication_class == "NetworkTopologyStrategy" and not all(_DC.fullmatch(i) for i in c.datacenters.split(",")):
        raise ConfigError("cassandra.datacenters must look like 'dc1:3,dc2:3'")
    if not 1 <= c.replication_factor <= 9:
        raise ConfigError("cassandra.replication_factor must be between 1 and 9")
    if not _KEYSPACE.fullmatch(c.username):
        raise ConfigError(f"cassandra.username {c.username!r} is not a valid role name")
    if not c.contact_points:
        raise ConfigError("cassandra.contact_points is empty")
    if not 1 <= c.nodes <= 5:
        raise ConfigError("cassandra.nodes must be between 1 and 5 (nodes on this machine)")
    try:
        node_net = ipaddress.ip_network(c.node_network)
    except ValueError:
        raise ConfigError(f"cassandra.node_network {c.node_network!r} is not a network") from None
    if node_net.version != 4 or node_net.prefixlen > 29 or node_net.is_loopback:
        raise ConfigError("cassandra.node_network must be an IPv4 network of at least /29, not loopback")
    if not c.managed and not c.password_file:
        raise ConfigError("an existing cluster (cassandra.managed=false) needs cassandra.password_file")
    for size, where in ((s.scratch, "sandbox.scratch"), (c.heap.lower(), "cassandra.heap")):
        if not _SIZE.fullmatch(size.lower()):
            raise ConfigError(f"{where} must look like 512m or 1g, not {size!r}")
    if not _IFNAME.fullmatch(s.bridge):
        raise ConfigError("sandbox.bridge must be a short interface name like mysb0")
    try:
        net = ipaddress.ip_network(s.subnet)
    except ValueError:
        raise ConfigError(f"sandbox.subnet {s.subnet!r} is not a network") from None
    if net.version != 4 or net.prefixlen > 28:
        raise ConfigError("sandbox.subnet must be an IPv4 network of at least /28")
    if cfg.batch.after_success not in ("archive", "delete"):
        raise ConfigError("batch.after_success must be archive or delete")
    ports = (c.port, c.storage_port, c.jmx_port, cfg.broker.port, cfg.broker.sandbox_port)
    for port in (*ports, cfg.batch.port, cfg.stream.port, cfg.query.port, cfg.dashboard.port):
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} is out of range")
    q = cfg.query
    if not 1 <= q.default_page_size <= q.max_page_size <= 10000:
        raise ConfigError("query: need 1 <= default_page_size <= max_page_size <= 10000")
    if not 1 <= q.workers <= 16:
        raise ConfigError("query.workers must be between 1 and 16")
    if not 64 <= q.object_chunk_kb <= 4096:
        raise ConfigError("query.object_chunk_kb must be between 64 and 4096 (a mutation must stay far below 16 MiB)")
    d = cfg.dashboard
    if not (1 <= d.session_minutes <= 7 * 24 * 60 and 1 <= d.refresh_seconds <= 3600 and 1 <= d.max_view_kb <= 4096):
        raise ConfigError("dashboard: session_minutes 1..10080, refresh_seconds 1..3600, max_view_kb 1..4096")
    b = cfg.backup
    if b.every_hours < 0 or b.keep < 0 or b.keep_days < 0:
        raise ConfigError("backup.every_hours, backup.keep and backup.keep_days must not be negative")
    if b.snapshot_ttl_hours < 1:
        raise ConfigError("backup.snapshot_ttl_hours must be at least 1")
    for name in b.tenants:
        if not TENANT_PATTERN.fullmatch(name):
            raise ConfigError(f"backup.tenants: {name!r} is not a tenant name")
    if cfg.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("log_level must be DEBUG, INFO, WARNING or ERROR")
