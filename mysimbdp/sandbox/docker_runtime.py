"""The Docker backend of the sandbox."""

from __future__ import annotations

import collections
import hashlib
import logging
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount as DockerMount
from docker.types import Ulimit

from .. import bounded
from ..config import Config
from ..errors import RuntimeUnavailable
from . import image, network
from .base import ContainerInfo, RunResult, RunSpec, SandboxRuntime

log = logging.getLogger(__name__)
MAX_LOG_BYTES = 2 << 20  # what is kept of one run's output (its first and last MiB)
SHARED_RECORD_READER = "/opt/mysimbdp/lib/mysimbdp/csvrecords.py"
MAX_OUTPUT_ENTRIES = 10_000  # files and folders a run may leave in its output folder
MAX_OUTPUT_DEPTH = 8  # and how deep
_LABEL = "mysimbdp"
FIREWALL_FRESH = 30.0  # seconds: sandbox.firewall_heartbeat older than this stops container starts


def client(timeout: int = 60) -> docker.DockerClient:
    try:
        c = docker.from_env(timeout=timeout)
        c.ping()
        return c
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise RuntimeUnavailable(f"the Docker engine is not reachable: {exc}", hint="run `mysimbdp up`") from None


def sandbox_library(cfg: Config) -> Path:
    sources = {"csvrecords.py": cfg.source / "mysimbdp" / "csvrecords.py"}
    sdk = cfg.source / "tenant_apps" / "sdk"
    for f in sorted(sdk.rglob("*.py")):
        sources[f"sdk/{f.relative_to(sdk)}"] = f
    digest = hashlib.sha256()
    for name, f in sources.items():
        digest.update(name.encode() + b"\0" + f.read_bytes() + b"\0")  # bounded: the project's own files
    target = cfg.paths.run / "sandbox-lib" / digest.hexdigest()[:12]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # 0700 until complete
    try:
        for name, f in sources.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, tmp / name)
        for f in tmp.rglob("*.py"):
            f.chmod(0o644)  # read by the tenant's uid in the container
        for folder in [tmp, *(p for p in tmp.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
        tmp.rename(target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():  # else: another process put the same version there first
            raise RuntimeUnavailable(f"cannot copy the app library to {target}: {exc}") from None
    return target


def _nano_cpus(cpus: float) -> int:
    return int(cpus * 1_000_000_000)


class DockerRuntime(SandboxRuntime):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self.home_key = hashlib.sha256(str(cfg.home).encode()).hexdigest()[:12]
        self._library: Path | None = None

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = client()
            return self._client

    # --- setup -------------------------------------------------------------------------------------
    def ensure_ready(self) -> None:
        for rt in image.BUILT_AT_UP:
            image.ensure_image(self.cfg, self.client, rt)
        network.ensure_network(self.cfg, self.client)

    def library(self) -> Path:
        """The app library every tenant container mounts (the SDK and the shared record reader), copied into
        the state folder once per version: the Docker engine resolves a bind mount's source on its own host,
        and the state folder is what the platform's processes and the engine share, whether the processes
        run on the host or in containers of their own (docker-compose.yml)."""
        with self._lock:
            if self._library is None or not self._library.is_dir():
                self._library = sandbox_library(self.cfg)
            return self._library

    # --- containers --------------------------------------------------------------------------------
    def _firewall_confirmed(self) -> None:
        guard = self.cfg.sandbox.firewall_heartbeat
        if not guard:
            return  # `mysimbdp up` set the rules, and nothing restarts the managers without it
        from ..daemon import heartbeat_age

        age = heartbeat_age(self.cfg.paths.run / Path(guard).name)
        if age is None or age > FIREWALL_FRESH:
            raise RuntimeUnavailable(
                "the sandbox's firewall rules are not confirmed yet: no tenant container starts without them",
                hint="wait for the init service (docker-compose ps)",
            )

    def _create(self, spec: RunSpec, *, built: bool = False):
        self._firewall_confirmed()
        lim = spec.limits
        env = {
            "HOME": "/tmp",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "LANG": "C.UTF-8",
            "PYTHONPATH": "/opt/mysimbdp/sdk:/opt/mysimbdp/lib",
            **spec.env,
        }
        mounts = [
            DockerMount(target=m.target, source=str(m.source), type="bind", read_only=m.read_only) for m in spec.mounts
        ]
        library = self.library()
        sdk = library / "sdk"
        mounts.append(DockerMount(target="/opt/mysimbdp/sdk", source=str(sdk), type="bind", read_only=True))
        # the one CSV record reader, shared with fetchdata and the publisher (stdlib only)
        reader = library / "csvrecords.py"
        mounts.append(DockerMount(target=SHARED_RECORD_READER, source=str(reader), type="bind", read_only=True))
        labels = {
            _LABEL: "1",
            "mysimbdp.home": self.home_key,
            "mysimbdp.tenant": spec.tenant,
            "mysimbdp.kind": spec.kind,
            **spec.labels,
        }
        try:
            return self.client.containers.create(
                image.image_tag(self.cfg, spec.runtime),
                command=list(spec.command),
                name=spec.name,
                hostname=spec.kind,
                user=f"{spec.uid}:{spec.uid}",
                environment=env,
                labels=labels,
                mounts=mounts,
                working_dir="/app",
                read_only=True,
                tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={lim.scratch},mode=1777"},
                cap_drop=["ALL"],
                security_opt=["no-new-privileges:true"],
                mem_limit=lim.memory,
                memswap_limit=lim.memory,
                nano_cpus=_nano_cpus(lim.cpus),
                pids_limit=lim.pids,
                ulimits=[Ulimit(name="nofile", soft=4096, hard=4096), Ulimit(name="core", soft=0, hard=0)],
                network=self.cfg.sandbox.network,
                init=True,
                log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
                stop_signal="SIGTERM",
            )
        except docker.errors.ImageNotFound:
            if built:
                raise RuntimeUnavailable(
                    f"the {spec.runtime} runtime image is missing", hint="run `mysimbdp up`"
                ) from None
        except docker.errors.APIError as exc:
            raise RuntimeUnavailable(f"cannot create container {spec.name}: {exc.explanation}") from None
        # no image: the first run of its runtime on this machine (the JVM's is built on first need), or a new recipe
        image.ensure_image(self.cfg, self.client, spec.runtime)
        return self._create(spec, built=True)

    def run(self, spec: RunSpec, *, on_started: Callable[[], None] | None = None) -> RunResult:
        container = self._create(spec)
        t0 = time.monotonic()
        timed_out = output_exceeded = False
        try:
            container.start()
            if on_started:
                on_started()
            deadline = None if spec.limits.timeout is None else t0 + spec.limits.timeout
            while True:
                try:
                    container.wait(timeout=0.5)
                    break
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                    pass
                if deadline is not None and time.monotonic() > deadline:
                    timed_out = True
                    self._kill(container)
                    break
                if spec.output_dirs and _output_over(spec):
                    output_exceeded = True
                    self._kill(container)
                    break
            seconds = time.monotonic() - t0
            if not output_exceeded and spec.output_dirs and _output_over(spec):
                output_exceeded = True  # written (or fallocated) between two looks, just before exiting
            container.reload()
            state = container.attrs["State"]
            exit_code = state.get("ExitCode")
            oom = bool(state.get("OOMKilled"))
            self._keep_log(container, spec.log_path)
            return RunResult(
                spec.name, exit_code, seconds, timed_out, oom, output_exceeded, spec.log_path, _last_error(container)
            )
        finally:
            try:
                container.remove(force=True)
            except docker.errors.APIError:
                log.warning("could not remove container %s", spec.name)

    def _kill(self, container) -> None:
        try:
            container.kill()
            container.wait(timeout=10)
        except (docker.errors.APIError, requests.exceptions.RequestException):
            pass

    def _keep_log(self, container, path: Path | None) -> None:
        """Keep what a container wrote (its first and last MAX_LOG_BYTES / 2), streamed: never all of it in
        memory."""
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        half = MAX_LOG_BYTES // 2
        head, tail, dropped = bytearray(), collections.deque(), 0
        tail_bytes = 0
        try:
            for chunk in container.logs(stdout=True, stderr=True, timestamps=False, stream=True, follow=False):
                if len(head) < half:
                    take = chunk[: half - len(head)]
                    head += take
                    chunk = chunk[len(take) :]
                if chunk:
                    tail.append(chunk)
                    tail_bytes += len(chunk)
                    while tail_bytes - len(tail[0]) >= half:
                        dropped += len(tail[0])
                        tail_bytes -= len(tail.popleft())
        except (docker.errors.APIError, requests.exceptions.RequestException):
            head += b"\n(the rest of the container's output could not be read)\n"
        with open(path, "wb") as fh:
            fh.write(head)
            if dropped:
                fh.write(f"\n...[{dropped} bytes left out]...\n".encode())
            for chunk in tail:
                fh.write(chunk)

    def start(self, spec: RunSpec) -> str:
        container = self._create(spec)
        try:
            container.start()
        except docker.errors.APIError as exc:
            container.remove(force=True)
            raise RuntimeUnavailable(f"cannot start {spec.name}: {exc.explanation}") from None
        return spec.name

    def stop(self, name: str, timeout: float, signal: str = "SIGTERM") -> int | None:
        try:
            container = self.client.containers.get(name)
        except docker.errors.NotFound:
            return None
        try:
            if container.status == "running":
                container.kill(signal=signal)
                container.wait(timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            self._kill(container)  # it did not stop in time
        except docker.errors.APIError:
            pass  # it exited in the meantime
        try:
            container.reload()
            code = container.attrs["State"].get("ExitCode")
        except docker.errors.NotFound:
            return None
        self.remove(name)
        return code

    def list(self, *, brief: bool = False, **labels: str) -> list[ContainerInfo]:
        # only this platform's containers (another state folder may share the engine)
        filters = [f"{_LABEL}=1", f"mysimbdp.home={self.home_key}"] + [f"mysimbdp.{k}={v}" for k, v in labels.items()]
        out = []
        for summary in self.client.api.containers(all=True, filters={"label": filters}):
            if brief and summary.get("State") == "running":  # the listing says enough: no inspect per container
                lab = summary.get("Labels") or {}
                out.append(
                    ContainerInfo(
                        name=(summary.get("Names") or ["?"])[0].lstrip("/"),
                        tenant=lab.get("mysimbdp.tenant", ""),
                        kind=lab.get("mysimbdp.kind", ""),
                        labels=lab,
                        state="running",
                        exit_code=None,
                        started_at=None,
                        oom_killed=False,
                    )
                )
                continue
            try:  # a container may go away between the listing and this look at it
                attrs = self.client.api.inspect_container(summary["Id"])
            except docker.errors.NotFound:
                continue
            state = attrs.get("State") or {}
            lab = (attrs.get("Config") or {}).get("Labels") or {}
            out.append(
                ContainerInfo(
                    name=attrs["Name"].lstrip("/"),
                    tenant=lab.get("mysimbdp.tenant", ""),
                    kind=lab.get("mysimbdp.kind", ""),
                    labels=lab,
                    state=state.get("Status", "unknown"),
                    exit_code=state.get("ExitCode") if state.get("Status") == "exited" else None,
                    started_at=state.get("StartedAt"),
                    oom_killed=bool(state.get("OOMKilled")),
                )
            )
        return out

    def logs(self, name: str, tail: int | None = None) -> str:
        try:
            c = self.client.containers.get(name)
        except docker.errors.NotFound:
            return ""
        return c.logs(stdout=True, stderr=True, tail=tail if tail else "all").decode("utf-8", "replace")

    def remove(self, name: str) -> None:
        try:
            c = self.client.containers.get(name)
        except docker.errors.NotFound:
            return
        log_path = c.labels.get("mysimbdp.log")
        if log_path:
            self._keep_log(c, Path(log_path))
        try:
            c.remove(force=True)
        except docker.errors.APIError:
            pass


def _output_over(spec: RunSpec) -> bool:
    """Whether a run's output folders passed their limit: bytes (sparse files count in full), or more entries
    or levels than results and rejects files could ever need."""
    total, entries = 0, 0
    for d in spec.output_dirs:
        size = bounded.tree_size(d, max_entries=MAX_OUTPUT_ENTRIES - entries, max_depth=MAX_OUTPUT_DEPTH)
        if size.too_many:
            return True
        total, entries = total + size.bytes, entries + size.entries
    return total > spec.limits.max_output_bytes


def _last_error(container) -> str:
    try:
        tail = container.logs(stdout=False, stderr=True, tail=20).decode("utf-8", "replace")
    except docker.errors.APIError:
        return ""
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    return bounded.printable(lines[-1] if lines else "")
