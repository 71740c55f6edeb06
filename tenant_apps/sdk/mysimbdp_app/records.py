"""Rows: a declarative :class:`Table` (schema, insert, type conversion), and the rejects file.

CSV records themselves come from the platform's one record reader, ``mysimbdp.csvrecords`` (Python's csv
module over UTF-8 with a BOM tolerated, so quoted commas, quoted newlines and Windows line ends come out
right). A record that cannot be converted raises :class:`Rejected`; the caller counts it, keeps it aside
and goes on.
"""

from __future__ import annotations

import csv
import operator
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Callable, Iterable, Sequence

_IDENT = re.compile(r"[a-z][a-z0-9_]{0,47}")


class Rejected(ValueError):
    """This record is malformed; the message says why."""


def _float(text: str) -> float:
    if "_" in text:  # Python reads 1_000.5; a CSV number does not look like that
        raise ValueError(text)
    value = float(text)
    if value != value:  # NaN
        raise ValueError("NaN")
    return value


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "t", "yes", "y", "1"):
        return True
    if t in ("false", "f", "no", "n", "0"):
        return False
    raise ValueError(text)


def _timestamp(text: str) -> int:
    """An ISO 8601 time as milliseconds since the epoch (UTC when no zone is given): what Cassandra stores,
    and cheaper to send than a datetime."""
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    value = datetime.fromisoformat(t)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return round(value.timestamp() * 1000)


def _date(text: str) -> date:
    return date.fromisoformat(text.strip())


CONVERTERS: dict[str, Callable[[str], object]] = {
    "text": str,
    "varchar": str,
    "ascii": str,
    "int": int,
    "bigint": int,
    "smallint": int,
    "tinyint": int,
    "varint": int,
    "double": _float,
    "float": _float,
    "boolean": _bool,
    "timestamp": _timestamp,
    "date": _date,
}


MAX_KEY_BYTES = 65535  # Cassandra refuses a key value (and a whole batch with it) above this
MAX_KEY_CHARS = MAX_KEY_BYTES // 4  # below this many characters a string cannot be that long in UTF-8


