"""Noticing staged files: a watchdog observer that only hands paths over, and a scan at start-up.

The upload API renames a file into ``staging/<tenant>/`` only when it is complete and verified, so a
create or move event of a visible file there is a file ready to ingest. Hidden files (sidecars, temporary
names) are ignored. The handler never does work itself: it puts the path on a queue.
"""

from __future__ import annotations

import logging
import queue
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from mysimbdp import names
from mysimbdp.errors import InvalidName

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StagedFile:
    """A file waiting in ``staging/<tenant>/``, named ``<job id>.<format>`` by the upload API."""

    tenant: str
    path: Path


def staged_file(root: Path, path: Path) -> StagedFile | None:
    """The staged file ``path`` is, when it is a visible file directly in a tenant's staging folder."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    if len(rel.parts) != 2 or rel.name.startswith("."):
        return None
    try:
        tenant = names.tenant(rel.parts[0])
    except InvalidName:
        return None
    return StagedFile(tenant, path)


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, out: "queue.Queue[StagedFile]") -> None:
        self.root = root
        self.out = out

    def _offer(self, path: str) -> None:
        found = staged_file(self.root, Path(path))
        if found:
            self.out.put(found)

    def on_created(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._offer(event.src_path)

    def on_moved(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self._offer(event.dest_path)

    def on_closed(self, event: FileSystemEvent) -> None:  # a file copied in by hand
        if not event.is_directory:
            self._offer(event.src_path)


def watch(root: Path, out: "queue.Queue[StagedFile]") -> Observer:
    root.mkdir(parents=True, exist_ok=True)
    observer = Observer()
    observer.schedule(_Handler(root, out), str(root), recursive=True)
    observer.daemon = True
    observer.start()
    return observer


def scan(root: Path) -> list[StagedFile]:
    """Everything already staged (files that arrived while the manager was down), oldest first."""
    found = []
    if not root.exists():
        return found
    for tenant_dir in sorted(root.iterdir()):
        try:  # a file may be claimed, a folder deleted with its tenant, while this looks
            if not tenant_dir.is_dir():
                continue
            for f in tenant_dir.iterdir():
                hit = staged_file(root, f)
                if hit and f.is_file():
                    found.append((f.stat().st_mtime, hit))
        except OSError:
            continue
    return [hit for _, hit in sorted(found, key=lambda x: x[0])]
