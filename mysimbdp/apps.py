"""Tenant apps: the code a tenant gives the platform to run in the sandbox.

An app is a folder with an ``app.json`` manifest naming the script for each kind of ingestion it does::

    {"name": "airline", "version": "1.0.0", "entrypoints": {"batch": "ingest_file.py", "stream": "ingest_stream.py"}}

``mysimbdp tenant create --batch-app DIR`` checks it and copies it into the state folder (so later edits
of DIR change nothing until the app is installed again). The contract between apps and the platform is
in tenant_apps/README.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import bounded
from .config import Config
from .errors import TenantError

MAX_APP_BYTES = 20 << 20
MAX_MANIFEST_BYTES = 64 * 1024
MAX_FILES_PER_RUN = 100
MAX_APP_FILES = 500
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}")
_ENTRY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\.py")


class InvalidApp(TenantError):
    """A tenant app folder is missing its manifest, or the manifest or the files are wrong."""


@dataclass(frozen=True)
class App:
    name: str
    version: str
    kind: str
    entrypoint: str
    path: Path  # the installed copy
    digest: str  # sha256 over the installed files
    files_per_run: int = 1  # a batch app may take several staged files in one run (see tenant_apps/README.md)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def command(self) -> tuple[str, ...]:
        return ("python3", f"/app/{self.entrypoint}")


def read_manifest(folder: Path, kind: str) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidApp(f"app folder {folder} does not exist")
    manifest = folder / "app.json"
    try:
        data = bounded.loads_json(
            bounded.read_regular(manifest, MAX_MANIFEST_BYTES), max_bytes=MAX_MANIFEST_BYTES, max_depth=8
        )
    except FileNotFoundError:
        raise InvalidApp(f"{folder} has no app.json manifest", hint="see tenant_apps/README.md") from None
    except (OSError, ValueError) as exc:
        raise InvalidApp(f"{manifest} is not a valid JSON manifest: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidApp(f"{manifest} must be a JSON object")
    for key, pattern in (("name", _APP_NAME), ("version", _VERSION)):
        if not isinstance(data.get(key), str) or not pattern.fullmatch(data[key]):
            raise InvalidApp(f"{manifest}: '{key}' is missing or invalid")
    entry = (data.get("entrypoints") or {}).get(kind) if isinstance(data.get("entrypoints"), dict) else None
    if not isinstance(entry, str):
        raise InvalidApp(f"{manifest}: no entrypoints.{kind}: this is not a {kind} app")
    if not _ENTRY.fullmatch(entry) or not (folder / entry).is_file():
        raise InvalidApp(f"{manifest}: entrypoints.{kind} {entry!r} is not a .py file in {folder}")
    per_run = data.get("files_per_run", 1)
    if isinstance(per_run, bool) or not isinstance(per_run, int) or not 1 <= per_run <= MAX_FILES_PER_RUN:
        raise InvalidApp(f"{manifest}: files_per_run must be a whole number from 1 to {MAX_FILES_PER_RUN}")
    return {**data, "entrypoint": entry, "files_per_run": per_run}


def _files(folder: Path) -> list[Path]:
    files, total = [], 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__",) and not d.startswith("."))
        for n in sorted(names):
            p = Path(root) / n
            if p.is_symlink():
                raise InvalidApp(f"{p} is a symbolic link; apps may only contain regular files")
            if n.endswith(".pyc") or n.startswith("."):
                continue
            if not p.is_file():
                raise InvalidApp(f"{p} is not a regular file")
            total += p.stat().st_size
            files.append(p)
    if len(files) > MAX_APP_FILES or total > MAX_APP_BYTES:
        raise InvalidApp(
            f"{folder} is too large ({len(files)} files, {total} bytes; limit "
            f"{MAX_APP_FILES} files, {MAX_APP_BYTES} bytes)"
        )
    return files


def install(cfg: Config, tenant: str, kind: str, folder: Path, gid: int) -> App:
    """Copy a checked app into the state folder, readable by the tenant's sandbox group only."""
    data = read_manifest(folder, kind)
    folder = Path(folder).resolve()
    files = _files(folder)
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative_to(folder)).encode() + b"\0" + f.read_bytes())
    target = cfg.paths.tenant_apps(tenant) / kind
    tmp = target.with_name(f".{kind}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for f in files:
        dest = tmp / f.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dest)
    tmp.mkdir(parents=True, exist_ok=True)
    _restrict(tmp, gid)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return App(
        data["name"], data["version"], kind, data["entrypoint"], target, digest.hexdigest(), data["files_per_run"]
    )


def _restrict(folder: Path, gid: int) -> None:
    """root owns the code; the tenant's sandbox group may read it; nobody else may."""
    chown = os.geteuid() == 0
    for root, dirs, names in os.walk(folder):
        for d in dirs:
            p = Path(root) / d
            if chown:
                os.chown(p, 0, gid)
            os.chmod(p, 0o750)
        for n in names:
            p = Path(root) / n
            if chown:
                os.chown(p, 0, gid)
            os.chmod(p, 0o640)
    if chown:
        os.chown(folder, 0, gid)
    os.chmod(folder, 0o750)


def installed(cfg: Config, tenant: str, kind: str) -> App | None:
    folder = cfg.paths.tenant_apps(tenant) / kind
    if not (folder / "app.json").exists():
        return None
    data = read_manifest(folder, kind)
    return App(data["name"], data["version"], kind, data["entrypoint"], folder, "", data["files_per_run"])
