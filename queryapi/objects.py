"""Binary objects (images, video, raw files) in the tenant's keyspace, streamed both ways in constant memory.

An object is a row in ``mysimbdp_objects`` (key, size, content type, sha256, created, expiry, version)
and its bytes in ``mysimbdp_object_chunks``, one row of ``query.object_chunk_kb`` per chunk, each chunk
its own partition (a mutation stays far below Cassandra's 16 MiB limit, and a read of the middle of a
video reads only the chunks it needs).

Writing: the upload is reserved first (a row in ``mysimbdp_object_uploads`` holding its declared size,
under a per-tenant lock, so that concurrent uploads cannot pass the quota together); the chunks are
written under a new version id as the body arrives, a few in flight; the sha256 is checked; only then
does the object's row point at the new version, and the old version's chunks are deleted. An upload cut
off, refused or killed half-way leaves no object; its chunks are removed by the next upload of the
tenant once the reservation is an hour old.

Every statement runs on the tenant's own session, in the tenant's own keyspace.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator

from cassandra.cluster import Session

from mysimbdp.constraints import Constraints
from mysimbdp.errors import BadQuery, ChecksumMismatch, InvalidName, NotFound, QuotaExceeded, RangeNotSatisfiable, TenantError

from . import plan
from .tables import quote

log = logging.getLogger(__name__)
KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-/]{0,255}")
CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}(;[ -~]{0,120})?")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
IN_FLIGHT = 4  # chunk writes (and reads) in flight at once
STALE_UPLOAD = dt.timedelta(hours=1)
BUCKET = 0  # one partition of object rows per tenant: listing by prefix is a range of it

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS {ks}.mysimbdp_objects (
        bucket int, key text, size bigint, content_type text, sha256 text, created timestamp,
        expires timestamp, version uuid, chunk_size int, chunks int,
        PRIMARY KEY ((bucket), key))""",
    """CREATE TABLE IF NOT EXISTS {ks}.mysimbdp_object_chunks (
        version uuid, n int, data blob, PRIMARY KEY ((version, n)))""",
    """CREATE TABLE IF NOT EXISTS {ks}.mysimbdp_object_uploads (
        bucket int, version uuid, key text, size bigint, started timestamp, PRIMARY KEY ((bucket), version))
        WITH default_time_to_live = 604800""",
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
    """``Range: bytes=a-b`` (one range) as (first, last) inclusive; None for the whole object."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*", header)
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


class Objects:
    def __init__(self, chunk_bytes: int) -> None:
        self.chunk_bytes = chunk_bytes
        self._lock = threading.Lock()
        self._tenant_locks: dict[str, threading.Lock] = {}
        self._ready: dict = {}  # session_id -> prepared statements, after the tables exist

    def _stmts(self, session: Session, ks: str) -> dict:
        st = self._ready.get(session.session_id)
        if st is not None:
            return st
        for ddl in SCHEMA:
            session.execute(ddl.format(ks=quote(ks)), timeout=60)
        k = quote(ks)
        st = {
            "get": session.prepare(f"SELECT key, size, content_type, sha256, created, expires, version, chunk_size, chunks"
                                   f" FROM {k}.mysimbdp_objects WHERE bucket = {BUCKET} AND key = ?"),
            "put": session.prepare(f"INSERT INTO {k}.mysimbdp_objects (bucket, key, size, content_type, sha256, created,"
                                   f" expires, version, chunk_size, chunks) VALUES ({BUCKET}, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                                   " USING TTL ?"),
            "del": session.prepare(f"DELETE FROM {k}.mysimbdp_objects WHERE bucket = {BUCKET} AND key = ?"),
            "sizes": session.prepare(f"SELECT size FROM {k}.mysimbdp_objects WHERE bucket = {BUCKET}"),
            "list": session.prepare(f"SELECT key, size, content_type, sha256, created, expires, version, chunk_size,"
                                    f" chunks FROM {k}.mysimbdp_objects WHERE bucket = {BUCKET} AND key >= ? AND key < ?"),
            "chunk_put": session.prepare(f"INSERT INTO {k}.mysimbdp_object_chunks (version, n, data) VALUES (?, ?, ?)"
                                         " USING TTL ?"),
            "chunk_get": session.prepare(f"SELECT data FROM {k}.mysimbdp_object_chunks WHERE version = ? AND n = ?"),
            "chunk_del": session.prepare(f"DELETE FROM {k}.mysimbdp_object_chunks WHERE version = ? AND n = ?"),
            "reserve": session.prepare(f"INSERT INTO {k}.mysimbdp_object_uploads (bucket, version, key, size, started)"
                                       f" VALUES ({BUCKET}, ?, ?, ?, ?)"),
            "reserved": session.prepare(f"SELECT version, key, size, started FROM {k}.mysimbdp_object_uploads"
                                        f" WHERE bucket = {BUCKET}"),
            "unreserve": session.prepare(f"DELETE FROM {k}.mysimbdp_object_uploads WHERE bucket = {BUCKET}"
                                         " AND version = ?"),
        }  # fmt: skip
        if len(self._ready) > 256:  # sessions come and go (see sessions.py); their statements with them
            self._ready.clear()
        self._ready[session.session_id] = st
        return st

    def _tenant_lock(self, ks: str) -> threading.Lock:
        with self._lock:
            return self._tenant_locks.setdefault(ks, threading.Lock())

    # --- reading ------------------------------------------------------------------------------------------
    def head(self, session: Session, ks: str, key: str) -> Meta:
        row = session.execute(self._stmts(session, ks)["get"], (check_key(key),)).one()
        if row is None:
            raise NotFound(f"no object {key!r}", code="no_such_object")
        return Meta(*row)

    def read(self, session: Session, ks: str, meta: Meta, first: int, last: int) -> Iterator[bytes]:
        """The bytes first..last (inclusive) of the object, a chunk at a time, the next ones read ahead."""
        st = self._stmts(session, ks)
        if meta.size == 0:
            return
        cs = meta.chunk_size
        wanted = list(range(first // cs, last // cs + 1))
        ahead: deque = deque()
        todo = iter(wanted)
        for n in todo:
            ahead.append((n, session.execute_async(st["chunk_get"], (meta.version, n))))
            if len(ahead) >= IN_FLIGHT:
                break
        while ahead:
            n, fut = ahead.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                ahead.append((nxt, session.execute_async(st["chunk_get"], (meta.version, nxt))))
            row = fut.result().one()
            if row is None or row[0] is None:
                raise TenantError(f"object {meta.key!r} is missing chunk {n}", code="object_damaged")
            data = row[0]
            lo = first - n * cs if n * cs < first else 0
            hi = last - n * cs + 1 if (n + 1) * cs > last else len(data)
            yield data[lo:hi]

    def list(self, session: Session, ks: str, prefix: str, page_size: int, paging_state: bytes | None):
        if prefix:
            check_key(prefix.rstrip("/") or "x")
        bound = self._stmts(session, ks)["list"].bind((prefix, prefix + "\x7f"))
        bound.fetch_size = page_size
        rs = session.execute(bound, paging_state=paging_state)
        items = [Meta(*r).describe() for r in rs.current_rows]
        return items, (rs.paging_state if rs.has_more_pages else None)

    # --- writing ------------------------------------------------------------------------------------------
    def _usage(self, session: Session, st: dict, now: dt.datetime) -> tuple[int, int]:
        """(bytes, objects) of the tenant, reservations included; stale reservations are cleaned up."""
        total = count = 0
        rs = session.execute(st["sizes"].bind(()), timeout=60)
        for (size,) in rs:
            total += size or 0
            count += 1
        for version, _key, size, started in session.execute(st["reserved"], timeout=60):
            if started is not None and now - started.replace(tzinfo=None) > STALE_UPLOAD:
                self._drop_chunks(session, st, version, None)
                session.execute(st["unreserve"], (version,))
            else:
                total += size or 0
                count += 1
        return total, count

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
            raise TenantError("send the object's size as Content-Length", code="length_required")
        lim = limits.objects
        if length > lim["max_object_bytes"]:
            raise QuotaExceeded(f"{length} bytes is over your object size limit of {lim['max_object_bytes']} bytes")
        st = self._stmts(session, ks)
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        version = uuid.uuid4()
        with self._tenant_lock(ks):
            used, count = self._usage(session, st, now)
            old = session.execute(st["get"], (key,)).one()
            old_size = old[1] if old else 0
            if used - old_size + length > lim["max_total_bytes"]:
                raise QuotaExceeded(
                    f"this object would take your objects to {used - old_size + length} bytes,"
                    f" over your quota of {lim['max_total_bytes']} bytes",
                    hint="delete objects you no longer need",
                )
            if old is None and count + 1 > lim["max_objects"]:
                raise QuotaExceeded(f"you have {count} objects, the most your constraints allow")
            session.execute(st["reserve"], (version, key, length, now))
        digest = hashlib.sha256()
        written = 0
        n = 0
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
            session.execute(
                st["put"],
                (key, length, content_type, got, now, expires, version, self.chunk_bytes, n, chunk_ttl),
            )
        except BaseException:
            for fut in inflight:
                try:
                    fut.result()
                except Exception:  # noqa: BLE001 - being cleaned up anyway
                    pass
            self._cleanup(session, st, version, n)
            raise
        session.execute(st["unreserve"], (version,))
        if old is not None:
            self._drop_chunks(session, st, old[6], old[8])
        return meta

    def _cleanup(self, session: Session, st: dict, version: uuid.UUID, chunks: int) -> None:
        try:
            self._drop_chunks(session, st, version, chunks)
            session.execute(st["unreserve"], (version,))
        except Exception as exc:  # noqa: BLE001 - the reservation stays; a later upload cleans it up
            log.warning("could not remove the chunks of an upload that failed: %s", exc)

    def _drop_chunks(self, session: Session, st: dict, version: uuid.UUID, chunks: int | None) -> None:
        """Delete a version's chunks; ``chunks`` None: as many as there are (probed until one is missing)."""
        if chunks is None:
            chunks = 0
            while session.execute(st["chunk_get"], (version, chunks)).one() is not None:
                chunks += 1
        futures: deque = deque()
        for n in range(chunks):
            futures.append(session.execute_async(st["chunk_del"], (version, n)))
            if len(futures) >= 16:
                futures.popleft().result()
        for f in futures:
            f.result()

    def delete(self, session: Session, ks: str, key: str) -> None:
        meta = self.head(session, ks, key)
        st = self._stmts(session, ks)
        session.execute(st["del"], (key,))
        self._drop_chunks(session, st, meta.version, meta.chunks)
