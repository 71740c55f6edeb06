"""The Cassandra session of the platform (as the operator role) and the platform keyspace's schema.

Every value goes through a prepared or parameterised statement. Identifiers (keyspace, role names) are
never taken from a request: they come from :mod:`mysimbdp.names` validators or the validated config.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cassandra import AuthenticationFailed as _CassAuthFailed
from cassandra import ConsistencyLevel, OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (
    EXEC_PROFILE_DEFAULT,
    Cluster,
    DefaultConnection,
    ExecutionProfile,
    NoHostAvailable,
    Session,
)
from cassandra.connection import ConnectionException
from cassandra.policies import ConstantReconnectionPolicy, RoundRobinPolicy, TokenAwarePolicy

from . import credentials
from .config import Config
from .errors import CassandraUnavailable, ConfigError

log = logging.getLogger(__name__)
# The driver logs expected failures (a refused login while probing, a node restarting) with tracebacks;
# they reach us as exceptions anyway.
logging.getLogger("cassandra").setLevel(logging.CRITICAL)

#: what a Cassandra call raises when the database, not the statement, is the problem: try again later
UNAVAILABLE = (
    NoHostAvailable,
    OperationTimedOut,
    Unavailable,
    ReadTimeout,
    WriteTimeout,
    ConnectionException,
    CassandraUnavailable,
)


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(repr=False)  # never in a traceback or a log line


def login_refused(exc: NoHostAvailable) -> bool:
    """True when Cassandra was reached and refused the credentials. The driver gives the reasons per host
    (a dict), or only the hosts it tried (a list) when no pool could be opened."""
    reasons = exc.errors.values() if isinstance(exc.errors, dict) else ()
    return any(isinstance(r, _CassAuthFailed) for r in reasons)


def operator_secret_path(cfg: Config) -> Path:
    return cfg.paths.secrets / "cassandra-operator.json"


def operator_login(cfg: Config) -> Login:
    """The operator role's credentials: from the state folder (managed) or the configured file."""
    if cfg.cassandra.managed:
        path = operator_secret_path(cfg)
        try:
            data = credentials.read_secret_json(path)
        except FileNotFoundError:
            raise CassandraUnavailable(
                "the operator's Cassandra credentials are missing", hint="run `mysimbdp up` first"
            ) from None
        return Login(data["username"], data["password"])
    try:
        return Login(cfg.cassandra.username, credentials.read_secret(Path(cfg.cassandra.password_file)))
    except OSError as exc:
        raise ConfigError(f"cannot read cassandra.password_file: {exc.strerror}") from None


class _Connection(DefaultConnection):
    """The driver's connection (libev when it is there) with larger socket buffers: it sends a message in
    pieces of ``out_buffer_size`` bytes, one Python step each, and reads in pieces of ``in_buffer_size``; at
    its 4 KiB a 1 MiB object chunk took 256 steps each way, and uploads ran at a third of the disk's pace."""

    in_buffer_size = 64 * 1024
    out_buffer_size = 256 * 1024


def cluster_for(
    cfg: Config,
    login: Login,
    *,
    hosts: tuple[str, ...] | None = None,
    request_timeout: float = 20.0,
    row_factory=None,
) -> Cluster:
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()),
        request_timeout=request_timeout,
        # a cluster's three replicas: two must answer, so that any one node may be lost
        consistency_level=ConsistencyLevel.LOCAL_QUORUM if cfg.cluster else ConsistencyLevel.LOCAL_ONE,
    )
    if row_factory is not None:
        profile.row_factory = row_factory
    return Cluster(
        contact_points=list(hosts or cfg.contact_points),
        port=cfg.cassandra.port,
        auth_provider=PlainTextAuthProvider(login.username, login.password),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=cfg.cassandra.connect_timeout,
        control_connection_timeout=cfg.cassandra.connect_timeout,
        reconnection_policy=ConstantReconnectionPolicy(1.0, max_attempts=None),
        protocol_version=5,
        connection_class=_Connection,
        # small requests go at once: without it a write waits for the last one's TCP acknowledgement (up to 40 ms)
        sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )


def connect(cfg: Config, login: Login | None = None, keyspace: str | None = None) -> Session:
    """A new session; raises :class:`CassandraUnavailable` with the reason when it cannot log in."""
    login = login or operator_login(cfg)
    cluster = cluster_for(cfg, login)
    try:
        return cluster.connect(keyspace)
    except NoHostAvailable as exc:
        cluster.shutdown()
        if login_refused(exc):
            raise CassandraUnavailable(f"Cassandra refused the login of role {login.username!r}") from None
        where = ",".join(cfg.contact_points)
        raise CassandraUnavailable(
            f"cannot reach Cassandra at {where}:{cfg.cassandra.port}", hint="is it running? try `mysimbdp up`"
        ) from None