@dataclass(frozen=True)
class Table:
    """A target table: ``columns`` as (name, CQL type); ``primary_key`` as CQL text, e.g.
    ``"((origin, year, month, day), carrier, flight)"``; ``null_values`` are read as null."""

    name: str
    columns: Sequence[tuple[str, str]]
    primary_key: str
    null_values: tuple[str, ...] = ("", "NA", "N/A", "null", "NULL")
    options: str = ""
    key_columns: tuple[str, ...] = field(init=False)
    partition_columns: tuple[str, ...] = field(init=False)
    partition_index: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        for name, typ in [(self.name, "text"), *self.columns]:
            if not _IDENT.fullmatch(name):
                raise ValueError(f"invalid identifier {name!r}")
            if typ not in CONVERTERS:
                raise ValueError(f"unsupported type {typ!r} for {name}")
        inner = self.primary_key.strip()
        if not re.fullmatch(r"[()a-z0-9_, ]+", inner):
            raise ValueError("invalid primary key")
        keys = re.findall(r"[a-z][a-z0-9_]*", inner)
        part = re.match(r"\(\s*\(([^)]*)\)", inner)
        partition = re.findall(r"[a-z][a-z0-9_]*", part.group(1)) if part else keys[:1]
        names = [c for c, _ in self.columns]
        if not keys or any(k not in names for k in keys):
            raise ValueError("primary key columns must be columns of the table")
        object.__setattr__(self, "key_columns", tuple(keys))
        object.__setattr__(self, "partition_columns", tuple(partition))
        object.__setattr__(self, "partition_index", tuple(names.index(c) for c in partition))

    # --- CQL ----------------------------------------------------------------------------------------
    def create_cql(self, keyspace: str) -> str:
        cols = ", ".join(f"{c} {t}" for c, t in self.columns)
        opts = f" WITH {self.options}" if self.options else ""
        return f"CREATE TABLE IF NOT EXISTS {keyspace}.{self.name} ({cols}, PRIMARY KEY {self.primary_key}){opts}"

    def insert_cql(self, keyspace: str) -> str:
        cols = ", ".join(c for c, _ in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        return f"INSERT INTO {keyspace}.{self.name} ({cols}) VALUES ({marks})"

    @property
    def partition_of(self) -> Callable[[Sequence[object]], object]:
        """values -> the partition key (a C-level itemgetter: this runs once per row)."""
        return operator.itemgetter(*self.partition_index)

    # --- conversion -----------------------------------------------------------------------------------
    def converter(self, header: Sequence[str], columns_of: str = "the header") -> Callable[[Sequence[str]], tuple]:
        """A function turning one CSV record (in ``header``'s column order) into a typed tuple.

        This runs once per row, so it is written for speed: one list comprehension over the fields, and
        the slow path (finding out what exactly is wrong) only for rows that fail.
        """
        positions = {h.strip().lower(): i for i, h in enumerate(header)}
        missing = [c for c, _ in self.columns if c in self.key_columns and c not in positions]
        if missing:
            raise Rejected(f"the header lacks the key column(s) {', '.join(missing)}")
        names = [c for c, _ in self.columns]
        convs = [CONVERTERS[t] for _, t in self.columns]
        types = dict(self.columns)
        order = [positions.get(c) for c in names]
        same_order = order == list(range(len(header)))
        width = len(header)
        nulls = frozenset(self.null_values)
        key_idx = [i for i, c in enumerate(names) if c in self.key_columns]
        # int() reads "5_17" as 517: the integer fields of a row are checked for "_" in one go
        int_idx = [i for i, (_, t) in enumerate(self.columns) if CONVERTERS[t] is int]
        int_fields = (
            operator.itemgetter(*int_idx)
            if len(int_idx) > 1
            else (lambda f: (f[int_idx[0]],))
            if int_idx
            else (lambda f: ())
        )

        def pick(record: Sequence[str]) -> list[str]:
            return [record[p] if p is not None else "" for p in order]

        def explain(fields: list[str]) -> Rejected:
            for name, conv, raw in zip(names, convs, fields):
                if raw in nulls:
                    continue
                if "\ufffd" in raw:
                    return Rejected(f"column {name} is not valid UTF-8")
                try:
                    if conv is int and "_" in raw:
                        raise ValueError(raw)
                    conv(raw)
                except (ValueError, OverflowError):
                    return Rejected(f"column {name}: {raw[:40]!r} is not a valid {types[name]}")
            return Rejected("invalid row")

        def convert(record: Sequence[str]) -> tuple:
            if len(record) != width:
                raise Rejected(f"{len(record)} fields where {columns_of} has {width}")
            fields = record if same_order else pick(record)
            try:
                values = tuple([None if raw in nulls else conv(raw) for conv, raw in zip(convs, fields)])
            except (ValueError, OverflowError):
                raise explain(list(fields)) from None
            for i in key_idx:
                v = values[i]
                if v is None:
                    raise Rejected(f"key column {names[i]} is empty")
                if type(v) is str and len(v) > MAX_KEY_CHARS and len(v.encode()) > MAX_KEY_BYTES:
                    raise Rejected(f"key column {names[i]} is longer than Cassandra's {MAX_KEY_BYTES} bytes")
            if "\ufffd" in "".join(fields) or "_" in "".join(int_fields(fields)):  # undecodable bytes; 5_17
                raise explain(list(fields))
            return values

        return convert


def open_text(path: str):
    """A file opened the way CSV wants it: UTF-8 (a BOM skipped), bad bytes marked, newlines kept."""
    return open(path, "r", encoding="utf-8-sig", errors="replace", newline="")


class RejectsFile:
    """Rejected records, kept as CSV: line number, reason, then the original fields."""

    def __init__(self, path: str, header: Iterable[str], limit: int = 100_000) -> None:
        self.path = path
        self.count = 0
        self.limit = limit
        self._fh = open(path, "w", encoding="utf-8", newline="")
        self._w = csv.writer(self._fh)
        self._w.writerow(["line", "reason", *header])

    def add(self, line: int, reason: str, record: Sequence[str]) -> None:
        self.count += 1
        if self.count <= self.limit:
            self._w.writerow([line, reason, *record])

    def close(self) -> None:
        self._fh.close()
