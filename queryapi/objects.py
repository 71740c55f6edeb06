"""Binary objects (images, video, raw files) in the tenant's keyspace, streamed both ways in constant memory.

An object is a row in ``mysimbdp_objects`` (key, size, content type, sha256, created, expiry, version)
and its bytes in ``mysimbdp_object_chunks``, one row of ``query.object_chunk_kb`` per chunk, each chunk
its own partition (a mutation stays far below Cassandra's 16 MiB limit, and a read of the middle of a
video reads only the chunks it needs).

The quota is counted in the platform keyspace (``object_usage``, one row per version: reserved, stored or
retired), which the tenant cannot write: what the tenant does to the object tables in its own keyspace
cannot make room it does not have. Those tables are read as untrusted: an object row whose size, chunk
size and chunk count disagree is "damaged" (409), never a loop of millions of chunks.

Writing: the upload is reserved first (its declared size, under a per-tenant file lock, so that concurrent
uploads cannot pass the quota together); the chunks are written under a new version id as the body
arrives, a few in flight; the sha256 is checked; then, under the lock again, the object's row points at
the new version and the version it replaces is retired. A retired version's chunks are deleted ten
minutes later (a download of the old bytes under way still finishes), by the tenant's next upload or
delete, a bounded number at a time. An upload cut off, refused or killed half-way leaves no object; a
reservation an hour old is swept the same way.

The tenant's bytes and object rows are read and written on the tenant's own session, in its keyspace;
the usage rows on the platform's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from cassandra.cluster import Session

from mysimbdp.constraints import Constraints
from mysimbdp.locks import file_lock
from mysimbdp.errors import (
    BadQuery,
    ChecksumMismatch,
    Conflict,
    InvalidName,
    LengthRequired,
    NotFound,
    QuotaExceeded,
    RangeNotSatisfiable,
    ServiceError,
    TenantError,
)

from . import plan
from .tables import quote

log = logging.getLogger(__name__)
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,255}")
CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}(;[ -~]{0,120})?")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
IN_FLIGHT = 4  # chunk writes in flight at once (8 overloads the driver's connection: ConnectionBusy)
READ_AHEAD = 2  # chunk reads in flight at once, per download
STALE_UPLOAD = dt.timedelta(hours=1)
RETIRE_GRACE = dt.timedelta(minutes=10)
SWEEP_BUDGET = 2000  # chunk deletes one request may do for the sweep
MAX_OBJECT_BYTES = 17179869184  # the schema's ceiling on max_object_bytes
MIN_CHUNK, MAX_CHUNK = 64 * 1024, 4 * 1024 * 1024
BUCKET = 0  # one partition of object rows per tenant: listing by prefix is a range of it

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {ks}.mysimbdp_objects (
        bucket int, key text, size bigint, content_type text, sha256 text, created timestamp,
        expires timestamp, version uuid, chunk_size int, chunks int,
        PRIMARY KEY ((bucket), key))""",
    """CREATE TABLE IF NOT EXISTS {ks}.mysimbdp_object_chunks (
        version uuid, n int, data blob, PRIMARY KEY ((version, n)))""",
)


def check_key(key: object) -> str:
    if (
        not isinstance(key, str)
        or not KEY.fullmatch(key)
        or ".." in key.split("/")
        or "//" in key
        or key.endswith("/")
    ):
        shown = repr(key[:60]) if isinstance(key, str) else "the key"
        raise InvalidName(
            f"invalid object key {shown}",
            hint="1-256 characters: letters, digits, '.', '_', '-' and '/' between names (no '..', no '//')",
        )
    return key


def check_content_type(value: str | None) -> str:
    if not value:
        return "application/octet-stream"
    if not CONTENT_TYPE.fullmatch(value):
        raise BadQuery("the Content-Type is not a media type", code="bad_content_type")
    return value


