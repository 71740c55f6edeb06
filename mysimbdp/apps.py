"""Tenant apps: the code a tenant gives the platform to run in the sandbox.

An app is a folder with an ``app.json`` manifest naming the script for each kind of ingestion it does::

    {"name": "airline", "version": "1.0.0", "entrypoints": {"batch": "ingest_file.py", "stream": "ingest_stream.py"}}

It may name a runtime other than Python (``"runtime": "jvm"`` with a jar as its entry point, or ``"static"``
with a statically linked executable; mysimbdp/runtimes.py): the contract is the same for all.

The manifest may also name a sample file per kind (``"samples": {"batch": "sample.csv"}``, in the folder, at
most 1 MiB): ``mysimbdp tenant create/update`` runs its checks and a dry run of the app on it before the
app is installed (mysimbdp/appchecks.py). The contract between apps and the platform is in
tenant_apps/README.md.

Installed apps are kept, a few versions of each kind (the folder is copied: later edits of DIR change nothing
until the app is installed again)::

    apps/<tenant>/<kind>              -> versions/<kind>/vNNNN   (a symbolic link: the current version)
    apps/<tenant>/versions/<kind>/vNNNN/   each installed copy, numbered in the order they were installed

A run mounts the version folder itself, so switching the link (an install, ``tenant rollback``) changes
nothing for a run under way, and the next run takes the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from . import bounded, runtimes
from .config import Config
from .errors import NoApp, TenantError
from .locks import file_lock

if TYPE_CHECKING:
    from .sandbox import Limits

MAX_APP_BYTES = 20 << 20
MAX_MANIFEST_BYTES = 64 * 1024
MAX_FILES_PER_RUN = 100
MAX_APP_FILES = 500
_APP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}")
_PART = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}"
_SAMPLE = re.compile(rf"(?:{_PART}/){{0,3}}{_PART}")  # a relative path inside the folder: no '..', no '/' first
MAX_SAMPLE_BYTES = 1 << 20
KINDS = ("batch", "stream")
KEEP_VERSIONS = 5  # installed versions kept per kind (the current one always is)
_VERSION_DIR = re.compile(r"v([0-9]{4,9})")


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
    runtime: str = runtimes.DEFAULT  # python, jvm or static (mysimbdp/runtimes.py)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def command(self, limits: "Limits") -> tuple[str, ...]:
        """How a run of it starts (a JVM's flags follow the run's limits)."""
        return runtimes.command(self.runtime, self.entrypoint, limits)

    @classmethod
    def of(cls, data: dict, kind: str, path: Path, digest: str = "") -> "App":
        """The app a manifest read by :func:`read_manifest` describes, installed (or copied) at ``path``."""
        return cls(
            data["name"],
            data["version"],
            kind,
            data["entrypoint"],
            path,
            digest,
            data["files_per_run"],
            data["runtime"],
        )


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
    runtime = data.get("runtime", runtimes.DEFAULT)
    if runtime not in runtimes.RUNTIMES:
        raise InvalidApp(f"{manifest}: runtime must be one of {', '.join(runtimes.RUNTIMES)} (python when left out)")
    rt = runtimes.RUNTIMES[runtime]
    entry = (data.get("entrypoints") or {}).get(kind) if isinstance(data.get("entrypoints"), dict) else None
    if not isinstance(entry, str):
        raise InvalidApp(f"{manifest}: no entrypoints.{kind}: this is not a {kind} app")
    if not rt.entry.fullmatch(entry) or not (folder / entry).is_file():
        raise InvalidApp(
            f"{manifest}: entrypoints.{kind} {bounded.printable(entry, 80)!r} is not {rt.what} in {folder}"
            + (f" (a {runtime} app)" if runtime != runtimes.DEFAULT else ""),
            hint=f"a {runtime} app's entry point is {rt.what} at the top of its folder"
            + (_BUILT if runtime != runtimes.DEFAULT else ""),
        )
    per_run = data.get("files_per_run", 1)
    if isinstance(per_run, bool) or not isinstance(per_run, int) or not 1 <= per_run <= MAX_FILES_PER_RUN:
        raise InvalidApp(f"{manifest}: files_per_run must be a whole number from 1 to {MAX_FILES_PER_RUN}")
    sample = _sample(folder, manifest, data, kind)
    return {**data, "runtime": runtime, "entrypoint": entry, "files_per_run": per_run, "sample": sample}


_BUILT = " (is it built? the compiled sample apps are built by `make setup`, with scripts/sample-apps.sh)"


def _sample(folder: Path, manifest: Path, data: dict, kind: str) -> str | None:
    """The manifest's sample file for ``kind`` (a path inside the folder), or None when it names none."""
    samples = data.get("samples", {})
    if not isinstance(samples, dict):
        raise InvalidApp(f'{manifest}: samples must be an object like {{"{kind}": "sample.csv"}}')
    sample = samples.get(kind)
    if sample is None:
        return None
    if not isinstance(sample, str) or not _SAMPLE.fullmatch(sample):
        raise InvalidApp(f"{manifest}: samples.{kind} must be a relative path of a file in the app folder")
    path = folder / sample
    if _skipped(Path(sample)):
        raise InvalidApp(
            f"{manifest}: samples.{kind} {sample!r} is left out of the installed copy",
            hint="names starting with '.', .pyc files and __pycache__ folders are not copied: move the sample",
        )
    # no link anywhere on the way (a linked folder would lead out of the app: nothing behind it is looked at)
    steps = [folder.joinpath(*Path(sample).parts[: i + 1]) for i in range(len(Path(sample).parts))]
    if any(step.is_symlink() for step in steps) or not path.is_file():
        raise InvalidApp(f"{manifest}: samples.{kind} {sample!r} is not a regular file in {folder}")
    if path.stat().st_size > MAX_SAMPLE_BYTES:
        raise InvalidApp(
            f"{manifest}: samples.{kind} {sample!r} is larger than {MAX_SAMPLE_BYTES >> 20} MiB",
            hint="a sample is a small cut of real data: a few hundred records are enough",
        )
    return sample


