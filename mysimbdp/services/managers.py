"""The platform's own long-running processes (the batch, stream and query APIs, the batch and stream managers, the stream inbox
writer and the dashboard), started by `mysimbdp up`.

Each is a Python module run detached with its log in $MYSIMBDP_HOME/logs; an HTTP part counts as ready
when its /healthz answers.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import requests

from .. import metrics
from ..config import Config
from ..errors import ServiceStartError
from .process import Daemon, port_free, wait_until, who_listens


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    module: str
    health: str | None = None  # "batch", "stream", "query" or "dashboard": whose /healthz proves it ready
    heartbeat: str | None = None  # else: a file in run/ the process touches while its loop runs
    metric_files: bool = False  # an API of several worker processes keeps its metrics in files, as managers do

    def daemon(self, cfg: Config) -> Daemon:
        return Daemon(self.name, cfg.paths.run, cfg.paths.logs, match=f"-m {self.module}")

    def _url(self, cfg: Config) -> str | None:
        if self.health == "batch":
            return cfg.batch_url() + "/healthz"
        if self.health == "stream":
            return cfg.stream_url() + "/healthz"
        if self.health == "query":
            return cfg.query_url() + "/healthz"
        if self.health == "dashboard":
            return cfg.dashboard_url() + "/healthz"
        return None

    def _port(self, cfg: Config) -> tuple[str, int] | None:
        if self.health == "batch":
            return cfg.batch.host, cfg.batch.port
        if self.health == "stream":
            return cfg.stream.host, cfg.stream.port
        if self.health == "query":
            return cfg.query.host, cfg.query.port
        if self.health == "dashboard":
            return cfg.dashboard.host, cfg.dashboard.port
        return None

    def healthy(self, cfg: Config) -> bool:
        url = self._url(cfg)
        if url is None:
            if not self.daemon(cfg).running():
                return False
            if self.heartbeat is None:
                return True
            from ..daemon import heartbeat_age

            age = heartbeat_age(cfg.paths.run / self.heartbeat)
            return age is not None and age < 15
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module]

    def environment(self, cfg: Config) -> dict[str, str]:
        """Its environment (and, for a process whose metrics are files, that folder made; its stale
        heartbeat removed): the same whether the supervisor starts it or a container (services/compose.py)."""
        # two malloc arenas: a threaded server's memory otherwise stays near its peak after large answers
        # (a fixed mmap threshold returned it too, but halved the object API's throughput)
        env = dict(os.environ, MYSIMBDP_HOME=str(cfg.home), MALLOC_ARENA_MAX="2")
        if not self.health or self.metric_files:  # in files, which an API serves (metrics.py)
            folder = metrics.process_files(cfg.paths.run, self.name)
            folder.mkdir(parents=True, exist_ok=True)
            env["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
        if self.heartbeat:
            (cfg.paths.run / self.heartbeat).unlink(missing_ok=True)
        return env

    def start(self, cfg: Config, timeout: float = 60.0) -> str:
        d = self.daemon(cfg)
        if d.running() and self.healthy(cfg):
            return "running"
        if not d.running():
            port = self._port(cfg)
            if port and not port_free(*port):
                raise ServiceStartError(f"{self.name}: port {port[1]} is already taken by {who_listens(port[1])}")
            s = cfg.supervisor
            memory = (s.api_memory_mb if self.health else s.manager_memory_mb) << 20
            # oom_score_adj 500: if the whole machine runs short, these go before Cassandra and the broker
            d.start(self.argv(), env=self.environment(cfg), cwd=cfg.source, memory=memory, oom_score_adj=500)
        if not wait_until(lambda: self.healthy(cfg), timeout, 0.2, abort=d.exited_early):
            raise ServiceStartError(f"{self.name} did not become ready:\n" + d.log_tail())
        return "started"

    def stop(self, cfg: Config) -> bool:
        return self.daemon(cfg).stop(timeout=60)

    def status(self, cfg: Config) -> dict:
        pid = self.daemon(cfg).pid()
        return {
            "running": pid is not None,
            "pid": pid,
            "ready": pid is not None and self.healthy(cfg),
            "log": str(self.daemon(cfg).log_file),
        }


#: in start order
PARTS: list[ManagedProcess] = [
    ManagedProcess("batch-api", "batchingestmanager.api", health="batch"),
    ManagedProcess("batch-manager", "batchingestmanager.manager", heartbeat="batch-manager.heartbeat"),
    ManagedProcess("stream-api", "streamingestmanager.api", health="stream"),
    ManagedProcess("inbox-writer", "streamingestmanager.inbox_writer", heartbeat="inbox-writer.heartbeat"),
    ManagedProcess("stream-controller", "streamingestmanager.controller", heartbeat="stream-controller.heartbeat"),
    ManagedProcess("query-api", "queryapi.api", health="query", metric_files=True),
    ManagedProcess("dashboard", "dashboard.app", health="dashboard"),
]
