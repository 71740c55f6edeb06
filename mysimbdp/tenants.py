"""Tenants: the registry in the platform keyspace and everything a tenant is made of.

A tenant ``T`` is: a row in ``mysimbdp.tenants`` (with the bcrypt hash of its password), a keyspace ``T``
and a Cassandra role ``T`` that may use only that keyspace, a broker user ``T`` allowed only under
``tenants/T/``, folders for staging, uploads, work, archive and quarantine, its installed apps, and a uid/gid
its sandboxed apps run as.

Creation is a sequence of idempotent steps behind a ``state`` column: a crash half-way leaves the row in
``creating`` and running ``tenant create`` again finishes the job.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from cassandra.cluster import Session

from . import inbox, apps, bounded, broker, credentials, db, names
from .config import Config
from .constraints import Constraints, loads as load_constraints
from .errors import TenantError, TenantExists, TenantNotFound
from .jobs import days_since, months_since
from .services import mosquitto_broker

log = logging.getLogger(__name__)
MIN_PASSWORD = 8


@dataclass(frozen=True)
class Tenant:
    name: str
    state: str
    uid: int
    password_hash: str
    constraints: Constraints
    batch_app: str | None
    stream_app: str | None
    created_at: datetime | None

    def summary(self) -> dict:
        c = self.constraints
        return {
            "name": self.name,
            "state": self.state,
            "uid": self.uid,
            "keyspace": self.name,
            "topic_prefix": f"tenants/{self.name}/",
            "batch_app": self.batch_app,
            "stream_app": self.stream_app,
            "formats": list(c.formats),
            "max_file_size_bytes": c.max_file_size,
            "max_files": {"count": c.max_files, "per": c.max_files_per},
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


def check_password(password: str) -> str:
    """A tenant's new password, or TenantError saying what is wrong with it."""
    if len(password) < MIN_PASSWORD:
        raise TenantError(f"the password must have at least {MIN_PASSWORD} characters")
    if "\n" in password or "\r" in password:
        raise TenantError("the password must be one line")
    return password


def secret_path(cfg: Config, tenant: str) -> Path:
    return cfg.paths.secrets / "tenants" / f"{names.tenant(tenant)}.json"


def cassandra_login(cfg: Config, tenant: str) -> db.Login:
    """The tenant role's generated Cassandra credentials (given to its sandboxed apps only)."""
    try:
        data = credentials.read_secret_json(secret_path(cfg, tenant))
    except FileNotFoundError:
        raise TenantNotFound(
            f"no credentials for tenant {tenant!r}", hint="run `mysimbdp tenant create` again"
        ) from None
    return db.Login(tenant, data["cassandra_password"])


