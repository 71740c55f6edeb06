"""One batch job: claim the staged file, run the tenant's app on it in the sandbox, judge the outcome,
write the receipt, and archive or quarantine the file.

Outcomes:

* the app exits 0 with a valid result   -> ``succeeded``; file archived (or deleted), rejects kept;
* the app exits 75, or fails while Cassandra is unreachable -> ``retrying``: the job stays claimed and is
  run again after a back-off, once Cassandra answers (an infrastructure failure is never the tenant's);
* anything else (an error exit, a crash, the time or memory limit, no valid result) -> ``failed``: the
  file goes to the tenant's quarantine with the reason, and its content may be sent again.

Claiming is a rename of the staged file into ``work/<tenant>/<job>/input/``; whatever is in ``work/`` when
the manager starts was interrupted and is run again (writes are keyed by primary key, so a re-run does not
duplicate rows).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from mysimbdp import apps, bounded, contract, db, names
from mysimbdp.config import Config
from mysimbdp.errors import NotFound, ServiceError, TenantNotFound
from mysimbdp.retry import Stopped, backoff, retry
from mysimbdp.jobs import Job, JobStatus, JobStore, append_log, new_job_id
from mysimbdp.sandbox import RunResult, SandboxRuntime
from mysimbdp.tenants import Registry, Tenant

from .watcher import StagedFile

log = logging.getLogger(__name__)
EXIT_TEMPORARY = 75
MAX_RESULT_BYTES = 64 * 1024
MAX_RESULT_DEPTH = 8
MAX_COUNT = 10**15  # rows in one file: anything above is not a count but a tenant app's mistake


@dataclass
class Claimed:
    """A job whose file is in the work area, ``work/<tenant>/<job id>/input/``."""

    tenant: str
    job_id: uuid.UUID
    dir: Path  # work/<tenant>/<job>/
    input: Path
    not_before: float = 0.0  # for retries
    errors: int = 0  # unexpected errors so far (the job is put back with a growing back-off)

    @property
    def key(self) -> str:
        return f"{self.tenant}/{self.job_id}"


@dataclass
class Verdict:
    status: JobStatus  # succeeded | retrying | failed
    reason: str = ""
    rows: int | None = None
    rejected: int | None = None


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
        c = Claimed(tenant, job_id, work, target)
        if manual:
            job = Job(
                tenant=tenant,
                job_id=job_id,
                file_name=names.safe_file_name(path.name),
                stored_name=target.name,
                size=target.stat().st_size,
                client_address="local",
                created_at=datetime.now(timezone.utc),
            )
            self._save(job)
        return c

    def recover(self) -> list[Claimed]:
        """Jobs a previous run of the manager left in the work area."""
        found = []
        root = self.cfg.paths.home / "work"
        if not root.exists():
            return found
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
                for c in self.runtime.list(job=str(job_id)):  # an orphan container of the killed manager
                    self.runtime.stop(c.name, timeout=2)
                found.append(Claimed(tenant_dir.name, job_id, work, inputs[0]))
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

    def run(self, c: Claimed) -> Verdict:
        """Run one attempt of a claimed job; return the verdict (and act on it)."""
        job = self._job(c)
        if job.status.final:  # the manager died after the receipt: just tidy up
            self._settle(c, job, Verdict(job.status, job.reason or ""), keep_receipt=True)
            return Verdict(job.status)
        try:
            tenant = self.registry.get(c.tenant)
        except TenantNotFound:
            return self._discard(c, "the tenant no longer exists")
        app = apps.installed(self.cfg, c.tenant, "batch")
        if app is None:
            verdict = Verdict(JobStatus.FAILED, "the tenant has no batch ingest app", 0, 0)
            self._finish(c, job, verdict, None)
            return verdict
        job.status, job.attempts = JobStatus.RUNNING, (job.attempts or 0) + 1
        job.started_at = datetime.now(timezone.utc)
        job.app_name, job.app_version = app.name, app.version
        job.reason = None
        self._save(job)
        out = c.dir / "out"
        bounded.remove_tree(out)
        out.mkdir()
        if os.geteuid() == 0:
            os.chown(out, tenant.uid, tenant.uid)
        os.chmod(out, 0o700)
        c.input.chmod(0o640)
        if os.geteuid() == 0:
            os.chown(c.input, 0, tenant.uid)
        spec = contract.batch_run(
            self.cfg,
            tenant,
            app,
            input_file=c.input,
            file_name=job.file_name,
            output_dir=out,
            job_id=f"{c.job_id}",
            log_path=c.dir / "run.log",
        )
        spec = dataclasses.replace(spec, name=f"{spec.name}-{job.attempts}")  # a fresh container per attempt
        try:
            result = self.runtime.run(spec)
        except ServiceError as exc:
            verdict = Verdict(JobStatus.RETRYING, f"the sandbox is unavailable: {exc.one_line()}")
            return self._retry(c, job, verdict)
        if self.registry.find(c.tenant) is None:  # deleted while its app ran: nothing of it may come back
            return self._discard(c, "the tenant was deleted while the job ran")
        verdict = self._judge(tenant, result, out)
        job.seconds = round(result.seconds, 3)
        if verdict.status == JobStatus.RETRYING:
            return self._retry(c, job, verdict)
        self._finish(c, job, verdict, result)
        return verdict

    def _judge(self, tenant: Tenant, r: RunResult, out: Path) -> Verdict:
        if r.exit_code == EXIT_TEMPORARY and not (r.timed_out or r.oom_killed):
            return Verdict(JobStatus.RETRYING, "the app reported the infrastructure unavailable (exit 75)")
        if not r.ok and not self.cassandra_ok():
            return Verdict(JobStatus.RETRYING, f"the app {r.describe()} while Cassandra was unreachable")
        if not r.ok:
            tail = r.last_error or bounded.last_line(r.log_path)
            return Verdict(JobStatus.FAILED, f"the app {r.describe()}" + (f": {tail}" if tail else ""))
        try:
            data = bounded.loads_json(
                bounded.read_regular(out / "result.json", MAX_RESULT_BYTES),
                max_bytes=MAX_RESULT_BYTES,
                max_depth=MAX_RESULT_DEPTH,
            )
            if not isinstance(data, dict):
                raise ValueError("it is not a JSON object")
            missing = [k for k in ("rows_ingested", "rows_rejected") if k not in data]
            if missing:
                raise ValueError(f"it lacks {' and '.join(missing)}")
            rows, rejected = data["rows_ingested"], data["rows_rejected"]
            if not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT for v in (rows, rejected)
            ):
                raise ValueError("rows_ingested and rows_rejected must be whole numbers from 0 to 10^15")
        except FileNotFoundError:
            return Verdict(JobStatus.FAILED, "the app exited normally but wrote no /output/result.json")
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)  # no host paths
            return Verdict(JobStatus.FAILED, f"the app exited normally but its /output/result.json is not valid: {why}")
        return Verdict(JobStatus.SUCCEEDED, "", rows, rejected)

    def _retry(self, c: Claimed, job: Job, verdict: Verdict) -> Verdict:
        if job.attempts >= self.cfg.batch.max_attempts:
            failed = Verdict(JobStatus.FAILED, f"gave up after {job.attempts} attempts: {verdict.reason}")
            self._finish(c, job, failed, None)
            return failed
        job.status, job.reason = JobStatus.RETRYING, verdict.reason
        self._save(job)
        delay = backoff(job.attempts - 1, self.cfg.batch.retry_initial, self.cfg.batch.retry_max)
        c.not_before = time.monotonic() + delay
        log.info("job %s will be retried in %.0fs: %s", c.key, delay, verdict.reason)
        return verdict

    def _finish(self, c: Claimed, job: Job, verdict: Verdict, result: RunResult | None) -> None:
        job.status, job.reason = verdict.status, verdict.reason or None
        job.rows_ingested = verdict.rows if verdict.rows is not None else job.rows_ingested or 0
        job.rows_rejected = verdict.rejected if verdict.rejected is not None else job.rows_rejected or 0
        job.finished_at = datetime.now(timezone.utc)
        self._settle(c, job, verdict, keep_receipt=False)

    def _settle(self, c: Claimed, job: Job, verdict: Verdict, *, keep_receipt: bool) -> None:
        """Move the file and its by-products to the archive or the quarantine, then write the receipt."""
        ok = verdict.status == JobStatus.SUCCEEDED
        dest = (self.cfg.paths.archive if ok else self.cfg.paths.quarantine)(c.tenant) / str(c.job_id)
        dest.mkdir(parents=True, exist_ok=True)
        rejects = c.dir / "out" / "rejects.csv"
        if _keepable(rejects, self.cfg.sandbox.max_output_mb << 20):
            os.rename(rejects, dest / "rejects.csv")
            job.rejects_path = str(dest / "rejects.csv")
        if (c.dir / "run.log").exists():
            shutil.move(str(c.dir / "run.log"), dest / "run.log")
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
        bounded.remove_tree(c.dir)
        log.info(
            "job %s %s: %s rows, %s rejected%s",
            c.key,
            job.status,
            job.rows_ingested,
            job.rows_rejected,
            f" ({job.reason})" if job.reason else "",
        )

    def give_up(self, c: Claimed, why: str) -> None:
        """End a job that keeps hitting errors of the platform's own (not the app's) as failed."""
        job = self._job(c)
        self._finish(c, job, Verdict(JobStatus.FAILED, f"the platform could not run this job: {why}"), None)

    def _discard(self, c: Claimed, why: str) -> Verdict:
        """Drop a job of a tenant that no longer exists: no receipt, no archive, no quarantine."""
        log.info("job %s dropped: %s", c.key, why)
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


def _keepable(rejects: Path, limit: int) -> bool:
    """Whether the app left a rejects file worth keeping: a regular file, no larger than the output limit
    (an app stopped for writing too much may leave a sparse file of any size), with a row under its header."""
    try:
        return rejects.lstat().st_size <= limit and bounded.has_lines(rejects, 2)
    except OSError:
        return False
