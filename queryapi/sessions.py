"""Cassandra sessions logged in as each tenant's own role: a small cache, least recently used closed first.

Every statement of the query API runs on the session of the tenant it serves, so Cassandra itself keeps a
tenant inside its keyspace (the role has permissions on that keyspace only). A session not used for
``query.session_idle`` seconds is closed; at most ``query.sessions`` are open at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from cassandra.cluster import NoHostAvailable, Session
from cassandra.query import tuple_factory

from mysimbdp import db, tenants
from mysimbdp.config import Config
from mysimbdp.errors import CassandraUnavailable

log = logging.getLogger(__name__)


class TenantSessions:
    """Sessions by tenant. :meth:`acquire` hands one out and counts it as in use until :meth:`release`: a
    session in use (an export or a download streaming for minutes) is never closed under its request."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._lock = threading.Lock()
        self._open: OrderedDict[str, tuple[Session, float]] = OrderedDict()
        self._users: dict[str, int] = {}
        self._connecting: dict[str, threading.Lock] = {}

    def acquire(self, tenant: str) -> Session:
        with self._lock:  # counted first: the session cannot be closed between being found and counted
            self._users[tenant] = self._users.get(tenant, 0) + 1
        try:
            return self.get(tenant)
        except BaseException:
            self.release(tenant)
            raise

    def release(self, tenant: str) -> None:
        with self._lock:
            left = self._users.get(tenant, 0) - 1
            if left > 0:
                self._users[tenant] = left
            else:
                self._users.pop(tenant, None)
            hit = self._open.get(tenant)
            if hit is not None:
                self._open[tenant] = (hit[0], time.monotonic())  # idle from the end of its last use

    def get(self, tenant: str) -> Session:
        """The tenant's session, not counted as in use (for tests and short calls)."""
        with self._lock:
            hit = self._open.get(tenant)
            if hit is not None and not hit[0].is_shutdown:
                self._open[tenant] = (hit[0], time.monotonic())
                self._open.move_to_end(tenant)
                return hit[0]
            gate = self._connecting.setdefault(tenant, threading.Lock())
        with gate:  # one login per tenant at a time; the others wait for it
            with self._lock:
                hit = self._open.get(tenant)
                if hit is not None and not hit[0].is_shutdown:
                    return hit[0]
            session = self._connect(tenant)
            with self._lock:
                self._open[tenant] = (session, time.monotonic())
                self._open.move_to_end(tenant)
                evicted = self._evict()
        for s in evicted:
            s.cluster.shutdown()
        return session

    def _connect(self, tenant: str) -> Session:
        login = tenants.cassandra_login(self.cfg, tenant)
        cluster = db.cluster_for(
            self.cfg, login, request_timeout=float(self.cfg.query.request_seconds), row_factory=tuple_factory
        )
        try:
            session = cluster.connect()
        except NoHostAvailable as exc:
            cluster.shutdown()
            if db.login_refused(exc):
                raise CassandraUnavailable(f"Cassandra refused the login of tenant {tenant}'s role") from None
            raise CassandraUnavailable("the database is unavailable", hint="try again in a moment", retry_after=5) from None
        except BaseException:
            cluster.shutdown()  # whatever else went wrong, the cluster's threads and connections go with it
            raise
        session.default_fetch_size = self.cfg.query.default_page_size
        return session

    def _evict(self) -> list[Session]:
        """Sessions past the idle time, or the least recently used past the count; never one in use."""
        now, out = time.monotonic(), []
        for name, (s, used) in list(self._open.items()):
            if self._users.get(name):
                continue
            if len(self._open) > self.cfg.query.sessions or now - used > self.cfg.query.session_idle:
                del self._open[name]
                out.append(s)
        return out

    def sweep(self) -> None:
        with self._lock:
            evicted = self._evict()
        for s in evicted:
            s.cluster.shutdown()

    def close(self) -> None:
        with self._lock:
            items = list(self._open.values())
            self._open.clear()
        for s, _ in items:
            s.cluster.shutdown()
