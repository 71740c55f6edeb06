"""Running untrusted tenant code: the runtime interface (:mod:`.base`) and its Docker backend."""

from __future__ import annotations

from ..config import Config
from .base import ContainerInfo, Limits, Mount, RunResult, RunSpec, SandboxRuntime

__all__ = ["ContainerInfo", "Limits", "Mount", "RunResult", "RunSpec", "SandboxRuntime", "runtime"]


def runtime(cfg: Config) -> SandboxRuntime:
    """The configured sandbox backend (Docker is the only one today)."""
    from .docker_runtime import DockerRuntime

    return DockerRuntime(cfg)