def _skipped(rel: Path) -> bool:
    """Whether a path inside an app folder is left out of the installed copy (caches, hidden files)."""
    return any(p == "__pycache__" or p.startswith(".") for p in rel.parts) or rel.name.endswith(".pyc")


def _files(folder: Path) -> list[Path]:
    files, total = [], 0
    for root, dirs, names in os.walk(folder):
        for d in dirs:
            if (Path(root) / d).is_symlink():  # os.walk does not follow it: it would silently be left out
                raise InvalidApp(f"{Path(root) / d} is a symbolic link; apps may only contain regular files")
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


def copy_checked(folder: Path, kind: str, dest: Path, gid: int) -> tuple[dict, str]:
    """Copy the app in ``folder`` (checked: manifest, files) into the new folder ``dest``, readable by the
    sandbox group ``gid`` only; return its manifest and the sha256 over its files. What is installed or dry
    run is always such a copy: the tenant's folder may change meanwhile."""
    data = read_manifest(folder, kind)
    folder = Path(folder).resolve()
    files = _files(folder)
    digest, left = hashlib.sha256(), MAX_APP_BYTES
    for f in files:
        rel = f.relative_to(folder)
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with os.fdopen(bounded.open_regular(f), "rb") as src, open(target, "xb") as out:
                body = src.read(left + 1)  # the sizes were checked, but a file may have grown since
                if len(body) > left:
                    raise InvalidApp(f"{folder} grew past {MAX_APP_BYTES} bytes while it was copied")
                out.write(body)
        except OSError as exc:  # changed while it was copied (a link now, say)
            raise InvalidApp(f"{f} could not be copied: {exc.strerror or exc}") from None
        left -= len(body)
        digest.update(str(rel).encode() + b"\0" + body)
    dest.mkdir(parents=True, exist_ok=True)
    _restrict(dest, gid)
    if data["runtime"] == "static":  # the one file of the app the sandbox user may execute
        os.chmod(dest / data["entrypoint"], 0o750)
    return data, digest.hexdigest()


def install(cfg: Config, tenant: str, kind: str, folder: Path, gid: int) -> App:
    """Copy a checked app into the state folder as the tenant's next version of ``kind`` and make it the
    current one; keep the last KEEP_VERSIONS versions."""
    with _locked(cfg, tenant):
        versions = _versions_dir(cfg, tenant, kind, gid)
        _adopt_flat_install(cfg, tenant, kind, versions)
        number = max(_numbers(versions), default=0) + 1
        target = versions / f"v{number:04d}"
        tmp = versions / f".v{number:04d}.tmp"
        bounded.remove_tree(tmp)
        data, digest = copy_checked(folder, kind, tmp, gid)
        tmp.rename(target)
        _point(cfg, tenant, kind, target)
        _prune(versions, keep=target)
    return App.of(data, kind, target, digest)


