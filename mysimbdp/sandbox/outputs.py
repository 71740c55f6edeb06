"""A batch run's output folder, capped by the kernel: a tmpfs of the output limit's size mounted on the
host at ``work/<tenant>/<job>/out`` (and bound into the container as ``/output``).

Watching the folder's size from outside misses a file the app unlinks while it keeps it open (its bytes
still fill the disk); a tmpfs of fixed size cannot hold more, whatever the app does, and its pages count
against the container's own memory limit (the kernel charges them to the writer). Where no tmpfs can be
mounted (not root), the folder stays a plain folder, watched as before.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


def prepare(out: Path, uid: int, size: int) -> bool:
    """An empty output folder at ``out`` owned by ``uid``; True when it is a tmpfs of ``size`` bytes."""
    release(out)
    out.mkdir(parents=True)
    if os.geteuid() != 0:
        return False
    opts = f"size={size},mode=0700,uid={uid},gid={uid},nosuid,nodev,noexec"
    exe = shutil.which("mount") or "/bin/mount"
    proc = subprocess.run([exe, "-t", "tmpfs", "-o", opts, "mysimbdp-output", str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        log.warning("no tmpfs for %s (%s); the output folder is a plain folder", out, proc.stderr.strip())
        os.chown(out, uid, uid)
        os.chmod(out, 0o700)
        return False
    return True


def release(out: Path) -> None:
    """Empty and remove an output folder, unmounting its tmpfs first."""
    from .. import bounded

    if _mounted(out):
        exe = shutil.which("umount") or "/bin/umount"
        proc = subprocess.run([exe, str(out)], capture_output=True, text=True)
        if proc.returncode != 0:  # still busy (a process of a killed run): detach it, it goes when free
            subprocess.run([exe, "-l", str(out)], capture_output=True, text=True)
    bounded.remove_tree(out)


def release_under(folder: Path) -> None:
    """Unmount every output tmpfs under ``folder`` (left by a manager that died, or a tenant deleted)."""
    prefix = str(folder.resolve()) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()  # bounded: the kernel's
    except OSError:
        return
    points = [ln.split()[4] for ln in lines if len(ln.split()) > 4]
    exe = shutil.which("umount") or "/bin/umount"
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run([exe, "-l", point.replace("\\040", " ")], capture_output=True, text=True)
