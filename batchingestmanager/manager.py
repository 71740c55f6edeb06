"""The batch ingest manager: watches the staging folders and runs each staged file through the tenant's
batch app in the sandbox, with a global and a per-tenant limit on concurrent jobs.

    watcher (watchdog) --paths--> events queue --> dispatcher --claims--> worker threads --> JobRunner

The dispatcher takes tenants in turn (round robin), so one tenant's hundred files do not starve another's
one. Retries wait for their back-off and for Cassandra to answer. SIGTERM stops taking new work and waits
for the running jobs; whatever is still claimed is picked up at the next start.
"""

from __future__ import annotations

import collections
import logging
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mysimbdp import daemon, db
from mysimbdp.config import Config
from mysimbdp.jobs import JobStatus, JobStore
from mysimbdp.retry import backoff
from mysimbdp.sandbox import runtime as sandbox_runtime
from mysimbdp.tenants import Registry, TenantCache

from . import watcher
from .runner import Claimed, JobRunner
from .watcher import StagedFile

log = logging.getLogger("batchingestmanager")
RESCAN = 30.0  # seconds between scans of the staging folders


class Manager:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.events: queue.Queue[StagedFile] = queue.Queue()
        self.sessions = db.SessionHolder(cfg)
        self.pending: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.queued: set[Path] = set()
        self.running: collections.Counter[str] = collections.Counter()
        self.lock = threading.Condition()
        self._tenants = TenantCache(lambda: self.registry, ttl=10.0)
        self.pool = ThreadPoolExecutor(max_workers=cfg.batch.workers, thread_name_prefix="job")
        self.runner: JobRunner | None = None
        self.registry: Registry | None = None

    # --- setup ------------------------------------------------------------------------------------------
    def _connect(self) -> None:
        daemon.when_ready(self.stop, self._open)

    def _open(self) -> None:
        session = self.sessions.get()
        self.registry = Registry(self.cfg, session)
        self.runner = JobRunner(
            self.cfg,
            self.registry,
            JobStore(self.cfg, session),
            sandbox_runtime(self.cfg),
            self.cassandra_ok,
            self.stop.is_set,
        )

    def cassandra_ok(self) -> bool:
        try:
            self.sessions.get().execute("SELECT now() FROM system.local", timeout=3)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not now"
            return False

    def limit_for(self, tenant: str) -> int:
        try:
            t = self._tenants.get(tenant)
        except Exception:  # noqa: BLE001 - Cassandra away: one at a time
            t = None
        return int(t.constraints.batch["max_concurrent_jobs"]) if t else 1

    # --- queueing ---------------------------------------------------------------------------------------
    def _enqueue_staged(self, staged: StagedFile) -> None:
        with self.lock:
            if staged.path in self.queued:
                return
            self.queued.add(staged.path)
            self.pending[staged.tenant].append(staged)
            self.lock.notify_all()

    def _enqueue_claimed(self, c: Claimed) -> None:
        with self.lock:
            self.pending[c.tenant].append(c)
            self.lock.notify_all()

    def _next(self) -> tuple[str, StagedFile | Claimed] | None:
        """The next runnable item, taking tenants in turn; None when nothing may start now."""
        if sum(self.running.values()) >= self.cfg.batch.workers:
            return None
        now = time.monotonic()
        tenants = [t for t, q in self.pending.items() if q]
        tenants.sort(key=lambda t: self.running[t])  # the least busy tenant first
        for t in tenants:
            if self.running[t] >= self.limit_for(t):
                continue
            q = self.pending[t]
            for i, item in enumerate(q):
                if isinstance(item, Claimed) and item.not_before > now:
                    continue
                del q[i]
                return t, item
        return None

    # --- work -------------------------------------------------------------------------------------------
    def _work(self, tenant: str, item: StagedFile | Claimed) -> None:
        claimed: Claimed | None = item if isinstance(item, Claimed) else None
        try:
            if isinstance(item, StagedFile):
                with self.lock:
                    self.queued.discard(item.path)
                claimed = self.runner.claim(item)
                if claimed is None:
                    return
            else:
                if not self.cassandra_ok():  # do not spend a run while Cassandra is away
                    claimed.not_before = time.monotonic() + 2
                    self._enqueue_claimed(claimed)
                    return
            verdict = self.runner.run(claimed)
            if verdict.status == JobStatus.RETRYING and not self.stop.is_set():
                self._enqueue_claimed(claimed)
        except Exception as exc:  # noqa: BLE001 - e.g. Cassandra away at an odd moment; one job must not stop the manager
            if claimed is None:
                log.exception("could not claim a file of %s; the next scan of staging will offer it again", tenant)
            elif claimed.errors + 1 >= self.cfg.batch.max_attempts and self.cassandra_ok():
                log.exception(
                    "job %s failed with unexpected errors %d times; giving up", claimed.key, claimed.errors + 1
                )
                try:
                    self.runner.give_up(claimed, f"{type(exc).__name__}: {exc}"[:300])
                except Exception:  # noqa: BLE001
                    log.exception("could not even record job %s as failed; it stays in the work area", claimed.key)
            else:
                claimed.errors += 1
                delay = backoff(claimed.errors, 2.0, 60.0)
                claimed.not_before = time.monotonic() + delay
                log.warning(
                    "job %s hit an unexpected error (%d so far); trying again in %.0fs",
                    claimed.key,
                    claimed.errors,
                    delay,
                    exc_info=True,
                )
                if not self.stop.is_set():
                    self._enqueue_claimed(claimed)
        finally:
            with self.lock:
                self.running[tenant] -= 1
                self.lock.notify_all()

    def run(self) -> None:
        self._connect()
        if self.stop.is_set():
            return
        root = self.cfg.paths.home / "staging"
        observer = watcher.watch(root, self.events)
        for c in self.runner.recover():
            log.info("resuming job %s left by a previous run", c.key)
            self._enqueue_claimed(c)
        for staged in watcher.scan(root):
            self._enqueue_staged(staged)
        heartbeat = self.cfg.paths.run / "batch-manager.heartbeat"
        log.info("batch manager ready: %d workers, watching %s", self.cfg.batch.workers, root)
        next_scan = time.monotonic() + RESCAN
        try:
            while not self.stop.is_set():
                if time.monotonic() > next_scan:  # a safety net under the watcher (lost events, errors)
                    for staged in watcher.scan(root):
                        self._enqueue_staged(staged)
                    next_scan = time.monotonic() + RESCAN
                try:
                    while True:
                        self._enqueue_staged(self.events.get_nowait())
                except queue.Empty:
                    pass
                with self.lock:
                    while (nxt := self._next()) is not None:
                        tenant, item = nxt
                        self.running[tenant] += 1
                        self.pool.submit(self._work, tenant, item)
                    self.lock.wait(0.2)
                heartbeat.write_text(f"{time.time():.0f}\n")
                for path in self._drain_events(0.05):
                    self._enqueue_staged(path)
        finally:
            observer.stop()
            log.info("stopping: waiting for running jobs")
            self.pool.shutdown(wait=True)
            self.sessions.close()

    def _drain_events(self, timeout: float) -> list[StagedFile]:
        try:
            first = self.events.get(timeout=timeout)
        except queue.Empty:
            return []
        out = [first]
        try:
            while True:
                out.append(self.events.get_nowait())
        except queue.Empty:
            return out


def main(argv: list[str] | None = None) -> int:
    return daemon.run_until_stopped(Manager)


if __name__ == "__main__":
    sys.exit(main())