def rollback(cfg: Config, tenant: str, kind: str) -> tuple[App, App]:
    """Make the version installed before the current one current again; return (the one left, the one now
    current). NoApp when there is no earlier version."""
    with _locked(cfg, tenant):
        current = installed(cfg, tenant, kind)
        if current is None:
            raise NoApp(f"tenant {tenant} has no {kind} app", hint=f"install one with `tenant update --{kind}-app DIR`")
        number = _number_of(current.path)
        earlier = sorted(n for n in _numbers(current.path.parent) if number is None or n < number)
        if not earlier:
            raise NoApp(
                f"tenant {tenant} has no {kind} app installed before {current.ref}: there is nothing to return to"
            )
        target = current.path.parent / f"v{earlier[-1]:04d}"
        data = read_manifest(target, kind)
        _point(cfg, tenant, kind, target)
    back = App.of(data, kind, target)
    return current, back


def versions(cfg: Config, tenant: str, kind: str) -> list[dict]:
    """The kept versions of the tenant's ``kind`` app, oldest first: version folder, app ref, current or not."""
    current = installed(cfg, tenant, kind)
    folder = cfg.paths.tenant_apps(tenant) / "versions" / kind
    out = []
    for n in sorted(_numbers(folder)):
        path = folder / f"v{n:04d}"
        try:
            data = read_manifest(path, kind)
            ref = f"{data['name']}@{data['version']}"
        except InvalidApp:
            ref = "?"
        out.append({"version": path.name, "ref": ref, "current": current is not None and current.path == path})
    return out


@contextlib.contextmanager
def _locked(cfg: Config, tenant: str) -> Iterator[None]:
    """One install or rollback of a tenant's apps at a time."""
    folder = cfg.paths.tenant_apps(tenant)
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".lock"):
        yield


def _versions_dir(cfg: Config, tenant: str, kind: str, gid: int) -> Path:
    folder = cfg.paths.tenant_apps(tenant) / "versions" / kind
    folder.mkdir(parents=True, exist_ok=True)
    for p in (folder.parent, folder):
        if os.geteuid() == 0:
            os.chown(p, 0, gid)
        os.chmod(p, 0o750)
    return folder


def _numbers(versions: Path) -> list[int]:
    try:
        names = os.listdir(versions)
    except FileNotFoundError:
        return []
    return [int(m.group(1)) for m in map(_VERSION_DIR.fullmatch, names) if m]


def _number_of(path: Path) -> int | None:
    m = _VERSION_DIR.fullmatch(path.name)
    return int(m.group(1)) if m else None


def _point(cfg: Config, tenant: str, kind: str, target: Path) -> None:
    """Make ``target`` the current version: one rename of a new link over the old one (atomic)."""
    link = cfg.paths.tenant_apps(tenant) / kind
    tmp = link.with_name(f".{kind}.link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target.relative_to(link.parent))
    os.replace(tmp, link)


def _adopt_flat_install(cfg: Config, tenant: str, kind: str, versions: Path) -> None:
    """An app installed before versions were kept is a plain folder where the link goes: it becomes the first
    version (or the next one)."""
    link = cfg.paths.tenant_apps(tenant) / kind
    if link.is_symlink() or not link.is_dir():
        return
    target = versions / f"v{max(_numbers(versions), default=0) + 1:04d}"
    link.rename(target)
    _point(cfg, tenant, kind, target)


def _prune(versions: Path, keep: Path) -> None:
    """Remove all but the newest KEEP_VERSIONS versions (never ``keep``, the current one)."""
    numbers = sorted(_numbers(versions))
    for n in numbers[:-KEEP_VERSIONS]:
        path = versions / f"v{n:04d}"
        if path != keep:
            bounded.remove_tree(path)


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
    """The tenant's current ``kind`` app; its ``path`` is the version's own folder (what a run mounts)."""
    folder = cfg.paths.tenant_apps(tenant) / kind
    if not (folder / "app.json").exists():
        return None
    path = folder.resolve()  # the version folder: a later switch of the link changes nothing for this run
    data = read_manifest(path, kind)
    return App.of(data, kind, path)
