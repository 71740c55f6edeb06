"""A tenant's tables as the query API sees them: columns, key and Storage-Attached Indexes, read from the
driver's schema metadata of the tenant's own session; and creating and dropping those indexes.

Table names come from a URL: they must match :data:`TABLE_NAME` (``b.flights`` and ``x; DROP`` do not) and
exist in the tenant's keyspace. Column names come from the metadata, never from the request, and are
always quoted when they reach CQL. The platform's own tables in a tenant keyspace (``mysimbdp_*``: the
stream inbox, binary objects) are not served here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cassandra.cluster import Session

from mysimbdp.errors import InvalidName, NotFound, TenantError

from . import values

TABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,47}")
PLATFORM_PREFIX = "mysimbdp_"


def quote(name: str) -> str:
    """A CQL identifier, quoted (names come from the schema metadata, so they are the exact stored ones)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Table:
    keyspace: str
    name: str
    columns: dict[str, str]  # name -> CQL type, in the table's order
    partition_key: tuple[str, ...]
    clustering: tuple[tuple[str, str], ...]  # (name, "ASC"|"DESC")
    indexes: dict[str, str]  # indexed column -> index name (Storage-Attached Indexes and others)
    index_kinds: dict[str, str] = field(default_factory=dict)  # index name -> "sai" | "legacy" | "custom"
    default_ttl: int = 0
    _decoders: dict = field(default_factory=dict, compare=False, repr=False)  # columns -> their decoders

    def decoders(self, cols: list[str]) -> list:
        """The value decoder of each column of ``cols`` (None where the driver's value is sent as it is)."""
        key = tuple(cols)
        hit = self._decoders.get(key)
        if hit is None:
            hit = [values.decoder(self.columns[c]) for c in cols]
            if len(self._decoders) < 64:
                self._decoders[key] = hit
        return hit

    @property
    def qualified(self) -> str:
        return f"{quote(self.keyspace)}.{quote(self.name)}"

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.partition_key + tuple(c for c, _ in self.clustering)

    @property
    def clustering_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.clustering)

    def column_type(self, column: str) -> str:
        if column not in self.columns:
            raise TenantError(
                f"table {self.name} has no column {column!r}",
                code="unknown_column",
                hint="columns: " + ", ".join(list(self.columns)[:40]),
            )
        return self.columns[column]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "columns": [{"name": c, "type": t} for c, t in self.columns.items()],
            "partition_key": list(self.partition_key),
            "clustering": [{"name": c, "order": o} for c, o in self.clustering],
            "indexes": [
                {"name": i, "column": c, "kind": self.index_kinds.get(i, "custom")} for c, i in self.indexes.items()
            ],
            "default_ttl": self.default_ttl,
        }


def check_table_name(name: str) -> str:
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid table name {name[:60]!r}" if isinstance(name, str) else "invalid table name",
            hint="a table name is letters, digits and _ (a table of your own keyspace, without a keyspace prefix)",
        )
    return name


_KNOWN: dict[tuple[str, str], tuple[object, Table]] = {}  # (keyspace, table) -> (the driver's metadata, ours)


def _from_metadata(tm) -> Table:
    """Our view of the driver's table metadata; made once per metadata object (the driver makes a new one
    whenever the table's schema changes, an index included)."""
    key = (tm.keyspace_name, tm.name)
    hit = _KNOWN.get(key)
    if hit is not None and hit[0] is tm:
        return hit[1]
    table = _describe(tm)
    if len(_KNOWN) > 4096:
        _KNOWN.clear()
    _KNOWN[key] = (tm, table)
    return table


