"""One run of a tenant's batch app: claim the staged files, run the app on them in the sandbox (one file, or
several files of one tenant when its app says it takes them), judge each file's outcome, write each file's
receipt, and archive or quarantine each file.

Outcomes, for each file of a run:

* it has a valid result (``rows_ingested``, ``rows_rejected``)      -> ``succeeded``; archived (or deleted),
  rejects kept. This holds even when the run failed later, on another file: its rows were written;
* the app exited 75, or failed while Cassandra was unreachable      -> ``retrying``: the job stays claimed
  and runs again after a back-off, once Cassandra answers (an infrastructure failure is never the tenant's);
* the run failed (an error exit, a crash, the time, memory or output limit) with several files in it and
  none of this file's result                                        -> run again *alone*, so that a failure is
  blamed on the file that caused it;
* anything else (its result says ``error``, a failure of a run of this file alone, no valid result) ->
  ``failed``: the file goes to the tenant's quarantine with the reason, and its content may be sent again.

Claiming is a rename of the staged file into ``work/<tenant>/<job>/input/``; whatever is in ``work/`` when
the manager starts was interrupted and is run again (writes are keyed by primary key, so a re-run does not
duplicate rows). A job being worked on carries a ``running`` mark; a mark found at start means the
manager died while working on it: such a job is run again alone, with nothing else running beside it, and
a job that was being worked on at two deaths of the manager is failed, never run a third time.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mysimbdp import apps, bounded, contract, db, metrics, names
from mysimbdp.config import Config
from mysimbdp.daemon import write_atomic
from mysimbdp.errors import NotFound, ServiceError, TenantNotFound
from mysimbdp.jobs import Job, JobStatus, JobStore, append_log, new_job_id
from mysimbdp.outcome import SHARED, Verdict, judge, run_failure
from mysimbdp.retry import Stopped, backoff, retry
from mysimbdp.sandbox import RunResult, SandboxRuntime, outputs
from mysimbdp.tenants import Registry

from .watcher import StagedFile

log = logging.getLogger(__name__)
MAX_CRASHES = 2  # deaths of the manager while working on one job, after which the job is failed


@dataclass(eq=False)
class Claimed:
    """A job whose file is in the work area, ``work/<tenant>/<job id>/input/``."""

    tenant: str
    job_id: uuid.UUID
    dir: Path  # work/<tenant>/<job>/
    input: Path
    not_before: float = 0.0  # for retries
    errors: int = 0  # unexpected errors so far (the job is put back with a growing back-off)
    crashes: int = 0  # deaths of the manager while it was working on this job
    solo: bool = False  # run it alone (a run it shared failed, or it may have killed the manager)
    size: int = field(default=0)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.job_id}"

    @property
    def suspect(self) -> bool:
        """The manager died while working on it: run it with nothing else running."""
        return self.crashes > 0


class JobRunner:
    def __init__(
        self,
        cfg: Config,
        registry: Registry,
        jobs: JobStore,
        runtime: SandboxRuntime,
        cassandra_ok: Callable[[], bool],
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.cfg = cfg
        self.registry = registry
        self.jobs = jobs
        self.runtime = runtime
        self.cassandra_ok = cassandra_ok
        self.stopping = stopping
        self.instance = uuid.uuid4().hex  # this manager process, in the marks it leaves
        self._rejects_lock = threading.Lock()  # the per-tenant count of kept rejects

    # --- claiming -------------------------------------------------------------------------------------
    def claim(self, staged: StagedFile) -> Claimed | None:
        """Move a staged file into the work area; None if it is gone (claimed already).

        The upload API names a staged file after its job, whose record it wrote first. A file put in
        staging by hand gets a job (and a record) of its own here."""
        tenant, path = staged.tenant, staged.path
        job_id = _job_id_of(path.name)
        manual = job_id is None
        if manual:
            job_id = new_job_id()
        work = self.cfg.paths.work(tenant) / str(job_id)
        (work / "input").mkdir(parents=True, exist_ok=True)
        target = work / "input" / f"{job_id}{path.suffix.lower()}"
        try:
            os.rename(path, target)
        except FileNotFoundError:  # another worker was first
            if not any((work / "input").iterdir()):
                bounded.remove_tree(work)
            return None
        c = Claimed(tenant, job_id, work, target, size=target.stat().st_size)
        if manual:
            job = Job(
                tenant=tenant,
                job_id=job_id,
                file_name=names.safe_file_name(path.name),
                stored_name=target.name,
                size=c.size,
                client_address="local",
                created_at=datetime.now(timezone.utc),
            )
            self._save(job)
        return c

    def recover(self) -> list[Claimed]:
        """Jobs a previous run of the manager left in the work area, with how often the manager died while
        working on each (a ``running`` mark left behind is one more death)."""
        found = []
        root = self.cfg.paths.home / "work"
        if not root.exists():
            return found
        for c in self.runtime.list(kind="batch"):  # orphan containers of the manager that died
            self.runtime.stop(c.name, timeout=2)
        outputs.release_under(root)  # and the output folders they had
        for tenant_dir in sorted(root.iterdir()):
            for work in sorted(tenant_dir.iterdir()) if tenant_dir.is_dir() else []:
                inputs = list((work / "input").glob("*")) if (work / "input").is_dir() else []
                job_id = _job_id_of(work.name)
                if job_id is None:
                    log.warning("work folder %s is not named after a job; left alone", work)
                    continue
                if not inputs:
                    bounded.remove_tree(work)
                    continue
                crashes = _read_int(work / "crashes")
                if (work / "running").exists():
                    crashes += 1
                    (work / "crashes").write_text(f"{crashes}\n")
                    (work / "running").unlink()
                found.append(
                    Claimed(
                        tenant_dir.name,
                        job_id,
                        work,
                        inputs[0],
                        crashes=crashes,
                        solo=crashes > 0,
                        size=inputs[0].stat().st_size,
                    )
                )
        return found

    # --- running --------------------------------------------------------------------------------------
    def _job(self, c: Claimed) -> Job:
        try:
            return self.jobs.get(c.tenant, c.job_id)
        except NotFound:  # claimed by hand, then the manager stopped before the record was written
            return Job(
                tenant=c.tenant,
                job_id=c.job_id,
                file_name=c.input.name,
                stored_name=c.input.name,
                size=c.input.stat().st_size,
                client_address="local",
                created_at=datetime.now(timezone.utc),
            )

    def _save(self, job: Job) -> None:
        """Write the job record; while Cassandra is down, wait for it (the record must not be lost)."""
        try:
            retry(
                lambda: self.jobs.save(job),
                on=db.UNAVAILABLE,
                stop=self.stopping,
                what=f"writing the record of job {job.job_id}",
            )
        except Stopped:
            log.warning("stopping before the record of job %s could be written", job.job_id)

    def run(self, pack: list[Claimed]) -> dict[Claimed, Verdict]:
        """One run of the tenant's app over ``pack`` (one job, or several of one tenant); return each job's
        verdict, having acted on it (receipt, archive, quarantine, or a later retry)."""
        verdicts: dict[Claimed, Verdict] = {}
        tenant_name = pack[0].tenant
        try:
            tenant = self.registry.get(tenant_name)
        except TenantNotFound:
            return {c: self._discard(c, "the tenant no longer exists") for c in pack}
        app = apps.installed(self.cfg, tenant_name, "batch")
        live: list[tuple[Claimed, Job]] = []
        for c in pack:
            job = self._job(c)
            if job.status.final:  # the manager died after the receipt: just tidy up
                self._settle(c, job, Verdict(job.status, job.reason or ""), keep_receipt=True)
                verdicts[c] = Verdict(job.status)
                continue
            if app is None:
                verdicts[c] = self._finish(
                    c, job, Verdict(JobStatus.FAILED, "the tenant has no batch ingest app", 0, 0)
                )
                continue
            job.status, job.attempts = JobStatus.RUNNING, (job.attempts or 0) + 1
            job.started_at = datetime.now(timezone.utc)
            job.app_name, job.app_version = app.name, app.version
            job.reason = None
            self._save(job)
            self._prepare(c, tenant.uid)
            live.append((c, job))
        if not live:
            return verdicts
        first = live[0][0]
        spec = contract.batch_run(
            self.cfg,
            tenant,
            app,
            [contract.BatchInput(str(c.job_id), c.input, job.file_name, c.dir / "out") for c, job in live],
            log_path=first.dir / "run.log",
        )
        spec = dataclasses.replace(spec, name=f"{spec.name}-{live[0][1].attempts}")  # a fresh container per attempt
        try:
            result = self.runtime.run(spec)
        except ServiceError as exc:
            for c, job in live:
                verdicts[c] = self._retry(
                    c, job, Verdict(JobStatus.RETRYING, f"the sandbox is unavailable: {exc.one_line()}")
                )
            return verdicts
        if self.registry.find(tenant_name) is None:  # deleted while its app ran: nothing of it may come back
            return {**verdicts, **{c: self._discard(c, "the tenant was deleted while the job ran") for c, _ in live}}
        for c, _ in live:
            if c is not first and (first.dir / "run.log").exists():  # one log for the run, in every receipt
                os.link(first.dir / "run.log", c.dir / "run.log")
        run_failure = self._run_failure(result)
        for c, job in live:
            verdict = self._judge(c.dir / "out", result, run_failure, shared=len(live) > 1)
            job.seconds = round(verdict.seconds if verdict.seconds is not None else result.seconds, 3)
            if verdict.status == JobStatus.RETRYING:
                c.solo = c.solo or verdict.reason.startswith(SHARED)
                verdicts[c] = self._retry(c, job, verdict)
            else:
                verdicts[c] = self._finish(c, job, verdict)
        return verdicts

    def _prepare(self, c: Claimed, uid: int) -> None:
        """A fresh output folder for the tenant's app, the input readable by it, and the mark that says the
        manager is working on this job."""
        outputs.prepare(c.dir / "out", uid, self.cfg.sandbox.max_output_mb << 20)
        if os.geteuid() == 0:
            os.chown(c.input, 0, uid)
        c.input.chmod(0o640)
        (c.dir / "run.log").unlink(missing_ok=True)
        (c.dir / "running").write_text(self.instance + "\n")

    def _run_failure(self, r: RunResult) -> Verdict | None:
        """What went wrong with the run as a whole (None: the app exited normally): mysimbdp/outcome.py."""
        return run_failure(r, stopping=self.stopping(), cassandra_ok=self.cassandra_ok)

    def _judge(self, out: Path, r: RunResult, failure: Verdict | None, *, shared: bool) -> Verdict:
        """One file's verdict, from its result and the run's outcome: mysimbdp/outcome.py."""
        return judge(out, r, failure, shared=shared)

    def _retry(self, c: Claimed, job: Job, verdict: Verdict) -> Verdict:
        (c.dir / "running").unlink(missing_ok=True)
        if job.attempts >= self.cfg.batch.max_attempts:
            return self._finish(
                c, job, Verdict(JobStatus.FAILED, f"gave up after {job.attempts} attempts: {verdict.reason}")
            )
        job.status, job.reason = JobStatus.RETRYING, verdict.reason
        self._save(job)
        metrics.BATCH_JOBS.labels(c.tenant, JobStatus.RETRYING).inc()
        delay = (
            0.0
            if verdict.reason.startswith(SHARED)
            else backoff(job.attempts - 1, self.cfg.batch.retry_initial, self.cfg.batch.retry_max)
        )
        c.not_before = time.monotonic() + delay
        log.info("job %s will be retried in %.0fs: %s", c.key, delay, verdict.reason)
        return verdict

    def _finish(self, c: Claimed, job: Job, verdict: Verdict) -> Verdict:
        job.status, job.reason = verdict.status, verdict.reason or None
        job.rows_ingested = verdict.rows if verdict.rows is not None else job.rows_ingested or 0
        job.rows_rejected = verdict.rejected if verdict.rejected is not None else job.rows_rejected or 0
        job.finished_at = datetime.now(timezone.utc)
        self._settle(c, job, verdict, keep_receipt=False)
        metrics.BATCH_JOBS.labels(c.tenant, job.status).inc()
        metrics.BATCH_ROWS.labels(c.tenant, "ingested").inc(job.rows_ingested)
        metrics.BATCH_ROWS.labels(c.tenant, "rejected").inc(job.rows_rejected)
        if job.started_at is not None:
            started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=timezone.utc)
            metrics.BATCH_JOB_SECONDS.labels(c.tenant).observe(max(0.0, (job.finished_at - started).total_seconds()))
        return verdict

    def _settle(self, c: Claimed, job: Job, verdict: Verdict, *, keep_receipt: bool) -> None:
        """Move the file and its by-products to the archive or the quarantine, then write the receipt."""
        ok = verdict.status == JobStatus.SUCCEEDED
        dest = (self.cfg.paths.archive if ok else self.cfg.paths.quarantine)(c.tenant) / str(c.job_id)
        dest.mkdir(parents=True, exist_ok=True)
        note = self._keep_rejects(c, job, dest)
        if (c.dir / "run.log").exists():
            os.replace(c.dir / "run.log", dest / "run.log")
            job.log_path = str(dest / "run.log")
        if note:  # the log of a run of several files is one file linked into each: say which file
            with open(dest / "run.log", "a", encoding="utf-8") as fh:
                fh.write(f"[mysimbdp] {bounded.printable(job.file_name)}: {note}\n")
            job.log_path = str(dest / "run.log")
        if c.input.exists():
            if ok and self.cfg.batch.after_success == "delete":
                c.input.unlink()
            else:
                shutil.move(str(c.input), dest / c.input.name)
        if not ok:
            (dest / "reason.txt").write_text((job.reason or "failed") + "\n")
        if not keep_receipt:
            self._save(job)
            if not ok and job.sha256:
                try:
                    self.jobs.forget(c.tenant, job.sha256)  # fixed apps may take the same file again
                except Exception:  # noqa: BLE001
                    log.warning("could not forget the checksum of failed job %s", c.key)
            append_log(self.cfg, job)
        outputs.release(c.dir / "out")
        bounded.remove_tree(c.dir)
        log.info(
            "job %s %s: %s rows, %s rejected%s",
            c.key,
            job.status,
            job.rows_ingested,
            job.rows_rejected,
            f" ({job.reason})" if job.reason else "",
        )

    def _keep_rejects(self, c: Claimed, job: Job, dest: Path) -> str:
        """Copy the app's rejects.csv out of the run's tmpfs (a new file of the platform's own, whatever the
        app made of it), within the per-job and per-tenant bounds; return a note for the log when it was cut
        or not kept."""
        rejects = c.dir / "out" / "rejects.csv"
        if not _keepable(rejects, self.cfg.sandbox.max_output_mb << 20):
            return ""
        with self._rejects_lock:
            spent_file = self.cfg.paths.archive(c.tenant) / ".rejects-kept-bytes"
            try:
                spent = int(bounded.read_regular(spent_file, 32))  # written by this class only
            except (OSError, ValueError):
                spent = 0
            left = (self.cfg.batch.max_rejects_kept_total_mb << 20) - spent
            cap = min(self.cfg.batch.max_rejects_kept_mb << 20, left)
            if cap <= 0:
                return (
                    f"rejects.csv not kept: the tenant's kept rejects reached "
                    f"{self.cfg.batch.max_rejects_kept_total_mb} MiB"
                )
            try:
                kept, whole = bounded.copy_head(rejects, dest / "rejects.csv", cap)
            except OSError as exc:
                log.warning("job %s: rejects.csv not kept: %s", c.key, exc)
                return "rejects.csv not kept: it could not be read"
            spent_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(spent_file, str(spent + kept))
        job.rejects_path = str(dest / "rejects.csv")
        return "" if whole else f"rejects.csv kept only its first {kept} bytes (at most {cap >> 20} MiB are kept)"

    def give_up(self, c: Claimed, why: str) -> None:
        """End a job as failed that the platform cannot run (its own errors, or deaths of the manager)."""
        job = self._job(c)
        self._finish(c, job, Verdict(JobStatus.FAILED, why))

    def _discard(self, c: Claimed, why: str) -> Verdict:
        """Drop a job of a tenant that no longer exists: no receipt, no archive, no quarantine."""
        log.info("job %s dropped: %s", c.key, why)
        outputs.release(c.dir / "out")
        bounded.remove_tree(c.dir)
        try:
            self.jobs.delete(c.tenant, c.job_id)
        except Exception:  # noqa: BLE001 - the tenant's records are deleted with it anyway
            log.debug("no record of job %s to delete", c.key)
        return Verdict(JobStatus.FAILED, why)


def _job_id_of(name: str) -> uuid.UUID | None:
    """The job a staged file (``<job id>.<format>``) or a work folder (``<job id>``) belongs to."""
    try:
        job_id = uuid.UUID(name.split(".", 1)[0])
    except ValueError:
        return None
    return job_id if job_id.version == 1 else None


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)  # bounded: written by the manager
    except (OSError, ValueError):
        return 0


def _keepable(rejects: Path, limit: int) -> bool:
    """Whether the app left a rejects file worth keeping: a regular file, no larger than the output limit
    (an app stopped for writing too much may leave a sparse file of any size), with a row under its header."""
    try:
        return rejects.lstat().st_size <= limit and bounded.has_lines(rejects, 2)
    except OSError:
        return False
