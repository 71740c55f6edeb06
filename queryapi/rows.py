"""Reading and writing a tenant's rows: query (paged), count, write (with TTL), delete, remaining TTL.

Each call gets the tenant's own session and a checked request body; it plans the statement
(:mod:`queryapi.plan`), prepares it once per session, runs it and answers plain data for the API to
send. Cassandra's refusals of a statement become a :class:`BadQuery` with Cassandra's reason.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict

from cassandra import CoordinationFailure, InvalidRequest, ReadFailure, Unauthorized
from cassandra.cluster import Session
from cassandra.concurrent import execute_concurrent

from mysimbdp.config import QuerySettings
from mysimbdp.errors import BadQuery, Forbidden, NeedsIndex, NotFound, ServiceError

from . import plan, tokens, values
from .tables import Table

MAX_LIMIT = 1_000_000  # rows one query may return over all its pages (an export reads more)
PAGE_BYTES = 4 << 20  # a page ends early past this many bytes of values (rows can be megabytes each)
FIRST_FETCH = 5  # rows asked of Cassandra first (a row can weigh 16 MiB); later ones sized by what these weighed


@contextlib.contextmanager
def cassandra_refusals():
    """Cassandra's refusal of a statement as a 400 (or a 503 while an index is still being built)."""
    try:
        yield
    except InvalidRequest as exc:
        msg = _message(exc)
        if "ALLOW FILTERING" in msg:
            raise NeedsIndex(
                "this filter would read the whole table", hint="filter on the key, or create an index on the column"
            ) from None
        if "not yet" in msg.lower() or "building" in msg.lower() or "not queryable" in msg.lower():
            raise ServiceError(
                "an index this query needs is still being built", hint="try again in a moment", retry_after=5
            ) from None
        raise BadQuery("Cassandra refused the statement: " + msg[:300]) from None
    except CoordinationFailure as exc:  # replicas failed it: a read of an index still being built, most often
        building = isinstance(exc, ReadFailure) and "index" in str(exc).lower()
        raise ServiceError(
            "an index this query needs is still being built" if building else "the database failed the statement",
            hint="try again in a moment",
            retry_after=2,
        ) from None
    except Unauthorized:
        raise Forbidden("your role may not do this") from None


def _message(exc: Exception) -> str:
    text = str(exc)
    marker = 'message="'
    if marker in text:
        text = text[text.index(marker) + len(marker) :].rstrip('"}')
    return text


class Prepared:
    """Prepared statements per session, least recently used dropped past ``size``."""

    def __init__(self, size: int = 1024) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[object, str], object] = OrderedDict()
        self.size = size

    def get(self, session: Session, cql: str):
        key = (session.session_id, cql)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        with cassandra_refusals():
            stmt = session.prepare(cql)
        with self._lock:
            self._cache[key] = stmt
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return stmt


