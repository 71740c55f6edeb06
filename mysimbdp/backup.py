"""Backups of tenants, and restores from them.

A backup is one folder in the backup folder (``backup.folder``, by default ``$MYSIMBDP_HOME/backups``),
named ``<tenant>-<UTC time>`` (``airline-20250301T031500Z``), that holds all it takes to make the tenant
again::

    manifest.json     what it is (tenant, time, manual or scheduled, tables) and every other file's size and sha256
    manifest.sha256   the sha256 of manifest.json
    schema.json       the keyspace's user types, tables (columns, dropped columns) and indexes, as CQL
    schema.cql        the same statements, for people to read
    tenant.json       the tenant's registry row: constraints, apps, the bcrypt and broker hashes of its password
    receipts.json     its rows in the platform keyspace: job receipts, files already received, objects' usage
    apps/<kind>/      its installed batch and stream apps
    data/<table>/     the SSTables of a ``nodetool snapshot`` of its keyspace, copied out

It is written under a hidden temporary name and renamed once complete, so a backup that is listed is whole.
A restore checks every file against the manifest first (nothing missing, nothing extra, every size and
checksum) and refuses a damaged backup, naming the file, before it changes anything. It then makes the
tenant again if it is gone (with the password it had), creates the tables that are missing, loads the
SSTables with ``nodetool import`` and puts back the receipts that are missing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from cassandra.cluster import Session
from cassandra.metadata import protect_name

from . import bounded, constraints, names
from .config import Config
from .errors import (
    BackupNotFound,
    ConfigError,
    Conflict,
    CorruptBackup,
    MysimbdpError,
    RestoreConflict,
    TenantError,
)
from .jobs import months_since
from .services import cassandra_node
from .tenants import Registry

log = logging.getLogger(__name__)

FORMAT = 1
KINDS = ("manual", "scheduled")
NAME = re.compile(r"(?P<tenant>[a-z][a-z0-9_]{2,31})-(?P<time>[0-9]{8}T[0-9]{6}Z)(?:-(?P<n>[0-9]{1,3}))?")
MANIFEST, MANIFEST_SUM = "manifest.json", "manifest.sha256"
MAX_MANIFEST = 64 << 20  # a manifest line is ~150 bytes: far more SSTable files than a node holds
MAX_JSON = 256 << 20  # receipts.json of a tenant with a million jobs
CHUNK = 1 << 20

#: the tenant's rows in the platform keyspace that a backup keeps: table -> the columns that tell its rows
#: apart besides ``tenant`` (``jobs`` is partitioned by month too)
RECEIPTS = {"jobs": ("bucket", "job_id"), "files_by_checksum": ("sha256",), "object_usage": ("version",)}

_DDL = re.compile(r'(?P<head>CREATE (?:TYPE|TABLE|(?:CUSTOM )?INDEX (?:"[^"]+"|\w+) ON) )(?P<ks>"[^"]+"|\w+)\.')
_CQL_TYPE = re.compile(r"[a-z0-9_<>, ]{1,200}")


@dataclass(frozen=True)
class Backup:
    """One backup in the backup folder, as its manifest describes it."""

    name: str
    path: Path
    tenant: str
    created_at: datetime
    kind: str
    size: int
    files: int
    tables: tuple[str, ...]
    problem: str = ""  # set when the manifest could not be read (the backup is not usable)

    def summary(self) -> dict:
        return {
            "name": self.name,
            "tenant": self.tenant,
            "created_at": self.created_at.isoformat(),
            "kind": self.kind,
            "size_bytes": self.size,
            "files": self.files,
            "tables": list(self.tables),
            "path": str(self.path),
            "problem": self.problem or None,
        }


@dataclass(frozen=True)
class Restored:
    tenant: str
    backup: str
    rebuilt: bool  # the tenant was made again (from the backup's registry row)
    tables_created: tuple[str, ...]
    tables_loaded: tuple[str, ...]
    receipts: int  # rows put back into the platform keyspace (those already there are left as they are)


# --- the backup folder ------------------------------------------------------------------------------------


def _every_node_whole(cfg: Config, session: Session, ks: str | None = None) -> None:
    """Backups snapshot node 1, and restores import on every node: on a cluster that is whole only when
    every node holds every row (replication = nodes: 3 of 3). A keyspace still of one replica (an
    installation moved to a cluster before ``mysimbdp node replicate``) would be backed up in part."""
    if not cfg.cluster:
        return
    want = int(cfg.replication_map().get("datacenter1", "0"))
    if want < cfg.cassandra.nodes:
        raise ConfigError(
            f"backups of a cluster of {cfg.cassandra.nodes} nodes need every node to hold every row "
            f"(replication {cfg.cassandra.nodes}); this one keeps {want} replicas",
            hint="docs/scale-out.md",
        )
    if ks is None:
        return
    row = session.execute("SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = %s", (ks,)).one()
    if row is not None and not cassandra_node.same_replication(row.replication, cfg.replication_map()):
        raise ConfigError(
            f"keyspace {ks} is not yet replicated to every node, so no node holds all of it",
            hint="run `mysimbdp node replicate` first",
        )


def folder(cfg: Config) -> Path:
    root = cfg.backup_folder
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)  # it holds tenants' data and their password hashes
    return root


@contextmanager
def _locked(cfg: Config, tenant: str) -> Iterator[None]:
    """One backup or restore of a tenant at a time (a scheduled one and one by hand, say)."""
    path = folder(cfg) / f".lock-{names.tenant(tenant)}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Conflict(f"a backup or restore of {tenant} is already under way", hint="try again later") from None
        yield
    finally:
        os.close(fd)


def list_backups(cfg: Config, tenant: str | None = None) -> list[Backup]:
    """Every complete backup (of ``tenant``), oldest first; one with an unreadable manifest has ``problem``."""
    root = cfg.backup_folder
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        m = NAME.fullmatch(entry.name)
        if not m or not entry.is_dir() or entry.is_symlink() or (tenant and m["tenant"] != tenant):
            continue
        try:
            out.append(_describe(entry, _read_manifest(entry)))
        except CorruptBackup as exc:
            when = datetime.strptime(m["time"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
            out.append(Backup(entry.name, entry, m["tenant"], when, "?", 0, 0, (), problem=exc.message))
    return sorted(out, key=lambda b: (b.tenant, b.created_at, b.name))


def find(cfg: Config, ref: str) -> Path:
    """A backup by its name in the backup folder, or by its path."""
    if "/" in ref:
        path = Path(ref).expanduser().resolve()
    elif NAME.fullmatch(ref):
        path = cfg.backup_folder / ref
    else:
        raise BackupNotFound(f"{ref!r} is not a backup name", hint="see `mysimbdp backup list`")
    if not path.is_dir():
        raise BackupNotFound(
            f"no backup {ref}", hint=f"see `mysimbdp backup list` (backups are in {cfg.backup_folder})"
        )
    return path


def _describe(path: Path, manifest: dict) -> Backup:
    files = manifest["files"]
    return Backup(
        path.name,
        path,
        manifest["tenant"],
        datetime.fromisoformat(manifest["created_at"]),
        manifest["kind"],
        sum(f["size"] for f in files.values()),
        len(files),
        tuple(manifest["tables"]),
    )


# --- making a backup --------------------------------------------------------------------------------------


def backup(cfg: Config, session: Session, tenant: str, *, kind: str = "manual") -> Backup:
    """Back up one ready tenant: snapshot, schema, registry row, receipts, apps, manifest. On a cluster,
    node 1 is repaired first (then it holds every row any two nodes acknowledged) and its snapshot taken."""
    name = names.tenant(tenant)
    _every_node_whole(cfg, session, name)
    registry = Registry(cfg, session)
    t = registry.get(name)  # "no tenant X" for one that does not exist (or is not ready)
    root = folder(cfg)
    with _locked(cfg, name):
        for leftover in root.glob(f".tmp-{name}-*"):  # of a backup that died (we hold the lock)
            shutil.rmtree(leftover, ignore_errors=True)
        now = datetime.now(timezone.utc).replace(microsecond=0)
        final = root / f"{name}-{now:%Y%m%dT%H%M%SZ}"
        n = 0
        while final.exists():
            n += 1
            final = root / f"{name}-{now:%Y%m%dT%H%M%SZ}-{n}"
        tmp = root / f".tmp-{final.name}"
        tmp.mkdir(mode=0o700)
        try:
            files: dict[str, dict] = {}
            started = time.monotonic()
            tag = f"mysimbdp-{final.name}"
            if cfg.cluster:
                cassandra_node.nodetool(cfg, "repair", "-full", "--", name, timeout=3600)
            cassandra_node.nodetool(
                cfg, "snapshot", "-t", tag, "--ttl", f"{cfg.backup.snapshot_ttl_hours}h", "--", name
            )
            try:
                schema = _schema(session, name)  # after the snapshot: every table it holds is described
                tables = _copy_snapshot(cfg, name, tag, schema, tmp, files)
            finally:
                cassandra_node.nodetool(cfg, "clearsnapshot", "-t", tag, "--", name)
            _write_json(tmp, "schema.json", schema, files)
            _write(tmp, "schema.cql", _schema_text(schema).encode(), files)
            row = session.execute(session.prepare(f"SELECT * FROM {cfg.keyspace}.tenants WHERE name = ?"), (name,))
            _write_json(tmp, "tenant.json", _encode_row(row.one()), files)
            receipts = _read_receipts(cfg, session, name, t.created_at)
            _write_json(tmp, "receipts.json", receipts, files)
            _copy_apps(cfg, name, tmp, files)
            manifest = {
                "format": FORMAT,
                "tenant": name,
                "keyspace": name,
                "created_at": now.isoformat(),
                "kind": kind,
                "cassandra": cfg.cassandra.version,
                "seconds": round(time.monotonic() - started, 3),
                "tables": tables,
                "receipts": {table: len(rows) for table, rows in receipts.items()},
                "files": dict(sorted(files.items())),
            }
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            _write(tmp, MANIFEST, body, {})
            _write(tmp, MANIFEST_SUM, f"{hashlib.sha256(body).hexdigest()}  {MANIFEST}\n".encode(), {})
            _fsync_dir(tmp)
            os.rename(tmp, final)
            _fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("backed up tenant %s into %s", name, final)
    return _describe(final, manifest)


def _schema(session: Session, ks: str) -> dict:
    """The keyspace's user types, tables and indexes as the driver renders them, with what a restore needs
    besides: each table's columns and primary key (to check a table that exists), its id (to find its
    snapshot) and its dropped columns (SSTables may still hold their values: without them Cassandra refuses
    the files)."""
    km = _keyspace(session, ks)
    if km is None:
        raise MysimbdpError(f"keyspace {ks} is gone")
    if km.functions or km.aggregates or km.views:
        raise TenantError(f"keyspace {ks} has functions, aggregates or views, which backups do not cover yet")
    ids = {
        r.table_name: r.id
        for r in session.execute("SELECT table_name, id FROM system_schema.tables WHERE keyspace_name = %s", (ks,))
    }
    dropped: dict[str, list[dict]] = {}
    for r in session.execute(
        "SELECT table_name, column_name, dropped_time, kind, type FROM system_schema.dropped_columns"
        " WHERE keyspace_name = %s",
        (ks,),
    ):
        at = r.dropped_time if r.dropped_time.tzinfo else r.dropped_time.replace(tzinfo=timezone.utc)
        micros = int(at.timestamp() * 1000) * 1000
        dropped.setdefault(r.table_name, []).append(
            {"column": r.column_name, "type": r.type, "kind": r.kind, "dropped_us": micros}
        )
    tables = {}
    for name, tm in sorted(km.tables.items()):
        names.cql_identifier(name)  # it becomes a folder and a nodetool argument
        if name not in ids:
            continue  # dropped since the metadata was read
        tables[name] = {
            "id": str(ids[name]),
            "create": tm.as_cql_query(formatted=True),
            "columns": {c.name: c.cql_type for c in tm.columns.values()},
            "partition_key": [c.name for c in tm.partition_key],
            "clustering_key": [c.name for c in tm.clustering_key],
            "dropped": sorted(dropped.get(name, []), key=lambda d: d["dropped_us"]),
            "indexes": {i.name: i.as_cql_query() for i in sorted(tm.indexes.values(), key=lambda i: i.name)},
        }
    return {"keyspace": ks, "types": km.user_type_strings(), "tables": tables}


def _keyspace(session: Session, ks: str):
    """The driver's metadata of keyspace ``ks`` (None if there is none), read again now: its tables, their
    indexes and its user types as they are (the driver's own refresh of a keyspace leaves them out)."""
    cluster = session.cluster
    cluster.refresh_keyspace_metadata(ks)
    km = cluster.metadata.keyspaces.get(ks)
    if km is None:
        return None
    query = "SELECT {0} FROM system_schema.{1} WHERE keyspace_name = %s"
    tables = {r[0] for r in session.execute(query.format("table_name", "tables"), (ks,))}
    for table in sorted(tables | set(km.tables)):
        cluster.refresh_table_metadata(ks, table)
    types = {r[0] for r in session.execute(query.format("type_name", "types"), (ks,))}
    for name in sorted(types | set(km.user_types)):
        cluster.refresh_user_type_metadata(ks, name)
    return cluster.metadata.keyspaces.get(ks)


def _schema_text(schema: dict) -> str:
    lines = [f"-- keyspace {schema['keyspace']}, as backed up by mysimbdp (restore: `mysimbdp restore`)"]
    lines += [f"{cql};" for cql in schema["types"]]
    for table, spec in schema["tables"].items():
        lines.append(f"{spec['create']};")
        lines += [f"{cql};" for cql in _dropped_cql(schema["keyspace"], table, spec)]
        lines += [f"{cql};" for cql in spec["indexes"].values()]
    return "\n\n".join(lines) + "\n"


def _copy_snapshot(cfg: Config, ks: str, tag: str, schema: dict, tmp: Path, files: dict) -> dict:
    """Copy each table's snapshot files (hard links into the live data) out into ``data/<table>/``."""
    data = cfg.paths.cassandra / "data" / ks
    tables = {}
    for table, spec in schema["tables"].items():
        snap = data / f"{table}-{uuid.UUID(spec['id']).hex}" / "snapshots" / tag
        count = size = 0
        if snap.is_dir():
            (tmp / "data" / table).mkdir(parents=True, mode=0o700)
            for src in sorted(snap.iterdir()):
                if not src.is_file() or src.is_symlink():
                    continue  # a legacy index's folder: indexes are built again on import
                rel = f"data/{table}/{src.name}"
                files[rel] = _copy_file(src, tmp / rel)
                count += 1
                size += files[rel]["size"]
        tables[table] = {"files": count, "bytes": size}
    return tables


def _read_receipts(cfg: Config, session: Session, tenant: str, created_at: datetime | None) -> dict:
    ks = cfg.keyspace
    out: dict[str, list] = {}
    for table in RECEIPTS:
        rows = []
        if table == "jobs":
            query = session.prepare(f"SELECT * FROM {ks}.jobs WHERE tenant = ? AND bucket = ?")
            for bucket in months_since(created_at):
                rows += [_encode_row(r) for r in session.execute(query, (tenant, bucket))]
        else:
            query = session.prepare(f"SELECT * FROM {ks}.{table} WHERE tenant = ?")
            rows = [_encode_row(r) for r in session.execute(query, (tenant,))]
        out[table] = rows
    return out


def _copy_apps(cfg: Config, tenant: str, tmp: Path, files: dict) -> None:
    for kind in ("batch", "stream"):
        src = cfg.paths.tenant_apps(tenant) / kind
        if not (src / "app.json").is_file():
            continue
        for root, dirs, fnames in os.walk(src):
            dirs[:] = sorted(d for d in dirs if not Path(root, d).is_symlink())
            for fname in sorted(fnames):
                path = Path(root) / fname
                if path.is_symlink() or not path.is_file():
                    continue
                rel = f"apps/{kind}/{path.relative_to(src).as_posix()}"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                files[rel] = _copy_file(path, tmp / rel)


# --- files, checksums, the manifest ---------------------------------------------------------------------


def _copy_file(src: Path, dst: Path) -> dict:
    digest, size = hashlib.sha256(), 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            fout.write(chunk)
            size += len(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return {"size": size, "sha256": digest.hexdigest()}


def _write(tmp: Path, rel: str, body: bytes, files: dict) -> None:
    fd = os.open(tmp / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    files[rel] = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def _write_json(tmp: Path, rel: str, data: object, files: dict) -> None:
    _write(tmp, rel, json.dumps(data, indent=1, sort_keys=True).encode(), files)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _read_manifest(path: Path) -> dict:
    """manifest.json, checked against manifest.sha256 and for its shape."""
    name = path.name
    try:
        body = bounded.read_regular(path / MANIFEST, MAX_MANIFEST)
        expected = bounded.read_regular(path / MANIFEST_SUM, 4096).decode("ascii", "replace").split()
    except FileNotFoundError as exc:
        raise CorruptBackup(f"backup {name}: {Path(exc.filename).name} is missing") from None
    except (OSError, ValueError) as exc:
        raise CorruptBackup(f"backup {name}: cannot read its manifest: {exc}") from None
    if not expected or hashlib.sha256(body).hexdigest() != expected[0]:
        raise CorruptBackup(f"backup {name}: {MANIFEST} does not match {MANIFEST_SUM} (the backup is damaged)")
    try:
        manifest = bounded.loads_json(body, max_bytes=MAX_MANIFEST, max_depth=8)
        assert isinstance(manifest, dict) and manifest.get("format") == FORMAT
        names.tenant(manifest["tenant"])
        assert manifest["kind"] in KINDS and isinstance(manifest["tables"], dict)
        datetime.fromisoformat(manifest["created_at"])
        for table in manifest["tables"]:
            names.cql_identifier(table)
        for rel, meta in manifest["files"].items():
            assert isinstance(rel, str) and isinstance(meta["size"], int) and isinstance(meta["sha256"], str)
    except (ValueError, AssertionError, KeyError, TypeError, AttributeError, TenantError):
        raise CorruptBackup(f"backup {name}: {MANIFEST} is not a mysimbdp backup manifest (format {FORMAT})") from None
    return manifest


def verify(path: Path) -> dict:
    """Check a backup completely: its manifest, then every file (nothing missing, nothing extra, each size
    and sha256). Return the manifest; raise CorruptBackup naming the first file that is wrong."""
    manifest = _read_manifest(path)
    listed: dict[str, dict] = manifest["files"]
    present = set()
    for root, dirs, fnames in os.walk(path):
        for entry in sorted(dirs + fnames):
            full = Path(root) / entry
            rel = full.relative_to(path).as_posix()
            if full.is_symlink() or not (full.is_dir() or full.is_file()):
                raise CorruptBackup(f"backup {path.name}: {rel} is not a regular file or folder")
            if full.is_file():
                present.add(rel)
    present -= {MANIFEST, MANIFEST_SUM}
    missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
    if missing:
        raise CorruptBackup(f"backup {path.name}: {_these(missing)} missing (the backup is damaged)")
    if extra:
        raise CorruptBackup(f"backup {path.name}: {_these(extra)} not in its manifest (the backup was changed)")
    for rel in sorted(listed):
        size = (path / rel).stat().st_size
        if size != listed[rel]["size"]:
            raise CorruptBackup(
                f"backup {path.name}: {rel} has {size} bytes, its manifest says {listed[rel]['size']}"
                " (the backup is damaged)"
            )
    for rel in sorted(listed):
        if _sha256(path / rel) != listed[rel]["sha256"]:
            raise CorruptBackup(f"backup {path.name}: {rel} does not match its sha256 (the backup is damaged)")
    return manifest


def _these(files: list[str]) -> str:
    """The first file, and how many more, with their verb: "a is", "a and 2 more files are"."""
    return f"{files[0]} is" if len(files) == 1 else f"{files[0]} and {len(files) - 1} more files are"


def _load_json(path: Path, rel: str) -> object:
    try:
        return bounded.loads_json(bounded.read_regular(path / rel, MAX_JSON), max_bytes=MAX_JSON, max_depth=16)
    except (OSError, ValueError) as exc:
        raise CorruptBackup(f"backup {path.name}: {rel} cannot be read: {exc}") from None


# --- rows of the platform keyspace as JSON -------------------------------------------------------------


def _encode_row(row) -> dict:
    out = {}
    for key, value in row._asdict().items():
        if isinstance(value, uuid.UUID):
            value = str(value)
        elif isinstance(value, datetime):
            value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
        elif isinstance(value, (set, frozenset)) or type(value).__name__ == "SortedSet":
            value = sorted(value)
        out[key] = value
    return out


def _decode(value: object, cql_type: str) -> object:
    if value is None:
        return None
    if cql_type in ("uuid", "timeuuid"):
        return uuid.UUID(str(value))
    if cql_type == "timestamp":
        return datetime.fromisoformat(str(value))
    if cql_type.startswith("set<"):
        return set(value)  # type: ignore[arg-type]
    return value


# --- restoring ------------------------------------------------------------------------------------------


def restore(
    cfg: Config,
    session: Session,
    tenant: str,
    ref: str,
    *,
    as_name: str | None = None,
    overwrite: bool = False,
    password: str | None = None,
) -> Restored:
    """Restore ``tenant`` (as ``as_name``) from the backup ``ref``. Nothing is changed unless the backup is
    whole, and the target's tables fit it, and (unless ``overwrite``) they hold no rows. On a cluster the
    SSTables are imported on every node (each holds every row)."""
    tenant = names.tenant(tenant)
    target = names.tenant(as_name or tenant)
    _every_node_whole(cfg, session, target)
    path = find(cfg, ref)
    manifest = verify(path)
    if manifest["tenant"] != tenant:
        raise TenantError(f"backup {path.name} is of tenant {manifest['tenant']}, not {tenant}")
    schema = _load_json(path, "schema.json")
    record = _load_json(path, "tenant.json")
    receipts = _load_json(path, "receipts.json")
    _check_shape(path, schema, record, receipts)
    registry = Registry(cfg, session)
    with _locked(cfg, target):
        existing = registry.find(target)
        if existing is not None and existing.state == "deleting":
            raise Conflict(f"tenant {target} is being deleted", hint="run `mysimbdp tenant delete` again first")
        rebuilt = existing is None or existing.state != "ready"  # not ready: a restore (or create) cut short
        _check_fits(session, target, schema, rows_ok=overwrite or rebuilt)
        if password is not None and not rebuilt:
            raise TenantError(f"tenant {target} exists: its password stays", hint="use `mysimbdp tenant update`")
        if rebuilt:
            registry.rebuild(
                target,
                record.get("password_hash") or "",
                record.get("broker_hash") or "",
                constraints.loads(record.get("constraints") or "{}", f"backup {path.name}: tenant.json"),
                {kind: _app_folder(path, kind) for kind in ("batch", "stream")},
                datetime.fromisoformat(record["created_at"]) if record.get("created_at") else None,
                password=password,
            )
        created = _create_schema(session, schema, target)
        if overwrite and not rebuilt:
            for table in schema["tables"]:
                session.execute(f"TRUNCATE {target}.{table}")  # checked identifiers: names.*
        loaded = []
        for table in schema["tables"]:
            src = path / "data" / table
            if src.is_dir() and any(src.glob("*-Data.db")):
                _import(cfg, target, table, src)
                loaded.append(table)
        count = _restore_receipts(cfg, session, receipts, tenant, target)
        if rebuilt:
            registry.mark_ready(target)
    log.info("restored tenant %s from %s: tables %s", target, path.name, ", ".join(loaded) or "-")
    return Restored(target, path.name, rebuilt, tuple(created), tuple(loaded), count)


def _check_shape(path: Path, schema: object, record: object, receipts: object) -> None:
    """The backup's JSON files hold what a restore reads from them, names that are safe in CQL included."""
    try:
        assert isinstance(schema, dict) and isinstance(record, dict) and isinstance(receipts, dict)
        names.tenant(schema["keyspace"])
        assert all(isinstance(cql, str) for cql in schema["types"])
        for table, spec in schema["tables"].items():
            names.cql_identifier(table)
            assert isinstance(spec["create"], str) and isinstance(spec["indexes"], dict)
            assert isinstance(spec["columns"], dict) and isinstance(spec["dropped"], list)
            assert isinstance(spec["partition_key"], list) and isinstance(spec["clustering_key"], list)
        for table in receipts:
            assert table in RECEIPTS and isinstance(receipts[table], list)
            assert all(isinstance(row, dict) for row in receipts[table])
    except (AssertionError, KeyError, TypeError, AttributeError, TenantError):
        raise CorruptBackup(
            f"backup {path.name}: schema.json, tenant.json or receipts.json is not as expected"
        ) from None


def _app_folder(path: Path, kind: str) -> Path | None:
    folder = path / "apps" / kind
    return folder if (folder / "app.json").is_file() else None


def _retarget(cql: str, old: str, new: str, where: str) -> str:
    """A statement of the backup with its keyspace replaced by ``new`` (the names before the first dot)."""
    m = _DDL.match(cql)
    if m is None or m["ks"] not in (old, protect_name(old)):
        raise CorruptBackup(f"{where}: a statement that is not for keyspace {old}: {cql[:80]!r}")
    return m["head"] + protect_name(new) + "." + cql[m.end() :]


def _dropped_cql(ks: str, table: str, spec: dict) -> list[str]:
    """Columns dropped from the table, dropped again at their time: SSTables written before may hold them."""
    out = []
    for d in spec.get("dropped", []):
        col = protect_name(d["column"])
        if not _CQL_TYPE.fullmatch(d["type"]) or not isinstance(d["dropped_us"], int):
            raise CorruptBackup(f"schema.json: dropped column {d['column']!r} of {table} is not understood")
        static = " static" if d.get("kind") == "static" else ""
        drop = f"ALTER TABLE {ks}.{table} DROP {col} USING TIMESTAMP {d['dropped_us']}"
        if d["column"] in spec["columns"]:  # dropped, then added again
            out += [drop, f"ALTER TABLE {ks}.{table} ADD {col} {spec['columns'][d['column']]}{static}"]
        else:
            out += [f"ALTER TABLE {ks}.{table} ADD {col} {d['type']}{static}", drop]
    return out


def _check_fits(session: Session, target: str, schema: dict, *, rows_ok: bool) -> None:
    """Refuse before anything changes: a table of the target that differs from the backup's (its SSTables
    would not load), or, unless ``rows_ok``, one that holds rows."""
    km = _keyspace(session, target)
    tables = km.tables if km is not None else {}
    dropped = {
        (r.table_name, r.column_name)
        for r in session.execute(
            "SELECT table_name, column_name FROM system_schema.dropped_columns WHERE keyspace_name = %s", (target,)
        )
    }
    with_rows = []
    for table, spec in schema["tables"].items():
        tm = tables.get(table)
        if tm is None:
            continue
        have = {c.name: c.cql_type for c in tm.columns.values()}
        keys = ([c.name for c in tm.partition_key], [c.name for c in tm.clustering_key])
        problems = [f"column {c} ({t}) is not there as such" for c, t in spec["columns"].items() if have.get(c) != t]
        if keys != (spec["partition_key"], spec["clustering_key"]):
            problems.append("its primary key differs")
        problems += [
            f"column {d['column']} was dropped before the backup"
            for d in spec["dropped"]
            if d["column"] not in have and (table, d["column"]) not in dropped
        ]
        if problems:
            raise RestoreConflict(
                f"table {target}.{table} differs from the backup's: " + "; ".join(problems[:3]),
                hint="drop the table first, or restore --as another tenant",
            )
        if not rows_ok and session.execute(f"SELECT * FROM {target}.{table} LIMIT 1").one() is not None:
            with_rows.append(table)
    if with_rows and not rows_ok:
        raise RestoreConflict(
            f"tenant {target} has rows in {', '.join(with_rows)}",
            hint="add --overwrite to replace the rows of the backup's tables with the backup's, "
            "or restore --as another tenant",
        )


def _create_schema(session: Session, schema: dict, target: str) -> list[str]:
    """The user types, tables and indexes of the backup that the target keyspace lacks."""
    old = schema["keyspace"]
    names.tenant(old)
    km = _keyspace(session, target)
    for cql in schema["types"]:
        m = re.match(r"CREATE TYPE [^.]+\.(\"[^\"]+\"|\w+)", cql)
        if m and m[1].strip('"') not in km.user_types:
            session.execute(_retarget(cql, old, target, "schema.json"))
    created = []
    for table, spec in schema["tables"].items():
        names.cql_identifier(table)
        if table in km.tables:
            continue
        session.execute(_retarget(spec["create"], old, target, "schema.json"))
        for cql in _dropped_cql(target, table, spec):
            session.execute(cql)
        created.append(table)
    km = _keyspace(session, target)
    for spec in schema["tables"].values():
        for index, cql in spec["indexes"].items():
            if index not in km.indexes:
                session.execute(_retarget(cql, old, target, "schema.json"))
    return created


def _import(cfg: Config, ks: str, table: str, src: Path) -> None:
    try:
        for n in cassandra_node.nodes(cfg):  # --copy-data: the backup's files stay for the next node
            cassandra_node.nodetool(cfg, "import", "--copy-data", "--", ks, table, str(src), index=n.index)
    except MysimbdpError as exc:
        raise type(exc)(
            f"Cassandra did not load the SSTables of {ks}.{table}: {exc.message}",
            hint=f"its reason is in {cfg.paths.logs / 'cassandra-system.log'}",
        ) from None


def _restore_receipts(cfg: Config, session: Session, receipts: dict, old: str, new: str) -> int:
    """Put back the receipts the target lacks (those it has are newer or the same: they stay)."""
    ks = cfg.keyspace
    cluster = session.cluster
    done = 0
    for table, keys in RECEIPTS.items():
        rows = receipts.get(table) or []
        if not rows:
            continue
        columns = {c.name: c.cql_type for c in cluster.metadata.keyspaces[ks].tables[table].columns.values()}
        have: set[tuple] = set()
        if table == "jobs":
            query = session.prepare(f"SELECT bucket, job_id FROM {ks}.jobs WHERE tenant = ? AND bucket = ?")
            for bucket in sorted({r["bucket"] for r in rows}):
                have |= {(r.bucket, r.job_id) for r in session.execute(query, (new, bucket))}
        else:
            query = session.prepare(f"SELECT {', '.join(keys)} FROM {ks}.{table} WHERE tenant = ?")
            have = {tuple(r) for r in session.execute(query, (new,))}
        inserts: dict[tuple[str, ...], object] = {}
        for row in rows:
            values = {c: _decode(v, columns[c]) for c, v in row.items() if c in columns}
            values["tenant"] = new
            if tuple(values.get(k) for k in keys) in have:
                continue
            if table == "jobs":
                for key in ("log_path", "rejects_path"):  # files of another tenant, or gone with it: not shown
                    if values.get(key) and (old != new or not Path(values[key]).is_file()):
                        values[key] = None
            cols = tuple(sorted(values))
            if cols not in inserts:  # column names: those of the table itself (checked above)
                marks = ", ".join("?" for _ in cols)
                inserts[cols] = session.prepare(f"INSERT INTO {ks}.{table} ({', '.join(cols)}) VALUES ({marks})")
            session.execute(inserts[cols], [values[c] for c in cols])
            done += 1
    return done


# --- scheduled backups and their retention ---------------------------------------------------------------


def prunable(backups: list[Backup], keep: int, keep_days: int, now: datetime) -> list[Backup]:
    """The scheduled backups retention drops: per tenant, newest first, any but the newest that is past the
    ``keep`` newest (when ``keep``) or older than ``keep_days`` (when ``keep_days``). Backups made by hand
    are never pruned."""
    out = []
    by_tenant: dict[str, list[Backup]] = {}
    for b in backups:
        if b.kind == "scheduled" and not b.problem:
            by_tenant.setdefault(b.tenant, []).append(b)
    for items in by_tenant.values():
        items.sort(key=lambda b: (b.created_at, b.name), reverse=True)
        for i, b in enumerate(items[1:], start=1):
            if (keep and i >= keep) or (keep_days and now - b.created_at > timedelta(days=keep_days)):
                out.append(b)
    return sorted(out, key=lambda b: (b.tenant, b.created_at))


def prune(cfg: Config, now: datetime | None = None, *, dry_run: bool = False) -> list[Backup]:
    """Delete the scheduled backups the retention settings drop; return them."""
    gone = prunable(list_backups(cfg), cfg.backup.keep, cfg.backup.keep_days, now or datetime.now(timezone.utc))
    if dry_run:
        return gone
    for b in gone:
        with _locked(cfg, b.tenant):
            doomed = b.path.with_name(f".tmp-{b.tenant}-delete-{b.name}")
            os.rename(b.path, doomed)  # out of the listing at once, then deleted
            shutil.rmtree(doomed, ignore_errors=True)
        log.info("pruned backup %s", b.name)
    return gone


def scheduled_tenants(cfg: Config, session: Session) -> list[str]:
    """The tenants a scheduled backup covers: those configured, else every ready tenant."""
    if cfg.backup.tenants:
        return list(cfg.backup.tenants)
    return [t.name for t in Registry(cfg, session).list() if t.state == "ready"]