@dataclass(frozen=True)
class Meta:
    key: str
    size: int
    content_type: str
    sha256: str
    created: dt.datetime
    expires: dt.datetime | None
    version: uuid.UUID
    chunk_size: int
    chunks: int

    def checked(self) -> "Meta":
        """This row, if its numbers agree (the tenant can write the table it comes from); else 409."""
        ok = (
            isinstance(self.key, str)
            and len(self.key) <= 256
            and isinstance(self.size, int)
            and isinstance(self.chunk_size, int)
            and isinstance(self.chunks, int)
            and 0 <= self.size <= MAX_OBJECT_BYTES
            and MIN_CHUNK <= self.chunk_size <= MAX_CHUNK
            and self.chunks == -(-self.size // self.chunk_size)
            and self.version is not None
            and isinstance(self.sha256, str)
            and SHA256_HEX.fullmatch(self.sha256) is not None
            and isinstance(self.content_type, str)
            and CONTENT_TYPE.fullmatch(self.content_type) is not None
            and self.created is not None
        )
        if not ok:
            raise Conflict(f"object {self.key!r} is damaged (its row was changed outside the API)",
                           code="object_damaged", hint="delete it and store it again")  # fmt: skip
        return self

    def describe(self) -> dict:
        def iso(t):
            return None if t is None else t.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"

        return {
            "key": self.key,
            "size": self.size,
            "content_type": self.content_type,
            "sha256": self.sha256,
            "created": iso(self.created),
            "expires": iso(self.expires),
        }


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` (one range) as (first, last) inclusive; None for the whole object: no Range, a unit
    other than bytes (RFC 9110 14.2: ignored), or several ranges (a server may ignore the field: the whole
    object is a valid answer, and one multipart answer per request is not worth its cost)."""
    if not header:
        return None
    unit, eq, ranges = header.partition("=")
    if not eq or unit.strip().lower() != "bytes" or "," in ranges:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*([0-9]{0,19})\s*-\s*([0-9]{0,19})\s*", header)
    if not m or (not m.group(1) and not m.group(2)):
        raise RangeNotSatisfiable("only one byte range is served, as bytes=first-last, first- or -suffix")
    a, b = m.group(1), m.group(2)
    if not a:  # the last b bytes
        n = int(b)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"the range is outside the object ({size} bytes)")
        return max(0, size - n), size - 1
    first = int(a)
    last = min(int(b), size - 1) if b else size - 1
    if first >= size or (b and int(b) < first):
        raise RangeNotSatisfiable(f"the range is outside the object ({size} bytes)")
    return first, last


class Ledger:
    """The platform's count of each tenant's object bytes (``object_usage`` in the platform keyspace)."""

    def __init__(self, session: Session, keyspace: str) -> None:
        ks = keyspace  # validated by the configuration
        self.session = session
        self._rows = session.prepare(f"SELECT version, key, size, chunks, state, at FROM {ks}.object_usage WHERE tenant = ?")
        self._reserve = session.prepare(
            f"INSERT INTO {ks}.object_usage (tenant, version, key, size, chunks, state, at) VALUES (?, ?, ?, ?, ?,"
            " 'reserved', ?) USING TTL 604800"
        )
        self._stored = session.prepare(
            f"INSERT INTO {ks}.object_usage (tenant, version, key, size, chunks, state, at) VALUES (?, ?, ?, ?, ?,"
            " 'stored', ?) USING TTL ?"
        )
        self._retire = session.prepare(
            f"UPDATE {ks}.object_usage SET state = 'retired', at = ? WHERE tenant = ? AND version = ?"
        )
        self._drop = session.prepare(f"DELETE FROM {ks}.object_usage WHERE tenant = ? AND version = ?")

    def rows(self, tenant: str) -> list:
        return list(self.session.execute(self._rows, (tenant,), timeout=60))

    def reserve(self, tenant: str, version: uuid.UUID, key: str, size: int, chunks: int, now: dt.datetime) -> None:
        self.session.execute(self._reserve, (tenant, version, key, size, chunks, now))

    def stored(self, tenant: str, version: uuid.UUID, key: str, size: int, chunks: int, now: dt.datetime,
               ttl: int) -> None:  # fmt: skip
        self.session.execute(self._stored, (tenant, version, key, size, chunks, now, ttl))

    def retire(self, tenant: str, version: uuid.UUID, now: dt.datetime) -> None:
        self.session.execute(self._retire, (now, tenant, version))

    def drop(self, tenant: str, version: uuid.UUID) -> None:
        self.session.execute(self._drop, (tenant, version))


class Objects:
    def __init__(self, chunk_bytes: int, ledger: Callable[[], Ledger], lock_dir: Path) -> None:
        self.chunk_bytes = chunk_bytes
        self._ledger = ledger  # made on first use (the API may start before Cassandra answers)
        # the quota's section is held across the API's worker processes: a file lock per tenant in here
        self._lock_dir = lock_dir
        self._ready: dict = {}  # session_id -> prepared statements, after the tables exist

    @property
    def ledger(self) -> Ledger:
        return self._ledger()

    def _stmts(self, session: Session, ks: str) -> dict:
        st = self._ready.get(session.session_id)
        if st is not None:
            return st
        for ddl in SCHEMA:
            session.execute(ddl.format(ks=quote(ks)), timeout=60)
        k = quote(ks)
        cols = "key, size, content_type, sha256, created, expires, version, chunk_size, chunks"
        st = {
            "get": session.prepare(f"SELECT {cols} FROM {k}.mysimbdp_objects WHERE bucket = {BUCKET} AND key = ?"),
            "put": session.prepare(f"INSERT INTO {k}.mysimbdp_objects (bucket, {cols}) VALUES ({BUCKET}, ?, ?, ?, ?,"
                                   " ?, ?, ?, ?, ?) USING TTL ?"),
            "del": session.prepare(f"DELETE FROM {k}.mysimbdp_objects WHERE bucket = {BUCKET} AND key = ?"),
            "list": session.prepare(f"SELECT {cols} FROM {k}.mysimbdp_objects WHERE bucket = {BUCKET} AND key >= ?"
                                    " AND key < ?"),
            "chunk_put": session.prepare(f"INSERT INTO {k}.mysimbdp_object_chunks (version, n, data) VALUES (?, ?, ?)"
                                         " USING TTL ?"),
            "chunk_get": session.prepare(f"SELECT data FROM {k}.mysimbdp_object_chunks WHERE version = ? AND n = ?"),
            "chunk_del": session.prepare(f"DELETE FROM {k}.mysimbdp_object_chunks WHERE version = ? AND n = ?"),
        }  # fmt: skip
        if len(self._ready) > 256:  # sessions come and go (see sessions.py); their statements with them
            self._ready.clear()
        self._ready[session.session_id] = st
        return st

    def _tenant_lock(self, ks: str):
        return file_lock(self._lock_dir / f"{ks}.lock")  # ks: a validated identifier

    # --- reading ------------------------------------------------------------------------------------------
    def head(self, session: Session, ks: str, key: str) -> Meta:
        row = session.execute(self._stmts(session, ks)["get"], (check_key(key),)).one()
        if row is None or (row[5] is not None and row[5].replace(tzinfo=None) <= _now()):
            raise NotFound(f"no object {key!r}", code="no_such_object")  # gone, or expired a moment ago
        return Meta(*row).checked()

    def read(self, session: Session, ks: str, meta: Meta, first: int, last: int) -> Iterator[bytes]:
        """The bytes first..last (inclusive) of the object, a chunk at a time, the next one read ahead."""
        st = self._stmts(session, ks)
        if meta.size == 0:
            return
        cs = meta.chunk_size
        todo = iter(range(first // cs, last // cs + 1))
        ahead: deque = deque()
        for n in todo:
            ahead.append((n, session.execute_async(st["chunk_get"], (meta.version, n))))
            if len(ahead) >= READ_AHEAD:
                break
        while ahead:
            n, fut = ahead.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                ahead.append((nxt, session.execute_async(st["chunk_get"], (meta.version, nxt))))
            row = fut.result().one()
            data = row[0] if row is not None else None
            if data is None or len(data) != min(cs, meta.size - n * cs):
                raise TenantError(f"object {meta.key!r} is missing chunk {n}", code="object_damaged")
            lo = first - n * cs if n * cs < first else 0
            hi = last - n * cs + 1 if (n + 1) * cs > last else len(data)
            yield data[lo:hi]

    def list(self, session: Session, ks: str, prefix: str, page_size: int, paging_state: bytes | None):
        if prefix:
            check_key(prefix.rstrip("/") or "x")
        bound = self._stmts(session, ks)["list"].bind((prefix, prefix + "\x7f"))
        bound.fetch_size = page_size
        rs = session.execute(bound, paging_state=paging_state)
        items = []
        for r in rs.current_rows:
            try:
                items.append(Meta(*r).checked().describe())
            except Conflict:  # listed (so that it can be deleted), its fields not trusted
                items.append({"key": str(r[0])[:256], "damaged": True})
        return items, (rs.paging_state if rs.has_more_pages else None)

    # --- the quota and the sweep --------------------------------------------------------------------------
    def _sweep_and_count(
        self, session: Session, st: dict, ks: str, now: dt.datetime, *, force: bool = False
    ) -> tuple[int, dict, int]:
        """Drop what is due (stale reservations, versions retired long enough, or retired at all when
        ``force``), a bounded number of chunks; then (bytes, {key: stored size}, reservations) of what is
        left. Called under the tenant's lock."""
        budget = SWEEP_BUDGET
        total, stored, reserved = 0, {}, 0
        for version, key, size, chunks, state, at in self.ledger.rows(ks):
            age = now - at.replace(tzinfo=None) if at is not None else dt.timedelta(days=365)
            due = (state == "reserved" and age > STALE_UPLOAD) or (
                state == "retired" and (force or age > RETIRE_GRACE)
            )
            if due and budget > 0:
                n = max(0, min(int(chunks or 0), -(-MAX_OBJECT_BYTES // self.chunk_bytes)))
                if n <= budget or budget == SWEEP_BUDGET:  # the first one goes whatever its size
                    self._drop_chunks(session, st, version, n)
                    self.ledger.drop(ks, version)
                    budget -= n
                    continue
            total += max(0, size or 0)
            if state == "stored":
                stored[key] = stored.get(key, 0) + max(0, size or 0)
            elif state == "reserved":
                reserved += 1
        return total, stored, reserved

    # --- writing ------------------------------------------------------------------------------------------
    def put(self, session: Session, ks: str, key: str, body: BinaryIO, *, length: int | None, content_type: str,
            sha256: str | None, ttl: int | None, limits: Constraints, on_bytes: Callable[[], None]) -> Meta:  # fmt: skip
        check_key(key)
        content_type = check_content_type(content_type)
        ttl = plan.ttl_value(ttl)
        if sha256 is not None:
            sha256 = sha256.strip().lower()
            if not SHA256_HEX.fullmatch(sha256):
                raise BadQuery("X-Checksum-Sha256 must be 64 hex digits", code="bad_checksum")
        if length is None:
            raise LengthRequired("send the object's size as Content-Length")
        lim = limits.objects
        if length > lim["max_object_bytes"]:
            raise QuotaExceeded(f"{length} bytes is over your object size limit of {lim['max_object_bytes']} bytes")
        st = self._stmts(session, ks)
        now = _now()
        version = uuid.uuid4()
        expected_chunks = -(-length // self.chunk_bytes)
        with self._tenant_lock(ks):
            used, stored, reserved = self._sweep_and_count(session, st, ks, now)
            replaced = stored.get(key, 0)
            if used - replaced + length > lim["max_total_bytes"]:
                # replaced and deleted objects wait a while for downloads under way; short of room, they go now
                used, stored, reserved = self._sweep_and_count(session, st, ks, now, force=True)
            if used - replaced + length > lim["max_total_bytes"]:
                raise QuotaExceeded(
                    f"this object would take your objects to {used - replaced + length} bytes,"
                    f" over your quota of {lim['max_total_bytes']} bytes",
                    hint="delete objects you no longer need",
                )
            if key not in stored and len(stored) + reserved + 1 > lim["max_objects"]:
                raise QuotaExceeded(f"you have {len(stored) + reserved} objects, the most your constraints allow")
            self.ledger.reserve(ks, version, key, length, expected_chunks, now)
        digest = hashlib.sha256()
        written = 0
        n = 0
        committed = False
        inflight: deque = deque()
        chunk_ttl = ttl or 0
        try:
            buf = bytearray()
            while True:
                want = min(256 * 1024, length - written - len(buf))
                block = body.read(want) if want > 0 else b""
                if block:
                    on_bytes()
                    digest.update(block)
                    buf += block
                while len(buf) >= self.chunk_bytes or (not block and buf):
                    piece = bytes(buf[: self.chunk_bytes])
                    del buf[: self.chunk_bytes]
                    inflight.append(session.execute_async(st["chunk_put"], (version, n, piece, chunk_ttl)))
                    n += 1
                    written += len(piece)
                    if n % 64 == 0:  # a long upload keeps its reservation fresh (the sweep drops stale ones)
                        self.ledger.reserve(ks, version, key, length, expected_chunks, _now())
                    while len(inflight) >= IN_FLIGHT:
                        inflight.popleft().result()
                if not block:
                    break
            while inflight:
                inflight.popleft().result()
            if written != length:
                raise TenantError(
                    f"the body ended after {written} of {length} bytes", code="body_ended_early",
                    hint="send the object again",
                )
            got = digest.hexdigest()
            if sha256 is not None and got != sha256:
                raise ChecksumMismatch(f"the body's sha256 is {got}, not the {sha256} you declared")
            expires = now + dt.timedelta(seconds=ttl) if ttl else None
            meta = Meta(key, length, content_type, got, now, expires, version, self.chunk_bytes, n)
            row_ttl = 0
            if ttl:  # the row expires with the first chunks, which started their TTL as they were written
                row_ttl = max(1, ttl - int((_now() - now).total_seconds()))
            with self._tenant_lock(ks):
                mine = [r for r in self.ledger.rows(ks) if r[0] == version]
                if not mine or mine[0][4] != "reserved":
                    raise ServiceError("the upload's reservation was lost (swept)", hint="send the object again")
                # what this replaces is what is current now (another upload of the key may have finished)
                before = [r for r in self.ledger.rows(ks) if r[1] == key and r[4] == "stored"]
                self.ledger.stored(ks, version, key, length, n, now, chunk_ttl)
                committed = True  # from here on the chunks are the object's: never cleaned up below
                session.execute(
                    st["put"],
                    (key, length, content_type, got, now, expires, version, self.chunk_bytes, n, row_ttl),
                )
                for r in before:
                    self.ledger.retire(ks, r[0], _now())
        except BaseException:
            for fut in inflight:
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - being cleaned up anyway
                    pass
            if not committed:
                self._cleanup(session, st, ks, version, n)
            raise
        return meta

    def _cleanup(self, session: Session, st: dict, ks: str, version: uuid.UUID, chunks: int) -> None:
        try:
            self._drop_chunks(session, st, version, chunks)
            self.ledger.drop(ks, version)
        except Exception as exc:  # noqa: BLE001 - the reservation stays; the sweep cleans it up in an hour
            log.warning("could not remove the chunks of an upload that failed: %s", exc)

    def _drop_chunks(self, session: Session, st: dict, version: uuid.UUID, chunks: int) -> None:
        futures: deque = deque()
        for n in range(chunks):
            futures.append(session.execute_async(st["chunk_del"], (version, n)))
            if len(futures) >= 16:
                futures.popleft().result()
        for f in futures:
            f.result()

    def delete(self, session: Session, ks: str, key: str) -> None:
        """The object goes at once; its bytes ten minutes later (downloads under way finish)."""
        st = self._stmts(session, ks)
        check_key(key)
        row = session.execute(st["get"], (key,)).one()
        with self._tenant_lock(ks):
            versions = [r[0] for r in self.ledger.rows(ks) if r[1] == key and r[4] == "stored"]
            if row is None and not versions:
                raise NotFound(f"no object {key!r}", code="no_such_object")
            session.execute(st["del"], (key,))
            for v in versions:
                self.ledger.retire(ks, v, _now())
            self._sweep_and_count(session, st, ks, _now())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