class Rows:
    def __init__(self, settings: QuerySettings, sealer: tokens.Sealer) -> None:
        self.s = settings
        self.sealer = sealer
        self.prepared = Prepared()

    # --- reads -------------------------------------------------------------------------------------------
    def query(self, session: Session, tenant: str, table: Table, body: dict) -> dict:
        conds = plan.conditions(table, body.get("where"), max_in=self.s.max_in_values)
        plan.check_served(table, conds)
        cols = plan.projection(table, body.get("columns"))
        limit = plan.positive_int(body, "limit", None, MAX_LIMIT)
        page_size = plan.positive_int(body, "page_size", self.s.default_page_size, self.s.max_page_size)
        def bound_to() -> bytes:  # what a page token of this query is bound to (only made when one is used)
            query = {"where": body.get("where"), "columns": cols, "limit": limit, "page": page_size}
            return tokens.fingerprint("page", tenant, table.name, query)

        token = body.get("page_token")
        returned, paging_state = 0, None
        if token is not None:  # the rows handed out before this page, then the driver's paging state
            payload = self.sealer.open(token, bound_to())
            returned, paging_state = int.from_bytes(payload[:8], "big"), payload[8:] or None
        # the limit is counted here, over all pages: Cassandra's LIMIT starts again when a page continues
        want = page_size if limit is None else min(page_size, limit - returned)
        stmt = plan.select(table, cols, conds, limit)
        bound = self.prepared.get(session, stmt.cql).bind(stmt.params)
        decoders = table.decoders(cols)
        # A page is fetched in steps: a few rows first, then as many as the budget allows at what they
        # weighed, so that a page of megabyte rows stops at PAGE_BYTES instead of filling memory.
        out: list[dict] = []
        used, biggest, fetch, state = 0, 1, min(want, FIRST_FETCH), paging_state
        while want > 0:
            bound.fetch_size = fetch
            with cassandra_refusals():
                rs = session.execute(bound, paging_state=state)
            for r in rs.current_rows:
                size = sum(values.approx_size(v) for v in r)
                used += size
                biggest = max(biggest, size)
                out.append(row_json(cols, decoders, r))
            state = rs.paging_state if rs.has_more_pages else None
            if state is None or len(out) >= want or used >= PAGE_BYTES:
                break
            # sized by the largest row seen, and at most twice the last fetch: small rows first cannot
            # open the way for a thousand large ones
            fetch = max(1, min(want - len(out), (PAGE_BYTES - used) // biggest, fetch * 2))
        returned += len(out)
        done = state is None or (limit is not None and returned >= limit)
        next_token = None if done else self.sealer.seal(bound_to(), returned.to_bytes(8, "big") + state)
        return {"rows": out, "count": len(out), "next_page_token": next_token}

    def count(self, session: Session, table: Table, body: dict) -> dict:
        conds = plan.conditions(table, body.get("where"), max_in=self.s.max_in_values)
        if not conds:
            raise NeedsIndex(
                f"counting every row of {table.name} would read the whole table",
                code="needs_filter",
                hint="filter on the key or an index; an export's last line counts the whole table",
            )
        plan.check_served(table, conds)
        stmt = plan.count(table, conds)
        bound = self.prepared.get(session, stmt.cql).bind(stmt.params)
        bound.fetch_size = 5000
        with cassandra_refusals():
            row = session.execute(bound, timeout=max(60.0, self.s.request_seconds)).one()
        return {"count": int(row[0]) if row else 0}

    def ttl(self, session: Session, table: Table, body: dict) -> dict:
        conds = plan.key_conditions(table, body.get("key"), full=True)
        stmt, cols = plan.ttl_read(table, conds)
        with cassandra_refusals():
            row = session.execute(self.prepared.get(session, stmt.cql), stmt.params).one()
        if row is None or (not cols and not row[0]):
            raise NotFound("no row with this key", code="no_such_row")
        return {"ttl": dict(zip(cols, row)) if cols else {}}

    # --- writes ------------------------------------------------------------------------------------------
    def write(self, session: Session, table: Table, body: dict) -> dict:
        rows = body.get("rows")
        if not isinstance(rows, list) or not rows:
            raise BadQuery('send {"rows": [{...}, ...]} with at least one row')
        if len(rows) > self.s.max_write_rows:
            raise BadQuery(
                f"{len(rows)} rows in one request; at most {self.s.max_write_rows}", code="too_many_rows",
                hint="send them in several requests",
            )
        ttl = plan.ttl_value(body.get("ttl"))
        if_not_exists = body.get("if_not_exists", False)
        if not isinstance(if_not_exists, bool):
            raise BadQuery('"if_not_exists" is true or false')
        # every row is checked before anything is written: a bad row fails the request, not half of it
        items = [plan.row_values(table, r) for r in rows]
        work = []
        for cols, vals, row_ttl in items:
            use = row_ttl if row_ttl is not None else ttl
            stmt = self.prepared.get(session, plan.insert(table, cols, ttl=use is not None, if_not_exists=if_not_exists))
            work.append((stmt, vals + ((use,) if use is not None else ())))
        with cassandra_refusals():
            results = execute_concurrent(session, work, concurrency=32, raise_on_first_error=True)
        out: dict = {"written": len(work)}
        if if_not_exists:
            existing = [i for i, (ok, rs) in enumerate(results) if ok and rs and not rs.one()[0]]
            out["written"] = len(work) - len(existing)
            out["existing"] = existing
        return out

    def delete(self, session: Session, table: Table, body: dict) -> dict:
        keys = body.get("keys") if "keys" in body else [body.get("key")]
        if not isinstance(keys, list) or not keys:
            raise BadQuery('send {"key": {...}} or {"keys": [{...}, ...]}')
        if len(keys) > self.s.max_write_rows:
            raise BadQuery(f"{len(keys)} keys in one request; at most {self.s.max_write_rows}", code="too_many_rows")
        work = []
        for key in keys:
            stmt = plan.delete(table, plan.key_conditions(table, key, full=False))
            work.append((self.prepared.get(session, stmt.cql), stmt.params))
        with cassandra_refusals():
            execute_concurrent(session, work, concurrency=32, raise_on_first_error=True)
        return {"deleted": len(work)}


def row_json(cols: list[str], decoders: list, row: tuple) -> dict:
    return {c: (v if d is None or v is None else d(v)) for c, d, v in zip(cols, decoders, row)}