def _describe(tm) -> Table:
    indexes: dict[str, str] = {}
    kinds: dict[str, str] = {}
    for iname, im in tm.indexes.items():
        target = (im.index_options or {}).get("target", "")
        column = target
        m = re.fullmatch(r'(?:values|keys|entries|full)\((.+)\)', target)
        if m:
            column = m.group(1)
        column = column.strip('"').replace('""', '"')
        cls = (im.index_options or {}).get("class_name", "")
        sai = cls.lower() == "sai" or cls.endswith("StorageAttachedIndex")
        kinds[iname] = "sai" if sai else ("custom" if im.kind == "CUSTOM" else "legacy")
        if column:
            indexes[column] = iname
    order = {c.name: ("DESC" if c.is_reversed else "ASC") for c in tm.clustering_key}
    return Table(
        keyspace=tm.keyspace_name,
        name=tm.name,
        columns={c: col.cql_type for c, col in tm.columns.items()},
        partition_key=tuple(c.name for c in tm.partition_key),
        clustering=tuple((c.name, order[c.name]) for c in tm.clustering_key),
        indexes=indexes,
        index_kinds=kinds,
        default_ttl=int(tm.options.get("default_time_to_live", 0) or 0),
    )


def list_tables(session: Session, keyspace: str) -> list[Table]:
    ks = session.cluster.metadata.keyspaces.get(keyspace)
    if ks is None:
        return []
    return [_from_metadata(tm) for name, tm in sorted(ks.tables.items()) if not name.startswith(PLATFORM_PREFIX)]


def get_table(session: Session, keyspace: str, name: str) -> Table:
    """The table ``name`` of ``keyspace``, from the session's schema metadata (refreshed once if unknown:
    the table may have been made a moment ago by the tenant's app)."""
    check_table_name(name)
    if name.startswith(PLATFORM_PREFIX):
        raise NotFound(f"no table {name!r}", code="no_such_table", hint="mysimbdp_* tables are the platform's own")
    for attempt in range(3):
        ks = session.cluster.metadata.keyspaces.get(keyspace)
        tm = ks.tables.get(name) if ks is not None else None
        if tm is not None:
            return _from_metadata(tm)
        if attempt < 2:  # made a moment ago (by the tenant's app): the driver hears of it with a delay
            try:
                session.cluster.refresh_table_metadata(keyspace, name)
            except Exception:  # noqa: BLE001 - no such table, or the schema is settling: look once more
                import time

                time.sleep(0.2)
    raise NotFound(f"no table {name!r} in your keyspace", code="no_such_table", hint="GET /v1/tables lists them")


def index_name(table: str, column: str) -> str:
    """The name the API gives the index of ``column`` on ``table`` (at most 48 characters: a CQL name)."""
    base = re.sub(r"[^a-z0-9_]", "", f"{table}_{column}".lower())[:40] or "idx"
    if base == f"{table}_{column}":
        return base + "_sai"
    import hashlib

    return base[:36] + "_" + hashlib.sha256(f"{table}/{column}".encode()).hexdigest()[:6] + "_sai"


def create_index(session: Session, table: Table, column: str) -> dict:
    """``CREATE INDEX ... USING 'sai'`` on one column; an existing index on it is answered as it is."""
    typ = table.column_type(column)
    head, _ = values.split_type(typ)
    if column in table.indexes:
        return {"name": table.indexes[column], "column": column, "created": False}
    if table.partition_key == (column,):
        raise TenantError(
            f"{column} is the whole partition key: a query on it needs no index",
            code="index_not_needed",
        )
    if head not in values.SCALARS and head not in ("list", "set", "map", "vector"):
        raise TenantError(f"columns of type {typ} cannot have a Storage-Attached Index", code="index_unsupported")
    name = index_name(table.name, column)
    ks = session.cluster.metadata.keyspaces.get(table.keyspace)
    taken = {i for t in (ks.tables.values() if ks else ()) for i in t.indexes}
    if name in taken:  # index names are per keyspace: table a_b's column c and table a's column b_c meet
        import hashlib

        name = name[:-4][:36] + "_" + hashlib.sha256(f"{table.name}/{column}".encode()).hexdigest()[:6] + "_sai"
        if name in taken:
            raise TenantError(f"an index named {name} exists already on another column", code="index_name_taken")
    session.execute(
        f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {table.qualified} ({quote(column)}) USING 'sai'",
        timeout=120,
    )
    return {"name": name, "column": column, "created": True}


def drop_index(session: Session, table: Table, name: str) -> None:
    if name not in table.indexes.values():
        raise NotFound(f"table {table.name} has no index {name[:60]!r}", code="no_such_index")
    session.execute(f"DROP INDEX IF EXISTS {quote(table.keyspace)}.{quote(name)}", timeout=120)