class SessionHolder:
    """One shared operator session per process, created on first use and re-created after shutdown."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._session: Session | None = None
        self._lock = threading.Lock()

    def get(self) -> Session:
        with self._lock:
            if self._session is None or self._session.is_shutdown:
                self._session = connect(self.cfg)
            return self._session

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.cluster.shutdown()
                self._session = None


#: what a tenant's role may do on its own keyspace (and a dry run's scratch role on its scratch keyspace)
TENANT_RIGHTS = ("CREATE", "ALTER", "DROP", "SELECT", "MODIFY")


def ensure_role(
    session: Session, role: str, password: str, *, superuser: bool = False, password_changed: bool = True
) -> None:
    """Create a login role, or set its password when it exists and ``password_changed``.

    ``role`` must already be a validated identifier. Cassandra limits how often a role's password may
    change, so an existing role is only altered when its password really is new.
    """
    exists = session.execute("SELECT role FROM system_auth.roles WHERE role = %s", (role,)).one() is not None
    if not exists:
        session.execute(
            f"CREATE ROLE IF NOT EXISTS {role} WITH LOGIN = true AND SUPERUSER = {str(superuser).lower()}"
            " AND PASSWORD = %s",
            (password,),
        )
    elif password_changed:
        session.execute(f"ALTER ROLE {role} WITH PASSWORD = %s", (password,))


class _RoleNotSeenYet(Exception):
    pass


def grant_keyspace(session: Session, name: str) -> None:
    """Give role ``name`` the tenant's rights (TENANT_RIGHTS) on keyspace ``name``, both validated identifiers.

    On a cluster, the node coordinating a GRANT checks the role at the auth read consistency (LOCAL_ONE,
    so logins survive two nodes down), and a node that has not yet received the fresh CREATE ROLE answers
    "Role ... doesn't exist": that is retried for up to 30 s in all, anything else raised at once.
    """
    import time

    from cassandra import InvalidRequest

    from .retry import retry

    def grant(perm: str) -> None:
        try:
            session.execute(f"GRANT {perm} ON KEYSPACE {name} TO {name}")
        except InvalidRequest as exc:
            if f"Role {name} doesn't exist" not in str(exc):
                raise
            raise _RoleNotSeenYet(str(exc)) from None

    end = time.monotonic() + 30
    for perm in TENANT_RIGHTS:
        try:
            left = max(1.0, end - time.monotonic())
            retry(lambda perm=perm: grant(perm), on=(_RoleNotSeenYet,), initial=0.1, maximum=2.0, deadline=left)
        except _RoleNotSeenYet as exc:
            raise CassandraUnavailable(f"the new role {name} is not seen by the cluster after 30 s: {exc}") from None


def replication_cql(cfg: Config) -> str:
    """The replication map as CQL text. Every key and value comes from validated configuration."""
    items = ", ".join(f"'{k}': '{v}'" for k, v in cfg.replication_map().items())
    return "{" + items + "}"


# --- the platform keyspace -------------------------------------------------------------------------

PLATFORM_TABLES = {
    # one row per tenant; the password only as a bcrypt hash
    "tenants": """
        CREATE TABLE IF NOT EXISTS {ks}.tenants (
            name text PRIMARY KEY,
            state text,                 -- creating | ready | deleting
            uid int,                    -- the uid/gid its sandboxed apps run as
            password_hash text,         -- bcrypt
            broker_hash text,           -- Mosquitto PBKDF2 hash, to rebuild the broker's password file
            constraints text,           -- the validated constraints JSON
            batch_app text,             -- app name@version, or null
            stream_app text,
            created_at timestamp,
            updated_at timestamp
        )""",
    # job records (receipts), newest first, one partition per tenant and month
    "jobs": """
        CREATE TABLE IF NOT EXISTS {ks}.jobs (
            tenant text,
            bucket text,                -- yyyy-mm of the job id's time
            job_id timeuuid,
            file_name text,
            stored_name text,
            size bigint,
            sha256 text,
            client_address text,
            created_at timestamp,
            started_at timestamp,
            finished_at timestamp,
            status text,                -- staged | running | retrying | succeeded | failed
            attempts int,
            rows_ingested bigint,
            rows_rejected bigint,
            seconds double,
            app_name text,
            app_version text,
            reason text,
            log_path text,
            rejects_path text,
            replay_of timeuuid,         -- the failed job this one stages again (a replay)
            PRIMARY KEY ((tenant, bucket), job_id)
        ) WITH CLUSTERING ORDER BY (job_id DESC)""",
    # content already received, so that the same file is not ingested twice
    "files_by_checksum": """
        CREATE TABLE IF NOT EXISTS {ks}.files_by_checksum (
            tenant text,
            sha256 text,
            job_id timeuuid,
            file_name text,
            PRIMARY KEY ((tenant), sha256)
        )""",
    # stream instance reports, one partition per tenant and day
    "stream_reports": """
        CREATE TABLE IF NOT EXISTS {ks}.stream_reports (
            tenant text,
            day text,
            received_at timestamp,
            instance text,
            window_start timestamp,
            window_end timestamp,
            messages bigint,
            bytes bigint,
            avg_ms double,
            p95_ms double,
            errors bigint,
            rejected bigint,
            instance_started timestamp,  -- when the reporting process started (tells containers of one slot apart)
            pending bigint,
            PRIMARY KEY ((tenant, day), received_at, instance)
        ) WITH CLUSTERING ORDER BY (received_at DESC, instance ASC)
          AND default_time_to_live = 2592000""",
    # what the stream controller should keep running for each tenant (written by the API, read by it)
    "stream_state": """
        CREATE TABLE IF NOT EXISTS {ks}.stream_state (
            tenant text PRIMARY KEY,
            running boolean,            -- false: stopped (paused) by a tenant or the operator
            desired int,                -- how many instances
            parked set<text>,           -- slots whose session kept its subscription (messages wait there)
            stop_requests set<text>,    -- instances asked to stop
            last_change timestamp,      -- of desired (the autoscaler's cooldown counts from here)
            updated_at timestamp
        )""",
    # the bytes each tenant's binary objects take, kept where the tenant cannot write (its quota is counted
    # here, not from the object tables in its own keyspace); one row per stored version of an object
    "object_usage": """
        CREATE TABLE IF NOT EXISTS {ks}.object_usage (
            tenant text,
            version uuid,
            key text,
            size bigint,
            chunks int,
            state text,                 -- reserved (upload under way) | stored | retired (replaced, chunks to drop)
            at timestamp,               -- of the last change of state
            PRIMARY KEY ((tenant), version)
        )""",
    # the autoscaler's decisions and manual starts/stops, with their reasons
    "scaling_decisions": """
        CREATE TABLE IF NOT EXISTS {ks}.scaling_decisions (
            tenant text,
            day text,
            at timestamp,
            action text,                -- scale_up | scale_down | start | stop | restart | hold
            instances_before int,
            instances_after int,
            reason text,
            PRIMARY KEY ((tenant, day), at)
        ) WITH CLUSTERING ORDER BY (at DESC)
          AND default_time_to_live = 2592000""",
    # Cassandra nodes going down and coming back, as the stream controller's node watch saw them (nodewatch.py)
    "node_events": """
        CREATE TABLE IF NOT EXISTS {ks}.node_events (
            day text,                   -- yyyy-mm-dd (UTC) of the event
            at timestamp,
            address text,
            state text,                 -- up | down
            detail text,                -- the gossip state, or why the node could not be read
            PRIMARY KEY (day, at, address)
        ) WITH CLUSTERING ORDER BY (at DESC, address ASC)
          AND default_time_to_live = 7776000""",
}


#: columns added to a table after it first shipped: (table, column, type); added where missing
ADDED_COLUMNS = [
    ("stream_reports", "instance_started", "timestamp"),
    ("stream_reports", "pending", "bigint"),
    ("jobs", "replay_of", "timeuuid"),  # the failed job a replay stages again (mysimbdp jobs replay, the dashboard)
]


def ensure_platform_schema(session: Session, cfg: Config) -> None:
    ks = cfg.keyspace
    session.execute(
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {replication_cql(cfg)} AND durable_writes = true"
    )
    for ddl in PLATFORM_TABLES.values():
        session.execute(ddl.format(ks=ks))
    for table, column, typ in ADDED_COLUMNS:
        have = session.execute(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = %s"
            " AND table_name = %s AND column_name = %s",
            (ks, table, column),
        ).one()
        if have is None:
            session.execute(f"ALTER TABLE {ks}.{table} ADD {column} {typ}")
