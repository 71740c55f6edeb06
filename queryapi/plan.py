"""From a JSON request to one CQL statement and its bound values, or a 400 that says what to change.

Pure: a :class:`~queryapi.tables.Table` and the request in, text and values out; nothing here talks to
Cassandra. Every value is a bind marker; every identifier comes from the table's metadata, quoted.

A filter (``where``) maps columns to a value (equality) or to operators::

    {"origin": "JFK", "year": 2013, "month": 1, "day": 1,
     "carrier": {"in": ["UA", "AA"]},
     "time_hour": {"gte": "2013-01-01T05:00:00Z", "lt": "2013-01-01T09:00:00Z"}}

A filter is served when Cassandra can go straight to the rows: the whole partition key by equality (or
``in``), then clustering columns in order, equalities then one range; any other column, or a partial
partition key, needs a Storage-Attached Index on it. A filter that would need ``ALLOW FILTERING`` (a read
of the whole table) is refused with :class:`NeedsIndex`, whose hint names the index to create.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mysimbdp.errors import BadQuery, NeedsIndex

from . import values
from .tables import Table, quote

OPS = {"eq": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "in": "IN"}
RANGE_OPS = ("lt", "lte", "gt", "gte")
MAX_TTL = 630_720_000  # Cassandra's ceiling: 20 years
ROW_TTL_KEY = "_ttl"


@dataclass(frozen=True)
class Condition:
    column: str
    op: str  # a key of OPS
    value: Any  # bound value (a list for "in")


@dataclass(frozen=True)
class Statement:
    cql: str
    params: tuple


def conditions(table: Table, where: object, *, max_in: int) -> list[Condition]:
    """The filter as checked conditions (columns known, operators known, values of the columns' types)."""
    if where is None:
        return []
    if not isinstance(where, dict):
        raise BadQuery('"where" must be an object of column: value or column: {"op": value}')
    if len(where) > 64:
        raise BadQuery('"where" names more than 64 columns')
    out: list[Condition] = []
    for column, spec in where.items():
        typ = table.column_type(column)
        enc = values.encoder(typ, column)
        ops = spec if isinstance(spec, dict) else {"eq": spec}
        if not ops:
            raise BadQuery(f"the filter on {column} is empty")
        for op, raw in ops.items():
            if op not in OPS:
                raise BadQuery(f"unknown operator {str(op)[:20]!r} on {column}", hint="use " + ", ".join(OPS))
            if op == "in":
                if not isinstance(raw, list) or not raw:
                    raise BadQuery(f'"in" on {column} takes a non-empty array')
                if len(raw) > max_in:
                    raise BadQuery(f'"in" on {column} has {len(raw)} values; at most {max_in}')
                vals = [enc(v) for v in raw]
                if any(v is None for v in vals):
                    raise BadQuery(f'"in" on {column} cannot hold null')
                out.append(Condition(column, op, vals))
                continue
            value = enc(raw)
            if value is None:
                raise BadQuery(f"a filter cannot compare {column} with null")
            if op in RANGE_OPS and values.split_type(typ)[0] not in values.RANGE_TYPES | {"text", "ascii", "varchar"}:
                raise BadQuery(f"{column} ({typ}) has no order to compare with {op}")
            out.append(Condition(column, op, value))
    return out


def check_served(table: Table, conds: list[Condition]) -> None:
    """Refuse a filter Cassandra could answer only by reading the whole table (the ALLOW FILTERING kind)."""
    by_col: dict[str, list[str]] = {}
    for c in conds:
        by_col.setdefault(c.column, []).append(c.op)
    pk = table.partition_key
    whole_key = all(col in by_col and by_col[col] in (["eq"], ["in"]) for col in pk)
    unserved: list[str] = []
    if whole_key:
        # clustering columns in order: equalities (or in), then at most one column with a range
        open_range = False
        for col in table.clustering_names:
            if col not in by_col:
                open_range = True  # a gap: later clustering columns cannot be used without an index
                continue
            ops = by_col[col]
            if open_range:
                unserved.append(col)
            elif ops in (["eq"], ["in"]):
                continue
            elif all(o in RANGE_OPS for o in ops):
                open_range = True
            else:
                unserved.append(col)
        key_cols = set(table.primary_key)
        unserved += [col for col in by_col if col not in key_cols]
    else:
        unserved = list(by_col)
    listed = [col for col in unserved if "in" in by_col[col] and col in table.indexes]
    if listed:
        raise BadQuery(
            f'"in" on {listed[0]} cannot be served by its index (Storage-Attached Indexes take eq and ranges)',
            code="unsupported_filter",
            hint="send one query per value",
        )
    missing = [col for col in unserved if col not in table.indexes]
    if not missing:
        return
    first = missing[0]
    key = ", ".join(pk)
    if pk == (first,):  # a single-column partition key cannot be indexed, nor ranged over
        raise NeedsIndex(
            f"a range on the partition key {first} would read the whole table {table.name}",
            hint=f"give {first} by equality or with in",
        )
    raise NeedsIndex(
        f"a filter on {', '.join(missing)} would read the whole table {table.name}",
        hint=(
            f'create an index: POST /v1/tables/{table.name}/indexes {{"column": "{first}"}}'
            f", or give the whole partition key ({key}) by equality"
        ),
    )


def where_clause(conds: list[Condition]) -> tuple[str, tuple]:
    if not conds:
        return "", ()
    parts = [f"{quote(c.column)} {OPS[c.op]} ?" for c in conds]
    return " WHERE " + " AND ".join(parts), tuple(c.value for c in conds)


def projection(table: Table, columns: object) -> list[str]:
    if columns is None:
        return list(table.columns)
    if not isinstance(columns, list) or not columns or len(columns) > 1000:
        raise BadQuery('"columns" must be a non-empty array of column names')
    out = []
    for col in columns:
        if not isinstance(col, str):
            raise BadQuery('"columns" must be a non-empty array of column names')
        table.column_type(col)
        if col not in out:
            out.append(col)
    return out


def select(table: Table, cols: list[str], conds: list[Condition], limit: int | None) -> Statement:
    where, params = where_clause(conds)
    cql = f"SELECT {', '.join(quote(c) for c in cols)} FROM {table.qualified}{where}"
    if limit is not None:
        cql += " LIMIT ?"
        params += (limit,)
    return Statement(cql, params)


def count(table: Table, conds: list[Condition]) -> Statement:
    where, params = where_clause(conds)
    return Statement(f"SELECT count(*) FROM {table.qualified}{where}", params)


def positive_int(body: dict, name: str, default: int | None, maximum: int) -> int | None:
    raw = body.get(name, default)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= maximum:
        raise BadQuery(f'"{name}" must be a whole number from 1 to {maximum:,}', code="bad_limit")
    return raw


def ttl_value(raw: object, where: str = "ttl") -> int | None:
    """A TTL in seconds: absent or null is none; 1 to 630,720,000 (20 years); anything else refused."""
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_TTL:
        raise BadQuery(f'"{where}" must be a whole number of seconds from 1 to {MAX_TTL:,} (20 years)', code="bad_ttl")
    return raw


def key_conditions(table: Table, key: object, *, full: bool) -> list[Condition]:
    """A row's key (``full``: the whole primary key) or a partition with a clustering prefix, by equality."""
    if not isinstance(key, dict) or not key:
        raise BadQuery('a key is an object of key column: value, e.g. {"id": 1}')
    for col in key:
        table.column_type(col)
        if col not in table.primary_key:
            raise BadQuery(f"{col} is not part of the primary key ({', '.join(table.primary_key)})")
    missing = [c for c in table.partition_key if c not in key]
    if full:
        missing += [c for c in table.clustering_names if c not in key]
    else:
        given = [c for c in table.clustering_names if c in key]
        if given != list(table.clustering_names[: len(given)]):
            raise BadQuery(
                "clustering columns of a key must be a prefix, in order: " + ", ".join(table.clustering_names)
            )
    if missing:
        raise BadQuery("the key lacks " + ", ".join(missing), code="incomplete_key")
    conds = []
    for col, raw in key.items():
        v = values.encoder(table.columns[col], col)(raw)
        if v is None:
            raise BadQuery(f"key column {col} cannot be null")
        conds.append(Condition(col, "eq", v))
    return conds


def delete(table: Table, conds: list[Condition]) -> Statement:
    where, params = where_clause(conds)
    return Statement(f"DELETE FROM {table.qualified}{where}", params)


def ttl_read(table: Table, conds: list[Condition]) -> tuple[Statement, list[str]]:
    """SELECT TTL(col) of the row's regular, non-collection columns."""
    key = set(table.primary_key)
    cols = [
        c
        for c, t in table.columns.items()
        if c not in key and values.split_type(t)[0] not in ("list", "set", "map") and "frozen" not in t
    ]
    where, params = where_clause(conds)
    shown = ", ".join(f"TTL({quote(c)})" for c in cols) if cols else "count(*)"
    return Statement(f"SELECT {shown} FROM {table.qualified}{where}", params), cols


def row_values(table: Table, row: object) -> tuple[tuple[str, ...], tuple, int | None]:
    """One row to write: its columns, the bound values and its own TTL (``_ttl``), checked."""
    if not isinstance(row, dict) or not row:
        raise BadQuery("each row is an object of column: value")
    row = dict(row)
    ttl = ttl_value(row.pop(ROW_TTL_KEY, None), ROW_TTL_KEY)
    missing = [c for c in table.primary_key if row.get(c) is None]
    if missing:
        raise BadQuery("a row lacks its key column(s) " + ", ".join(missing), code="incomplete_key")
    cols = tuple(sorted(row))
    return cols, tuple(values.encoder(table.column_type(c), c)(row[c]) for c in cols), ttl


def insert(table: Table, cols: tuple[str, ...], *, ttl: bool, if_not_exists: bool) -> str:
    cql = f"INSERT INTO {table.qualified} ({', '.join(quote(c) for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
    if if_not_exists:
        cql += " IF NOT EXISTS"
    if ttl:
        cql += " USING TTL ?"
    return cql
