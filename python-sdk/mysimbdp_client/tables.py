"""A tenant's tables through the query API (port 8803): schema and indexes, paged queries, counts, writes
with TTL, deletes, and whole-table exports that resume by themselves.

A filter (``where``) maps columns to a value (equality) or to operators ``eq lt lte gt gte in``::

    {"origin": "JFK", "year": 2013, "month": 1, "day": 1, "carrier": {"in": ["UA", "AA"]}}

A filter Cassandra could answer only by reading the whole table is refused (BadRequestError, code
``needs_index``; its hint names the index to create with :meth:`Table.create_index`).
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import tempfile
import time
from dataclasses import dataclass
from typing import IO, Any, BinaryIO, Iterator
from urllib.parse import quote

import requests
import urllib3

from ._http import Http
from .errors import TransportError, UnavailableError
from .records import records as read_records

MAX_WRITE_ROWS = 500  # rows (or keys) the query API takes in one request
_CONTROL = (b'{"_resume"', b'{"_end"', b'{"_error"')  # how an NDJSON export's control lines begin
Row = dict[str, Any]
_BROKEN = (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


@dataclass(frozen=True)
class Page:
    """One page of a query: its rows, and the token of the next page (None on the last one). The token is
    bound to the same query (where, columns, limit, page_size): send it back with exactly those."""

    rows: list[Row]
    next_page_token: str | None


class Table:
    """One table of the tenant's keyspace (made by ``Client.table(name)``; nothing is asked until used)."""

    def __init__(self, http: Http, name: str) -> None:
        self.http = http
        self.name = name
        self.path = f"/v1/tables/{quote(name, safe='')}"

    def __repr__(self) -> str:
        return f"Table({self.name!r})"

    # --- schema ---------------------------------------------------------------------------------------------
    def info(self) -> dict:
        """Columns (name, CQL type), partition key, clustering columns, indexes, default TTL."""
        return self.http.data("GET", self.path, retry="reads")

    def create_index(self, column: str) -> dict:
        """A Storage-Attached Index on ``column`` (answered with its name; ``created`` False when it existed)."""
        return self.http.data("POST", self.path + "/indexes", json={"column": column}, timeout=180)

    def drop_index(self, name: str) -> None:
        self.http.data("DELETE", f"{self.path}/indexes/{quote(name, safe='')}")

    # --- reads ----------------------------------------------------------------------------------------------
    def find_page(
        self,
        where: dict | None = None,
        columns: list[str] | None = None,
        *,
        page_size: int | None = None,
        limit: int | None = None,
        page_token: str | None = None,
    ) -> Page:
        """One page of the rows that match ``where`` (all rows without it); ``columns`` all when None."""
        body: dict = {}
        for k, v in (("where", where), ("columns", columns), ("page_size", page_size), ("limit", limit)):
            if v is not None:
                body[k] = v
        if page_token is not None:
            body["page_token"] = page_token
        data = self.http.data("POST", self.path + "/query", json=body, retry="reads")
        return Page(data["rows"], data.get("next_page_token"))

    def find(
        self,
        where: dict | None = None,
        columns: list[str] | None = None,
        *,
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[Row]:
        """Every matching row, asking for the next page as the last one is used up."""
        token: str | None = None
        while True:
            page = self.find_page(where, columns, page_size=page_size, limit=limit, page_token=token)
            yield from page.rows
            token = page.next_page_token
            if not token:
                return

    def count(self, where: dict | None = None) -> int:
        """How many rows match ``where`` (Cassandra counts them: a large table takes a while)."""
        body = {"where": where} if where is not None else {}
        return int(self.http.data("POST", self.path + "/count", json=body, timeout=180, retry="reads")["count"])

    def ttl(self, key: Row) -> dict[str, int | None]:
        """Seconds left to live of each column of the row with ``key`` (None: no expiry); NotFoundError
        when there is no such row."""
        return self.http.data("POST", self.path + "/ttl", json={"key": key}, retry="reads")["ttl"]

    # --- writes ---------------------------------------------------------------------------------------------
    def insert_many(self, rows: list[Row], *, ttl: int | None = None, if_not_exists: bool = False) -> dict:
        """Write ``rows`` (upserts, unless ``if_not_exists``), expiring after ``ttl`` seconds (a row's own
        ``_ttl`` wins), in requests of at most 500 rows. Each request is all-or-nothing on its rows' checks;
        a failure half-way leaves the requests before it written. Answers ``written`` and, with
        ``if_not_exists``, ``existing``: the indexes (in ``rows``) of the rows that were already there."""
        written = 0
        existing: list[int] = []
        for at in range(0, len(rows), MAX_WRITE_ROWS):
            body: dict = {"rows": rows[at : at + MAX_WRITE_ROWS]}
            if ttl is not None:
                body["ttl"] = ttl
            if if_not_exists:
                body["if_not_exists"] = True
            out = self.http.data("POST", self.path + "/rows", json=body)
            written += int(out["written"])
            existing += [at + i for i in out.get("existing", [])]
        return {"written": written, "existing": existing} if if_not_exists else {"written": written}

    def insert_one(self, row: Row, *, ttl: int | None = None, if_not_exists: bool = False) -> bool:
        """Write one row; False when ``if_not_exists`` and a row with its key was there already."""
        return self.insert_many([row], ttl=ttl, if_not_exists=if_not_exists)["written"] == 1

    def delete(self, key: Row) -> None:
        """Delete the row with ``key`` (a whole primary key), or every row of a partition (its partition key)."""
        self.http.data("POST", self.path + "/rows/delete", json={"key": key})

    def delete_many(self, keys: list[Row]) -> int:
        """Delete the rows with ``keys``, in requests of at most 500 keys."""
        deleted = 0
        for at in range(0, len(keys), MAX_WRITE_ROWS):
            out = self.http.data("POST", self.path + "/rows/delete", json={"keys": keys[at : at + MAX_WRITE_ROWS]})
            deleted += int(out["deleted"])
        return deleted

    # --- exports --------------------------------------------------------------------------------------------
    def export(self, format: str = "ndjson", columns: list[str] | None = None, *, attempts: int = 5) -> "Export":
        """Every row of the table (iterate the answer): dicts of JSON values for ``ndjson``, dicts of strings
        for ``csv``. A connection that drops is opened again from the last resume mark, nothing twice."""
        return Export(self.http, self.path, format, columns, attempts)

    def export_to(
        self, target: str | os.PathLike | IO, format: str = "csv", columns: list[str] | None = None
    ) -> int:
        """Write the whole table to a path or an open file (text or binary) as ``csv`` (a header, then rows)
        or ``ndjson`` (one object a line), without the export's marks; the number of rows."""
        ex = Export(self.http, self.path, format, columns, 5)
        if isinstance(target, (str, os.PathLike)):
            with open(target, "wb") as fh:
                return ex.write_to(fh)
        if isinstance(target, io.TextIOBase):
            return ex.write_to(_TextSink(target))
        return ex.write_to(target)


class _TextSink:
    def __init__(self, fh: IO[str]) -> None:
        self.fh = fh

    def write(self, data: bytes) -> None:
        self.fh.write(data.decode("utf-8"))


class Export:
    """A table export, streamed. The server sends a resume mark about every 10,000 rows, at partition
    boundaries; rows after the last mark are held back (in a spooled temporary file) until the next one (or
    the end) arrives, so that when the connection drops the
    export goes on from that mark and no row is handed out twice or missed. ``rows_total`` and
    ``complete`` are set once the end line has arrived."""

    def __init__(self, http: Http, path: str, fmt: str, columns: list[str] | None, attempts: int) -> None:
        if fmt not in ("ndjson", "csv"):
            raise ValueError("format is ndjson or csv")
        self.http, self.path, self.format, self.columns, self.attempts = http, path, fmt, columns, attempts
        self.rows_total: int | None = None
        self.complete = False
        self.resumed = 0  # times the export was opened again after a drop
        self.header: list[str] | None = None

    def _open(self, token: str | None) -> requests.Response:
        params = {"format": self.format}
        if self.columns:
            params["columns"] = ",".join(self.columns)
        if token:
            params["resume"] = token
        resp = self.http.call("GET", self.path + "/export", "exporting", params=params, stream=True, retry="reads",
                              timeout=(self.http.timeout, 120))  # fmt: skip
        resp.raw.decode_content = True
        return resp

    def _raw(self) -> Iterator[tuple[bytes, object]]:
        """(the raw bytes of a data record, None) for every row, across drops and resumes. Rows after the
        last mark wait in a spooled temporary file (memory up to 8 MiB, then disk): a partition of a
        million rows carries no mark, and must not fill this process's memory."""
        token: str | None = None
        failures = 0
        while True:
            held = tempfile.SpooledTemporaryFile(max_size=8 << 20)
            why = "the connection ended before the end of the export"
            resp = None
            try:
                resp = self._open(token)
                for kind, raw, value in self._lines(resp.raw):
                    if kind == "row":  # length first: a CSV record may hold line feeds in quotes
                        held.write(len(raw).to_bytes(4, "big"))
                        held.write(raw)
                    elif kind == "mark":
                        yield from _spooled(held)
                        held.close()
                        held = tempfile.SpooledTemporaryFile(max_size=8 << 20)
                        token, failures = str(value), 0
                    elif kind == "end":
                        yield from _spooled(held)
                        self.rows_total, self.complete = int(value), True  # type: ignore[call-overload]
                        return
                    else:  # "error": the server stopped (Cassandra away): resume from the last mark
                        why = str(value)
                        break
            except (*_BROKEN, _Cut, TransportError, UnavailableError) as exc:
                why = f"the export broke off ({type(exc).__name__}: {exc})"
            finally:
                held.close()
                if resp is not None:
                    resp.close()
            failures += 1
            if failures >= self.attempts:
                raise TransportError(f"the export of {self.path.rsplit('/', 1)[-1]} kept stopping: {why}",
                                     code="export_broke_off")  # fmt: skip
            self.resumed += 1
            time.sleep(min(2.0 ** (failures - 1), 15.0))

    def _lines(self, fh: BinaryIO) -> Iterator[tuple[str, bytes, object]]:
        """("row" | "mark" | "end" | "error", raw bytes, value) for each line of an export answer."""
        if self.format == "ndjson":
            for line in fh:
                if not line.endswith(b"\n"):
                    return  # cut in the middle of a line
                if not line.startswith(_CONTROL):  # a row: parsed only if asked for (see __iter__)
                    yield "row", line, None
                    continue
                # the server refuses to export a column named like a control key as NDJSON, so a line
                # that starts with one is a control line
                obj = json.loads(line)
                if "_resume" in obj:
                    yield "mark", b"", obj["_resume"]
                elif "_end" in obj:
                    yield "end", b"", obj["_end"]["rows"]
                else:
                    yield "error", b"", obj["_error"].get("message", "the export stopped")
            return
        first = True
        for _, rec in read_records(_Lines(fh)):
            if rec is None:
                continue
            if first:  # the header (sent again by every resumed answer)
                first = False
                self.header = next(csv.reader([rec.decode("utf-8")]))
                continue
            if rec.startswith(b"#"):  # a comment: data whose first field starts with '#' is quoted
                words = rec.decode("utf-8", "replace").split()
                if len(words) >= 2 and words[1] == "resume":
                    yield "mark", b"", words[2]
                elif len(words) >= 2 and words[1] == "end" and words[-1] == "complete":
                    yield "end", b"", int(words[2].removeprefix("rows="))
                elif len(words) >= 2 and words[1] == "error":
                    yield "error", b"", " ".join(words[2:])
                continue
            yield "row", rec + b"\n", None  # parsed only if asked for (see __iter__)

    def __iter__(self) -> Iterator[Row]:
        if self.format == "ndjson":
            for raw, _ in self._raw():
                yield json.loads(raw)
            return
        for raw, _ in self._raw():
            yield dict(zip(self.header or [], next(csv.reader([raw.decode("utf-8")]))))

    def write_to(self, fh: Any) -> int:
        """Write the rows' own lines (and, for CSV, the header once) to a binary file; the row count."""
        n = 0
        for raw, _ in self._raw():
            if n == 0 and self.format == "csv":
                fh.write((_csv_line(self.header or [])).encode("utf-8"))
            fh.write(raw)
            n += 1
        if n == 0 and self.format == "csv" and self.header:
            fh.write(_csv_line(self.header).encode("utf-8"))
        return n


def _spooled(held) -> Iterator[tuple[bytes, object]]:
    held.seek(0)
    while head := held.read(4):
        yield held.read(int.from_bytes(head, "big")), None


class _Cut(Exception):
    """An answer that ended in the middle of a line."""


class _Lines:
    """A binary stream's lines, whole only: a last line without its line feed means the answer was cut."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh

    def __iter__(self) -> Iterator[bytes]:
        for line in self.fh:
            if not line.endswith(b"\n"):
                raise _Cut("the export was cut in the middle of a line")
            yield line


def _csv_line(fields: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(fields)
    return buf.getvalue()

