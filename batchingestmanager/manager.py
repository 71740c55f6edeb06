"""The batch ingest manager: watches the staging folders and runs each staged file through the tenant's
batch app in the sandbox, with a global and a per-tenant limit on concurrent runs.

    watcher (watchdog) --paths--> events queue --> dispatcher --claims--> worker threads --> JobRunner

The dispatcher takes tenants in turn (the least busy first), so one tenant's hundred files do not starve
another's one. When a tenant's app takes several files per run (``files_per_run`` in its app.json), the
files of that tenant that wait are handed to one run, up to that many and PACK_BYTES in all: small files
then cost one container start and one Cassandra login between them, and each still gets its own receipt.
Retries wait for their back-off and for Cassandra to answer.

A job the manager was working on when it died runs again alone, with nothing else running (so that if it
kills the manager again, it is the only suspect); after a second death it is failed. SIGTERM stops taking
new work and waits for the running jobs; whatever is still claimed is picked up at the next start.
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

from mysimbdp import apps, daemon, db
from mysimbdp.config import Config
from mysimbdp.jobs import JobStatus, JobStore
from mysimbdp.retry import backoff
from mysimbdp.sandbox import runtime as sandbox_runtime
from mysimbdp.tenants import Registry, TenantCache

from . import watcher
from .runner import MAX_CRASHES, Claimed, JobRunner
from .watcher import StagedFile

log = logging.getLogger("batchingestmanager")
RESCAN = 30.0  # seconds between scans of the staging folders
PACK_BYTES = 16 << 20  # files of one run together (a run of many small files stays short)
HEARTBEAT = "batch-manager.heartbeat"

Item = StagedFile | Claimed


def heartbeat_age(cfg: Config) -> float | None:
    """Seconds since the manager's loop last went round (None: no heartbeat at all)."""
    return daemon.heartbeat_age(cfg.paths.run / HEARTBEAT)


