"""Rows: a declarative :class:`Table` (schema, insert, type conversion) and robust CSV reading.

CSV is read with Python's csv module over a UTF-8 (BOM tolerated) text stream with universal newlines
off, so quoted commas, quoted newlines and Windows line ends come out right. A record that cannot be
converted raises :class:`Rejected`; the caller counts it, keeps it aside and goes on.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Callable, Iterable, Iterator, Sequence

_IDENT = re.compile(r"[a-z][a-z0-9_]{0,47}")
csv.field_size_limit(1 << 24)


class Rejected(ValueError):
    """This record is malformed; the message says why."""


def _int(text: str) -> int:
    return int(text)


def _float(text: str) -> float:
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


def _timestamp(text: str) -> datetime:
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    value = datetime.fromisoformat(t)
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _date(text: str) -> date:
    return date.fromisoformat(text.strip())


CONVERTERS: dict[str, Callable[[str], object]] = {
    "text": str, "varchar": str, "ascii": str,
    "int": _int, "bigint": _int, "smallint": _int, "tinyint": _int, "varint": _int,
    "double": _float, "float": _float,
    "boolean": _bool, "timestamp": _timestamp, "date": _date,
}


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

    # --- CQL ----------------------------------------------------------------------------------------
    def create_cql(self, keyspace: str) -> str:
        cols = ", ".join(f"{c} {t}" for c, t in self.columns)
        opts = f" WITH {self.options}" if self.options else ""
        return f"CREATE TABLE IF NOT EXISTS {keyspace}.{self.name} ({cols}, PRIMARY KEY {self.primary_key}){opts}"

    def insert_cql(self, keyspace: str) -> str:
        cols = ", ".join(c for c, _ in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        return f"INSERT INTO {keyspace}.{self.name} ({cols}) VALUES ({marks})"

    def partition_of(self, values: Sequence[object]) -> tuple:
        idx = self._partition_idx
        return tuple(values[i] for i in idx)

    @property
    def _partition_idx(self) -> tuple[int, ...]:
        names = [c for c, _ in self.columns]
        return tuple(names.index(c) for c in self.partition_columns)

    # --- conversion -----------------------------------------------------------------------------------
    def converter(self, header: Sequence[str]) -> Callable[[Sequence[str]], tuple]:
        """A function turning one CSV record (in ``header``'s column order) into a typed tuple."""
        positions = {h.strip().lower(): i for i, h in enumerate(header)}
        missing = [c for c, _ in self.columns if c in self.key_columns and c not in positions]
        if missing:
            raise Rejected(f"the header lacks the key column(s) {', '.join(missing)}")
        plan = [(name, positions.get(name), CONVERTERS[typ], name in self.key_columns) for name, typ in self.columns]
        width = len(header)
        nulls = frozenset(self.null_values)

        def convert(record: Sequence[str]) -> tuple:
            if len(record) != width:
                raise Rejected(f"{len(record)} fields where the header has {width}")
            out = []
            for name, pos, conv, is_key in plan:
                raw = record[pos] if pos is not None else ""
                if raw in nulls:
                    if is_key:
                        raise Rejected(f"key column {name} is empty")
                    out.append(None)
                    continue
                if "\ufffd" in raw:
                    raise Rejected(f"column {name} is not valid UTF-8")
                try:
                    out.append(conv(raw))
                except (ValueError, OverflowError):
                    raise Rejected(f"column {name}: {raw[:40]!r} is not a valid {dict(self.columns)[name]}") from None
            return tuple(out)

        return convert


def open_text(path: str):
    """A file opened the way CSV wants it: UTF-8 (a BOM skipped), bad bytes marked, newlines kept."""
    return open(path, "r", encoding="utf-8-sig", errors="replace", newline="")


def sniff_dialect(path: str) -> type[csv.Dialect] | csv.Dialect:
    if path.lower().endswith(".tsv"):
        return csv.excel_tab
    return csv.excel


def read_csv(path: str) -> tuple[list[str], Iterator[tuple[int, list[str]]]]:
    """The header and an iterator of (line number where the record ends, record)."""
    fh = open_text(path)
    reader = csv.reader(fh, sniff_dialect(path))
    try:
        header = next(reader)
    except StopIteration:
        fh.close()
        raise Rejected("the file is empty") from None
    except csv.Error as exc:
        fh.close()
        raise Rejected(f"the header is not valid CSV: {exc}") from None

    def records() -> Iterator[tuple[int, list[str]]]:
        with fh:
            while True:
                try:
                    record = next(reader)
                except StopIteration:
                    return
                except csv.Error as exc:  # e.g. a NUL byte or an unterminated quote
                    yield reader.line_num, ["\0csv-error", str(exc)]
                    continue
                if record:
                    yield reader.line_num, record

    return header, records()


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
