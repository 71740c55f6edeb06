"""A whole table out, as NDJSON or CSV, in constant memory, resumable.

The table is read the way the Spark connector reads one: the token ring is cut into ranges and each is
read with ``WHERE token(pk) > ? AND token(pk) <= ?`` a page at a time, the next page asked for before
the current one is written out. Rows leave in token order, so the export can say where it is: at most
every ``MARK_EVERY`` rows, on a partition boundary, it writes a resume mark (a sealed token holding the
last complete partition's token and the rows so far). A client cut off resumes with that mark and gets
the rest, nothing twice. The last line says how many rows there were, and that the export is complete.

NDJSON::

    {"carrier": "UA", ...}
    {"_resume": "<token>", "rows": 10000}
    {"_end": {"rows": 336776, "complete": true}}

CSV: a header line, then rows; marks are comment lines, ``# resume <token> rows=10000`` and
``# end rows=336776 complete`` (a data line whose first field starts with ``#`` is quoted, so a comment
line is never data). A failure half-way ends the stream with ``{"_error": ...}`` / ``# error ...`` and no
end line.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import struct
from typing import Iterator

from cassandra.cluster import Session

from mysimbdp.errors import MysimbdpError

from . import tokens, values
from .tables import Table, quote

log = logging.getLogger(__name__)
MIN_TOKEN = -(2**63)
MAX_TOKEN = 2**63 - 1
SPLITS = 64
MARK_EVERY = 10_000
FLUSH_BYTES = 256 * 1024
PAGE_BYTES = 2 << 20  # what one page from Cassandra should weigh: pages are sized from the rows seen
FIRST_FETCH = 5
_RESUME = struct.Struct(">qQ")  # last complete token, rows before it
#: the keys of NDJSON control lines: a column of one of these names is not exported as NDJSON (a row
#: holding only it would read as a control line)
CONTROL_KEYS = ("_resume", "_end", "_error")


def splits(after: int, n: int = SPLITS) -> list[tuple[int, int]]:
    """The token ring from just after ``after`` to the end, as (lo, hi] ranges of about equal width."""
    step = (MAX_TOKEN - MIN_TOKEN) // n
    out, lo = [], MIN_TOKEN
    for i in range(n):
        hi = MAX_TOKEN if i == n - 1 else lo + step
        if hi > after:
            out.append((max(lo, after), hi))
        lo = hi
    return out


class Export:
    def __init__(self, session: Session, sealer: tokens.Sealer, tenant: str, table: Table, cols: list[str], *,
                 fmt: str, fetch_size: int, resume: str | None) -> None:  # fmt: skip
        self.session, self.sealer, self.table, self.cols = session, sealer, table, cols
        self.fmt, self.fetch_size = fmt, fetch_size
        self.bound_to = tokens.fingerprint("export", tenant, table.name, {"columns": cols})
        self.after, self.rows_before = MIN_TOKEN, 0
        if resume is not None:
            try:
                payload = sealer.open(resume, self.bound_to)
            except tokens.BadPageToken as exc:
                raise tokens.BadPageToken(
                    exc.message.replace("page token", "resume token"),
                    hint="a resume token works with the export of the same table and the same columns=",
                ) from None
            if len(payload) != _RESUME.size:
                raise tokens.BadPageToken("the resume token is not one this API gave out")
            self.after, self.rows_before = _RESUME.unpack(payload)
        pk = ", ".join(quote(c) for c in table.partition_key)
        self.cql = (
            f"SELECT {', '.join(quote(c) for c in cols)}, token({pk}) FROM {table.qualified}"
            f" WHERE token({pk}) > ? AND token({pk}) <= ?"
        )
        self.stmt = session.prepare(self.cql)  # prepared before the answer starts: a refusal is still a 4xx

    def _pages(self) -> Iterator[list]:
        """Pages of rows in token order; the next page (or range) is requested before one is handed out."""
        ranges = iter(splits(self.after))

        fetch = [min(FIRST_FETCH, self.fetch_size)]

        def start(paging_state=None, rng=None):
            bound = self.stmt.bind(rng)
            bound.fetch_size = fetch[0]
            return self.session.execute_async(bound, paging_state=paging_state), rng

        pending = None
        rng = next(ranges, None)
        if rng is not None:
            pending = start(rng=rng)
        while pending is not None:
            fut, rng = pending
            rs = fut.result()
            rows = rs.current_rows
            if rows:  # the next page's size, from the largest of a few of these rows, at most twice this one
                sample = (rows[0], rows[len(rows) // 2], rows[-1])
                biggest = max(sum(values.approx_size(v) for v in r) for r in sample)
                fetch[0] = max(1, min(self.fetch_size, PAGE_BYTES // max(1, biggest), fetch[0] * 2))
            if rs.has_more_pages and rs.paging_state:
                pending = start(rs.paging_state, rng)
            else:
                nxt = next(ranges, None)
                pending = start(rng=nxt) if nxt is not None else None
            yield rows

    def _mark(self, last_token: int, rows: int) -> str:
        token = self.sealer.seal(self.bound_to, _RESUME.pack(last_token, rows))
        if self.fmt == "csv":
            return f"# resume {token} rows={rows}\n"
        return json.dumps({"_resume": token, "rows": rows}) + "\n"

    def chunks(self) -> Iterator[bytes]:
        """The export's bytes, in blocks of about FLUSH_BYTES."""
        decoders = [values.decoder(self.table.columns[c]) for c in self.cols]
        n = self.rows_before
        buf = io.StringIO()
        if self.fmt == "csv":
            writer = csv.writer(buf, lineterminator="\n")
            quoted = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
            writer.writerow(self.cols)
        cols = self.cols
        ncols = len(cols)
        last_token = None
        since_mark = 0
        try:
            for page in self._pages():
                yield b""  # a page arrived: the answer is alive (its idle deadline starts again)
                for row in page:
                    tok = row[ncols]
                    if last_token is not None and tok != last_token and since_mark >= MARK_EVERY:
                        buf.write(self._mark(last_token, n))
                        since_mark = 0
                    last_token = tok
                    vals = [v if d is None or v is None else d(v) for d, v in zip(decoders, row)]
                    if self.fmt == "csv":
                        vals = [json.dumps(v) if isinstance(v, (list, dict)) else v for v in vals]
                        if isinstance(vals[0], str) and vals[0].startswith("#"):
                            quoted.writerow(vals)
                        else:
                            writer.writerow(vals)
                    else:
                        buf.write(json.dumps(dict(zip(cols, vals)), ensure_ascii=False))
                        buf.write("\n")
                    n += 1
                    since_mark += 1
                    if buf.tell() >= FLUSH_BYTES:
                        yield buf.getvalue().encode("utf-8")
                        buf.seek(0)
                        buf.truncate()
        except Exception as exc:  # noqa: BLE001 - the answer has begun: say so in the stream, then stop
            if isinstance(exc, MysimbdpError):
                code, msg = exc.code, exc.message
            else:
                log.warning("export of %s.%s stopped: %s", self.table.keyspace, self.table.name, exc)
                code, msg = "database_unavailable", "the database stopped answering"
            if self.fmt == "csv":
                buf.write(f"# error {code}: {msg}; resume from the last mark\n")
            else:
                buf.write(json.dumps({"_error": {"code": code, "message": msg, "rows": n}}) + "\n")
            yield buf.getvalue().encode("utf-8")
            return
        if self.fmt == "csv":
            buf.write(f"# end rows={n} complete\n")
        else:
            buf.write(json.dumps({"_end": {"rows": n, "complete": True}}) + "\n")
        yield buf.getvalue().encode("utf-8")
