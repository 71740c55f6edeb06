"""Memory caps for the platform's daemons: one memory cgroup each, where the kernel lets us make one
(cgroup v2, or v1's memory controller), else an address-space limit (not for Java, which reserves far more
address space than it uses). Past its cap a daemon is killed by the kernel alone, not the machine's other
processes; the supervisor sees the kill in the group's counters and says so."""

from __future__ import annotations

import hashlib
import logging
import os
import resource
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
ROOT = Path("/sys/fs/cgroup")


def _version() -> str | None:
    if os.geteuid() != 0:
        return None
    if (ROOT / "cgroup.controllers").exists():
        return "v2" if "memory" in (ROOT / "cgroup.controllers").read_text().split() else None  # bounded: kernel file
    if (ROOT / "memory" / "cgroup.procs").exists():
        return "v1"
    return None


@dataclass(frozen=True)
class MemoryCap:
    """The cap of one daemon: ``group`` is unique per state folder and daemon."""

    group: str
    limit: int  # bytes; 0 for no cap

    @classmethod
    def of(cls, home: Path, name: str, limit: int) -> "MemoryCap":
        key = hashlib.sha256(str(home).encode()).hexdigest()[:8]
        return cls(f"mysimbdp-{key}-{name}", limit)

    def _dir(self) -> Path | None:
        v = _version()
        if v == "v2":
            return ROOT / self.group
        if v == "v1":
            return ROOT / "memory" / self.group
        return None

    def apply(self, pid: int, *, java: bool = False) -> str:
        """Put ``pid`` under the cap; return how ("cgroup v1 1024 MiB", "rlimit ...", "none")."""
        if not self.limit:
            return "none"
        d = self._dir()
        if d is not None:
            try:
                d.mkdir(exist_ok=True)
                if (d / "memory.max").exists():  # v2
                    (d / "memory.max").write_text(str(self.limit))
                    if (d / "memory.swap.max").exists():
                        (d / "memory.swap.max").write_text("0")
                else:  # v1: the memory limit first, then memory+swap to the same value (no swapping past it)
                    (d / "memory.limit_in_bytes").write_text(str(self.limit))
                    if (d / "memory.memsw.limit_in_bytes").exists():
                        try:
                            (d / "memory.memsw.limit_in_bytes").write_text(str(self.limit))
                        except OSError:
                            pass
                (d / "cgroup.procs").write_text(str(pid))
                return f"cgroup {_version()} {self.limit >> 20} MiB"
            except OSError as exc:
                log.warning("cannot cap %s with a cgroup (%s); trying an address-space limit", self.group, exc)
        if java:
            return "none"
        try:
            resource.prlimit(pid, resource.RLIMIT_AS, (self.limit * 4, self.limit * 4))  # virtual, so roomier
            return f"rlimit {self.limit * 4 >> 20} MiB of address space"
        except (OSError, ValueError) as exc:
            log.warning("cannot cap %s at all: %s", self.group, exc)
            return "none"

    def oom_kills(self) -> int:
        """How many times the kernel killed a process of this group for its memory."""
        d = self._dir()
        if d is None:
            return 0
        for name in ("memory.events", "memory.oom_control"):
            try:
                for line in (d / name).read_text().splitlines():  # bounded: the kernel's few-line cgroup file
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            except (OSError, ValueError):
                continue
        return 0


def set_oom_score_adj(pid: int, value: int) -> None:
    """How readily the kernel picks ``pid`` when the whole machine runs out of memory (-1000..1000)."""
    try:
        Path(f"/proc/{pid}/oom_score_adj").write_text(str(value))
    except OSError:
        pass