class Registry:
    """Tenants in the platform keyspace. All statements are prepared once."""

    def __init__(self, cfg: Config, session: Session) -> None:
        self.cfg = cfg
        self.session = session
        ks = cfg.keyspace  # an identifier checked against config's keyspace pattern when it was loaded
        db.ensure_platform_schema(session, cfg)
        session.execute(f"CREATE TABLE IF NOT EXISTS {ks}.tenant_uids (uid int PRIMARY KEY, tenant text)")
        self._get = session.prepare(f"SELECT * FROM {ks}.tenants WHERE name = ?")
        self._all = session.prepare(f"SELECT * FROM {ks}.tenants")
        self._password = session.prepare(f"SELECT password_hash, state FROM {ks}.tenants WHERE name = ?")
        self._insert = session.prepare(
            f"INSERT INTO {ks}.tenants (name, state, password_hash, broker_hash, constraints, created_at, updated_at)"
            " VALUES (?, 'creating', ?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._update_creating = session.prepare(
            f"UPDATE {ks}.tenants SET password_hash = ?, broker_hash = ?, constraints = ?, updated_at = ?"
            " WHERE name = ? IF state = 'creating'"
        )
        self._set_uid = session.prepare(f"UPDATE {ks}.tenants SET uid = ? WHERE name = ?")
        self._claim_uid = session.prepare(f"INSERT INTO {ks}.tenant_uids (uid, tenant) VALUES (?, ?) IF NOT EXISTS")
        self._free_uid = session.prepare(f"DELETE FROM {ks}.tenant_uids WHERE uid = ? IF tenant = ?")
        self._set_apps = session.prepare(
            f"UPDATE {ks}.tenants SET batch_app = ?, stream_app = ?, updated_at = ? WHERE name = ?"
        )
        self._set_state = session.prepare(f"UPDATE {ks}.tenants SET state = ?, updated_at = ? WHERE name = ?")
        self._set_constraints = session.prepare(
            f"UPDATE {ks}.tenants SET constraints = ?, updated_at = ? WHERE name = ?"
        )
        self._set_password = session.prepare(
            f"UPDATE {ks}.tenants SET password_hash = ?, broker_hash = ?, updated_at = ? WHERE name = ?"
        )
        self._delete = session.prepare(f"DELETE FROM {ks}.tenants WHERE name = ?")

    # --- reading ------------------------------------------------------------------------------------
    def _row_to_tenant(self, row) -> Tenant:
        return Tenant(
            row.name,
            row.state,
            row.uid or 0,
            row.password_hash or "",
            load_constraints(row.constraints, f"constraints of {row.name}"),
            row.batch_app,
            row.stream_app,
            row.created_at,
        )

    def find(self, name: str) -> Tenant | None:
        row = self.session.execute(self._get, (names.tenant(name),)).one()
        return self._row_to_tenant(row) if row else None

    def password_hash(self, name: str) -> str | None:
        """The bcrypt hash of a ready tenant's password, read now (never cached: a change counts at once)."""
        row = self.session.execute(self._password, (names.tenant(name),)).one()
        return row.password_hash if row is not None and row.state == "ready" else None

    def get(self, name: str, *, ready: bool = True) -> Tenant:
        t = self.find(name)
        if t is None or (ready and t.state != "ready"):
            raise TenantNotFound(
                f"no tenant {name!r}" if t is None else f"tenant {name!r} is not ready ({t.state})",
                hint=None if t is None else "run `mysimbdp tenant create` again to finish it",
            )
        return t

    def list(self) -> list[Tenant]:
        return sorted((self._row_to_tenant(r) for r in self.session.execute(self._all)), key=lambda t: t.name)

    # --- creating -------------------------------------------------------------------------------------
    def create(
        self,
        name: str,
        password: str,
        constraints: Constraints,
        *,
        batch_app: Path | None = None,
        stream_app: Path | None = None,
        check_apps: bool = True,
        show: Callable[[str], None] | None = None,
    ) -> Tenant:
        """Make tenant ``name``. Its apps pass their checks and dry runs first (mysimbdp/appchecks.py, their
        results given to ``show``): when one fails (AppRefused), nothing of the tenant is made."""
        from . import appchecks

        names.new_tenant(name)
        check_password(password)
        old = self.find(name)
        if old is not None and old.state != "creating":  # before the apps' dry runs: they take a while
            raise TenantExists(f"tenant {name!r} already exists", hint="pick another name or `tenant delete` it first")
        pw_hash = credentials.hash_password(password)
        broker_hash = credentials.mosquitto_hash(password, self.cfg.broker.password_iterations)
        folders, uid = {"batch": batch_app, "stream": stream_app}, old.uid if old else None
        with appchecks.vetted(
            self.cfg, self.session, name, constraints, folders, uid=uid, check=check_apps, show=show
        ) as checked:  # the checked copies of the apps, installed by _build
            self._build(name, pw_hash, broker_hash, constraints, checked, password)
        self.mark_ready(name)
        return self.get(name)

    def rebuild(
        self,
        name: str,
        password_hash: str,
        broker_hash: str,
        constraints: Constraints,
        app_folders: dict[str, Path | None],
        created_at: datetime | None,
        password: str | None = None,
    ) -> None:
        """Make tenant ``name`` again from a backup's record: as :meth:`create` does, with the password's
        hashes (or a new ``password``) and the first creation's time (its receipts are listed from then).
        It stays ``creating`` until :meth:`mark_ready` (its data is loaded in between)."""
        names.new_tenant(name)  # a dry run's scratch name is never a tenant's
        for kind, folder in app_folders.items():
            if folder is not None:
                apps.read_manifest(folder, kind)
        if password is not None:
            password_hash = credentials.hash_password(check_password(password))
            broker_hash = credentials.mosquitto_hash(password, self.cfg.broker.password_iterations)
        if not password_hash or not broker_hash:
            raise TenantError(
                f"the backup of {name} holds no password hash", hint="give a new one with --password-stdin"
            )
        self._build(name, password_hash, broker_hash, constraints, app_folders, password, created_at)

    def mark_ready(self, name: str) -> None:
        self.session.execute(self._set_state, ("ready", datetime.now(timezone.utc), name))

    def _build(
        self,
        name: str,
        pw_hash: str,
        broker_hash: str,
        constraints: Constraints,
        app_folders: dict[str, Path | None],
        password: str | None,
        created_at: datetime | None = None,
    ) -> None:
        """Every step of making a tenant but the last (``ready``); each may be run again."""
        now = datetime.now(timezone.utc)
        values = (name, pw_hash, broker_hash, constraints.to_json(), created_at or now, now)
        result = self.session.execute(self._insert, values)
        if not result.was_applied:
            if result.one().state == "creating":
                log.info("tenant %s was half made; finishing it", name)
                self.session.execute(self._update_creating, (pw_hash, broker_hash, constraints.to_json(), now, name))
            else:
                raise TenantExists(
                    f"tenant {name!r} already exists", hint="pick another name or `tenant delete` it first"
                )
        uid = self._allocate_uid(name)
        self._provision_cassandra(name)
        mosquitto_broker.put_user(self.cfg, broker.tenant_user(name, broker_hash))
        if password is not None:
            self._wait_for_broker(name, password)
        self._make_folders(name, uid)
        refs = {}
        for kind in ("batch", "stream"):
            folder = app_folders.get(kind)
            refs[kind] = apps.install(self.cfg, name, kind, folder, uid).ref if folder is not None else None
        self.session.execute(self._set_apps, (refs["batch"], refs["stream"], now, name))

    def _wait_for_broker(self, name: str, password: str) -> None:
        """When the broker runs, return only once it accepts the tenant's (new) password."""
        from .errors import BrokerUnavailable

        if not mosquitto_broker.daemon(self.cfg).running():
            return  # it reads the users when it starts
        try:
            mosquitto_broker.wait_for_login(self.cfg, name, password, timeout=10)
        except BrokerUnavailable as exc:
            log.warning("the broker does not accept tenant %s yet: %s", name, exc.one_line())

    def _allocate_uid(self, name: str) -> int:
        row = self.session.execute(self._get, (name,)).one()
        if row and row.uid:
            return row.uid
        uid = self.cfg.sandbox.uid_base + 1
        while True:
            res = self.session.execute(self._claim_uid, (uid, name))
            if res.was_applied or res.one().tenant == name:
                self.session.execute(self._set_uid, (uid, name))
                return uid
            uid += 1

    def _provision_cassandra(self, name: str) -> None:
        """The tenant's keyspace, and a role that can use only that keyspace."""
        ks = names.tenant(name)  # the strict tenant-name pattern: it reaches CQL as a keyspace and a role
        path = secret_path(self.cfg, name)
        fresh = not path.exists()
        if fresh:
            password = credentials.generate_password()
            credentials.write_secret(path, {"cassandra_password": password})
        else:
            password = credentials.read_secret_json(path)["cassandra_password"]
        s = self.session
        # ks: names.tenant above; the replication map is built from the typed configuration, not from input
        s.execute(f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {db.replication_cql(self.cfg)}")
        db.ensure_role(s, ks, password, password_changed=fresh)
        db.grant_keyspace(s, ks)
        for cql in inbox.schema(ks, self.cfg.stream.inbox_retention_hours):  # where its stream messages wait
            s.execute(cql)

    def _make_folders(self, name: str, uid: int) -> None:
        for folder in self.cfg.paths.tenant_folders(name):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o750)
            if os.geteuid() == 0:
                os.chown(folder, 0, uid)

    # --- changing -------------------------------------------------------------------------------------
    def update(
        self,
        name: str,
        *,
        constraints: Constraints | None = None,
        password: str | None = None,
        batch_app: Path | None = None,
        stream_app: Path | None = None,
        check_apps: bool = True,
        show: Callable[[str], None] | None = None,
    ) -> Tenant:
        """Change what is given. New apps pass their checks and dry runs first (with the new constraints, if
        given): when one fails (AppRefused), nothing changes and the tenant keeps the apps it had."""
        from . import appchecks

        t = self.get(name)
        if password is not None:
            check_password(password)
        folders = {"batch": batch_app, "stream": stream_app}
        cons = constraints or t.constraints
        with appchecks.vetted(
            self.cfg, self.session, name, cons, folders, uid=t.uid, check=check_apps, show=show
        ) as checked:  # the checked copies of the apps
            now = datetime.now(timezone.utc)
            if constraints is not None:
                self.session.execute(self._set_constraints, (constraints.to_json(), now, name))
            if password is not None:
                broker_hash = credentials.mosquitto_hash(password, self.cfg.broker.password_iterations)
                self.session.execute(self._set_password, (credentials.hash_password(password), broker_hash, now, name))
                mosquitto_broker.put_user(self.cfg, broker.tenant_user(name, broker_hash))
                self._wait_for_broker(name, password)
            refs = {"batch": t.batch_app, "stream": t.stream_app}
            for kind, folder in checked.items():
                if folder is not None:
                    refs[kind] = apps.install(self.cfg, name, kind, folder, t.uid).ref
            self.session.execute(self._set_apps, (refs["batch"], refs["stream"], now, name))
        return self.get(name)

    def rollback(self, name: str, kind: str) -> tuple[apps.App, apps.App]:
        """Make the tenant's ``kind`` app the version installed before the current one again (no checks: it
        passed them when it was installed); return (the one left, the one now current). NoApp when there
        is no earlier version."""
        t = self.get(name)
        left, back = apps.rollback(self.cfg, name, kind)
        refs = {"batch": t.batch_app, "stream": t.stream_app, kind: back.ref}
        self.session.execute(self._set_apps, (refs["batch"], refs["stream"], datetime.now(timezone.utc), name))
        return left, back

    # --- deleting -------------------------------------------------------------------------------------
    def delete(self, name: str) -> None:
        """Remove the tenant: its keyspace and role, broker users, folders, secrets and receipts (a later
        tenant of the same name must not see them; the ingestion log file keeps the history)."""
        name = names.tenant(name)  # it reaches CQL as a keyspace and a role, and paths
        t = self.find(name)
        if t is None:
            raise TenantNotFound(f"no tenant {name!r}")
        ks = self.cfg.keyspace
        prepare = self.session.prepare  # here, not at start-up: deleting is rare
        self.session.execute(self._set_state, ("deleting", datetime.now(timezone.utc), name))
        # the stream controller must not restart what is about to be stopped
        self.session.execute(prepare(f"DELETE FROM {ks}.stream_state WHERE tenant = ?"), (name,))
        from .sandbox import runtime

        rt = runtime(self.cfg)
        for c in rt.list(tenant=name):
            rt.stop(c.name, timeout=5)
        mosquitto_broker.remove_users(self.cfg, name)
        mosquitto_broker.remove_users(self.cfg, broker.instance_users_prefix(name))
        self.session.execute(f"DROP KEYSPACE IF EXISTS {name}")  # name: names.tenant at the top
        self.session.execute(f"DROP ROLE IF EXISTS {name}")
        from .sandbox import outputs

        outputs.release_under(self.cfg.paths.work(name))  # output folders of runs stopped above
        for folder in self.cfg.paths.tenant_folders(name):
            bounded.remove_tree(folder)  # what a tenant's app left may be deep: no recursion
        secret_path(self.cfg, name).unlink(missing_ok=True)
        bounded.remove_tree(self.cfg.paths.secrets / "stream" / name)
        for kind in ("batch", "stream"):  # its apps' dry runs' logs (their output over its sample)
            for log_file in (self.cfg.paths.logs / "dryruns").glob(f"{name}-{kind}-*.log"):
                log_file.unlink(missing_ok=True)
        self.session.execute(prepare(f"DELETE FROM {ks}.files_by_checksum WHERE tenant = ?"), (name,))
        self.session.execute(prepare(f"DELETE FROM {ks}.object_usage WHERE tenant = ?"), (name,))
        jobs = prepare(f"DELETE FROM {ks}.jobs WHERE tenant = ? AND bucket = ?")
        for bucket in months_since(t.created_at):
            self.session.execute(jobs, (name, bucket))
        for table in ("stream_reports", "scaling_decisions"):
            by_day = prepare(f"DELETE FROM {ks}.{table} WHERE tenant = ? AND day = ?")
            for day in days_since(t.created_at, limit=31):
                self.session.execute(by_day, (name, day))
        if t.uid:
            self.session.execute(self._free_uid, (t.uid, name))
        self.session.execute(self._delete, (name,))


class TenantCache:
    """Ready tenants by name, each looked up at most once every ``ttl`` seconds (for paths that run per
    request or per loop). ``registry`` is called when a lookup is needed, so that a Cassandra session can
    be made late."""

    MAX_NAMES = 4096  # names asked for (each request may name one, existing or not): the oldest are forgotten

    def __init__(self, registry: Callable[[], Registry], ttl: float = 5.0) -> None:
        self.registry = registry
        self.ttl = ttl
        self._seen: OrderedDict[str, tuple[float, Tenant | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str) -> Tenant | None:
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(name)
        if hit and hit[0] > now:
            return hit[1]
        try:
            names.tenant(name)
        except TenantError:
            return None
        t = self.registry().find(name)
        t = t if t is not None and t.state == "ready" else None
        with self._lock:
            self._seen[name] = (now + self.ttl, t)
            self._seen.move_to_end(name)
            while len(self._seen) > self.MAX_NAMES:
                self._seen.popitem(last=False)
        return t


def open_registry(cfg: Config) -> Registry:
    return Registry(cfg, db.connect(cfg))
