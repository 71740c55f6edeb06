"""What running untrusted tenant code means, independent of the container engine.

A backend (Docker today, see :mod:`.docker_runtime`) must honour every field of :class:`RunSpec`: a
non-root user, a read-only root file system with a small writable scratch, no capabilities, no new
privileges, limits on memory, CPU and processes, a wall-clock limit for one-shot runs, mounts as given
(read-only unless said otherwise), and only the sandbox network.
"""

from __future__ import annotations

import abc
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

from ..errors import InvalidName
from ..runtimes import DEFAULT as DEFAULT_RUNTIME
from ..runtimes import RUNTIMES

if TYPE_CHECKING:
    from ..config import Config

CONTAINER_NAME = re.compile(r"mysimbdp-[a-z0-9][a-z0-9_.-]{0,100}")


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    read_only: bool = True


@dataclass(frozen=True)
class Limits:
    memory: str = "512m"
    cpus: float = 1.0
    pids: int = 128
    scratch: str = "64m"
    timeout: float | None = None  # wall clock for one-shot runs; None for long-running instances
    max_output_bytes: int = 256 << 20


@dataclass(frozen=True)
class RunSpec:
    name: str  # the container's name: mysimbdp-<kind>-<tenant>-<id>
    tenant: str
    kind: str  # batch | stream | probe
    command: tuple[str, ...]
    uid: int
    env: Mapping[str, str] = field(default_factory=dict)
    mounts: tuple[Mount, ...] = ()
    limits: Limits = field(default_factory=Limits)
    labels: Mapping[str, str] = field(default_factory=dict)
    output_dirs: tuple[Path, ...] = ()  # watched: the run is stopped if they hold more than max_output_bytes
    log_path: Path | None = None  # where the run's output is kept
    runtime: str = DEFAULT_RUNTIME  # which image it runs in (mysimbdp/runtimes.py); the sandbox is the same

    def __post_init__(self) -> None:
        if not CONTAINER_NAME.fullmatch(self.name):
            raise InvalidName(f"invalid container name {self.name!r}")
        if self.runtime not in RUNTIMES:
            raise InvalidName(f"unknown runtime {self.runtime!r}")


@dataclass(frozen=True)
class RunResult:
    name: str
    exit_code: int | None
    seconds: float
    timed_out: bool = False
    oom_killed: bool = False
    output_exceeded: bool = False
    log_path: Path | None = None
    last_error: str = ""  # the last line the run wrote to stderr (printable characters only)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not (self.timed_out or self.oom_killed or self.output_exceeded)

    def describe(self) -> str:
        """Why the run ended, in words a tenant understands."""
        if self.timed_out:
            return f"stopped at the time limit after {self.seconds:.0f}s"
        if self.oom_killed:
            return "killed: it used more memory than its limit"
        if self.output_exceeded:
            return (
                "stopped: it wrote more than its output limit (its bytes, or more files or deeper folders "
                "than a result and a rejects file need)"
            )
        if self.exit_code == 0:
            return "exited normally"
        return f"exited with status {self.exit_code}"


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    tenant: str
    kind: str
    labels: Mapping[str, str]
    state: str  # created | running | exited | ...
    exit_code: int | None
    started_at: str | None
    oom_killed: bool = False


class SandboxRuntime(abc.ABC):
    """The container backend's face. Library code only ever talks to this."""

    def __init__(self, cfg: "Config") -> None:
        self.cfg = cfg

    @abc.abstractmethod
    def ensure_ready(self) -> None:
        """Make the image and network available; raise RuntimeUnavailable when impossible."""

    @abc.abstractmethod
    def run(self, spec: RunSpec, *, on_started: Callable[[], None] | None = None) -> RunResult:
        """Run a one-shot job to completion (or to its time limit) and remove its container."""

    @abc.abstractmethod
    def start(self, spec: RunSpec) -> str:
        """Start a long-running instance; return its name."""

    @abc.abstractmethod
    def stop(self, name: str, timeout: float, signal: str = "SIGTERM") -> int | None:
        """Send ``signal``, wait up to ``timeout``, then kill; keep its log; remove it. Return its exit code."""

    @abc.abstractmethod
    def list(self, *, brief: bool = False, **labels: str) -> list[ContainerInfo]:
        """The platform's containers whose labels match. ``brief``: running containers without the details
        that cost a look each (``started_at``), for loops that only need names, states and exit codes."""

    @abc.abstractmethod
    def logs(self, name: str, tail: int | None = None) -> str:
        """The output of a container, running or kept."""

    @abc.abstractmethod
    def remove(self, name: str) -> None:
        """Remove a container that has exited, keeping its log."""
