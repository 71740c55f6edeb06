"""Cassandra for tenant apps: a session with retries, and a Writer with bounded concurrency.

The Writer sends prepared statements asynchronously with at most ``concurrency`` requests in flight.
With ``partition_of`` it groups rows of one partition into UNLOGGED batches (one mutation per partition
instead of one request per row: the fastest way to load sorted data). A failed request is retried with
back-off; when Cassandra stays unreachable past ``retry_for`` seconds the Writer raises
:class:`TemporaryFailure`, so that the platform retries the job later instead of failing it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Callable, Hashable, Sequence

from cassandra import (
    ConsistencyLevel,
    InvalidRequest,
    OperationTimedOut,
    ReadTimeout,
    Unavailable,
    WriteFailure,
    WriteTimeout,
)
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable, Session
from cassandra.policies import ConstantReconnectionPolicy, RoundRobinPolicy, TokenAwarePolicy
from cassandra.query import BatchStatement, BatchType, PreparedStatement

from .context import Context, TemporaryFailure

# what the platform may ask for (MYSIMBDP_CASSANDRA_CONSISTENCY); anything else: LOCAL_ONE
CONSISTENCY = {"LOCAL_ONE": ConsistencyLevel.LOCAL_ONE, "LOCAL_QUORUM": ConsistencyLevel.LOCAL_QUORUM}

log = logging.getLogger("mysimbdp_app")
logging.getLogger("cassandra").setLevel(logging.CRITICAL)
TRANSIENT = (
    NoHostAvailable,
    OperationTimedOut,
    Unavailable,
    WriteTimeout,
    ReadTimeout,
    WriteFailure,
    ConnectionError,
    OSError,
)


def connect(ctx: Context, retry_for: float = 60.0) -> Session:
    """A session on the tenant's keyspace; retries while Cassandra is unreachable, then TemporaryFailure."""
    deadline = time.monotonic() + retry_for
    delay = 0.5
    while True:
        cluster = Cluster(
            contact_points=list(ctx.cassandra_hosts),
            port=ctx.cassandra_port,
            auth_provider=PlainTextAuthProvider(ctx.cassandra_username, ctx.cassandra_password),
            execution_profiles={
                EXEC_PROFILE_DEFAULT: ExecutionProfile(
                    load_balancing_policy=TokenAwarePolicy(RoundRobinPolicy()),
                    request_timeout=30,
                    consistency_level=CONSISTENCY.get(ctx.cassandra_consistency, ConsistencyLevel.LOCAL_ONE),
                )
            },
            reconnection_policy=ConstantReconnectionPolicy(0.5, max_attempts=None),
            protocol_version=4,
            connect_timeout=5,
            control_connection_timeout=5,  # v5 frames cost a CRC32 each way
            schema_metadata_enabled=False,  # a tenant app needs no map of the whole cluster's schema
            # small requests go at once: without it one waits for the last one's TCP acknowledgement (up to 40 ms)
            sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        try:
            session = cluster.connect(ctx.keyspace)
            # Cassandra stamps each write when it applies it: no dependence on the container's clock, and a
            # retried or re-delivered write simply wins with the same content
            session.use_client_timestamp = False
            return session
        except NoHostAvailable as exc:
            cluster.shutdown()
            if any("credentials" in str(e) or "Bad credentials" in str(e) for e in exc.errors.values()):
                raise  # wrong credentials are not temporary
            if time.monotonic() > deadline:
                raise TemporaryFailure(f"Cassandra unreachable: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def prepared(session: Session, cql: str) -> PreparedStatement:
    """``session.prepare(cql)``, once per session (a run of many small files prepares its insert once)."""
    cache = session.__dict__.setdefault("_mysimbdp_prepared", {})
    if cql not in cache:
        cache[cql] = session.prepare(cql)
    return cache[cql]


def execute_with_retry(session: Session, statement, params=None, retry_for: float = 60.0):
    deadline = time.monotonic() + retry_for
    delay = 0.2
    while True:
        try:
            return session.execute(statement, params)
        except TRANSIENT as exc:
            if time.monotonic() > deadline:
                raise TemporaryFailure(f"Cassandra unavailable: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


class Writer:
    """Bounded concurrent writes of one prepared statement.

    ``add(values)`` binds (a bind error is the row's fault: it raises ValueError at once) and queues the
    write. ``close()`` waits for everything and raises TemporaryFailure if some write kept failing.
    ``on_written(n)`` (optional) is called from the driver's thread after n rows are durably accepted.
    """

    def __init__(
        self,
        session: Session,
        statement: PreparedStatement,
        *,
        concurrency: int = 64,
        partition_of: Callable[[Sequence[object]], Hashable] | None = None,
        batch_rows: int = 64,
        max_open_partitions: int = 512,
        retry_for: float = 60.0,
        on_written: Callable[[int, object], None] | None = None,
    ) -> None:
        self.session = session
        self.statement = statement
        self.partition_of = partition_of
        self.batch_rows = batch_rows
        self.max_open = max_open_partitions
        self.retry_for = retry_for
        self.on_written = on_written
        self.written = 0
        self._slots = threading.BoundedSemaphore(concurrency)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._groups: dict[Hashable, list] = {}  # insertion order: the oldest partition first
        self._failure: BaseException | None = None

    def add(self, values: Sequence[object], tag: object = None) -> None:
        if self._failure is not None:
            raise self._failure
        try:
            bound = self.statement.bind(values)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"cannot bind: {exc}") from None
        if self.partition_of is None:
            self._send(bound, 1, [tag])
            return
        key = self.partition_of(values)
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self.max_open:  # sorted input: the oldest partition is complete
                oldest = next(iter(self._groups))
                self._send_group(self._groups.pop(oldest))
            group = self._groups[key] = []
        group.append((bound, tag))
        if len(group) >= self.batch_rows:
            self._send_group(self._groups.pop(key))

    def _send_group(self, group: list) -> None:
        if len(group) == 1:
            self._send(group[0][0], 1, [group[0][1]])
            return
        batch = BatchStatement(batch_type=BatchType.UNLOGGED)
        for bound, _ in group:
            batch.add(bound)
        self._send(batch, len(group), [t for _, t in group], parts=group)

    def flush(self) -> None:
        """Send every partly filled group now (without waiting for the writes)."""
        for key in list(self._groups):
            self._send_group(self._groups.pop(key))

    def _send(
        self, statement, rows: int, tags: list, deadline: float | None = None, attempt: int = 0, parts=None
    ) -> None:
        self._slots.acquire()
        with self._lock:
            self._in_flight += 1
        deadline = deadline or (time.monotonic() + self.retry_for)
        try:
            future = self.session.execute_async(statement)
        except Exception as exc:  # noqa: BLE001 - e.g. the session is shutting down
            self._err(exc, statement, rows, tags, deadline, attempt)
            return
        future.add_callbacks(
            self._ok,
            self._err,
            callback_args=(rows, tags),
            errback_args=(statement, rows, tags, deadline, attempt, parts),
        )

    def _ok(self, _result, rows: int, tags: list) -> None:
        with self._lock:
            self.written += rows
        if self.on_written is not None:
            for tag in tags:
                self.on_written(1, tag)
        self._finish()

    def _err(self, exc, statement, rows, tags, deadline, attempt, parts=None) -> None:
        if isinstance(exc, InvalidRequest) and parts and len(parts) > 1 and "too large" in str(exc).lower():
            # wide rows: more than Cassandra takes in one batch (batch_size_fail_threshold): one request each
            with self._lock:
                self._in_flight += 1
            self._finish()

            def one_by_one() -> None:  # never on the driver's event loop
                try:
                    for bound, tag in parts:
                        if self._failure is None:
                            self._send(bound, 1, [tag], deadline)
                finally:
                    with self._lock:
                        self._in_flight -= 1
                        self._idle.notify_all()

            threading.Thread(target=one_by_one, daemon=True).start()
            return
        if isinstance(exc, InvalidRequest):
            self._fail(exc)
            self._finish()
            return
        if time.monotonic() > deadline:
            self._fail(TemporaryFailure(f"Cassandra kept failing: {exc}"))
            self._finish()
            return
        with self._lock:  # the retry counts as work in flight until it is sent again
            self._in_flight += 1
        self._finish()
        delay = min(0.25 * 2**attempt, 5.0)

        def retry() -> None:  # never sleep on the driver's event loop
            time.sleep(delay)
            try:
                if self._failure is None:
                    self._send(statement, rows, tags, deadline, attempt + 1, parts)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._idle.notify_all()

        threading.Thread(target=retry, daemon=True).start()

    def _finish(self) -> None:
        self._slots.release()
        with self._lock:
            self._in_flight -= 1
            self._idle.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self._failure is None:
                self._failure = exc
            self._idle.notify_all()

    def wait(self) -> None:
        """Wait until nothing is in flight; raise the first permanent failure."""
        with self._lock:
            while self._in_flight > 0 and self._failure is None:
                self._idle.wait(0.5)
        if self._failure is not None:
            raise self._failure

    def close(self) -> int:
        self.flush()
        self.wait()
        return self.written