class Manager:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.stop = threading.Event()
        self.events: queue.Queue[StagedFile] = queue.Queue()
        self.sessions = db.SessionHolder(cfg)
        self.pending: dict[str, collections.deque[Item]] = collections.defaultdict(collections.deque)
        self.queued: set[Path] = set()
        self.running: collections.Counter[str] = collections.Counter()
        self.exclusive = False  # a suspect job is running: nothing else may start
        self.lock = threading.Condition()
        self._tenants = TenantCache(lambda: self.registry, ttl=10.0)
        self._per_run: dict[str, tuple[float, int]] = {}
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

    def files_per_run(self, tenant: str) -> int:
        """How many files the tenant's batch app takes in one run (looked up at most every 10 s)."""
        now = time.monotonic()
        hit = self._per_run.get(tenant)
        if hit and hit[0] > now:
            return hit[1]
        try:
            app = apps.installed(self.cfg, tenant, "batch")
            n = app.files_per_run if app else 1
        except Exception:  # noqa: BLE001 - an app being replaced: one at a time for now
            n = 1
        self._per_run[tenant] = (now + 10, n)
        return n

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

    def _next(self) -> tuple[str, list[Item]] | None:
        """The next run to start, taking tenants in turn; None when nothing may start now (caller holds the
        lock)."""
        now = time.monotonic()
        if self.exclusive:
            return None
        ready = lambda item: not isinstance(item, Claimed) or item.not_before <= now  # noqa: E731
        suspects = [
            (t, item)
            for t, q in self.pending.items()
            for item in q
            if isinstance(item, Claimed) and item.suspect and ready(item)
        ]
        if suspects:  # run alone, once everything else has finished
            if sum(self.running.values()):
                return None
            t, item = suspects[0]
            self.pending[t].remove(item)
            self.exclusive = True
            return t, [item]
        if sum(self.running.values()) >= self.cfg.batch.workers:
            return None
        tenants = [t for t, q in self.pending.items() if q]
        tenants.sort(key=lambda t: self.running[t])  # the least busy tenant first
        for t in tenants:
            if self.running[t] >= self.limit_for(t):
                continue
            q = self.pending[t]
            first = next((item for item in q if ready(item)), None)
            if first is None:
                continue
            pack = [first]
            if not (isinstance(first, Claimed) and first.solo):
                limit, size = self.files_per_run(t), _size(first)
                for item in q:
                    if len(pack) >= limit:
                        break
                    if item is first or not ready(item) or (isinstance(item, Claimed) and item.solo):
                        continue
                    if size + _size(item) > PACK_BYTES:
                        continue
                    pack.append(item)
                    size += _size(item)
            for item in pack:
                q.remove(item)
            return t, pack
        return None

    # --- work -------------------------------------------------------------------------------------------
    def _work(self, tenant: str, items: list[Item]) -> None:
        pack: list[Claimed] = []
        try:
            for item in items:
                if isinstance(item, StagedFile):
                    with self.lock:
                        self.queued.discard(item.path)
                    try:
                        claimed = self.runner.claim(item)
                    except Exception:  # noqa: BLE001
                        log.exception("could not claim %s; the next scan of staging offers it again", item.path)
                        continue
                    if claimed is not None:
                        pack.append(claimed)
                else:
                    pack.append(item)
            if not pack:
                return
            if not self.cassandra_ok():  # do not spend a run while Cassandra is away
                for c in pack:
                    c.not_before = time.monotonic() + 2
                    self._enqueue_claimed(c)
                return
            verdicts = self.runner.run(pack)
            if not self.stop.is_set():
                for c, verdict in verdicts.items():
                    if verdict.status == JobStatus.RETRYING:
                        self._enqueue_claimed(c)
        except Exception as exc:  # noqa: BLE001 - e.g. Cassandra away at an odd moment; one run must not stop the manager
            for c in pack:
                self._unexpected(c, exc)
        finally:
            with self.lock:
                self.running[tenant] -= 1
                self.exclusive = False
                self.lock.notify_all()

    def _unexpected(self, c: Claimed, exc: Exception) -> None:
        (c.dir / "running").unlink(missing_ok=True)
        if c.errors + 1 >= self.cfg.batch.max_attempts and self.cassandra_ok():
            log.error("job %s failed with unexpected errors %d times; giving up", c.key, c.errors + 1, exc_info=exc)
            try:
                self.runner.give_up(c, f"the platform could not run this job: {type(exc).__name__}: {exc}"[:300])
            except Exception:  # noqa: BLE001
                log.exception("could not even record job %s as failed; it stays in the work area", c.key)
            return
        c.errors += 1
        c.solo = True
        delay = backoff(c.errors, 2.0, 60.0)
        c.not_before = time.monotonic() + delay
        log.warning(
            "job %s hit an unexpected error (%d so far); trying again in %.0fs", c.key, c.errors, delay, exc_info=exc
        )
        if not self.stop.is_set():
            self._enqueue_claimed(c)

    def _recover(self) -> None:
        for c in self.runner.recover():
            if c.crashes >= MAX_CRASHES:
                log.error("job %s: the manager died %d times while working on it; it is failed", c.key, c.crashes)
                self.runner.give_up(
                    c,
                    f"the batch manager itself died {c.crashes} times while working on this file "
                    "(the last time with nothing else running); it is not run again",
                )
                continue
            log.info(
                "resuming job %s left by a previous run%s",
                c.key,
                " (the manager died while working on it: it runs alone)" if c.suspect else "",
            )
            self._enqueue_claimed(c)

    def run(self) -> None:
        self._connect()
        if self.stop.is_set():
            return
        root = self.cfg.paths.home / "staging"
        observer = watcher.watch(root, self.events)
        self._recover()
        for staged in watcher.scan(root):
            self._enqueue_staged(staged)
        heartbeat = self.cfg.paths.run / HEARTBEAT
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
                        tenant, items = nxt
                        self.running[tenant] += 1
                        self.pool.submit(self._work, tenant, items)
                    self.lock.wait(0.2)
                daemon.beat(heartbeat)
                for path in self._drain_events(0.05):
                    self._enqueue_staged(path)
        finally:
            observer.stop()
            log.info("stopping: ending the runs in progress (their jobs run again at the next start)")
            try:  # a run may have minutes to go: end it, so that stopping is not taken for a crash
                for c in self.runner.runtime.list(kind="batch"):
                    self.runner.runtime.stop(c.name, timeout=2)
            except Exception:  # noqa: BLE001 - the engine away: the runs end with it
                log.warning("could not end the runs in progress", exc_info=True)
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


def _size(item: Item) -> int:
    if isinstance(item, Claimed):
        return item.size
    try:
        return item.path.stat().st_size
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> int:
    return daemon.run_until_stopped(Manager)


if __name__ == "__main__":
    sys.exit(main())
